"""Argument checks shared by the public entry points.

Every public function validates its arguments here, in the user's terms, before any
tracing or numerical work: a bad name, shape or time fails fast with a message that names
the bad value and the valid choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value: Any) -> bool:
    """True when `value` holds data we can inspect now (not a tracer inside `jit`)."""
    return not isinstance(value, jax.core.Tracer)


def check_positive(owner: str, **values: Any) -> None:
    """Raise `ValueError` for any schedule constant that is not a finite positive number."""
    for name, value in values.items():
        if not is_concrete(value):
            continue
        arr = np.asarray(value)
        if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            raise ValueError(f"{owner}: {name} must be a finite positive number; got {value!r}")


def choose(kind: str, name: Any, choices: Mapping[str, Any]) -> Any:
    """Look `name` up in `choices`, raising a `ValueError` that lists the valid names."""
    key = "none" if name is None else name
    if not isinstance(key, str) or key.lower() not in choices:
        valid = ", ".join(choices)
        raise ValueError(f"unknown {kind} {name!r}; choose one of {valid}")
    return choices[key.lower()]


def check_shape(shape: Any) -> tuple[int, ...]:
    """A batch shape `(B, *dims)` of positive ints."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints (batch, *dims); got {shape!r}") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(
            f"shape must be (batch, *dims) with at least one data dimension and positive "
            f"sizes; got {shape}"
        )
    return shape


def check_time(name: str, t: Any, T: float, *, open_left: bool = False) -> None:
    """Raise `ValueError` unless the concrete time `t` lies in [0, T] (or (0, T])."""
    if not is_concrete(t):
        return
    value = float(np.asarray(t))
    low_ok = value > 0 if open_left else value >= 0
    if not (math.isfinite(value) and low_ok and value <= T):
        interval = f"({0}, {T}]" if open_left else f"[0, {T}]"
        raise ValueError(f"{name} must lie in {interval}; got {value}")


def check_eps(eps: Any, T: float) -> None:
    """The sampler's end time: strictly between 0 and T."""
    if is_concrete(eps):
        value = float(np.asarray(eps))
        if not (0 < value < T):
            raise ValueError(f"eps must satisfy 0 < eps < T = {T}; got {value}")


def check_steps(name: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive int; got {n!r}")
    return int(n)


def check_x(name: str, x: Any, shape: Sequence[int] | None = None) -> jax.Array:
    """An input batch: an array of rank >= 2, matching `shape` when given."""
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name} must be a batch (batch, *dims); got shape {x.shape}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {x.shape}, but shape={tuple(shape)} was asked for")
    return x


def check_finite(name: str, x: jax.Array) -> jax.Array:
    """`x` unchanged; a `ValueError` naming how many entries are NaN or inf when it is
    concrete and not all finite (traced values pass)."""
    if is_concrete(x):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        if bad:
            raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf) of {np.size(x)}")
    return x


def check_score_fn(score_fn: Callable, shape: Sequence[int], dtype: Any = jnp.float32) -> None:
    """Trace `score_fn` abstractly (no FLOPs) and check it returns an array shaped like x."""
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable as score_fn(x, t); got {score_fn!r}")
    x = jax.ShapeDtypeStruct(tuple(shape), dtype)
    t = jax.ShapeDtypeStruct((shape[0],), dtype)
    out = jax.eval_shape(score_fn, x, t)
    out_shape = getattr(out, "shape", None)
    if out_shape is None or tuple(out_shape) != tuple(shape):
        raise ValueError(
            f"score_fn(x, t) must return an array shaped like x {tuple(shape)}; "
            f"got {out_shape if out_shape is not None else type(out).__name__}"
        )


def check_sampling(sde: Any, score_fn: Callable, shape: Any, eps: Any, x_init: Any):
    """The checks every sampler shares: batch shape, end time, start point, score output.

    Returns the normalized `(shape, x_init)`.
    """
    shape = check_shape(shape)
    check_eps(eps, sde.T)
    if x_init is not None:
        x_init = check_x("x_init", x_init, shape)
    check_score_fn(score_fn, shape)
    return shape, x_init
