r"""guided-diffusion's released checkpoints (ADM, Dhariwal & Nichol 2021) as sde_gen networks.

The released files (`64x64_diffusion.pt`, `256x256_classifier.pt`, ...) are plain PyTorch
state dicts of guided-diffusion's `UNetModel` and `EncoderUNetModel`. This module builds the
matching `sde_gen.models.ADM` / `ADMClassifier` from the model's flags and maps every tensor
onto it: names through the network's layout, convolution kernels OIHW -> HWIO, linear and
1x1 `conv1d` weights transposed, the attention pool's positional embedding `(C, L)` ->
`(L, C)` and its fused `qkv` projection split into the query and the key-value projections.
Every parameter of the target must be present with its shape, and every tensor used; the
first fault is named with both shapes.

- `adm_model(**flags)` / `adm_classifier_model(**flags)`: the network of guided-diffusion's
  `create_model` / `create_classifier` flags (its `script_util.py`, the flags of its README);
- `adm_unet(**kwargs)` / `adm_encoder(**kwargs)`: the same from `UNetModel` /
  `EncoderUNetModel` constructor arguments;
- `convert_adm_state_dict(state_dict, model, image_size)` and
  `convert_adm_classifier_state_dict(...)`: the variables `{"params": ...}`;
- `load_torch_state_dict(path)` (needs torch, the `[torch]` extra; `weights_only=True`) and
  `load_npz_state_dict(path)`: `{name: float32 array}`;
- `load_adm_checkpoint(path, model, image_size)`: a released `.pt` (or `.npz`) file read,
  converted and checked for `--mode=import`, every fault one `CheckpointFormatError` /
  `CheckpointMismatch` / `FileNotFoundError` line.

The networks take NHWC images in [-1, 1] and guided-diffusion's integer timesteps
`n in [0, N-1]` as time labels: with `sde_gen.DiscreteVPSDE(discrete_betas(schedule, N))`
that is `time_input="discrete"`. A learned-sigma network returns 2C channels, the noise
first; `sde_gen.ModelScore` reads the first C.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._files import sha256_of_file
from ..models import ADM, ADMClassifier
from .score_sde import CheckpointFormatError, CheckpointMismatch, ImportedCheckpoint

__all__ = [
    "adm_classifier_model",
    "adm_encoder",
    "adm_model",
    "adm_unet",
    "convert_adm_classifier_state_dict",
    "convert_adm_state_dict",
    "load_adm_checkpoint",
    "load_npz_state_dict",
    "load_torch_state_dict",
]

StateDict = Mapping[str, np.ndarray]

# guided-diffusion's channel multipliers by image size (create_model / create_classifier)
CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def _resolutions(image_size: int, attention_ds) -> tuple[int, ...]:
    """guided-diffusion's attention downsampling rates -> sde_gen's feature-map sizes."""
    return tuple(sorted({image_size // int(ds) for ds in attention_ds}, reverse=True))


def _attention_settings(num_heads: int, num_head_channels: int) -> dict:
    if num_head_channels == -1:
        return {"num_heads": num_heads}
    return {"num_heads": None, "head_channels": num_head_channels}


def adm_unet(
    *,
    image_size: int,
    in_channels: int,
    model_channels: int,
    out_channels: int,
    num_res_blocks: int,
    attention_resolutions,
    dropout: float = 0.0,
    channel_mult=(1, 2, 4, 8),
    conv_resample: bool = True,
    dims: int = 2,
    num_classes: int | None = None,
    use_checkpoint: bool = False,
    use_fp16: bool = False,
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    resblock_updown: bool = False,
    use_new_attention_order: bool = False,
) -> ADM:
    """The `ADM` of guided-diffusion's `UNetModel(**kwargs)` (same names and defaults;
    `attention_resolutions` are downsampling rates, as there). `use_checkpoint` and
    `use_fp16` change how the reference computes, not what: the network is float32."""
    if dims != 2:
        raise ValueError(f"only 2-d images are supported; got dims={dims}")
    if num_heads_upsample not in (-1, num_heads):
        raise ValueError(
            f"num_heads_upsample={num_heads_upsample} differs from num_heads="
            f"{num_heads}; sde_gen's ADM uses one head count"
        )
    del use_checkpoint, use_fp16, in_channels
    return ADM(
        nf=model_channels,
        ch_mult=tuple(channel_mult),
        num_res_blocks=num_res_blocks,
        attn_resolutions=_resolutions(image_size, attention_resolutions),
        new_attention_order=use_new_attention_order,
        dropout=dropout,
        num_classes=num_classes or 0,
        rescale=False,
        scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        conv_resample=conv_resample,
        norm_groups=32,
        out_channels=out_channels,
        **_attention_settings(num_heads, num_head_channels),
    )


def adm_encoder(
    *,
    image_size: int,
    in_channels: int,
    model_channels: int,
    out_channels: int,
    num_res_blocks: int,
    attention_resolutions,
    dropout: float = 0.0,
    channel_mult=(1, 2, 4, 8),
    conv_resample: bool = True,
    dims: int = 2,
    use_checkpoint: bool = False,
    use_fp16: bool = False,
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    resblock_updown: bool = False,
    use_new_attention_order: bool = False,
    pool: str = "adaptive",
) -> ADMClassifier:
    """The `ADMClassifier` of guided-diffusion's `EncoderUNetModel(**kwargs)`; only
    `pool="attention"` (that of the released classifiers) is supported."""
    if pool != "attention":
        raise ValueError(f"classifier pool {pool!r} is not supported; choose 'attention'")
    if num_head_channels == -1:
        raise ValueError("the attention pool needs num_head_channels (the released: 64)")
    unet = adm_unet(
        image_size=image_size,
        in_channels=in_channels,
        model_channels=model_channels,
        out_channels=out_channels,
        num_res_blocks=num_res_blocks,
        attention_resolutions=attention_resolutions,
        dropout=dropout,
        channel_mult=channel_mult,
        conv_resample=conv_resample,
        dims=dims,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
    )
    keep = (
        "nf",
        "ch_mult",
        "num_res_blocks",
        "attn_resolutions",
        "head_channels",
        "num_heads",
        "new_attention_order",
        "dropout",
        "rescale",
        "scale_shift_norm",
        "resblock_updown",
        "conv_resample",
        "norm_groups",
    )
    return ADMClassifier(num_classes=out_channels, **{k: getattr(unet, k) for k in keep})


def _channel_mult(channel_mult, image_size: int):
    if channel_mult in ("", None):
        if image_size not in CHANNEL_MULT:
            raise ValueError(
                f"no default channel_mult for image size {image_size}; "
                f"choose one of {sorted(CHANNEL_MULT)} or pass channel_mult"
            )
        return CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        return tuple(int(c) for c in channel_mult.split(","))
    return tuple(channel_mult)


def _ds(image_size: int, resolutions) -> tuple[int, ...]:
    if isinstance(resolutions, str):
        resolutions = resolutions.split(",")
    return tuple(image_size // int(r) for r in resolutions)


def adm_model(
    *,
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    channel_mult="",
    learn_sigma: bool = False,
    class_cond: bool = False,
    attention_resolutions="16",
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    dropout: float = 0.0,
    resblock_updown: bool = False,
    use_new_attention_order: bool = False,
    use_fp16: bool = False,
    use_checkpoint: bool = False,
    **diffusion_flags: Any,
) -> ADM:
    """The `ADM` of guided-diffusion's `create_model` flags (its README's `MODEL_FLAGS`:
    `attention_resolutions` are feature-map sizes, 1000 classes with `class_cond`, 6 output
    channels with `learn_sigma`). Flags of the diffusion process (`diffusion_steps`,
    `noise_schedule`, ...) are accepted and ignored: they choose the SDE, not the network."""
    del diffusion_flags
    return adm_unet(
        image_size=image_size,
        in_channels=3,
        model_channels=num_channels,
        out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks,
        attention_resolutions=_ds(image_size, attention_resolutions),
        dropout=dropout,
        channel_mult=_channel_mult(channel_mult, image_size),
        num_classes=1000 if class_cond else None,
        use_checkpoint=use_checkpoint,
        use_fp16=use_fp16,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
    )


def adm_classifier_model(
    *,
    image_size: int,
    classifier_width: int = 128,
    classifier_depth: int = 2,
    classifier_attention_resolutions="32,16,8",
    classifier_use_scale_shift_norm: bool = True,
    classifier_resblock_updown: bool = True,
    classifier_pool: str = "attention",
    classifier_use_fp16: bool = False,
    **other_flags: Any,
) -> ADMClassifier:
    """The `ADMClassifier` of guided-diffusion's `create_classifier` flags (defaults: its
    `classifier_defaults`; 1000 classes, 64 channels per head); other flags are ignored."""
    del other_flags
    return adm_encoder(
        image_size=image_size,
        in_channels=3,
        model_channels=classifier_width,
        out_channels=1000,
        num_res_blocks=classifier_depth,
        attention_resolutions=_ds(image_size, classifier_attention_resolutions),
        channel_mult=_channel_mult("", image_size),
        use_fp16=classifier_use_fp16,
        num_head_channels=64,
        use_scale_shift_norm=classifier_use_scale_shift_norm,
        resblock_updown=classifier_resblock_updown,
        pool=classifier_pool,
    )


# ---- the layout: guided-diffusion's module names -> sde_gen's parameter paths ----------


def _resblock(torch, flax):
    return [
        (f"{torch}.in_layers.0", (*flax, "GroupNorm_0"), "norm"),
        (f"{torch}.in_layers.2", (*flax, "Conv_0"), "conv"),
        (f"{torch}.emb_layers.1", (*flax, "Dense_0"), "linear"),
        (f"{torch}.out_layers.0", (*flax, "GroupNorm_1"), "norm"),
        (f"{torch}.out_layers.3", (*flax, "Conv_1"), "conv"),
        (f"{torch}.skip_connection", (*flax, "Conv_2"), "conv"),  # when the width changes
    ]


def _attention(torch, flax):
    return [
        (f"{torch}.norm", (*flax, "GroupNorm_0"), "norm"),
        (f"{torch}.qkv", (*flax, "Dense_0"), "conv1d"),
        (f"{torch}.proj_out", (*flax, "Dense_1"), "conv1d"),
    ]


class _Counter:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def __call__(self, name: str) -> tuple[str]:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        return (f"{name}_{n}",)


def _layout(m, image_size: int, decoder: bool) -> list[tuple[str, tuple, str]]:
    """(torch module, Flax module path, kind) for every layer, in the network's order."""
    new = _Counter()
    out = [("time_embed.0", ("Dense_0",), "linear"), ("time_embed.2", ("Dense_1",), "linear")]
    if decoder and m.num_classes:
        out.append(("label_emb", ("Embed_0",), "embed"))
    out.append(("input_blocks.0.0", ("Conv_0",), "conv"))

    def resample(torch):
        if m.resblock_updown:
            return _resblock(torch, new("AdaGNResBlock"))
        path = new("Resample")
        name = "op" if torch.startswith("input") else "conv"
        return [(f"{torch}.{name}", (*path, "Conv_0"), "conv")] if m.conv_resample else []

    res, i = image_size, 1
    for level in range(len(m.ch_mult)):
        for _ in range(m.num_res_blocks):
            out += _resblock(f"input_blocks.{i}.0", new("AdaGNResBlock"))
            if res in m.attn_resolutions:
                out += _attention(f"input_blocks.{i}.1", new("MultiHeadAttention"))
            i += 1
        if level != len(m.ch_mult) - 1:
            out += resample(f"input_blocks.{i}.0")
            i, res = i + 1, res // 2
    out += _resblock("middle_block.0", new("AdaGNResBlock"))
    out += _attention("middle_block.1", new("MultiHeadAttention"))
    out += _resblock("middle_block.2", new("AdaGNResBlock"))
    if not decoder:
        return out + [
            ("out.0", ("GroupNorm_0",), "norm"),
            ("out.2", ("AttentionPool_0",), "attention_pool"),
            ("out.2.c_proj", ("Dense_2",), "conv1d"),
        ]
    i = 0
    for level in reversed(range(len(m.ch_mult))):
        for j in range(m.num_res_blocks + 1):
            out += _resblock(f"output_blocks.{i}.0", new("AdaGNResBlock"))
            k = 1
            if res in m.attn_resolutions:
                out += _attention(f"output_blocks.{i}.1", new("MultiHeadAttention"))
                k = 2
            if level and j == m.num_res_blocks:
                out += resample(f"output_blocks.{i}.{k}")
                res *= 2
            i += 1
    return out + [("out.0", ("GroupNorm_0",), "norm"), ("out.2", ("Conv_1",), "conv")]


