r"""The true reverse kernels `q(x_{t-1} | x_t)` of data with closed-form marginals, and the
bound K they reach: the oracles the 2015 chains are tested against.

Gaussian data `N(mean, cov)` under a `GaussianChain`: with `m_t = sqrt(abar_t) mean` and
`C_t = abar_t cov + (1 - abar_t) I`, the reverse kernel is Gaussian with mean
`m_{t-1} + G (x_t - m_t)`, `G = sqrt(1 - beta_t) C_{t-1} C_t^{-1}`, and covariance
`C_{t-1} - sqrt(1 - beta_t) G C_{t-1}`. Independent Bernoulli data under a `BinomialChain`:
Bayes' rule on the marginals. Plugged in as the reverse chain, K is
`log q(x_0) - KL(q(x_T) || p(x_T))` exactly (`exact_bound`, `exact_bound_binary`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .chains import LOG_2PI_E, BinomialChain, GaussianChain, Reverse


def exact_reverse(chain: GaussianChain, mean: ArrayLike, cov: ArrayLike) -> Reverse:
    """The true reverse kernels `(mean, cov)` of Gaussian data `N(mean, cov)` under `chain`
    (cov `(D,)` diagonal, giving variances `(B, D)`, or `(D, D)`, giving covariances
    `(B, D, D)`); see the module docstring."""
    mean, cov = jnp.asarray(mean, jnp.float32), jnp.asarray(cov, jnp.float32)
    full = cov.ndim == 2
    eye = jnp.eye(mean.shape[0]) if full else jnp.ones_like(mean)

    def reverse(xt, t):
        abar = chain.alpha_bar
        ab_t, ab_prev = abar[t], abar[t - 1]
        sqrt_alpha = jnp.sqrt(1 - chain.beta(t))
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


def exact_reverse_binary(chain: BinomialChain, prob: ArrayLike) -> Reverse:
    """The true reverse kernels `q(x_{t-1} = 1 | x_t)` of independent binary data with
    `P(x_0 = 1) = prob` `(D,)` under `chain`, by Bayes' rule on the marginals."""
    prob = jnp.asarray(prob, jnp.float32)

    def reverse(xt, t):
        beta = chain.beta(t)[:, None]
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
