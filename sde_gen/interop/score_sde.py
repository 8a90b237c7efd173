"""Reading score_sde's checkpoints into sde_gen's NCSN++ / DDPM++ networks.

Two formats, both from Song et al. 2021's released code:

- **score_sde** (Flax): `checkpoints/checkpoint_<n>`, the msgpack of its training `State`
  (`step`, `optimizer` {`target`, `state`}, `lr`, `model_state`, `ema_rate`, `params_ema`,
  `rng`) written by `flax.training.checkpoints.save_checkpoint`. It is read with
  `flax.serialization.msgpack_restore` into plain dicts of arrays (no foreign classes are
  unpickled). Its networks are Flax modules too, so names map one to one: score_sde's
  `ResnetBlockBigGANpp_i` / `ResnetBlockDDPMpp_i` / `AttnBlockpp_i` are sde_gen's
  `ResnetBlockBigGAN_i` / `ResnetBlockDDPM_i` / `AttnBlock_i`, and the `Conv2d_0` inside a
  FIR `Upsample_i` / `Downsample_i` holds the `weight` and `bias` sde_gen keeps on the
  resampling layer itself.
- **score_sde_pytorch**: `checkpoint_<n>.pth`, a `torch.save` of {`optimizer`, `model`,
  `ema`, `step`}. `model` is the state dict of the network wrapped in `DataParallel`
  (`module.all_modules.<i>.<name>`), `ema` the state of its `ExponentialMovingAverage`,
  whose `shadow_params` follow `model.parameters()` order without the fixed Fourier
  frequencies. Read with `torch.load(..., weights_only=True)`; PyTorch is an optional
  extra (`pip install 'sde_gen[torch]'`). The network's modules are a flat list in call
  order, matched to sde_gen's top-level modules in the order the network calls them;
  inside each, PyTorch's attribute names are Flax's (`GroupNorm_0`, `Conv_1`, `Dense_0`,
  `NIN_2`), with kernels transposed (`(out, in, kh, kw)` -> `(kh, kw, in, out)`, `Linear`'s
  `(out, in)` -> `(in, out)`) and GroupNorm's `weight` as `scale`.

Every parameter of the network must be in the checkpoint with its shape, and nothing else
may be: the first that is not is named with both shapes (`CheckpointMismatch`). A file that
cannot be read is a `CheckpointFormatError`. The score sde_gen computes from the imported
weights equals score_sde's `get_score_fn(sde, model, ..., continuous=True)`, given the
wrapper of `score_settings` (`tests/test_interop_score_sde.py` measures it).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .._files import sha256_of_file

FORMATS = ("auto", "score_sde", "score_sde_pytorch")

__all__ = [
    "FORMATS",
    "CheckpointFormatError",
    "CheckpointMismatch",
    "ImportedCheckpoint",
    "detect_format",
    "flax_params_to_sde_gen",
    "load_checkpoint",
    "network_options",
    "params_template",
    "pytorch_state_to_sde_gen",
    "read_score_sde",
    "read_score_sde_pytorch",
    "score_settings",
]


class CheckpointFormatError(ValueError):
    """A file that is not a readable score_sde / score_sde_pytorch checkpoint."""


class CheckpointMismatch(ValueError):
    """A checkpoint whose parameters are not those of the configured network."""


@dataclasses.dataclass(frozen=True)
class ImportedCheckpoint:
    """A checkpoint's weights in sde_gen's parameter tree (`{"params": ...}` variables)."""

    step: int
    ema_params: dict  # the EMA (score_sde samples and evaluates with it)
    params: dict | None  # the raw training weights, where the file has them
    format: str
    path: str
    sha256: str


# --- score_sde's network options -> sde_gen's ------------------------------------------------

_NCSNPP_KEYS = (
    "nf",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "dropout",
    "nonlinearity",
    "resblock_type",
    "resamp_with_conv",
    "fir",
    "fir_kernel",
    "progressive",
    "progressive_input",
    "progressive_combine",
    "embedding_type",
    "fourier_scale",
    "conditional",
    "skip_rescale",
    "init_scale",
    "scale_by_sigma",
)


def network_options(model: Mapping[str, Any], centered: bool) -> tuple[str, dict]:
    """sde_gen's `(model name, options)` for a score_sde `config.model` (and its
    `config.data.centered`): "ncsnpp" (score_sde's NCSN++ and DDPM++, both `ncsnpp` there)
    or "ddpm" (its `models/ddpm.py`, sde_gen's DDPM++ with DDPM blocks, no skip rescaling
    and 32-group GroupNorm)."""
    name = str(model["name"]).lower()
    common = {k: model[k] for k in ("nf", "ch_mult", "num_res_blocks", "attn_resolutions")}
    common = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in common.items()}
    if name == "ncsnpp":
        options = {k: model[k] for k in _NCSNPP_KEYS if k in model}
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        for key in ("nonlinearity", "resblock_type", "progressive", "progressive_input"):
            options[key] = str(options[key]).lower()
        options["progressive_combine"] = str(options["progressive_combine"]).lower()
        options["embedding_type"] = str(options["embedding_type"]).lower()
        return "ncsnpp", {**options, **common, "centered": bool(centered)}
    if name == "ddpm":
        return "ddpmpp", {
            **common,
            "dropout": model["dropout"],
            "nonlinearity": str(model["nonlinearity"]).lower(),
            "resblock_type": "ddpm",
            "resamp_with_conv": model["resamp_with_conv"],
            "fir": False,
            "progressive": "none",
            "progressive_input": "none",
            "embedding_type": "positional",
            "conditional": model["conditional"],
            "skip_rescale": False,
            "init_scale": 0.0,
            "norm_groups": 32,
            "scale_by_sigma": model["scale_by_sigma"],
            "centered": bool(centered),
        }
    raise ValueError(f"score_sde model {name!r} has no sde_gen counterpart; choose ncsnpp or ddpm")


def score_settings(sde: str) -> dict:
    """The `ModelScore` settings that reproduce score_sde's `get_score_fn(...,
    continuous=True)` for its SDE "vesde" (the output is the score, the label the noise std)
    or "vpsde" / "subvpsde" (the output is the noise, divided by -std; the label 999 t)."""
    sde = sde.lower()
    if sde == "vesde":
        return {"output": "score", "time_input": "std"}
    if sde in ("vpsde", "subvpsde"):
        return {"output": "noise", "time_input": "t", "time_scale": 999.0}
    raise ValueError(f"unknown score_sde SDE {sde!r}; choose one of vesde, vpsde, subvpsde")


# --- reading the files -------------------------------------------------------------------------


def detect_format(path: str) -> str:
    """ "score_sde_pytorch" for a `torch.save` file (a zip, or a legacy pickle), "score_sde"
    for a msgpack map; `CheckpointFormatError` for anything else."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "score_sde_pytorch"
    if head and (0x81 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "score_sde"
    raise CheckpointFormatError(
        f"{path} is neither a score_sde (Flax msgpack) nor a score_sde_pytorch (torch.save) "
        "checkpoint"
    )


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")


def read_score_sde(path: str) -> tuple[int, dict, dict | None]:
    """`(step, params_ema, optimizer target)` of a score_sde Flax checkpoint, as score_sde's
    own parameter trees of numpy arrays (the target is None if the file has none)."""
    from flax import serialization

    _check_file(path)
    try:
        with open(path, "rb") as f:
            state = serialization.msgpack_restore(f.read())
    except Exception as error:  # msgpack's and flax's errors for a damaged file
        raise CheckpointFormatError(
            f"{path} cannot be read as a score_sde (Flax msgpack) checkpoint: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("params_ema"), dict):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointFormatError(
            f"{path} is not a score_sde checkpoint: no 'params_ema' (it holds {keys})"
        )
    target = state.get("optimizer", {})
    target = target.get("target") if isinstance(target, dict) else None
    step = int(np.asarray(state.get("step", 0)))
    return step, state["params_ema"], target if isinstance(target, dict) else None


def read_score_sde_pytorch(path: str) -> tuple[int, dict, dict | None]:
    """`(step, model state dict, EMA state dict)` of a score_sde_pytorch checkpoint as numpy
    arrays, without the `DataParallel` prefix `module.`; needs PyTorch."""
    _check_file(path)
    try:
        import torch
    except ImportError:
        raise CheckpointFormatError(
            f"{path} is a score_sde_pytorch checkpoint; reading it needs PyTorch "
            "(pip install 'sde_gen[torch]')"
        ) from None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip / pickle errors of a damaged file
        message = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointFormatError(
            f"{path} cannot be read as a score_sde_pytorch (torch.save) checkpoint: "
            f"{type(error).__name__}: {message}"
        ) from None
    if not isinstance(raw, dict) or "model" not in raw:
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointFormatError(
            f"{path} is not a score_sde_pytorch checkpoint: no 'model' (it holds {keys})"
        )

    def numpy(tensor):
        return tensor.detach().cpu().numpy()

    model = {re.sub(r"^module\.", "", k): numpy(v) for k, v in raw["model"].items()}
    ema = raw.get("ema")
    if isinstance(ema, dict) and "shadow_params" in ema:
        ema = {**ema, "shadow_params": [numpy(p) for p in ema["shadow_params"]]}
    else:
        ema = None
    return int(raw.get("step", 0)), model, ema


# --- names and shapes ---------------------------------------------------------------------------

_FLAX_RENAMES = {
    "ResnetBlockBigGANpp": "ResnetBlockBigGAN",
    "ResnetBlockDDPMpp": "ResnetBlockDDPM",
    "AttnBlockpp": "AttnBlock",
}


def _rename(name: str) -> str:
    kind, sep, index = name.rpartition("_")
    return _FLAX_RENAMES.get(kind, kind) + sep + index if sep else name


def flax_params_to_sde_gen(tree: Mapping) -> dict:
    """score_sde's Flax parameter tree with sde_gen's names (arrays unchanged)."""
    out = {}
    for name, value in tree.items():
        if not isinstance(value, Mapping):
            out[name] = np.asarray(value)
            continue
        value = flax_params_to_sde_gen(value)
        if name.rpartition("_")[0] in ("Upsample", "Downsample") and "Conv2d_0" in value:
            value = {**{k: v for k, v in value.items() if k != "Conv2d_0"}, **value["Conv2d_0"]}
        out[_rename(name)] = value
    return out


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, path + "/"))
        else:
            out[path] = value
    return out


def check_params(params: Mapping, template: Mapping, source: str) -> None:
    """Every parameter of `template` in `params` with its shape, and no others; the first
    that is not, with both shapes, as `CheckpointMismatch`."""
    have, want = _flatten(params), _flatten(template)
    for name, leaf in want.items():
        if name not in have:
            raise CheckpointMismatch(
                f"{source} does not match the configured network: it has no parameter {name} "
                f"(shape {tuple(leaf.shape)} in the network)"
            )
        if tuple(np.shape(have[name])) != tuple(leaf.shape):
            raise CheckpointMismatch(
                f"{source} does not match the configured network: parameter {name} has shape "
                f"{tuple(np.shape(have[name]))} in the checkpoint, {tuple(leaf.shape)} in the "
                "network"
            )
    for name in have:
        if name not in want:
            raise CheckpointMismatch(
                f"{source} does not match the configured network: the checkpoint's parameter "
                f"{name} (shape {tuple(np.shape(have[name]))}) is not in the network"
            )


def params_template(model: nn.Module, x_shape: tuple[int, ...]) -> dict:
    """The network's parameter shapes (`jax.ShapeDtypeStruct` leaves) for inputs `x_shape`."""
    x = jnp.zeros(x_shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.ones(x_shape[:1]))
    return variables["params"]


def _call_order(model: nn.Module, x_shape: tuple[int, ...]) -> list[str]:
    """The network's top-level submodules in the order its `__call__` first uses them."""
    order: list[str] = []

    def record(method, args, kwargs, context):
        path = context.module.scope.path if context.module.scope else ()
        if len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return method(*args, **kwargs)

    x = jnp.zeros(x_shape, jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.ones(x_shape[:1]))
    return order


def _conv_kernel(w):
    return np.transpose(w, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def _torch_module(name: str, template: Mapping, state: Mapping[str, np.ndarray], where: str):
    """One sde_gen module's parameters from the state-dict entries of its PyTorch twin
    (keys relative to that module)."""
    kind = name.rpartition("_")[0]

    def get(key):
        if key not in state:
            raise CheckpointMismatch(
                f"{where}: the checkpoint has no {key!r} for the network's {name} "
                f"(it has {sorted(state)})"
            )
        return state[key]

    if kind == "Dense":
        return {"kernel": get("weight").T, "bias": get("bias")}
    if kind == "Conv":
        out = {"kernel": _conv_kernel(get("weight"))}
        return {**out, "bias": get("bias")} if "bias" in template else out
    if kind == "GroupNorm":
        return {"scale": get("weight"), "bias": get("bias")}
    if kind in ("NIN", "GaussianFourierProjection"):
        return {key: get(key) for key in template}
    out = {}
    for child, sub in template.items():
        if not isinstance(sub, Mapping):  # a FIR resampling layer's own weight and bias
            value = get(f"Conv2d_0.{child}")
            out[child] = _conv_kernel(value) if child == "weight" else value
            continue
        prefix = f"{child}."
        inner = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        out[child] = _torch_module(child, sub, inner, f"{where}.{child}")
    return out


def pytorch_state_to_sde_gen(
    state: Mapping[str, np.ndarray],
    template: Mapping,
    order: list[str],
    source: str,
    ema_shadow: list[np.ndarray] | None = None,
) -> dict:
    """sde_gen's parameters from a score_sde_pytorch model state dict (no `module.`
    prefix): its `all_modules.<i>` that have parameters, in order, are the network's
    top-level modules in call order `order`. With `ema_shadow` (the EMA's `shadow_params`,
    in `model.parameters()` order without the fixed Fourier frequencies) those values
    replace the state dict's."""
    state = {k: np.asarray(v) for k, v in state.items() if k.startswith("all_modules.")}
    if ema_shadow is not None:
        trainable = [k for k in state if not (k.endswith(".W") and state[k].ndim == 1)]
        if len(trainable) != len(ema_shadow):
            raise CheckpointMismatch(
                f"{source}: its EMA holds {len(ema_shadow)} parameters, its model {len(trainable)}"
            )
        for key, value in zip(trainable, ema_shadow):
            if np.shape(value) != state[key].shape:
                raise CheckpointMismatch(
                    f"{source}: EMA parameter for {key} has shape {np.shape(value)}, the "
                    f"model's {state[key].shape}"
                )
            state[key] = np.asarray(value)
    groups: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        index, _, rest = key[len("all_modules.") :].partition(".")
        groups.setdefault(int(index), {})[rest] = value
    names = [name for name in order if name in template]
    indices = sorted(groups)
    if len(indices) != len(names):
        raise CheckpointMismatch(
            f"{source} does not match the configured network: it has {len(indices)} modules "
            f"with parameters, the network {len(names)}"
        )
    out = {}
    for index, name in zip(indices, names):
        out[name] = _torch_module(
            name, template[name], groups[index], f"{source}: all_modules.{index}"
        )
    return out


def load_checkpoint(
    path: str,
    model: nn.Module,
    x_shape: tuple[int, ...],
    *,
    format: str = "auto",
    use_ema: bool = True,
) -> ImportedCheckpoint:
    """A score_sde or score_sde_pytorch checkpoint as variables of `model` (inputs
    `x_shape`, e.g. `(1, 32, 32, 3)`), checked name by name and shape by shape.

    `ema_params` are the checkpoint's EMA weights (its raw training weights if `use_ema`
    is False); `params` the raw weights where the file has them, else the EMA.
    """
    if format not in FORMATS:
        raise ValueError(
            f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}"
        )
    _check_file(path)
    if format == "auto":
        format = detect_format(path)
    template = params_template(model, x_shape)
    source = f"{format} checkpoint {path}"
    if format == "score_sde":
        step, ema, target = read_score_sde(path)
        ema = flax_params_to_sde_gen(ema)
        target = None if target is None else flax_params_to_sde_gen(target)
    else:
        step, state, ema_state = read_score_sde_pytorch(path)
        order = _call_order(model, x_shape)
        target = pytorch_state_to_sde_gen(state, template, order, source)
        shadow = None if ema_state is None else ema_state["shadow_params"]
        ema = (
            target
            if shadow is None
            else pytorch_state_to_sde_gen(state, template, order, source, ema_shadow=shadow)
        )
    check_params(ema, template, source)
    if target is not None:
        check_params(target, template, source + " (optimizer target)")
    if not use_ema:
        if target is None:
            raise CheckpointMismatch(f"{source} has no raw training weights (use_ema=False)")
        ema = target
    for name, leaf in _flatten(ema).items():
        if not np.all(np.isfinite(leaf)):
            raise CheckpointMismatch(f"{source}: parameter {name} is not finite")
    as_jax = lambda tree: {
        "params": jax.tree_util.tree_map(  # noqa: E731
            lambda a: jnp.asarray(a, jnp.float32), tree
        )
    }
    return ImportedCheckpoint(
        step=step,
        ema_params=as_jax(ema),
        params=as_jax(target if target is not None else ema),
        format=format,
        path=path,
        sha256=sha256_of_file(path),
    )