def _tensors(torch: str, kind: str, sd: StateDict) -> dict[tuple, tuple[str, np.ndarray]]:
    """The Flax leaves (relative path -> (torch name, array)) of one torch module."""
    get = lambda name: (f"{torch}.{name}", np.asarray(sd[f"{torch}.{name}"], np.float32))
    if kind == "norm":
        return {("scale",): get("weight"), ("bias",): get("bias")}
    if kind == "embed":
        return {("embedding",): get("weight")}
    if kind == "attention_pool":
        pname, pos = get("positional_embedding")
        (wname, w), (bname, b) = get("qkv_proj.weight"), get("qkv_proj.bias")
        c = w.shape[1]
        w = w.reshape(w.shape[0], c)  # a 1x1 conv1d: (3C, C, 1)
        return {
            ("pos",): (pname, pos.T),
            ("Dense_0", "kernel"): (wname, w[:c].T),
            ("Dense_0", "bias"): (bname, b[:c]),
            ("Dense_1", "kernel"): (wname, w[c:].T),
            ("Dense_1", "bias"): (bname, b[c:]),
        }
    (wname, w), bias = get("weight"), get("bias")
    if kind == "conv":
        if w.ndim != 4:
            raise ValueError(f"{wname} has shape {w.shape}; expected a 2-d convolution")
        w = w.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif kind == "conv1d":
        if w.ndim != 3 or w.shape[-1] != 1:
            raise ValueError(f"{wname} has shape {w.shape}; expected a 1x1 conv1d")
        w = w[:, :, 0].T
    else:  # linear
        w = w.T
    return {("kernel",): (wname, w), ("bias",): bias}


