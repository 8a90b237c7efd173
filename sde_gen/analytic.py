r"""Data with closed-form marginals, scores and flows under any linear SDE.

If `x_0 ~ sum_k w_k N(mu_k, diag(s_k^2))` and `x_t | x_0 ~ N(a(t) x_0, std(t)^2 I)`, then
`p_t = sum_k w_k N(a(t) mu_k, diag(a(t)^2 s_k^2 + std(t)^2))`: the marginal density, its
score and (for one Gaussian) the probability-flow map are exact. This is the oracle that
every numerical routine of sde_gen is tested against, and a debugging tool: swap a network
for `data.score_fn(sde)` and any error left is the sampler's.

For a Gaussian, the probability-flow ODE keeps the standardized coordinate
`(x_t - a(t) mu) / sqrt(a(t)^2 s^2 + std(t)^2)` constant, which gives `Gaussian.flow`.

Shapes: a density has an event shape `dims` (e.g. `(2,)` or `(1, 8, 8)`); `x` is a batch
`(B, *dims)`; `t` is a scalar or `(B,)`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from . import gaussian
from ._checks import check_time, check_x, is_concrete
from .sde import AbstractLinearSDE, batch_broadcast


def _marginal_coeffs(sde: AbstractLinearSDE | None, t: ArrayLike | None, x: Array):
    """Per-example `(a, std^2)` shaped `(B, 1, 1)` to broadcast against `(B, K, D)`."""
    if sde is None:
        return jnp.ones((1, 1, 1), x.dtype), jnp.zeros((1, 1, 1), x.dtype)
    a, std = sde.marginal(jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],)))
    return a.reshape(-1, 1, 1), (std**2).reshape(-1, 1, 1)


class AbstractAnalyticDensity(eqx.Module):
    """A diagonal Gaussian mixture in disguise: every method follows from `components()`."""

    @abc.abstractmethod
    def components(self) -> tuple[Array, Array, Array]:
        """`(weights (K,), means (K, *dims), variances (K, *dims))`."""

    @abc.abstractmethod
    def marginal(self, sde: AbstractLinearSDE, t: float) -> AbstractAnalyticDensity:
        """The density `p_t` of `x_t` when `x_0` follows this density, as the same kind."""

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.components()[1].shape[1:])

    def _component_terms(self, x: Array, sde, t):
        """Per component: log w_k + log N(x; a mu_k, a^2 s_k^2 + std^2), and the scores."""
        x = check_x("x", x)
        weights, means, variances = self.components()
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"x has event shape {tuple(x.shape[1:])}, but this density has {self.event_shape}"
            )
        xf = x.reshape(x.shape[0], 1, -1)  # (B, 1, D)
        a, var_t = _marginal_coeffs(sde, t, x)
        m = a * means.reshape(1, means.shape[0], -1)  # (B, K, D)
        v = a**2 * variances.reshape(1, means.shape[0], -1) + var_t
        diff = xf - m
        log_n = gaussian.diagonal_log_prob(xf, m, v)  # (B, K)
        return jnp.log(weights) + log_n, -diff / v

    def log_prob_t(self, sde: AbstractLinearSDE, x: Float[Array, "batch *dims"], t: ArrayLike):
        """`log p_t(x)` per example, shape `(B,)`, under the linear SDE `sde`."""
        log_terms, _ = self._component_terms(x, sde, t)
        return jax.nn.logsumexp(log_terms, axis=1)

    def score_t(self, sde: AbstractLinearSDE, x: Float[Array, "batch *dims"], t: ArrayLike):
        """`grad_x log p_t(x)`, shaped like x."""
        log_terms, comp_scores = self._component_terms(x, sde, t)
        resp = jax.nn.softmax(log_terms, axis=1)[..., None]  # (B, K, 1)
        return jnp.sum(resp * comp_scores, axis=1).reshape(x.shape)

    def log_responsibilities_t(
        self, sde: AbstractLinearSDE, x: Float[Array, "batch *dims"], t: ArrayLike
    ) -> Float[Array, "batch K"]:
        """`log p_t(k | x)`: the exact noise-conditional classifier when class = component."""
        return jax.nn.log_softmax(self._component_terms(x, sde, t)[0], axis=1)

    def log_prob(self, x: Float[Array, "batch *dims"]) -> Float[Array, " batch"]:
        """Log-density of the data (t = 0 of no SDE) per example."""
        return jax.nn.logsumexp(self._component_terms(x, None, None)[0], axis=1)

    def score(self, x: Float[Array, "batch *dims"]) -> Float[Array, "batch *dims"]:
        """Score of the data density."""
        return self.score_t(None, x, None)

    def responsibilities(self, x: Float[Array, "batch *dims"]) -> Float[Array, "batch K"]:
        """Posterior probability of each component given x (under the data density)."""
        return jax.nn.softmax(self._component_terms(x, None, None)[0], axis=1)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n *dims"]:
        """n independent draws."""
        weights, means, variances = self.components()
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.categorical(k_comp, jnp.log(weights), shape=(n,))
        noise = jax.random.normal(k_noise, (n, *self.event_shape), means.dtype)
        return means[comp] + jnp.sqrt(variances[comp]) * noise

    def score_fn(self, sde: AbstractLinearSDE) -> ExactScore:
        """The exact score of `p_t` under `sde` as a `score_fn(x, t)`."""
        return ExactScore(self, sde)


class ExactScore(eqx.Module):
    """`score_fn(x, t) = grad_x log p_t(x)` of an analytic density under a linear SDE.

    A module (not a closure), so samplers compiled for one instance are reused for another
    of the same structure without recompiling.
    """

    density: AbstractAnalyticDensity | MultivariateGaussian
    sde: AbstractLinearSDE

    def __call__(self, x: Float[Array, "batch *dims"], t: ArrayLike) -> Array:
        return self.density.score_t(self.sde, x, t)


def _as_array(name: str, value: ArrayLike) -> Array:
    arr = jnp.asarray(value, dtype=jnp.result_type(float))
    if is_concrete(arr) and not bool(jnp.all(jnp.isfinite(arr))):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return arr


def _check_positive_array(name: str, arr: Array) -> None:
    if is_concrete(arr) and not bool(jnp.all(arr > 0)):
        raise ValueError(f"{name} must be positive everywhere; got {np.asarray(arr)!r}")


def _positive_like(name: str, value: ArrayLike, target: Array, target_name: str) -> Array:
    """`value` broadcast to `target`'s shape, checked finite and positive."""
    arr = _as_array(name, value)
    try:
        arr = jnp.broadcast_to(arr, target.shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {arr.shape} does not broadcast to {target_name} {target.shape}"
        ) from None
    _check_positive_array(name, arr)
    return arr


