"""The standard FID network: InceptionV3 as in TensorFlow's 2015-12-05 graph (the one behind
every published FID and the `pytorch-fid` port), in Flax linen.

`FIDInception()(images)` takes `(B, H, W, 3)` images in `[0, 1]`, resizes them bilinearly to
299x299, scales to `[-1, 1]`, and returns `{"pool3": (B, 2048), "logits": (B, 1008)}`.
The FID-specific details of that graph are kept: average pooling that does not count the
padding in the A/C/E blocks, max pooling in the last E block, 1008 output classes.

Weights cannot be downloaded here: `load_inception(path)` reads them from a local `.npz`
whose keys are the '/'-joined parameter paths of this module (`params/Conv2d_1a_3x3/conv/
kernel`, `batch_stats/Mixed_5b/branch1x1/bn/mean`, ...). `convert_torch_state_dict` turns
`pytorch-fid`'s `pt_inception-2015-12-05-6726825d.pth` state dict into that layout; see
`docs/interop.md` for the one-off conversion command. On the same weights the pool3
features and logits equal pytorch-fid's `InceptionV3(use_fid_inception=True)` (resize and
input scaling included) to a relative error of about 1e-6 in float32
(`tests/test_inception_pytorch_fid.py`, against a fixture made by pytorch-fid itself).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

NUM_CLASSES = 1008
# pytorch-fid's release file (FID_WEIGHTS_URL in pytorch_fid/inception.py): the TF graph's
# weights ported to PyTorch. By torch.hub's naming convention the digits in its name are the
# first hex digits of its SHA-256; pytorch-fid states no full checksum and checks none.
TORCH_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
TORCH_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + TORCH_WEIGHTS_FILE
)
# What a report names as the feature extractor.
FEATURE_EXTRACTOR = (
    "FID InceptionV3 pool3 (TF inception-2015-12-05 as ported by pytorch-fid; bilinear "
    "resize to 299x299 with align_corners=False, inputs 2x - 1)"
)


class BasicConv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, inference statistics), ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        pad = [(self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])]
        x = nn.Conv(self.features, self.kernel, self.strides, pad, use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_exclude_pad(x):
    """3x3 average pooling, stride 1, padding 1, averaging over the real pixels only."""
    total = nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1))) * 9.0
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    count = nn.avg_pool(ones, (3, 3), (1, 1), ((1, 1), (1, 1))) * 9.0
    return total / count


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        bp = nn.max_pool(x, (3, 3), (2, 2))
        return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        bp = nn.max_pool(x, (3, 3), (2, 2))
        return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
    """The last blocks; the FID graph pools by average (7b) and by max (7c)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.max_pool:
            pooled = nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_exclude_pad(x)
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInception(nn.Module):
    """InceptionV3 (FID variant): images in [0, 1] -> pool3 features and logits."""

    resize: bool = True

    @nn.compact
    def __call__(self, images):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be (batch, height, width, 3); got {images.shape}")
        x = images.astype(jnp.float32)
        if self.resize:
            x = jax.image.resize(x, (x.shape[0], 299, 299, 3), "bilinear", antialias=False)
        x = 2.0 * x - 1.0
        x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        pool3 = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_CLASSES, name="fc")(pool3)
        return {"pool3": pool3, "logits": logits}


def init_random(key: jax.Array, image_size: int = 299) -> dict:
    """Random variables of the right structure (for tests and shape checks)."""
    net = FIDInception(resize=False)
    return jax.jit(net.init)(key, jnp.zeros((1, image_size, image_size, 3)))


def save_variables(path: str, variables: Mapping, source: Mapping[str, str] | None = None) -> None:
    """Write variables as an `.npz` of '/'-joined paths (the format `load_inception` reads),
    with `source` (what they were converted from: `file`, `sha256`) under `source/`."""
    flat = traverse_util.flatten_dict(jax.device_get(dict(variables)), sep="/")
    arrays = {k: np.asarray(v) for k, v in flat.items()}
    arrays.update({f"source/{k}": np.asarray(str(v)) for k, v in (source or {}).items()})
    np.savez(path, **arrays)