def _convert(state_dict: StateDict, model, image_size: int, decoder: bool) -> dict:
    sd = {k: v for k, v in state_dict.items()}
    in_ch = np.shape(sd.get("input_blocks.0.0.weight", np.zeros((0, 3))))[1]
    x = jnp.zeros((1, image_size, image_size, in_ch))
    kw = {"y": jnp.zeros((1,), jnp.int32)} if decoder and model.num_classes else {}
    target = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.zeros((1,)), **kw))
    target = dict(jax.tree_util.tree_flatten_with_path(target["params"])[0])
    target = {tuple(p.key for p in path): leaf.shape for path, leaf in target.items()}
    params, used = {}, set()
    for torch, flax, kind in _layout(model, image_size, decoder):
        if kind == "conv" and torch.endswith("skip_connection") and (*flax, "kernel") not in target:
            continue  # no projection where the width is kept
        try:
            leaves = _tensors(torch, kind, sd)
        except KeyError as e:
            raise ValueError(
                f"the state dict has no {e.args[0]} (for {'/'.join(flax)}); "
                f"is it a {type(model).__name__} of these flags?"
            ) from None
        for rel, (name, value) in leaves.items():
            path = (*flax, *rel)
            if path not in target:
                raise ValueError(
                    f"{name} {value.shape} has no place in the network "
                    f"({'/'.join(path)} does not exist)"
                )
            if value.shape != target[path]:
                raise ValueError(
                    f"{name} has shape {value.shape} -> {'/'.join(path)} needs {target[path]}"
                )
            params[path], _ = value, used.add(name)
    missing = [p for p in target if p not in params]
    if missing:
        raise ValueError(
            f"the state dict gives no value for {'/'.join(missing[0])} "
            f"{target[missing[0]]} ({len(missing)} missing)"
        )
    unused = [k for k in sd if k not in used]
    if unused:
        raise ValueError(
            f"{unused[0]} {np.shape(sd[unused[0]])} of the state dict is not "
            f"part of this network ({len(unused)} unused)"
        )
    tree: dict = {}
    for path, value in params.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value)
    return {"params": tree}