class GaussianMixture(AbstractAnalyticDensity):
    """`sum_k w_k N(mu_k, diag(s_k^2))`: means `(K, *dims)`, variances broadcastable to them."""

    weights: Float[Array, " K"]
    means: Float[Array, "K *dims"]
    variances: Float[Array, "K *dims"]

    def __init__(self, means: ArrayLike, variances: ArrayLike, weights: ArrayLike | None = None):
        means = _as_array("means", means)
        if means.ndim < 2:
            raise ValueError(f"means must have shape (K, *dims); got shape {means.shape}")
        variances = _positive_like("variances", variances, means, "means")
        k = means.shape[0]
        weights = jnp.full((k,), 1.0 / k) if weights is None else _as_array("weights", weights)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},) to match means; got {weights.shape}")
        _check_positive_array("weights", weights)
        self.weights = weights / jnp.sum(weights)
        self.means = means
        self.variances = variances

    def components(self):
        return self.weights, self.means, self.variances

    def marginal(self, sde: AbstractLinearSDE, t: float) -> GaussianMixture:
        check_time("t", t, sde.T)
        a, std = sde.marginal(t)
        return GaussianMixture(a * self.means, a**2 * self.variances + std**2, self.weights)


class Gaussian(AbstractAnalyticDensity):
    """`N(mean, diag(variance))` with mean `dims` and a variance broadcastable to it."""

    mean: Float[Array, "*dims"]
    variance: Float[Array, "*dims"]

    def __init__(self, mean: ArrayLike, variance: ArrayLike):
        mean = _as_array("mean", mean)
        if mean.ndim < 1:
            raise ValueError(f"mean must have at least one dimension; got shape {mean.shape}")
        variance = _positive_like("variance", variance, mean, "mean")
        self.mean = mean
        self.variance = variance

    def components(self):
        return jnp.ones((1,), self.mean.dtype), self.mean[None], self.variance[None]

    def marginal(self, sde: AbstractLinearSDE, t: float) -> Gaussian:
        check_time("t", t, sde.T)
        a, std = sde.marginal(t)
        return Gaussian(a * self.mean, a**2 * self.variance + std**2)

    def flow(
        self, sde: AbstractLinearSDE, x: Float[Array, "batch *dims"], s: ArrayLike, t: ArrayLike
    ) -> Float[Array, "batch *dims"]:
        """The exact probability-flow map from time s to time t (either direction)."""
        x = check_x("x", x)
        a_s, std_s = sde.marginal(s)
        a_t, std_t = sde.marginal(t)

        def per_example(c):
            return batch_broadcast(jnp.broadcast_to(c, (x.shape[0],)), x)

        scale_s = jnp.sqrt(per_example(a_s) ** 2 * self.variance + per_example(std_s) ** 2)
        scale_t = jnp.sqrt(per_example(a_t) ** 2 * self.variance + per_example(std_t) ** 2)
        z = (x - per_example(a_s) * self.mean) / scale_s
        return per_example(a_t) * self.mean + scale_t * z


