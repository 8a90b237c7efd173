"""The score-function protocol: the one interface every sampler and likelihood sees.

A score function maps a batch `x` of shape `(B, *dims)` and times `t` of shape `(B,)` to
an estimate of `grad_x log p_t(x)` shaped like `x`. Samplers always pass `t` as a `(B,)`
array. Exact ones come from `sde_gen.analytic`; networks become score functions through a
wrapper. For compiled samplers to be reused across parameter values, carry parameters as
array leaves: an `equinox.Module` or a `jax.tree_util.Partial` over them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from jaxtyping import Array, Float


@runtime_checkable
class ScoreFn(Protocol):
    """`score_fn(x, t) -> grad_x log p_t(x)`, shaped like x."""

    def __call__(
        self, x: Float[Array, "batch *dims"], t: Float[Array, " batch"]
    ) -> Float[Array, "batch *dims"]: ...
