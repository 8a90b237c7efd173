r"""Closed-form Gaussian formulas shared across sde_gen, each written once.

- `diagonal_log_prob`: `log N(x; mean, diag(var))`, summed over the event axes
  (the SDE priors, the analytic mixtures and the 2015 chains' decoder all use it);
- `conditional`: the conditional of a Gaussian given some of its coordinates,
  `mu_u + S_uk S_kk^{-1} (x_k - mu_k)` and `S_uu - S_uk S_kk^{-1} S_ku`
  (`analytic.MultivariateGaussian.conditional`, the 2015 chains' inpainting).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike


def diagonal_log_prob(x: Array, mean: ArrayLike, var: ArrayLike, event_ndim: int = 1) -> Array:
    """`log N(x; mean, diag(var))` summed over the trailing `event_ndim` axes; `x`, `mean`
    and `var` broadcast against each other."""
    var = jnp.asarray(var, x.dtype)
    shape = jnp.broadcast_shapes(x.shape, jnp.shape(mean), var.shape)
    terms = (x - mean) ** 2 / var + jnp.log(2 * math.pi * jnp.broadcast_to(var, shape))
    terms = jnp.broadcast_to(terms, shape)
    return -0.5 * jnp.sum(terms, axis=tuple(range(len(shape) - event_ndim, len(shape))))


def conditional(
    mean: Array, cov: Array, known: ArrayLike, x_known: ArrayLike
) -> tuple[Array, Array]:
    """Mean `(..., U)` and covariance `(..., U, U)` of the unknown coordinates (`known`
    False, `(D,)`) of `N(mean, cov)` given `x_known`'s values on the known ones.

    `mean` is `(..., D)`, `cov` `(..., D, D)`, `x_known` `(..., D)` (its unknown entries are
    ignored); leading axes broadcast, so a batch of Gaussians is conditioned at once.
    """
    known = np.asarray(known, bool)
    u, k = np.flatnonzero(~known), np.flatnonzero(known)
    s_uk = cov[..., u[:, None], k[None, :]]
    s_kk = cov[..., k[:, None], k[None, :]]
    s_uu = cov[..., u[:, None], u[None, :]]
    gain = jnp.linalg.solve(s_kk, jnp.swapaxes(s_uk, -1, -2))  # S_kk^{-1} S_ku
    gain = jnp.swapaxes(gain, -1, -2)  # S_uk S_kk^{-1}
    resid = jnp.asarray(x_known)[..., k] - mean[..., k]
    out_mean = mean[..., u] + jnp.einsum("...ij,...j->...i", gain, resid)
    return out_mean, s_uu - gain @ jnp.swapaxes(s_uk, -1, -2)
