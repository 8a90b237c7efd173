"""Layers shared by the score networks."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float


def timestep_embedding(
    labels: Float[Array, " batch"], dim: int, max_positions: int = 10_000
) -> Float[Array, "batch dim"]:
    """Sinusoidal embedding of (continuous) time labels, as in DDPM and score_sde.

    `[sin(label * w_k), cos(label * w_k)]` with `w_k = max_positions^(-k / (dim/2 - 1))`,
    k = 0 .. dim/2 - 1, zero-padded to an odd `dim`.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half) / (half - 1))
    args = jnp.asarray(labels, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))
