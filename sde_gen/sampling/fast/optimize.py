r"""Time grids fitted to a problem: the step locations that minimise a fast solver's error.

For a fixed budget of `num_steps` steps, the grid is parameterized by unconstrained logits
`z` whose softmax gives the positive log-SNR increments spanning `[lambda(T), lambda(eps)]`
(so every `z` is a valid, strictly decreasing grid from T to eps):

    lambda_i = lambda(T) + (lambda(eps) - lambda(T)) sum_{j < i} w_j,
    w = (1 - num_steps delta) softmax(z) + delta,

with a floor `delta` that keeps every step positive. `z` starts at a named grid (the
log-SNR grid: `z = 0`) and is fitted with Adam to the log of the mean squared error of
the solver's output against a high-accuracy solve of the probability-flow ODE (adaptive
Tsit5) from the same prior draws, differentiating through the solver's one scan. This is
the approach of the optimal-step-schedule methods (e.g. Watson et al. 2021, Xue et al. 2024
"Accelerating diffusion sampling with optimized time steps", Sabour et al. 2024 "Align your
steps"), here with the solver's actual error as the objective. Any score function works;
the result is an explicit grid for `sample_fast(..., grid=ts)` and
`FastSampler(grid=ts)`, which `save_grid` and `load_grid` keep with their settings.
"""

from __future__ import annotations

import json
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from ..._checks import check_eps, check_sampling, check_steps
from ...score import ScoreFn
from ...sde import AbstractSDE
from ..ode import ode_flow
from ..predictors import require_linear
from .base import AbstractFastSolver, solve
from .grids import check_rho, time_grid


def grid_from_logits(sde, z: Array, eps: float, floor: float = 1e-3) -> Array:
    """The `len(z) + 1` decreasing times from T to eps whose log-SNR steps are
    `softmax(z)` of the whole range (each at least `floor / len(z)` of it)."""
    n = z.shape[0]
    w = (1.0 - floor) * jax.nn.softmax(z) + floor / n
    lam_T, lam_eps = sde.log_snr(sde.T), sde.log_snr(eps)
    lam = lam_T + (lam_eps - lam_T) * jnp.concatenate([jnp.zeros(1, z.dtype), jnp.cumsum(w)])
    ts = sde.log_snr_inverse(lam)
    return ts.at[0].set(sde.T).at[-1].set(eps)


def logits_from_grid(sde, ts: Array, floor: float = 1e-3) -> Array:
    """The logits `z` (mean zero) of a decreasing grid from T to eps: `grid_from_logits`'s
    inverse, up to the floor."""
    lam = sde.log_snr(ts)
    w = jnp.diff(lam) / (lam[-1] - lam[0])
    n = w.shape[0]
    z = jnp.log(jnp.maximum(w - floor / n, 1e-12 / n))
    return z - jnp.mean(z)


