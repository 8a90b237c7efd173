r"""The forward chains of the 2015 diffusion probabilistic models and their bound K.

**Gaussian chain** (`GaussianChain`): `q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)`,
t = 1 .. T. With `abar_t = prod_{s <= t} (1 - beta_s)`:
`q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)` and
`q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, btilde_t I)`,
`btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)`.

**Binomial chain** (`BinomialChain`) for binary data: `q(x_t = 1 | x_{t-1}) =
x_{t-1} (1 - beta_t) + beta_t / 2`, so `q(x_t = 1 | x_0) = x_0 abar_t + (1 - abar_t) / 2`.

**Reverse chain**: `p(x_T)` the chain's stationary prior (N(0, I), or Bernoulli(1/2)) and
`p(x_{t-1} | x_t)` given by a function `reverse(x_t, t)` of the batch and the steps
`t (B,)` (ints in 1 .. T) returning the step's *kernel* in the chain's form: `(mean, var)`
of a diagonal Gaussian for the Gaussian chain (the paper's parameterization; `var` may
also hold full covariances `(1 or B, D, D)`, as the exact kernels of correlated data do),
or the probabilities `(B, D)` of `x_{t-1} = 1` for the binomial chain. Every method that
depends on that form is declared by `AbstractChain` and implemented by each chain; the
bound and ancestral sampling are written once, in the base.

**The bound** on the log-likelihood, in nats per example (the paper's eq. 14, with the
first step and the prior written out rather than approximated by their entropies):

    K = E_q[log p(x_0 | x_1)] - sum_{t=2}^T E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
        - E_q KL(q(x_T | x_0) || p(x_T))  <=  log p(x_0),

with analytic KLs; the sum over t is exact or estimated from `num_t` draws of t. `K` equals
`log q(x_0) - KL(q(x_T) || p(x_T))` when the true reverse kernels are plugged in.

**Entropy bounds** on each reverse step (any data): `H_q(X_t | X_{t-1}) + H_q(X_{t-1} | X_0)
- H_q(X_t | X_0) <= H_q(X_{t-1} | X_t) <= H_q(X_t | X_{t-1})`; for the Gaussian chain they
are the entropies of `N(., btilde_t I)` and `N(., beta_t I)`.

Vectors only: data is `(B, D)`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._checks import check_steps, check_x, is_concrete
from ..gaussian import diagonal_log_prob

Kernel = Any  # a reverse step in its chain's form: (mean, var), or probabilities of 1
Reverse = Callable[[Array, Array], Kernel]
# condition(key, kernel, t) -> kernel: a factor multiplied into each reverse step (see
# `sde_gen.dpm2015.conditioning`); the same signature for every chain.
Condition = Callable[[PRNGKeyArray, Kernel, Array], Kernel]
LOG_2PI_E = math.log(2 * math.pi * math.e)


def _check_betas(betas: ArrayLike, upper: float) -> Array:
    betas = jnp.asarray(betas, jnp.float32)
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a vector of T >= 2 values; got shape {betas.shape}")
    if is_concrete(betas) and not np.all((np.asarray(betas) > 0) & (np.asarray(betas) < upper)):
        raise ValueError(f"every beta_t must lie in (0, {upper}); got {np.asarray(betas)}")
    return betas


def linear_betas(num_steps: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> np.ndarray:
    """`num_steps` betas linear from `beta_1` to `beta_T` (DDPM's schedule), float32."""
    check_steps("num_steps", num_steps)
    return np.linspace(beta_1, beta_T, num_steps, dtype=np.float32)


def sohl_dickstein_betas(
    num_steps: int, beta_1: float = 1e-4, beta_T: float | None = None
) -> np.ndarray:
    """The 2015 paper's fixed schedule: `beta_t = 1 / (T - t + 1)` for the binomial chain
    (so that `abar_T = 0`: the chain ends at its prior exactly) with the first step set to
    `beta_1`; pass `beta_T` to clip the last ones below it."""
    check_steps("num_steps", num_steps)
    t = np.arange(1, num_steps + 1)
    betas = 1.0 / (num_steps - t + 1.0)
    betas[0] = beta_1
    if beta_T is not None:
        betas = np.minimum(betas, beta_T)
    return betas.astype(np.float32)


def steps(t: ArrayLike, batch: int) -> Int[Array, " B"]:
    """Steps `t` (scalar or `(B,)`) as one int per example."""
    return jnp.broadcast_to(jnp.asarray(t, jnp.int32), (batch,))


def _gather(table: Array, t: Array) -> Array:
    return table[t][:, None]  # (B, 1): broadcasts over the data dimension


class AbstractChain(eqx.Module):
    """A discrete forward chain with `betas` `(T,)`, its reverse kernels' form, and the bound.

    Subclasses implement the abstract methods, each for the chain's kernel form; `bound`,
    `step_kl`, `decoder` and `sample` follow from them.
    """

    betas: Float[Array, " T"]

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha_bar(self) -> Float[Array, " T+1"]:
        """`abar_t` for t = 0 .. T (`abar_0 = 1`)."""
        return jnp.concatenate([jnp.ones((1,)), jnp.cumprod(1.0 - self.betas)])

    def beta(self, t: ArrayLike) -> Array:
        """`beta_t`, with `beta_0 = 0`, shaped like t."""
        return jnp.concatenate([jnp.zeros((1,)), self.betas])[t]

    # --- the forward chain --------------------------------------------------------------

    @abc.abstractmethod
    def sample_marginal(self, key: PRNGKeyArray, x0: Float[Array, "B D"], t: ArrayLike) -> Array:
        """A draw of `x_t ~ q(x_t | x_0)` for steps `t` (scalar or `(B,)`; t = 0: x_0)."""

    @abc.abstractmethod
    def posterior(self, x0: Array, xt: Array, t: ArrayLike) -> Kernel:
        """`q(x_{t-1} | x_t, x_0)` for steps t >= 1, as a kernel of this chain's form."""

    @abc.abstractmethod
    def entropy_bounds(self, t: ArrayLike, dim: int) -> tuple[Array, Array]:
        """Lower and upper bound on `H_q(X_{t-1} | X_t)` in nats for D dimensions, t >= 2."""

    @abc.abstractmethod
    def prior_kl(self, x0: Float[Array, "B D"]) -> Float[Array, " B"]:
        """`KL(q(x_T | x_0) || p(x_T))` per example."""

    @abc.abstractmethod
    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, int]) -> Array:
        """A batch `x_T ~ p(x_T)`, the chain's stationary prior."""

    # --- kernels of this chain's form ---------------------------------------------------

    @abc.abstractmethod
    def kernel_kl(self, q: Kernel, p: Kernel) -> Float[Array, " B"]:
        """`KL(q || p)` per example between two kernels (the bound's per-step term)."""

    @abc.abstractmethod
    def kernel_log_prob(self, x: Float[Array, "B D"], p: Kernel) -> Float[Array, " B"]:
        """`log p(x)` per example under a kernel (the bound's decoder term at t = 1)."""

    @abc.abstractmethod
    def kernel_sample(self, key: PRNGKeyArray, p: Kernel) -> Array:
        """A draw `(B, D)` from a kernel (one ancestral step)."""

    @abc.abstractmethod
    def kernel_entropy(self, p: Kernel) -> Float[Array, " B"]:
        """The entropy of a kernel in nats, per example."""

    @classmethod
    @abc.abstractmethod
    def network_outputs(cls, dim: int) -> int:
        """How many outputs per example a network needs for a kernel over D dimensions."""

    @abc.abstractmethod
    def kernel_from_network(self, out: Array, xt: Array, t: Int[Array, " B"]) -> Kernel:
        """The reverse kernel read from a network's raw outputs `(B, network_outputs(D))`
        at `(x_t, t)` (see `sde_gen.dpm2015.net`)."""

    # --- the bound and sampling, written once -------------------------------------------

    def _check(self, x0: Array) -> Array:
        x0 = check_x("x0", x0)
        if x0.ndim != 2:
            raise ValueError(f"the chains take vectors (B, D); got shape {x0.shape}: flatten first")
        return x0

    def step_kl(self, key: PRNGKeyArray, x0: Array, t: Array, reverse: Reverse) -> Array:
        """`KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` per example at one draw of x_t."""
        xt = self.sample_marginal(key, x0, t)
        return self.kernel_kl(self.posterior(x0, xt, t), reverse(xt, t))

    def decoder(self, key: PRNGKeyArray, x0: Array, reverse: Reverse) -> Array:
        """`log p(x_0 | x_1)` per example at one draw of x_1."""
        t = steps(1, x0.shape[0])
        return self.kernel_log_prob(x0, reverse(self.sample_marginal(key, x0, t), t))

    def _kl_sum(self, key, x0, reverse, num_t):
        """`sum_{t=2}^T E KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` per example: exact
        over t, or `(T - 1)` times the mean of `num_t` uniform draws of t."""
        b, big_t = x0.shape[0], self.num_steps
        if num_t is None:
            ts = jnp.arange(2, big_t + 1)
            keys = jax.random.split(key, big_t - 1)
            kls = jax.lax.map(lambda a: self.step_kl(a[0], x0, steps(a[1], b), reverse), (keys, ts))
            return jnp.sum(kls, axis=0)
        num_t = check_steps("num_t", num_t)
        t_key, x_key = jax.random.split(key)
        ts = jax.random.randint(t_key, (num_t, b), 2, big_t + 1)
        keys = jax.random.split(x_key, num_t)
        kls = jax.lax.map(lambda a: self.step_kl(a[0], x0, a[1], reverse), (keys, ts))
        return (big_t - 1) * jnp.mean(kls, axis=0)

    def bound(
        self, key: PRNGKeyArray, reverse: Reverse, x0: Float[Array, "B D"], num_t: int | None = None
    ) -> dict[str, Array]:
        """The bound K and its terms, per example, in nats: `{"K", "decoder"
        (E log p(x_0 | x_1)), "kl" (the sum over t = 2 .. T), "prior" (E KL(q(x_T | x_0) ||
        p(x_T)))}`. One draw of `x_t` per step and example; `num_t` None sums every step,
        an int estimates the sum from that many draws of t (unbiased)."""
        x0 = self._check(x0)
        k1, k2 = jax.random.split(key)
        decoder = self.decoder(k1, x0, reverse)
        kl = self._kl_sum(k2, x0, reverse, num_t)
        prior = self.prior_kl(x0)
        return {"K": decoder - kl - prior, "decoder": decoder, "kl": kl, "prior": prior}

    def sample(
        self,
        key: PRNGKeyArray,
        reverse: Reverse,
        shape: tuple[int, int],
        perturb: Condition | None = None,
        trajectory: bool = False,
    ) -> Array:
        """Ancestral samples `(B, D)` of the reverse chain from `x_T ~ p(x_T)`; with
        `trajectory` all states `(T + 1, B, D)`, x_T first. `perturb(key, kernel, t) ->
        kernel` multiplies each reverse step by a factor (`inpaint_factor`,
        `gaussian_factor`), `t` the steps `(B,)`."""
        init_key, key = jax.random.split(key)
        x = self.prior_sample(init_key, shape)

        def step(x, inputs):
            k, t = inputs
            tb = steps(t, shape[0])
            kernel = reverse(x, tb)
            if perturb is not None:
                k, factor_key = jax.random.split(k)
                kernel = perturb(factor_key, kernel, tb)
            x = self.kernel_sample(k, kernel)
            return x, x

        keys = jax.random.split(key, self.num_steps)
        ts = jnp.arange(self.num_steps, 0, -1)
        x_last, xs = jax.lax.scan(step, x, (keys, ts))
        return jnp.concatenate([x[None], xs]) if trajectory else x_last


