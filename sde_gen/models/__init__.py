"""Score networks (Flax linen) chosen by name.

Every model is called as `model.apply(variables, x, labels, train=...)` and returns an
array shaped like x; `sde_gen.ModelScore` turns it into a score function.

- `mlp`: a residual MLP for low-dimensional (toy) data;
- `ncsnpp`: NCSN++ (score_sde's VE model), every score_sde option;
- `ddpmpp`: DDPM++ (score_sde's VP / sub-VP model), the same network with DDPM++ defaults;
- `adm`: the ADM U-Net of Dhariwal & Nichol (AdaGN, multi-head attention, BigGAN resampling,
  optional class embedding); class labels are passed as `y=`.

DDPM++, NCSN++ and the MLP are class-conditional too with `num_classes > 0` (labels as `y=`).
Classifiers (`CLASSIFIERS`, called the same way, returning logits `(B, classes)`):

- `adm_classifier`: ADM's noise-conditional classifier `p_t(y | x_t)` (the U-Net's encoder
  half with attention pooling).

Reverse chains of the 2015 discrete models (`REVERSE_CHAINS`):

- `dpm2015_mlp`: `sde_gen.dpm2015.ReverseMLP`, the learned reverse kernels and the betas of
  a Gaussian or binomial chain.

The 2015 package builds its network on `models.mlp`, so it imports this package; this
package names its network by import path and imports it on first use, so the dependency
runs one way (no import cycle).
"""

from __future__ import annotations

import importlib

import flax.linen as nn
import jax
import numpy as np

from .._checks import choose
from .adm import ADM, ADMClassifier
from .ddpmpp import DDPMpp
from .layers import GaussianFourierProjection, timestep_embedding
from .mlp import MLP
from .ncsnpp import NCSNpp

MODELS = {"mlp": MLP, "ncsnpp": NCSNpp, "ddpmpp": DDPMpp, "adm": ADM}
CLASSIFIERS = {"adm_classifier": ADMClassifier}
REVERSE_CHAINS = {"dpm2015_mlp": "sde_gen.dpm2015.net:ReverseMLP"}  # imported on use


def _resolve(entry) -> type[nn.Module]:
    if not isinstance(entry, str):
        return entry
    module, name = entry.split(":")
    return getattr(importlib.import_module(module), name)


def get_model(name: str, **kwargs) -> nn.Module:
    """The score network (`MODELS`) or classifier (`CLASSIFIERS`) called `name`, built
    with `kwargs`."""
    cls = _resolve(choose("model", name, {**MODELS, **CLASSIFIERS, **REVERSE_CHAINS}))
    unknown = sorted(set(kwargs) - set(cls.__dataclass_fields__) - {"parent", "name"})
    if unknown:
        options = ", ".join(f for f in cls.__dataclass_fields__ if f not in ("parent", "name"))
        raise ValueError(f"unknown option(s) {unknown} for model '{name}'; choose from {options}")
    return cls(**kwargs)


def is_classifier(model: nn.Module) -> bool:
    """Whether `model` is one of the `CLASSIFIERS` (logits out, not a score)."""
    return isinstance(model, tuple(CLASSIFIERS.values()))


def num_classes(model: nn.Module) -> int:
    """The classes a class-conditional score network takes as `y=` (0: unconditional)."""
    return 0 if is_classifier(model) else int(getattr(model, "num_classes", 0))


def count_params(variables) -> int:
    """The number of trainable parameters in a variables dict (or a bare params tree)."""
    params = variables.get("params", variables) if isinstance(variables, dict) else variables
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


__all__ = [
    "ADM",
    "ADMClassifier",
    "CLASSIFIERS",
    "MLP",
    "MODELS",
    "DDPMpp",
    "GaussianFourierProjection",
    "NCSNpp",
    "REVERSE_CHAINS",
    "count_params",
    "get_model",
    "is_classifier",
    "num_classes",
    "timestep_embedding",
]
