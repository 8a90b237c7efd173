"""Score networks (Flax linen) chosen by name.

Every model is called as `model.apply(variables, x, labels, train=...)` and returns an
array shaped like x; `sde_gen.ModelScore` turns it into a score function.
"""

from __future__ import annotations

import flax.linen as nn

from .._checks import choose
from .layers import timestep_embedding
from .mlp import MLP

MODELS = {"mlp": MLP}


def get_model(name: str, **kwargs) -> nn.Module:
    """The model called `name` in `MODELS`, built with `kwargs`."""
    return choose("model", name, MODELS)(**kwargs)


__all__ = ["MLP", "MODELS", "get_model", "timestep_embedding"]