def optimize_grid(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    shape: tuple[int, ...],
    method: str | AbstractFastSolver,
    num_steps: int,
    *,
    eps: float = 1e-3,
    init: str | Array = "logsnr",
    rho: float = 7.0,
    iterations: int = 300,
    learning_rate: float = 0.05,
    reference_tol: float = 1e-5,
    x_init: Array | None = None,
) -> Array:
    """A grid of `num_steps + 1` times from T to eps fitted to `method` on this problem.

    Draws `shape` from the prior (or takes `x_init`, at T), solves the PF-ODE to eps
    accurately (Tsit5, `rtol = atol = reference_tol`) for the reference, and fits the
    log-SNR increments of the grid by Adam to the log of the mean squared error of
    `method`'s output (no final denoising) against it. Returns the iterate with the
    lowest error seen, pinned to `T` and `eps` exactly.

    Args:
        key: the prior draws to fit on. Check the grid on other draws (a new key).
        sde: an `AbstractLinearSDE`.
        score_fn: `score_fn(x, t)`, any score function (traced through by `jax.grad`).
        shape: `(B, *dims)`: a few hundred samples are enough for the few parameters.
        method: a name in `FAST_SOLVERS` or an `AbstractFastSolver`; its "auto" settings
            are those of an explicit grid, as `sample_fast` will use them.
        num_steps: steps of the grid (NFE = `evals_per_step * num_steps`).
        eps: the last time.
        init: the starting grid, a name in `GRIDS` (with `rho`) or an array of times.
        iterations, learning_rate: Adam's.
        reference_tol: the tolerance of the reference solve.
        x_init: start points at T instead of prior draws.

    Returns:
        The times, shaped `(num_steps + 1,)`, in the dtype of the draws.
    """
    # Deferred: the registry lives in the package that imports this module.
    from . import get_fast_solver

    sde = require_linear(sde, "optimize_grid")
    num_steps = check_steps("num_steps", num_steps)
    iterations = check_steps("iterations", iterations)
    check_eps(eps, sde.T)
    check_rho(rho)
    solver = get_fast_solver(method).for_grid("explicit")
    shape, x_init = check_sampling(sde, score_fn, shape, eps, x_init)
    init_key, solve_key = jax.random.split(key)
    x = sde.prior_sample(init_key, shape) if x_init is None else jnp.asarray(x_init)
    ts0 = time_grid(sde, num_steps, init, eps, rho) if isinstance(init, str) else init
    ts0 = jnp.asarray(ts0, x.dtype)
    if ts0.shape != (num_steps + 1,):
        raise ValueError(f"init must have num_steps + 1 = {num_steps + 1} times; got {ts0.shape}")
    reference, _ = ode_flow(sde, score_fn, x, sde.T, eps, rtol=reference_tol, atol=reference_tol)
    z = logits_from_grid(sde, ts0).astype(x.dtype)
    z = _fit(solver, solve_key, sde, score_fn, x, reference, z, eps, iterations,
             learning_rate)  # fmt: skip
    return grid_from_logits(sde, z, eps)


@eqx.filter_jit
def _fit(solver, key, sde, score_fn, x, reference, z, eps, iterations, learning_rate):
    optimizer = optax.adam(learning_rate)

    def loss(z):
        y = solve(solver, key, sde, score_fn, x, grid_from_logits(sde, z, eps))
        return jnp.log(jnp.mean((y - reference) ** 2))

    def update(carry, _):
        z, state, best_loss, best_z = carry
        value, grad = jax.value_and_grad(loss)(z)
        # A step that made the error non-finite is not taken (nor counted as best).
        ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))
        grad = jnp.where(ok, grad, 0.0)
        better = ok & (value < best_loss)
        best_loss, best_z = jnp.where(better, value, best_loss), jnp.where(better, z, best_z)
        updates, state = optimizer.update(grad, state)
        return (optax.apply_updates(z, updates), state, best_loss, best_z), None

    carry = (z, optimizer.init(z), jnp.asarray(jnp.inf, z.dtype), z)
    (z, _, best_loss, best_z), _ = jax.lax.scan(update, carry, None, length=iterations)
    # The last iterate, whose loss the scan did not evaluate, may be the best.
    return jnp.where(loss(z) < best_loss, z, best_z)


def save_grid(path: str | os.PathLike, grid: Array, **settings) -> None:
    """Write `grid` to `path` (.npy) and `settings` (JSON-able: method, num_steps, eps,
    the problem) beside it, to `path` with `.json` in place of `.npy`."""
    path = os.fspath(path)
    if not path.endswith(".npy"):
        raise ValueError(f"a grid is saved as .npy; got {path!r}")
    grid = np.asarray(grid)
    np.save(path, grid)
    meta = {"num_steps": int(grid.shape[0] - 1), "times": grid.tolist(), **settings}
    with open(path[: -len(".npy")] + ".json", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def load_grid(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """`(grid, settings)` as `save_grid` wrote them (the settings empty without the .json)."""
    path = os.fspath(path)
    grid = np.load(path)
    meta_path = path[: -len(".npy")] + ".json"
    settings = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            settings = json.load(f)
        settings.pop("times", None)
    return grid, settings


__all__ = ["grid_from_logits", "load_grid", "logits_from_grid", "optimize_grid", "save_grid"]
