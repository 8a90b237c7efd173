"""The score-function protocol: `score_fn(x, t) -> grad_x log p_t(x)`.

Its own module so that the SDEs (which take score functions) and the network wrappers of
`sde_gen.score` (which take SDEs) both import it without importing each other.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from jaxtyping import Array, Float


@runtime_checkable
class ScoreFn(Protocol):
    """`score_fn(x, t) -> grad_x log p_t(x)`, shaped like x; `t` is `(B,)`."""

    def __call__(
        self, x: Float[Array, "batch *dims"], t: Float[Array, " batch"]
    ) -> Float[Array, "batch *dims"]: ...
