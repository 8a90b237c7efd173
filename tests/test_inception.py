"""The FID InceptionV3 network: shapes, the weights file format, the torch conversion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from sde_gen.metrics import inception


@pytest.mark.slow  # builds the 24M-parameter network; the error paths stay in the default suite
@pytest.mark.slow  # forward and conversion are checked on pytorch-fid's own outputs by
# tests/test_inception_pytorch_fid.py in the default suite
def test_random_weights_forward_save_load_and_torch_conversion(tmp_path):
    """One test, as building the 24M random variables is the expensive part."""
    variables = inception.init_random(jax.random.key(0), 75)
    check_forward(variables)
    check_save_and_load(tmp_path, variables)
    check_torch_conversion(variables)


def check_forward(variables):
    images = jax.random.uniform(jax.random.key(1), (2, 75, 75, 3))
    out = jax.jit(inception.FIDInception(resize=False).apply)(variables, images)
    assert out["pool3"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert bool(jnp.all(out["pool3"] >= 0))  # a mean of ReLU outputs
    assert float(jnp.abs(out["pool3"][0] - out["pool3"][1]).max()) > 0
    n_params = sum(np.size(p) for p in jax.tree_util.tree_leaves(variables["params"]))
    assert n_params == FID_INCEPTION_PARAMS


# torchvision's inception_v3 has 27,161,264 parameters; without its auxiliary classifier
# (768 -> 128 1x1 conv + BN: 98,560; 128 -> 768 5x5 conv + BN: 2,459,136; 768 -> 1000 fc:
# 769,000) and with a 2048 -> 1008 fc (2,065,392) for its 2,049,000: the FID network.
FID_INCEPTION_PARAMS = 27_161_264 - (98_560 + 2_459_136 + 769_000) - 2_049_000 + 2_065_392


def test_the_fid_network_has_torchvisions_parameter_count_with_1008_classes():
    """Shapes only (no weights in memory); the count is independent of the image size."""
    net = inception.FIDInception(resize=False)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
    n_params = sum(np.size(p) for p in jax.tree_util.tree_leaves(shapes["params"]))
    assert n_params == FID_INCEPTION_PARAMS == 23_850_960


def test_images_are_checked():
    with pytest.raises(ValueError, match=r"images must be \(batch, height, width, 3\)"):
        inception.FIDInception().init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))


def test_missing_weights_error_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="set config.eval.inception_weights"):
        inception.load_inception(None)
    with pytest.raises(FileNotFoundError, match="config.eval.inception_weights"):
        inception.load_inception(str(tmp_path / "absent.npz"))


def check_save_and_load(tmp_path, variables):
    path = str(tmp_path / "inception.npz")
    inception.save_variables(path, variables)
    loaded = inception.load_inception(path)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
        np.testing.assert_array_equal(a, b)
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="does not hold FID InceptionV3 weights"):
        inception.load_inception(str(tmp_path / "other.npz"))


def to_torch_names(variables):
    """The inverse mapping: what pytorch-fid's state dict holds for these variables."""
    state = {}
    for path, value in traverse_util.flatten_dict(variables, sep="/").items():
        collection, *scope, layer, leaf = path.split("/")
        name = ".".join(scope)
        if layer == "fc":
            state[f"fc.{'weight' if leaf == 'kernel' else 'bias'}"] = (
                value.T if leaf == "kernel" else value
            )
        elif layer == "conv":
            state[f"{name}.conv.weight"] = np.asarray(value).transpose(3, 2, 0, 1)
        else:
            torch_leaf = {"scale": "weight", "bias": "bias", "mean": "running_mean",
                          "var": "running_var"}[leaf]  # fmt: skip
            state[f"{name}.bn.{torch_leaf}"] = value
            if leaf == "mean":
                state[f"{name}.bn.num_batches_tracked"] = np.array(0)
    return state


def check_torch_conversion(variables):
    state = to_torch_names(jax.device_get(variables))
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in state  # pytorch-fid's naming
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)  # OIHW
    converted = inception.convert_torch_state_dict(state)
    flat_a = traverse_util.flatten_dict(converted, sep="/")
    flat_b = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
    assert set(flat_a) == set(flat_b)
    for k in flat_b:
        np.testing.assert_array_equal(flat_a[k], flat_b[k])
