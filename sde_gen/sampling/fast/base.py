r"""The interface of the fast solvers: explicit state, `init`, `step`, one scan outside.

A solver maps `x` at `ts[0]` along the probability-flow ODE to `ts[-1]` on a decreasing
grid `ts` of `num_steps + 1` times, in the way of diffrax's `AbstractSolver`:

    state = solver.init(sde, score_fn, x, ts)
    inputs = solver.step_inputs(key, sde, ts)          # a pytree, leading axis num_steps
    for i in range(num_steps - 1):
        state = solver.step(sde, score_fn, state, inputs[i])
    x = solver.final_step(sde, score_fn, state, inputs[-1])

`sample_fast` runs the loop as one `jax.lax.scan`. The state holds everything a step
carries (a multistep method's history of model outputs); per-step randomness (DDIM's noise)
comes in as a step input. Each solver declares its `order`, its `evals_per_step` and its
default `denoise` as properties.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
from jaxtyping import Array, PRNGKeyArray, PyTree

from ...score import ScoreFn
from ...sde import AbstractLinearSDE, batch_broadcast, batch_times
from ..base import tweedie


def noise_prediction(sde: AbstractLinearSDE, score_fn: ScoreFn, x: Array, t: Array) -> Array:
    """`eps(x, t) = -std(t) score(x, t)`, the noise a network in "noise" mode predicts."""
    return -batch_broadcast(sde.marginal(t)[1], x) * score_fn(x, batch_times(t, x))


class StepInputs(eqx.Module):
    """What step i takes besides the state: its key and its times `u = ts[i] > t = ts[i+1]`
    (arrays with a leading step axis when stacked for the scan)."""

    key: PRNGKeyArray
    u: Array
    t: Array


class State(eqx.Module):
    """The state of a one-step solver: the current `x`."""

    x: Array


class AbstractFastSolver(eqx.Module):
    """A fixed-grid solver of the probability-flow ODE of an `AbstractLinearSDE`.

    Subclasses give the properties `order` (of the global error on smooth problems) and
    `evals_per_step` (score evaluations per step), and `init` and `step`; `final_step`
    (when the last step differs), `step_inputs` (when a step needs more than its key and
    times), `denoise` (True when the method ends with the Tweedie step by default),
    `final_denoise` and `for_grid` (settings chosen per time grid) have defaults.
    """

    @property
    @abc.abstractmethod
    def order(self) -> int:
        """Order of convergence of the global error in the step size."""

    @property
    @abc.abstractmethod
    def evals_per_step(self) -> int:
        """Score evaluations per step."""

    @property
    def denoise(self) -> bool:
        """Whether sampling ends with `final_denoise` by default."""
        return False

    def for_grid(self, grid: str) -> AbstractFastSolver:
        """This solver with the settings it leaves to the grid ("auto") chosen for `grid`, a
        name in `GRIDS` or "explicit" (default: itself)."""
        return self

    def nfe(self, num_steps: int) -> int:
        """Score evaluations of `num_steps` steps (without the final denoising)."""
        return self.evals_per_step * num_steps

    @abc.abstractmethod
    def init(self, sde: AbstractLinearSDE, score_fn: ScoreFn, x: Array, ts: Array) -> PyTree:
        """The state at `ts[0]` from `x` there."""

    @abc.abstractmethod
    def step(
        self, sde: AbstractLinearSDE, score_fn: ScoreFn, state: PyTree, inputs: PyTree
    ) -> PyTree:
        """One step from `inputs.u` to `inputs.t`."""

    def step_inputs(self, key: PRNGKeyArray, sde: AbstractLinearSDE, ts: Array) -> PyTree:
        """The inputs of all `len(ts) - 1` steps, stacked along a leading axis."""
        return StepInputs(jax.random.split(key, len(ts) - 1), ts[:-1], ts[1:])

    def final_step(
        self, sde: AbstractLinearSDE, score_fn: ScoreFn, state: PyTree, inputs: PyTree
    ) -> Array:
        """The last step, returning x at `ts[-1]` (default: `step`, then its `x`)."""
        return self.step(sde, score_fn, state, inputs).x

    def final_denoise(self, sde: AbstractLinearSDE, score_fn: ScoreFn, x: Array, t: Array):
        """The final Tweedie step `x0(x, t)`."""
        return tweedie(sde, score_fn, x, t)


def solve(
    solver: AbstractFastSolver,
    key: PRNGKeyArray,
    sde: AbstractLinearSDE,
    score_fn: ScoreFn,
    x: Array,
    ts: Array,
) -> Array:
    """Map `x` at `ts[0]` to `ts[-1]`: `init`, one `lax.scan` of `step`, `final_step`."""
    inputs = solver.step_inputs(key, sde, ts)
    body = jax.tree_util.tree_map(lambda leaf: leaf[:-1], inputs)
    last = jax.tree_util.tree_map(lambda leaf: leaf[-1], inputs)
    state = solver.init(sde, score_fn, x, ts)
    state, _ = jax.lax.scan(lambda s, i: (solver.step(sde, score_fn, s, i), None), state, body)
    return solver.final_step(sde, score_fn, state, last)