class GaussianChain(AbstractChain):
    """The Gaussian diffusion chain with `betas` `(T,)`; see the module docstring. Kernels
    are `(mean, var)`: `var` broadcastable to `(B, D)`, or covariances `(1 or B, D, D)`."""

    def __init__(self, betas: ArrayLike):
        self.betas = _check_betas(betas, 1.0)

    def marginal(self, t: Int[ArrayLike, " B"]) -> tuple[Array, Array]:
        """`(sqrt(abar_t), 1 - abar_t)`: mean coefficient and variance of `q(x_t | x_0)`."""
        abar = self.alpha_bar[jnp.asarray(t)]
        return jnp.sqrt(abar), 1.0 - abar

    def sample_marginal(self, key, x0, t):
        t = steps(t, x0.shape[0])
        c, v = (a[:, None] for a in self.marginal(t))
        return c * x0 + jnp.sqrt(v) * jax.random.normal(key, x0.shape, x0.dtype)

    def forward_trajectory(self, key: PRNGKeyArray, x0: Float[Array, "B D"]) -> Array:
        """`(T + 1, B, D)`: x_0 and every state of one run of the forward chain."""

        def step(x, inputs):
            k, beta = inputs
            x = jnp.sqrt(1 - beta) * x + jnp.sqrt(beta) * jax.random.normal(k, x.shape, x.dtype)
            return x, x

        keys = jax.random.split(key, self.num_steps)
        _, xs = jax.lax.scan(step, x0, (keys, self.betas))
        return jnp.concatenate([x0[None], xs])

    def posterior(self, x0, xt, t):
        """Mean and variance `btilde_t` of `q(x_{t-1} | x_t, x_0)` for steps t >= 1 (at t = 1
        the variance is 0: x_0 itself)."""
        t = steps(t, x0.shape[0])
        abar, beta = self.alpha_bar, self.beta(t)[:, None]
        ab_t, ab_prev = _gather(abar, t), _gather(abar, t - 1)
        mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1 - beta) * (1 - ab_prev) * xt) / (
            1 - ab_t
        )
        return mean, beta * (1 - ab_prev) / (1 - ab_t)

    def entropy_bounds(self, t, dim):
        """The entropies of `N(., btilde_t I)` and `N(., beta_t I)` in D dimensions."""
        t = jnp.asarray(t)
        abar, beta = self.alpha_bar, self.beta(t)
        btilde = beta * (1 - abar[t - 1]) / (1 - abar[t])
        return 0.5 * dim * (LOG_2PI_E + jnp.log(btilde)), 0.5 * dim * (LOG_2PI_E + jnp.log(beta))

    def prior_kl(self, x0):
        c, v = self.marginal(self.num_steps)
        # KL(N(c x0, v I) || N(0, I)) summed over dimensions
        return 0.5 * jnp.sum(v + (c * x0) ** 2 - 1.0 - jnp.log(v), axis=-1)

    def prior_sample(self, key, shape):
        return jax.random.normal(key, shape)

    def kernel_kl(self, q, p):
        """KL(N(q_mean, diag q_var) || N(p_mean, p_var)) per example, p_var diagonal or full."""
        (q_mean, q_var), (p_mean, p_var) = q, p
        q_var = jnp.broadcast_to(q_var, q_mean.shape)
        diff = q_mean - p_mean
        if is_full_covariance(p_mean, p_var):
            inv = jnp.linalg.inv(p_var)
            _, logdet_p = jnp.linalg.slogdet(p_var)
            trace = jnp.sum(q_var * jnp.diagonal(inv, axis1=-2, axis2=-1), -1)
            inv = jnp.broadcast_to(inv, (diff.shape[0], *inv.shape[-2:]))
            maha = jnp.einsum("bi,bij,bj->b", diff, inv, diff)
            d = q_mean.shape[-1]
            return 0.5 * (trace + maha - d + logdet_p - jnp.sum(jnp.log(q_var), -1))
        p_var = jnp.broadcast_to(p_var, q_mean.shape)
        return 0.5 * jnp.sum(jnp.log(p_var / q_var) + (q_var + diff**2) / p_var - 1.0, axis=-1)

    def kernel_log_prob(self, x, p):
        mean, var = p
        if is_full_covariance(mean, var):
            chol = _cholesky(var)
            z = jax.scipy.linalg.solve_triangular(chol, (x - mean)[..., None], lower=True)[..., 0]
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
            return -0.5 * (jnp.sum(z**2, -1) + logdet + x.shape[-1] * math.log(2 * math.pi))
        return diagonal_log_prob(x, mean, var)

    def kernel_sample(self, key, p):
        mean, var = p
        z = jax.random.normal(key, mean.shape, mean.dtype)
        if is_full_covariance(mean, var):
            x = mean + jnp.einsum("...ij,...j->...i", _cholesky(var), z)
            fixed = jnp.diagonal(var, axis1=-2, axis2=-1) == 0  # conditioned-on dimensions
            return jnp.where(fixed, mean, x)
        return mean + jnp.sqrt(var) * z

    def kernel_entropy(self, p):
        mean, var = p
        if is_full_covariance(mean, var):
            logdet = jnp.linalg.slogdet(var)[1]
            return jnp.broadcast_to(0.5 * (mean.shape[-1] * LOG_2PI_E + logdet), mean.shape[:1])
        return 0.5 * jnp.sum(LOG_2PI_E + jnp.log(jnp.broadcast_to(var, mean.shape)), -1)

    @classmethod
    def network_outputs(cls, dim):
        return 2 * dim  # a noise prediction and a variance interpolation per dimension

    def kernel_from_network(self, out, xt, t):
        """The paper's Gaussian step: the mean from a noise prediction `eps`,
        `mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(1 - beta_t)`, and the variance
        interpolated in log space between the entropy bounds, `btilde_t^(1 - v) beta_t^v`,
        `v = sigmoid(.)` per dimension (btilde_1 = 0 is replaced by btilde_2)."""
        dim = xt.shape[-1]
        abar = self.alpha_bar
        beta_all = jnp.concatenate([jnp.zeros((1,)), self.betas])
        btilde = beta_all[1:] * (1 - abar[:-1]) / (1 - abar[1:])
        btilde = jnp.concatenate([jnp.zeros((1,)), btilde.at[0].set(btilde[1])])  # clip t = 1
        eps, v = out[:, :dim], jax.nn.sigmoid(out[:, dim:])
        beta, ab = beta_all[t][:, None], abar[t][:, None]
        mean = (xt - beta / jnp.sqrt(1 - ab) * eps) / jnp.sqrt(1 - beta)
        log_var = v * jnp.log(beta) + (1 - v) * jnp.log(btilde[t][:, None])
        return mean, jnp.exp(log_var)


