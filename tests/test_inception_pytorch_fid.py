"""sde_gen's FID InceptionV3 against pytorch-fid's own network on the same weights.

`fixtures/inception_pytorch_fid.npz` holds what pytorch-fid's `InceptionV3(use_fid_inception=
True)` (its bilinear resize to 299 and `2x - 1` included) returns for seven images, with the
seeded stand-in weights of `fixtures/seeded_inception.py`; `make_inception_fixtures.py`
regenerates it from a pytorch-fid checkout. Here the same weights are drawn again with
numpy, converted by `convert_torch_state_dict`, and run through `FIDInception`: no torch.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_gen.metrics import inception

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
sys.path.insert(0, FIXTURES)

import seeded_inception  # noqa: E402

# float32 convolutions summed in another order than PyTorch's: measured 3.5e-7 to 3.9e-7
# (pool3) and 5.4e-7 to 8.5e-7 (logits) per image; the FID's comparability needs 1e-4.
# Counting the padding in the average pools would give 5e-2, an antialiased resize 9e-3.
REL_TOL = 1e-4


def fixture():
    with open(os.path.join(FIXTURES, "inception_pytorch_fid.json")) as f:
        meta = json.load(f)
    with np.load(os.path.join(FIXTURES, "inception_pytorch_fid.npz")) as f:
        arrays = {k: f[k] for k in f.files}
    return meta, arrays


def relative_errors(ours, theirs):
    """Per image: |ours - theirs|_2 / |theirs|_2."""
    return np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)


def test_pool3_and_logits_equal_pytorch_fids_on_the_same_weights():
    meta, ref = fixture()
    state = seeded_inception.seeded_state_dict(meta["state_dict"], meta["seed"])
    assert seeded_inception.digest(state) == meta["weights_digest_sha256"], (
        "numpy drew other numbers from the fixture's seeds than when it was made"
    )
    variables = inception.convert_torch_state_dict(state)
    apply = jax.jit(inception.FIDInception().apply)
    outs = []
    for i, shape in enumerate(meta["image_batches"]):
        images = ref[f"images_{i}"].astype(np.float32) / np.float32(255)
        assert list(images.shape) == shape
        outs.append(jax.device_get(apply(variables, jnp.asarray(images))))
    pool3 = np.concatenate([o["pool3"] for o in outs])
    logits = np.concatenate([o["logits"] for o in outs])

    # the stand-in weights keep the network alive: features of order one that differ
    theirs = ref["pool3"]
    assert theirs.mean() > 0.1 and np.all(theirs.std(0).mean() > 0.1 * theirs.mean())
    assert np.all(relative_errors(theirs[1:], theirs[:1]) > 0.05)

    # CIFAR-sized (upsampled), 299x299 (not resized) and 384x320 (downsampled) inputs
    assert relative_errors(pool3, theirs).max() <= REL_TOL
    assert relative_errors(logits, ref["logits"]).max() <= REL_TOL
    assert np.abs(pool3 - theirs).max() <= REL_TOL * np.abs(theirs).max()


def test_the_fixture_lists_the_state_dict_the_converter_maps_completely():
    """Every entry of pytorch-fid's state dict lands on exactly one variable of the port
    (shapes only: no weights in memory)."""
    meta, _ = fixture()
    shapes = {name: tuple(shape) for name, shape in meta["state_dict"]}
    zeros = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    converted = jax.tree_util.tree_map(np.shape, inception.convert_torch_state_dict(zeros))
    expected = jax.eval_shape(lambda: inception.init_random(jax.random.key(0), 75))
    assert converted == jax.tree_util.tree_map(lambda x: x.shape, expected)
    assert sum(int(np.prod(s)) for n, s in shapes.items() if "num_batches" not in n) == (
        23_850_960 + 2 * sum(int(np.prod(s)) for n, s in shapes.items() if "running_mean" in n)
    )  # parameters plus the batch norms' running mean and variance


@pytest.mark.slow  # writes and converts a 95 MB PyTorch file
def test_the_conversion_command_records_the_source_file_and_checksum(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    meta, _ = fixture()
    state = seeded_inception.seeded_state_dict(meta["state_dict"], meta["seed"])
    pth = tmp_path / "pt_inception-2015-12-05-00000000.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
    out = tmp_path / "inception_fid.npz"
    inception._main(["--torch-weights", str(pth), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "does not start with 00000000" in printed and f"wrote {out}: sha256 " in printed
    source = inception.weights_source(str(out))
    assert source["file"] == pth.name and source["sha256"] in printed
    loaded = inception.load_inception(str(out))
    np.testing.assert_array_equal(
        loaded["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"],
        state["Mixed_7c.branch_pool.conv.weight"].transpose(2, 3, 1, 0),
    )