def convert_adm_state_dict(state_dict: StateDict, model: ADM, image_size: int) -> dict:
    """The variables of `model` (an `ADM`, e.g. from `adm_model(**flags)`) holding a
    guided-diffusion `UNetModel` state dict for `image_size` x `image_size` images."""
    return _convert(state_dict, model, image_size, decoder=True)


def convert_adm_classifier_state_dict(
    state_dict: StateDict, model: ADMClassifier, image_size: int
) -> dict:
    """The variables of `model` (an `ADMClassifier`, e.g. from `adm_classifier_model(...)`)
    holding a guided-diffusion `EncoderUNetModel` (`pool="attention"`) state dict."""
    return _convert(state_dict, model, image_size, decoder=False)


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """A `.pt` state dict as float32 numpy arrays (`torch.load(weights_only=True)`: tensors
    only, no code from the file runs)."""
    try:
        import torch
    except ImportError:
        raise ImportError(
            "reading a .pt file needs PyTorch: pip install 'sde_gen[torch]'"
        ) from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return {k: v.detach().float().numpy() for k, v in sd.items()}


def load_npz_state_dict(path) -> dict[str, np.ndarray]:
    """A state dict saved as `.npz` (one array per torch name) as float32 arrays."""
    with np.load(path) as f:
        return {k: np.asarray(f[k], np.float32) for k in f.files}


