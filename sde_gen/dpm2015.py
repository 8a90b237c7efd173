r"""Diffusion probabilistic models (Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli 2015):
discrete forward chains, reverse chains, the bound K, the entropy bounds of each reverse
step, and conditioning by multiplying distributions.

**Gaussian chain** (`GaussianChain`): `q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)`,
t = 1 .. T. With `abar_t = prod_{s <= t} (1 - beta_s)`:
`q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)` and
`q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, btilde_t I)`,
`btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)`.

**Binomial chain** (`BinomialChain`) for binary data: `q(x_t = 1 | x_{t-1}) =
x_{t-1} (1 - beta_t) + beta_t / 2`, so `q(x_t = 1 | x_0) = x_0 abar_t + (1 - abar_t) / 2`.

**Reverse chain**: `p(x_T)` the chain's stationary prior (N(0, I), or Bernoulli(1/2)) and
`p(x_{t-1} | x_t)` given by a function `reverse(x_t, t)` of the batch and the steps
`t (B,)` (ints in 1 .. T): `(mean, var)` of a diagonal Gaussian (the paper's
parameterization; `var` may also hold full covariances `(1 or B, D, D)`, as the exact
kernels of correlated data do), or the probabilities of `x_{t-1} = 1` for the binomial
chain.

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

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._checks import check_steps, check_x, is_concrete

Reverse = Callable[[Array, Array], tuple[Array, Array] | Array]
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


def _steps(t: ArrayLike, batch: int) -> Array:
    return jnp.broadcast_to(jnp.asarray(t, jnp.int32), (batch,))


def _gather(table: Array, t: Array) -> Array:
    return table[t][:, None]  # (B, 1): broadcasts over the data dimension


class _Chain(eqx.Module):
    betas: Float[Array, " T"]

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alpha_bar(self) -> Float[Array, " T+1"]:
        """`abar_t` for t = 0 .. T (`abar_0 = 1`)."""
        return jnp.concatenate([jnp.ones((1,)), jnp.cumprod(1.0 - self.betas)])

    def _beta(self, t):
        return jnp.concatenate([jnp.zeros((1,)), self.betas])[t]

    def _check(self, x0: Array) -> Array:
        x0 = check_x("x0", x0)
        if x0.ndim != 2:
            raise ValueError(f"the chains take vectors (B, D); got shape {x0.shape}: flatten first")
        return x0

    def _kl_sum(self, key, x0, reverse, num_t):
        """`sum_{t=2}^T E KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` per example: exact
        over t, or `(T - 1)` times the mean of `num_t` uniform draws of t."""
        b, big_t = x0.shape[0], self.num_steps
        if num_t is None:
            ts = jnp.arange(2, big_t + 1)
            keys = jax.random.split(key, big_t - 1)
            kls = jax.lax.map(lambda a: self._kl_at(a[0], x0, _steps(a[1], b), reverse), (keys, ts))
            return jnp.sum(kls, axis=0)
        num_t = check_steps("num_t", num_t)
        t_key, x_key = jax.random.split(key)
        ts = jax.random.randint(t_key, (num_t, b), 2, big_t + 1)
        keys = jax.random.split(x_key, num_t)
        kls = jax.lax.map(lambda a: self._kl_at(a[0], x0, a[1], reverse), (keys, ts))
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
        decoder = self._decoder(k1, x0, reverse)
        kl = self._kl_sum(k2, x0, reverse, num_t)
        prior = self._prior_kl(x0)
        return {"K": decoder - kl - prior, "decoder": decoder, "kl": kl, "prior": prior}


class GaussianChain(_Chain):
    """The Gaussian diffusion chain with `betas` `(T,)`; see the module docstring."""

    def __init__(self, betas: ArrayLike):
        self.betas = _check_betas(betas, 1.0)

    def marginal(self, t: Int[ArrayLike, " B"]) -> tuple[Array, Array]:
        """`(sqrt(abar_t), 1 - abar_t)`: mean coefficient and variance of `q(x_t | x_0)`."""
        abar = self.alpha_bar[jnp.asarray(t)]
        return jnp.sqrt(abar), 1.0 - abar

    def sample_marginal(self, key: PRNGKeyArray, x0: Array, t: ArrayLike) -> Array:
        """A draw of `x_t ~ q(x_t | x_0)` for steps `t` (scalar or `(B,)`)."""
        t = _steps(t, x0.shape[0])
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

    def posterior(self, x0: Array, xt: Array, t: ArrayLike) -> tuple[Array, Array]:
        """Mean and variance `btilde_t` of `q(x_{t-1} | x_t, x_0)` for steps t >= 1 (at t = 1
        the variance is 0: x_0 itself)."""
        t = _steps(t, x0.shape[0])
        abar, beta = self.alpha_bar, self._beta(t)[:, None]
        ab_t, ab_prev = _gather(abar, t), _gather(abar, t - 1)
        mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1 - beta) * (1 - ab_prev) * xt) / (
            1 - ab_t
        )
        return mean, beta * (1 - ab_prev) / (1 - ab_t)

    def entropy_bounds(self, t: ArrayLike, dim: int) -> tuple[Array, Array]:
        """Lower and upper bound on `H_q(X_{t-1} | X_t)` in nats for a D-dimensional chain,
        t >= 2: the entropies of `N(., btilde_t I)` and `N(., beta_t I)`."""
        t = jnp.asarray(t)
        abar, beta = self.alpha_bar, self._beta(t)
        btilde = beta * (1 - abar[t - 1]) / (1 - abar[t])
        return 0.5 * dim * (LOG_2PI_E + jnp.log(btilde)), 0.5 * dim * (LOG_2PI_E + jnp.log(beta))

    def _kl_at(self, key, x0, t, reverse):
        xt = self.sample_marginal(key, x0, t)
        q_mean, q_var = self.posterior(x0, xt, t)
        p_mean, p_var = reverse(xt, t)
        return _gaussian_kl(q_mean, q_var, p_mean, p_var)

    def _decoder(self, key, x0, reverse):
        t = _steps(1, x0.shape[0])
        x1 = self.sample_marginal(key, x0, t)
        p_mean, p_var = reverse(x1, t)
        return _gaussian_log_prob(x0, p_mean, p_var)

    def _prior_kl(self, x0):
        c, v = self.marginal(self.num_steps)
        # KL(N(c x0, v I) || N(0, I)) summed over dimensions
        return 0.5 * jnp.sum(v + (c * x0) ** 2 - 1.0 - jnp.log(v), axis=-1)

    def sample(
        self,
        key: PRNGKeyArray,
        reverse: Reverse,
        shape: tuple[int, int],
        perturb: Callable | None = None,
        trajectory: bool = False,
    ) -> Array:
        """Ancestral samples `(B, D)` of the reverse chain from `x_T ~ N(0, I)`; with
        `trajectory` all states `(T + 1, B, D)`, x_T first. `perturb(key, mean, var, t) ->
        (mean, var)` multiplies each reverse step by a factor `r` (see `inpaint_factor`,
        `gaussian_factor`)."""
        init_key, key = jax.random.split(key)
        x = jax.random.normal(init_key, shape)

        def step(x, inputs):
            k, t = inputs
            tb = _steps(t, shape[0])
            mean, var = reverse(x, tb)
            if perturb is not None:
                k, factor_key = jax.random.split(k)
                mean, var = perturb(factor_key, mean, var, tb)
            x = _draw_gaussian(k, mean, var)
            return x, x

        keys = jax.random.split(key, self.num_steps)
        ts = jnp.arange(self.num_steps, 0, -1)
        x_last, xs = jax.lax.scan(step, x, (keys, ts))
        return jnp.concatenate([x[None], xs]) if trajectory else x_last


def _is_full(mean, var) -> bool:
    """Covariances `(1 or B, D, D)` rather than variances broadcastable to `(B, D)`."""
    return var.ndim == mean.ndim + 1


def _cholesky(cov):
    eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return jnp.linalg.cholesky(cov + 1e-9 * eye)  # jitter: degenerate (clamped) dimensions


def _draw_gaussian(key, mean, var):
    z = jax.random.normal(key, mean.shape, mean.dtype)
    if _is_full(mean, var):
        x = mean + jnp.einsum("...ij,...j->...i", _cholesky(var), z)
        fixed = jnp.diagonal(var, axis1=-2, axis2=-1) == 0  # conditioned-on dimensions
        return jnp.where(fixed, mean, x)
    return mean + jnp.sqrt(var) * z


def _gaussian_log_prob(x, mean, var):
    if _is_full(mean, var):
        chol = _cholesky(var)
        z = jax.scipy.linalg.solve_triangular(chol, (x - mean)[..., None], lower=True)[..., 0]
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
        return -0.5 * (jnp.sum(z**2, -1) + logdet + x.shape[-1] * math.log(2 * math.pi))
    var = jnp.broadcast_to(var, x.shape)
    return -0.5 * jnp.sum((x - mean) ** 2 / var + jnp.log(2 * math.pi * var), axis=-1)


def _gaussian_kl(q_mean, q_var, p_mean, p_var):
    """KL(N(q_mean, diag q_var) || N(p_mean, p_var)) per example, p_var diagonal or full."""
    q_var = jnp.broadcast_to(q_var, q_mean.shape)
    diff = q_mean - p_mean
    if _is_full(p_mean, p_var):
        inv = jnp.linalg.inv(p_var)
        _, logdet_p = jnp.linalg.slogdet(p_var)
        trace = jnp.sum(q_var * jnp.diagonal(inv, axis1=-2, axis2=-1), -1)
        inv = jnp.broadcast_to(inv, (diff.shape[0], *inv.shape[-2:]))
        maha = jnp.einsum("bi,bij,bj->b", diff, inv, diff)
        d = q_mean.shape[-1]
        return 0.5 * (trace + maha - d + logdet_p - jnp.sum(jnp.log(q_var), -1))
    p_var = jnp.broadcast_to(p_var, q_mean.shape)
    return 0.5 * jnp.sum(jnp.log(p_var / q_var) + (q_var + diff**2) / p_var - 1.0, axis=-1)


def exact_reverse(chain: GaussianChain, mean: ArrayLike, cov: ArrayLike) -> Reverse:
    """The true reverse kernels `q(x_{t-1} | x_t)` of Gaussian data `N(mean, cov)` under
    `chain` (cov `(D,)` diagonal, or `(D, D)`): with `m_t = sqrt(abar_t) mean` and
    `C_t = abar_t cov + (1 - abar_t) I`, the mean is `m_{t-1} + G (x_t - m_t)`,
    `G = sqrt(1 - beta_t) C_{t-1} C_t^{-1}`, the covariance
    `C_{t-1} - sqrt(1 - beta_t) G C_{t-1}`.
    Plugged in as the reverse chain, K is `log q(x_0) - KL(q(x_T) || N(0, I))` exactly."""
    mean, cov = jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)
    full = cov.ndim == 2
    eye = jnp.eye(mean.shape[0]) if full else jnp.ones_like(mean)

    def reverse(xt, t):
        abar = chain.alpha_bar
        ab_t, ab_prev = abar[t], abar[t - 1]
        sqrt_alpha = jnp.sqrt(1 - chain._beta(t))
        if full:
            c_t = ab_t[:, None, None] * cov + (1 - ab_t)[:, None, None] * eye
            c_prev = ab_prev[:, None, None] * cov + (1 - ab_prev)[:, None, None] * eye
            gain = sqrt_alpha[:, None, None] * jnp.linalg.solve(c_t, c_prev).mT  # C_{t-1} C_t^-1
            resid = xt - jnp.sqrt(ab_t)[:, None] * mean
            out_mean = jnp.sqrt(ab_prev)[:, None] * mean + jnp.einsum("bij,bj->bi", gain, resid)
            out_cov = c_prev - sqrt_alpha[:, None, None] * gain @ c_prev
            return out_mean, 0.5 * (out_cov + out_cov.mT)
        c_t = ab_t[:, None] * cov + (1 - ab_t)[:, None]
        c_prev = ab_prev[:, None] * cov + (1 - ab_prev)[:, None]
        gain = sqrt_alpha[:, None] * c_prev / c_t
        resid = xt - jnp.sqrt(ab_t)[:, None] * mean
        out_mean = jnp.sqrt(ab_prev)[:, None] * mean + gain * resid
        return out_mean, c_prev - sqrt_alpha[:, None] * gain * c_prev

    return reverse


def exact_bound(chain: GaussianChain, mean: ArrayLike, cov: ArrayLike) -> float:
    """The expected K of the exact reverse chain of `N(mean, cov)`, in nats per example:
    `-H(N(mean, cov)) - KL(q(x_T) || N(0, I))`."""
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    cov = np.diag(cov) if cov.ndim == 1 else cov
    d = mean.shape[0]
    ab_T = float(np.prod(1.0 - np.asarray(chain.betas, np.float64)))
    c_T = ab_T * cov + (1 - ab_T) * np.eye(d)
    entropy = 0.5 * (d * LOG_2PI_E + np.linalg.slogdet(cov)[1])
    kl_T = 0.5 * (np.trace(c_T) + ab_T * mean @ mean - d - np.linalg.slogdet(c_T)[1])
    return float(-entropy - kl_T)


def inpaint_factor(known: ArrayLike, values: Array, chain: GaussianChain | None = None) -> Callable:
    """The factor `r` that fixes the known dimensions (`known` True, `(D,)`) of every reverse
    step: each step's Gaussian is conditioned on them (with a diagonal step, the known
    dimensions are simply set). Without `chain` they are fixed at `values` `(B, D)` at every
    step (the 2015 paper's constant `r`); with it, the step to `x_{t-1}` fixes them at a
    fresh draw of their forward marginal `q(x_{t-1} | x_0 = values)`, which ends at the
    values themselves (t = 1). Measured against the exact conditional of a correlated
    Gaussian in `docs/dpm2015.md`: the constant factor is biased, the noised one is not."""
    known = np.asarray(known, bool)
    k, u = np.flatnonzero(known), np.flatnonzero(~known)

    def perturb(key, mean, var, t):
        if chain is None:
            fixed = values
        else:
            c, v = (a[:, None] for a in chain.marginal(t - 1))
            noise = jax.random.normal(key, values.shape, values.dtype)
            fixed = c * values + jnp.sqrt(v) * noise
        return _condition(mean, var, fixed)

    def _condition(mean, var, values):
        if not _is_full(mean, var):
            mask = jnp.asarray(known)
            return jnp.where(mask, values, mean), jnp.where(
                mask, 0.0, jnp.broadcast_to(var, mean.shape)
            )
        var = jnp.broadcast_to(var, (mean.shape[0], *var.shape[1:]))
        s_uk, s_kk, s_uu = var[:, u][:, :, k], var[:, k][:, :, k], var[:, u][:, :, u]
        gain = jnp.linalg.solve(s_kk, s_uk.mT).mT
        m_u = mean[:, u] + jnp.einsum("bij,bj->bi", gain, values[:, k] - mean[:, k])
        c_uu = s_uu - gain @ s_uk.mT
        out_mean = mean.at[:, u].set(m_u).at[:, k].set(values[:, k])
        out_var = jnp.zeros_like(var).at[:, u[:, None], u[None, :]].set(c_uu)
        return out_mean, out_var

    return perturb


def gaussian_factor(y: Array, noise_var: float) -> Callable:
    """The factor `r(x) = N(x; y, noise_var I)` (denoising an observation y), multiplied
    into every reverse step: a product of Gaussians."""

    def perturb(key, mean, var, t):
        if _is_full(mean, var):
            eye = jnp.eye(mean.shape[-1])
            precision = jnp.linalg.inv(var) + eye / noise_var
            cov = jnp.linalg.inv(precision)
            rhs = jnp.einsum("...ij,...j->...i", jnp.linalg.inv(var), mean) + y / noise_var
            return jnp.einsum("...ij,...j->...i", cov, rhs), cov
        new_var = 1.0 / (1.0 / var + 1.0 / noise_var)
        return new_var * (mean / var + y / noise_var), new_var

    return perturb


class BinomialChain(_Chain):
    """Binomial diffusion of binary vectors with `betas` `(T,)` in (0, 1]; see the module
    docstring. `reverse(x_t, t)` returns the probabilities of `x_{t-1} = 1`."""

    def __init__(self, betas: ArrayLike):
        self.betas = _check_betas(betas, 1.0 + 1e-6)

    def marginal_prob(self, x0: Array, t: ArrayLike) -> Array:
        """`q(x_t = 1 | x_0) = x_0 abar_t + (1 - abar_t) / 2`."""
        ab = _gather(self.alpha_bar, _steps(t, x0.shape[0]))
        return x0 * ab + (1 - ab) / 2

    def sample_marginal(self, key, x0, t):
        return jax.random.bernoulli(key, self.marginal_prob(x0, t)).astype(x0.dtype)

    def posterior_prob(self, x0: Array, xt: Array, t: ArrayLike) -> Array:
        """`q(x_{t-1} = 1 | x_t, x_0)` by Bayes' rule, for steps t >= 1."""
        t = _steps(t, x0.shape[0])
        beta = self._beta(t)[:, None]
        # q(x_t | x_{t-1} = prev) for the observed x_t
        step = lambda prev: prev * (1 - beta) + beta / 2
        likelihood = lambda prev: jnp.where(xt == 1, step(prev), 1 - step(prev))
        prior_one = self.marginal_prob(x0, t - 1)
        one = likelihood(1.0) * prior_one
        zero = likelihood(0.0) * (1 - prior_one)
        return one / (one + zero)

    def entropy_bounds(self, t: ArrayLike, dim: int) -> tuple[Array, Array]:
        """Lower and upper bound on `H_q(X_{t-1} | X_t)` in nats for D binary dimensions,
        t >= 2 (the same for every binary data distribution)."""
        t = jnp.asarray(t)
        abar, beta = self.alpha_bar, self._beta(t)
        h = lambda p: -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))
        forward = h(beta / 2)
        lower = forward + h((1 - abar[t - 1]) / 2) - h((1 - abar[t]) / 2)
        return dim * lower, dim * forward

    def _kl_at(self, key, x0, t, reverse):
        xt = self.sample_marginal(key, x0, t)
        return _bernoulli_kl(self.posterior_prob(x0, xt, t), reverse(xt, t))

    def _decoder(self, key, x0, reverse):
        t = _steps(1, x0.shape[0])
        p = jnp.clip(reverse(self.sample_marginal(key, x0, t), t), 1e-7, 1 - 1e-7)
        return jnp.sum(x0 * jnp.log(p) + (1 - x0) * jnp.log1p(-p), axis=-1)

    def _prior_kl(self, x0):
        return _bernoulli_kl(self.marginal_prob(x0, self.num_steps), jnp.full_like(x0, 0.5))

    def sample(self, key, reverse, shape, perturb=None, trajectory=False):
        """Ancestral samples `(B, D)` in {0, 1} from `x_T ~ Bernoulli(1/2)`; `perturb(prob, t)
        -> prob` multiplies each step by a factor; `trajectory` as `GaussianChain.sample`."""
        init_key, key = jax.random.split(key)
        x = jax.random.bernoulli(init_key, 0.5, shape).astype(jnp.float32)

        def step(x, inputs):
            k, t = inputs
            tb = _steps(t, shape[0])
            prob = reverse(x, tb)
            if perturb is not None:
                prob = perturb(prob, tb)
            x = jax.random.bernoulli(k, prob).astype(jnp.float32)
            return x, x

        keys = jax.random.split(key, self.num_steps)
        x_last, xs = jax.lax.scan(step, x, (keys, jnp.arange(self.num_steps, 0, -1)))
        return jnp.concatenate([x[None], xs]) if trajectory else x_last