class MultivariateGaussian(eqx.Module):
    """`N(mean, cov)` with a full covariance over vectors `(D,)`: correlated data for which
    conditionals (imputation) are known in closed form. Under a linear SDE,
    `p_t = N(a mean, a^2 cov + std^2 I)`."""

    mean: Float[Array, " D"]
    cov: Float[Array, "D D"]

    def __init__(self, mean: ArrayLike, cov: ArrayLike):
        mean = _as_array("mean", mean)
        cov = _as_array("cov", cov)
        if mean.ndim != 1 or cov.shape != (mean.shape[0],) * 2:
            raise ValueError(
                f"mean must be (D,) and cov (D, D); got shapes {mean.shape} and {cov.shape}"
            )
        if is_concrete(cov):
            c = np.asarray(cov)
            if not (np.allclose(c, c.T) and np.all(np.linalg.eigvalsh(c) > 0)):
                raise ValueError("cov must be symmetric positive definite")
        self.mean, self.cov = mean, cov

    def score_t(self, sde: AbstractLinearSDE, x: Float[Array, "batch D"], t: ArrayLike):
        """`-(a^2 cov + std^2 I)^{-1} (x - a mean)` per example, in cov's eigenbasis."""
        x = check_x("x", x, (x.shape[0], self.mean.shape[0]))
        a, var_t = (c.reshape(-1, 1) for c in _marginal_coeffs(sde, t, x))
        eigvals, q = jnp.linalg.eigh(self.cov)
        z = (x - a * self.mean) @ q
        return -(z / (a**2 * eigvals + var_t)) @ q.T

    def score_fn(self, sde: AbstractLinearSDE) -> ExactScore:
        return ExactScore(self, sde)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n D"]:
        return jax.random.multivariate_normal(key, self.mean, self.cov, (n,))

    def conditional(self, x_known: ArrayLike, known: ArrayLike) -> tuple[Array, Array]:
        """Mean and covariance of the unknown coordinates (`known` False) given x_known's
        values on the known ones: `mu_u + S_uk S_kk^{-1} (x_k - mu_k)`,
        `S_uu - S_uk S_kk^{-1} S_ku`."""
        return gaussian.conditional(self.mean, self.cov, known, x_known)