def is_full_covariance(mean: Array, var: Array) -> bool:
    """Whether a Gaussian kernel holds covariances `(1 or B, D, D)` rather than variances
    broadcastable to `(B, D)`."""
    return var.ndim == mean.ndim + 1


def _cholesky(cov):
    eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return jnp.linalg.cholesky(cov + 1e-9 * eye)  # jitter: degenerate (clamped) dimensions


def _binary_entropy(p):
    return -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))


def _clip_prob(p):
    return jnp.clip(p, 1e-7, 1 - 1e-7)


class BinomialChain(AbstractChain):
    """Binomial diffusion of binary vectors with `betas` `(T,)` in (0, 1]; see the module
    docstring. Kernels are the probabilities `(B, D)` of `x_{t-1} = 1`."""

    def __init__(self, betas: ArrayLike):
        self.betas = _check_betas(betas, 1.0 + 1e-6)

    def marginal_prob(self, x0: Array, t: ArrayLike) -> Array:
        """`q(x_t = 1 | x_0) = x_0 abar_t + (1 - abar_t) / 2`."""
        ab = _gather(self.alpha_bar, steps(t, x0.shape[0]))
        return x0 * ab + (1 - ab) / 2

    def sample_marginal(self, key, x0, t):
        return jax.random.bernoulli(key, self.marginal_prob(x0, t)).astype(x0.dtype)

    def posterior_prob(self, x0: Array, xt: Array, t: ArrayLike) -> Array:
        """`q(x_{t-1} = 1 | x_t, x_0)` by Bayes' rule, for steps t >= 1."""
        t = steps(t, x0.shape[0])
        beta = self.beta(t)[:, None]
        # q(x_t | x_{t-1} = prev) for the observed x_t
        step = lambda prev: prev * (1 - beta) + beta / 2
        likelihood = lambda prev: jnp.where(xt == 1, step(prev), 1 - step(prev))
        prior_one = self.marginal_prob(x0, t - 1)
        one = likelihood(1.0) * prior_one
        zero = likelihood(0.0) * (1 - prior_one)
        return one / (one + zero)

    def posterior(self, x0, xt, t):
        return self.posterior_prob(x0, xt, t)

    def entropy_bounds(self, t, dim):
        """The same for every binary data distribution."""
        t = jnp.asarray(t)
        abar, beta = self.alpha_bar, self.beta(t)
        forward = _binary_entropy(beta / 2)
        lower = forward + _binary_entropy((1 - abar[t - 1]) / 2) - _binary_entropy((1 - abar[t]) / 2)
        return dim * lower, dim * forward

    def prior_kl(self, x0):
        return self.kernel_kl(self.marginal_prob(x0, self.num_steps), jnp.full_like(x0, 0.5))

    def prior_sample(self, key, shape):
        return jax.random.bernoulli(key, 0.5, shape).astype(jnp.float32)

    def kernel_kl(self, q, p):
        q, p = _clip_prob(q), _clip_prob(p)
        return jnp.sum(q * jnp.log(q / p) + (1 - q) * jnp.log((1 - q) / (1 - p)), axis=-1)

    def kernel_log_prob(self, x, p):
        p = _clip_prob(p)
        return jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log1p(-p), axis=-1)

    def kernel_sample(self, key, p):
        return jax.random.bernoulli(key, p).astype(jnp.float32)

    def kernel_entropy(self, p):
        return jnp.sum(_binary_entropy(_clip_prob(p)), axis=-1)

    @classmethod
    def network_outputs(cls, dim):
        return dim  # a logit per dimension

    def kernel_from_network(self, out, xt, t):
        return jax.nn.sigmoid(out)