def weights_source(path: str) -> dict[str, str]:
    """What a converted weights file says it was converted from (`file`, `sha256` of the
    PyTorch original); empty for a file written without that record."""
    with np.load(path) as f:
        return {k.split("/", 1)[1]: str(f[k]) for k in f.files if k.startswith("source/")}


def load_inception(path: str | None, config_key: str = "eval.inception_weights") -> dict:
    """The FID network's variables from a local `.npz`, checked against the architecture.

    Raises `FileNotFoundError` naming `config_key` when no file is given or found."""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(
            f"InceptionV3 weights not found at {path!r}: set config.{config_key} to a local "
            ".npz (convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with "
            "`python -m sde_gen.metrics.inception --torch-weights FILE --out FILE.npz`; see "
            "docs/evaluation.md), or use a feature extractor that needs no download "
            "(config.eval.features='classifier')"
        )
    with np.load(path) as f:
        flat = {k: f[k] for k in f.files}
    expected = traverse_util.flatten_dict(
        jax.eval_shape(lambda: init_random(jax.random.key(0), 75)), sep="/"
    )
    missing = sorted(set(expected) - set(flat))
    wrong = [k for k in expected if k in flat and flat[k].shape != expected[k].shape]
    if missing or wrong:
        raise ValueError(
            f"{path} does not hold FID InceptionV3 weights: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(wrong)} with wrong shapes (e.g. {wrong[:3]})"
        )
    return traverse_util.unflatten_dict({k: flat[k] for k in expected}, sep="/")


def convert_torch_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """pytorch-fid's `FIDInceptionA/C/E` state dict (numpy arrays) -> this module's variables.

    Convolutions OIHW -> HWIO, the dense layer (out, in) -> (in, out); batch-norm
    `running_mean/var` become `batch_stats` `mean/var`."""
    flat = {}
    for name, value in state_dict.items():
        value = np.asarray(value)
        parts = name.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        if parts[0] == "fc":
            leaf = "kernel" if parts[1] == "weight" else "bias"
            flat[f"params/fc/{leaf}"] = value.T if leaf == "kernel" else value
            continue
        *module, layer, leaf = parts
        scope = "/".join(module)
        if layer == "conv":
            flat[f"params/{scope}/conv/kernel"] = value.transpose(2, 3, 1, 0)
        elif leaf in ("weight", "bias"):
            flat[f"params/{scope}/bn/{'scale' if leaf == 'weight' else 'bias'}"] = value
        else:
            stat = {"running_mean": "mean", "running_var": "var"}[leaf]
            flat[f"batch_stats/{scope}/bn/{stat}"] = value
    return traverse_util.unflatten_dict(flat, sep="/")


def _main(argv=None) -> None:
    import argparse
    import re

    from .reference_stats import sha256_of_file

    parser = argparse.ArgumentParser(description="Convert pytorch-fid's InceptionV3 weights.")
    parser.add_argument("--torch-weights", required=True, help=f"{TORCH_WEIGHTS_FILE}")
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    try:
        import torch  # only this one-off conversion needs PyTorch
    except ImportError:
        parser.exit(
            1, "error: converting .pth weights needs PyTorch: pip install 'sde_gen[torch]'\n"
        )

    digest = sha256_of_file(args.torch_weights)
    name = os.path.basename(args.torch_weights)
    print(f"{name}: sha256 {digest}")
    # torch.hub names a file <name>-<first hex digits of its SHA-256>.<ext>
    hub_prefix = re.search(r"-([0-9a-f]{6,})\.[^.]+$", name)
    if hub_prefix and not digest.startswith(hub_prefix.group(1)):
        print(
            f"warning: {name}'s SHA-256 does not start with {hub_prefix.group(1)}, as its "
            "name says: the file may be truncated or another one"
        )
    state = torch.load(args.torch_weights, map_location="cpu")
    variables = convert_torch_state_dict({k: v.numpy() for k, v in state.items()})
    save_variables(args.out, variables, source={"file": name, "sha256": digest})
    load_inception(args.out)  # check
    print(f"wrote {args.out}: sha256 {sha256_of_file(args.out)}")


if __name__ == "__main__":
    _main()
