"""The training objective of a learned 2015 reverse chain: `-K` in bits per dimension."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..likelihood import nats_to_bits_per_dim
from .net import ReverseMLP, reverse_fn


def loss(
    model: ReverseMLP,
    params,
    x: Float[Array, "B *dims"],
    example_keys: PRNGKeyArray,
) -> tuple[Array, dict[str, Array]]:
    """`(-mean K / (D ln 2), {"K_bits": mean K / ln 2})` over the batch `x` (flattened to
    `(B, D)`), one key per example `(B,)`: each example's sum over t in K is estimated
    from one draw of t (unbiased). The gradient also reaches the betas when they are
    learned."""
    x = x.reshape(x.shape[0], -1)
    chain, reverse = reverse_fn(model, params)
    k = jax.vmap(lambda key, x0: chain.bound(key, reverse, x0[None], num_t=1)["K"][0])(
        example_keys, x
    )
    mean_k = jnp.mean(k)
    return -nats_to_bits_per_dim(mean_k, x.shape[1]), {"K_bits": nats_to_bits_per_dim(mean_k)}
