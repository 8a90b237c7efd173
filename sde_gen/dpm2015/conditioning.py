r"""Conditioning a reverse chain by multiplying its steps by a factor `r(x_{t-1})`
(Sohl-Dickstein et al. 2015, sec. 2.5): inpainting and denoising.

**One callback shape for every chain.** A factor is a function

    condition(key, kernel, t) -> kernel

called by `chain.sample(..., perturb=condition)` at each reverse step with a fresh `key`,
the step's kernel `p(x_{t-1} | x_t)` as `reverse(x_t, t)` returned it, and the steps
`t (B,)`; it returns the kernel of the (normalized) product `p(x_{t-1} | x_t) r(x_{t-1})`
in the same form: `(mean, var)` for the Gaussian chain (variances or covariances
`(1 or B, D, D)`), the probabilities of `x_{t-1} = 1` `(B, D)` for the binomial chain.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .. import gaussian
from .chains import AbstractChain, Condition, Kernel, is_full_covariance


def condition_kernel(kernel: Kernel, known: ArrayLike, values: Array) -> Kernel:
    """The kernel conditioned on `x_{t-1}[known] = values[known]` (`known` `(D,)` bool,
    `values` `(B, D)`): a Gaussian kernel's conditional (with diagonal variances the known
    dimensions are simply set, variance 0), or Bernoulli probabilities set to the values."""
    known = np.asarray(known, bool)
    mask = jnp.asarray(known)
    if not isinstance(kernel, tuple):  # probabilities of 1
        return jnp.where(mask, values, kernel)
    mean, var = kernel
    if not is_full_covariance(mean, var):
        return jnp.where(mask, values, mean), jnp.where(mask, 0.0, jnp.broadcast_to(var, mean.shape))
    k, u = np.flatnonzero(known), np.flatnonzero(~known)
    var = jnp.broadcast_to(var, (mean.shape[0], *var.shape[1:]))
    m_u, c_uu = gaussian.conditional(mean, var, known, values)
    out_mean = mean.at[:, u].set(m_u).at[:, k].set(values[:, k])
    out_var = jnp.zeros_like(var).at[:, u[:, None], u[None, :]].set(c_uu)
    return out_mean, out_var


def inpaint_factor(
    known: ArrayLike, values: Array, chain: AbstractChain | None = None
) -> Condition:
    """The factor that fixes the known dimensions (`known` True, `(D,)`) of every reverse
    step, for either chain: each step's kernel is conditioned on them (`condition_kernel`).
    Without `chain` they are fixed at `values` `(B, D)` at every step (the 2015 paper's
    constant `r`); with it, the step to `x_{t-1}` fixes them at a fresh draw of their
    forward marginal `q(x_{t-1} | x_0 = values)` (`chain.sample_marginal`), which ends at
    the values themselves (t = 1). Measured against the exact conditional of a correlated
    Gaussian in `docs/dpm2015.md`: the constant factor is biased, the noised one is not."""
    known = np.asarray(known, bool)

    def condition(key, kernel, t):
        fixed = values if chain is None else chain.sample_marginal(key, values, t - 1)
        return condition_kernel(kernel, known, fixed)

    return condition


def gaussian_factor(y: Array, noise_var: float) -> Condition:
    """The factor `r(x) = N(x; y, noise_var I)` (denoising an observation y), multiplied
    into every reverse step of a Gaussian chain: a product of Gaussians."""

    def condition(key, kernel, t):
        if not isinstance(kernel, tuple):
            raise ValueError("gaussian_factor multiplies Gaussian kernels (mean, var)")
        mean, var = kernel
        if is_full_covariance(mean, var):
            eye = jnp.eye(mean.shape[-1])
            precision = jnp.linalg.inv(var) + eye / noise_var
            cov = jnp.linalg.inv(precision)
            rhs = jnp.einsum("...ij,...j->...i", jnp.linalg.inv(var), mean) + y / noise_var
            return jnp.einsum("...ij,...j->...i", cov, rhs), cov
        new_var = 1.0 / (1.0 / var + 1.0 / noise_var)
        return new_var * (mean / var + y / noise_var), new_var

    return condition


