"""Closed-form and statistical oracles for the tests.

- `moment_ode_marginal`: `a(t)` and `std(t)` of a linear SDE from its moment ODEs
  `da/dt = f(t) a`, `dv/dt = 2 f(t) v + g(t)^2`, integrated by diffrax in float64.
- `assert_mixture_samples`: samples against a Gaussian mixture, component by component,
  with tolerances derived from the sample size (z standard errors).
- `count_compiles`: how many XLA compilations a block triggers.
- `count_score_evaluations`: how many times a score function is really evaluated.
- `ConstantBetaVP`, `CosineVP`: linear SDEs defined as a user would, by coefficients only.
"""

from __future__ import annotations

import contextlib

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import sde_gen as sg


def moment_ode_marginal(sde: sg.AbstractLinearSDE, ts: np.ndarray, v0: float = 0.0):
    """`(a(ts), std(ts))` by integrating the moment ODEs from `a(0) = 1`, `v(0) = v0`."""
    with jax.enable_x64(True):

        def field(t, y, args):
            a, v = y
            f = sde.drift_coeff(t)
            return f * a, 2 * f * v + sde.diffusion(t) ** 2

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Dopri8(),
            0.0,
            float(ts[-1]),
            None,
            (jnp.float64(1.0), jnp.float64(v0)),
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
            saveat=diffrax.SaveAt(ts=jnp.asarray(ts, jnp.float64)),
            max_steps=100_000,
        )
        a, v = sol.ys
        return np.asarray(a), np.sqrt(np.asarray(v))


class ConstantBetaVP(sg.AbstractLinearSDE):
    """A user's SDE: only the coefficients; the marginal comes from quadrature."""

    beta: float = 4.0
    T: float = 1.0

    def drift_coeff(self, t):
        return -0.5 * self.beta * jnp.ones_like(jnp.asarray(t, jnp.float32))

    def diffusion(self, t):
        return jnp.sqrt(self.beta) * jnp.ones_like(jnp.asarray(t, jnp.float32))


class CosineVP(sg.AbstractLinearSDE):
    """A user's SDE with a non-polynomial schedule (no closed form supplied)."""

    T: float = 1.0

    def drift_coeff(self, t):
        return -0.5 * self._beta(t)

    def diffusion(self, t):
        return jnp.sqrt(self._beta(t))

    def _beta(self, t):
        return 0.5 + 8.0 * jnp.sin(0.5 * jnp.pi * jnp.asarray(t)) ** 2


def mixture_2d() -> sg.GaussianMixture:
    """Three well-separated 2-D components of different weights and shapes."""
    return sg.GaussianMixture(
        means=[[-3.0, -1.0], [3.0, -1.0], [0.0, 3.0]],
        variances=[[0.25, 0.16], [0.16, 0.36], [0.36, 0.25]],
        weights=[0.5, 0.3, 0.2],
    )


def _labels(samples, mixture):
    """Each sample's most likely component (the components are far apart)."""
    samples = np.asarray(samples, np.float64)
    assert np.all(np.isfinite(samples)), "samples contain non-finite values"
    return samples, np.argmax(np.asarray(mixture.responsibilities(jnp.asarray(samples))), axis=1)


def assert_mixture_weights(samples, mixture: sg.GaussianMixture, z: float = 4.5):
    """The share of samples nearest each component is its weight, within z binomial s.e."""
    samples, labels = _labels(samples, mixture)
    weights = np.asarray(mixture.components()[0], np.float64)
    n = len(samples)
    for k, w in enumerate(weights):
        w_hat = np.mean(labels == k)
        w_se = np.sqrt(w * (1 - w) / n)
        assert abs(w_hat - w) <= z * w_se, (
            f"component {k}: weight {w_hat:.4f} vs {w:.4f} (tolerance {z * w_se:.4f})"
        )
    return samples, labels


def assert_mixture_samples(samples, mixture: sg.GaussianMixture, z: float = 4.5, bias: float = 0.0):
    """Component weights, means and variances of `samples` match `mixture`.

    Each sample is assigned to its most likely component (the components are far apart, so
    misassignment is negligible). Tolerances are z standard errors: binomial for weights,
    `sqrt(var / n_k)` for means, `var sqrt(2 / (n_k - 1))` for variances; `bias` allows
    for a known discretization error of the sampler in means and variances.
    """
    samples, labels = assert_mixture_weights(samples, mixture, z)
    _, means, variances = (np.asarray(a, np.float64) for a in mixture.components())
    for k in range(len(means)):
        members = samples[labels == k]
        n_k = len(members)
        mean_hat = members.mean(axis=0)
        mean_tol = z * np.sqrt(variances[k] / n_k) + bias
        assert np.all(np.abs(mean_hat - means[k]) <= mean_tol), (
            f"component {k}: mean {mean_hat} vs {means[k]} (tolerance {mean_tol})"
        )
        var_hat = members.var(axis=0, ddof=1)
        var_tol = z * variances[k] * np.sqrt(2 / (n_k - 1)) + bias
        assert np.all(np.abs(var_hat - variances[k]) <= var_tol), (
            f"component {k}: variance {var_hat} vs {variances[k]} (tolerance {var_tol})"
        )


@contextlib.contextmanager
def count_compiles():
    """Yields a list whose length is the number of XLA compilations inside the block."""
    events: list[str] = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


class _Counter:
    """Hashable by identity, so it can sit in a static field."""

    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1


class CountingScore(eqx.Module):
    """Wraps a score function and reports every real evaluation to the host (tests only)."""

    inner: sg.ScoreFn
    counter: _Counter = eqx.field(static=True)

    def __call__(self, x, t):
        jax.debug.callback(self.counter.tick)
        return self.inner(x, t)


def count_score_evaluations(run, score_fn) -> int:
    """Calls `run(counting_score_fn)` and returns how many times the score was evaluated."""
    counter = _Counter()
    result = run(CountingScore(score_fn, counter))
    jax.block_until_ready(result)
    jax.effects_barrier()
    return counter.n
