r"""The sampler interface: every sampler is an object whose fields are its settings.

`sampler(key, sde, score_fn, shape, *, x_init=None) -> (x, nfe)` draws a batch of `shape`
(from a prior draw at T, or from `x_init`) and reports its number of score evaluations per
sample as a Python int. Settings are checked when the object is built, so a config can
build its sampler and fail before any work. `describe()` and `run_name()` are derived from
the fields: two samplers with different settings never share them.

`tweedie` is the one final denoising step of the library's samplers: Tweedie's formula
`E[x_0 | x_t = x] = (x + s_t^2 score(x, t)) / a_t` for a linear SDE.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_steps, is_concrete
from ..score import ScoreFn
from ..sde import AbstractLinearSDE, AbstractSDE, batch_times


def tweedie(sde: AbstractLinearSDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
    """Tweedie's `x0(x, t) = E[x_0 | x_t = x]` from one score evaluation; t is a scalar."""
    return sde.x0_from_score(x, t, score_fn(x, batch_times(t, x)))


class AbstractSampler(eqx.Module):
    """A sampler of the reverse-time process; its fields are its settings.

    Subclasses set `method` (the short name of their family) and implement `__call__`;
    `_name_parts` gives the readable part of `run_name`.
    """

    method: ClassVar[str]
    # The registry of names for a field holding an object (e.g. "solver": FAST_SOLVERS).
    _registries: ClassVar[dict[str, Mapping]] = {}

    @abc.abstractmethod
    def __call__(
        self,
        key: PRNGKeyArray,
        sde: AbstractSDE,
        score_fn: ScoreFn,
        shape: tuple[int, ...],
        *,
        x_init: Array | None = None,
    ) -> tuple[Array, int]:
        """Returns `(x, nfe)`: samples of `shape` and the score evaluations per sample (a
        Python int; inside jit/pmap an adaptive solver's count is the traced array)."""

    def describe(self) -> dict:
        """The settings as JSON-able values: `{"method": ..., **fields}`; objects (solvers,
        predictors, correctors) by their name, with their own fields when they have any."""
        settings = {
            f.name: render(getattr(self, f.name), self._registries.get(f.name, {}))
            for f in dataclasses.fields(self)
        }
        return {"method": self.method, **settings}

    def run_name(self) -> str:
        """A short file-system-safe name, e.g. "pc-euler_maruyama-langevin-500".

        The readable part names the main settings; when any other setting differs from its
        default (eps, denoise, a corrector's snr, DDIM's eta, ...), a short hash of
        `describe()` follows, so different settings always give different names.
        """
        parts, canonical = self._name_parts()
        name = "-".join(str(p).lower() for p in (self.method, *parts))
        if canonical is None or canonical.describe() != self.describe():
            name = f"{name}-{settings_hash(self.describe())}"
        return re.sub(r"[^a-z0-9_.+-]", "_", name)

    @abc.abstractmethod
    def _name_parts(self) -> tuple[tuple, AbstractSampler | None]:
        """The readable parts of the run name, and the sampler those parts alone describe
        (other settings at their defaults), or None when the parts cannot say it."""


def settings_hash(settings: Mapping) -> str:
    """Eight hex digits of the SHA-1 of `settings` as sorted JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def short_name(obj: Any, registry: Mapping[str, Any] = ()) -> str:
    """The name of `obj` in `registry` (of classes or of instances), else its class name."""
    for name, entry in dict(registry).items():
        if entry is None:
            continue
        if isinstance(entry, type) and type(obj) is entry:
            return name
        if not isinstance(entry, type) and type(obj) is type(entry):
            if _fields(obj) == _fields(entry):
                return name
    return type(obj).__name__


def _fields(obj) -> dict:
    """The fields of a module, rendered; None-valued ones left out (lossless: a class's
    fields are fixed, so absent means None)."""
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: render(v) for k, v in values.items() if v is not None}


def render(value: Any, registry: Mapping[str, Any] = ()) -> Any:
    """A JSON-able form of a setting: numbers, strings and lists as they are; arrays as
    lists; a module by its name, or `{"name": ..., **fields}` when it has fields."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (jax.Array, np.ndarray)):
        if not is_concrete(value):
            return "traced"
        return np.asarray(value).tolist()
    if isinstance(value, (tuple, list)):
        return [render(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): render(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = _fields(value)
        name = short_name(value, registry)
        return {"name": name, **fields} if fields else name
    if callable(value):
        return getattr(value, "__qualname__", type(value).__qualname__)
    return repr(value)


def build_or_none(cls, *args, **kwargs):
    """`cls(*args, **kwargs)`, or None where those settings are refused."""
    try:
        return cls(*args, **kwargs)
    except ValueError:
        return None


def check_eps_setting(eps: Any) -> float:
    """A sampler's end time as a setting: a finite number > 0 (checked against T on call)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise ValueError(f"eps must be a number with 0 < eps < T; got {eps!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must satisfy 0 < eps < T; got {float(eps)}")
    return float(eps)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_optional_steps(name: str, n: Any) -> int | None:
    return None if n is None else check_steps(name, n)