def _bernoulli_kl(q, p):
    q = jnp.clip(q, 1e-7, 1 - 1e-7)
    p = jnp.clip(p, 1e-7, 1 - 1e-7)
    return jnp.sum(q * jnp.log(q / p) + (1 - q) * jnp.log((1 - q) / (1 - p)), axis=-1)


def exact_reverse_binary(chain: BinomialChain, prob: ArrayLike) -> Reverse:
    """The true reverse kernels `q(x_{t-1} = 1 | x_t)` of independent binary data with
    `P(x_0 = 1) = prob` `(D,)` under `chain`, by Bayes' rule on the marginals."""
    prob = jnp.asarray(prob, jnp.float32)

    def reverse(xt, t):
        beta = chain._beta(t)[:, None]
        ab_prev = chain.alpha_bar[t - 1][:, None]
        prev_one = prob * ab_prev + (1 - ab_prev) / 2  # q(x_{t-1} = 1)
        step = lambda prev: prev * (1 - beta) + beta / 2  # q(x_t = 1 | x_{t-1} = prev)
        like = lambda prev: jnp.where(xt == 1, step(prev), 1 - step(prev))
        one, zero = like(1.0) * prev_one, like(0.0) * (1 - prev_one)
        return one / (one + zero)

    return reverse


def exact_bound_binary(chain: BinomialChain, prob: ArrayLike) -> float:
    """The expected K of the exact reverse chain of independent Bernoulli(prob) data, in
    nats: `-H(q(x_0)) - KL(q(x_T) || Bernoulli(1/2))`."""
    p = np.asarray(prob, np.float64)
    ab_T = float(np.prod(1.0 - np.asarray(chain.betas, np.float64)))
    h = lambda q: -(q * np.log(q) + (1 - q) * np.log1p(-q))
    q_T = p * ab_T + (1 - ab_T) / 2
    kl_T = q_T * np.log(2 * q_T) + (1 - q_T) * np.log(2 * (1 - q_T))
    return float(-np.sum(h(p)) - np.sum(kl_T))