def load_adm_checkpoint(
    path: str, model: ADM | ADMClassifier, image_size: int
) -> ImportedCheckpoint:
    """A guided-diffusion state dict (`.npz`, else a torch `.pt`) as the variables of `model`
    (an `ADM` or an `ADMClassifier`), checked name by name and shape by shape. The released
    files hold one set of weights (the EMA) and no step: both parameter sets are that
    set, at step 0."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    source = f"adm state dict {path}"
    if path.endswith(".npz"):
        try:
            state_dict = load_npz_state_dict(path)
        except Exception as err:  # a truncated or foreign file: zipfile, pickle, OS errors
            raise CheckpointFormatError(
                f"{path} cannot be read as an adm .npz state dict ({type(err).__name__})"
            ) from None
    else:
        try:
            state_dict = load_torch_state_dict(path)
        except ImportError:
            raise CheckpointFormatError(
                f"{path} is read as a guided-diffusion .pt file; that needs PyTorch "
                "(pip install 'sde_gen[torch]'), or save the state dict as .npz"
            ) from None
        except Exception as err:  # torch raises several types for a corrupt or foreign file
            raise CheckpointFormatError(
                f"{path} cannot be read as an adm .pt state dict ({type(err).__name__})"
            ) from None
    try:
        if isinstance(model, ADMClassifier):
            variables = convert_adm_classifier_state_dict(state_dict, model, image_size)
        else:
            variables = convert_adm_state_dict(state_dict, model, image_size)
    except ValueError as err:
        raise CheckpointMismatch(f"{source}: {err}") from None
    for leaf_path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        if not bool(jnp.all(jnp.isfinite(leaf))):
            name = "/".join(str(getattr(k, "key", k)) for k in leaf_path[1:])
            raise CheckpointMismatch(f"{source}: parameter {name} is not finite")
    return ImportedCheckpoint(
        step=0,
        ema_params=variables,
        params=variables,
        format="adm",
        path=path,
        sha256=sha256_of_file(path),
    )
