r"""Inverse problems by replacement: imputation, inpainting and colorization (Song et al. 2021,
sec. 5 and appendix I).

The predictor-corrector chain runs as usual, and after every step the known coordinates are
replaced by a fresh draw of their forward marginal at the current time,
`y_known(t) = a(t) y + std(t) z`, so the unknown ones are pulled towards values consistent
with them. The known values are restored exactly at the end. "Coordinates" live in an
orthogonal basis of the last (channel) axis: the identity for inpainting; for colorization
score_sde's decoupling matrix, whose first column is `(1, 1, 1) / sqrt(3)`, so the known
coordinate is the gray level and the two others carry the color.

This is score_sde's method: an approximation of sampling `p(x_unknown | x_known)` (the
replaced coordinates are drawn independently of the current unknown ones), measured
against the exact Gaussian posterior in `docs/sampling.md`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_eps, check_score_fn, check_x
from ..score import ScoreFn
from ..sde import AbstractSDE, batch_broadcast
from .correctors import AbstractCorrector
from .pc import PCSampler
from .predictors import AbstractPredictor, require_linear

# score_sde's decoupling of RGB: orthonormal columns, the first one the gray direction.
COLOR_BASIS = np.asarray(
    [
        [1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
        [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
        [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)],
    ]
)


def _to_basis(x, basis):
    return x if basis is None else jnp.einsum("...i,ij->...j", x, basis)


class _Replacement(eqx.Module):
    """Replace the known coordinates (`mask == 1` in the basis) by their forward marginal."""

    sde: AbstractSDE
    y_known: Array  # the known values, in the basis
    mask: Array  # broadcastable to y_known
    basis: Array | None  # (C, C) orthogonal, acting on the last axis; None: the identity

    def to_basis(self, x):
        return _to_basis(x, self.basis)

    def from_basis(self, y):
        return y if self.basis is None else jnp.einsum("...j,ij->...i", y, self.basis)

    def __call__(self, key, x, x_mean, t):
        a, std = self.sde.marginal(t)
        y_known = self.y_known
        known_mean = batch_broadcast(a, y_known) * y_known
        noise = jax.random.normal(key, y_known.shape, y_known.dtype)
        known = known_mean + batch_broadcast(std, noise) * noise
        y, y_mean = self.to_basis(x), self.to_basis(x_mean)
        y = y * (1 - self.mask) + known * self.mask
        y_mean = y_mean * (1 - self.mask) + known_mean * self.mask
        return self.from_basis(y), self.from_basis(y_mean)

    def restore(self, x):
        """The known coordinates exactly, the imputed ones as they are."""
        y = self.to_basis(x) * (1 - self.mask) + self.y_known * self.mask
        return self.from_basis(y)


def sample_impute(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    x_known: Array,
    mask: Array,
    basis: Array | None = None,
    predictor: str | AbstractPredictor | None = "reverse_diffusion",
    corrector: str | AbstractCorrector | None = "langevin",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    num_steps: int = 1000,
    eps: float = 1e-3,
    denoise: bool = True,
) -> tuple[Array, int]:
    """Sample the unknown coordinates given the known ones, by PC sampling with replacement.

    Args:
        key: randomness for the prior draw and every step.
        sde: an `AbstractLinearSDE`.
        score_fn: the score of the unconditional model, `score_fn(x, t)`.
        x_known: `(B, *dims)`; its values count where `mask` is 1 (elsewhere they are ignored).
        mask: 1 for known, 0 for unknown coordinates (in `basis`), broadcastable to x_known.
        basis: an orthogonal `(C, C)` matrix on the last axis (`y = x @ basis`); None for
            the identity.
        predictor, corrector, snr, n_corrector_steps, num_steps, eps, denoise: as in
            `sample_pc`.

    Returns:
        `(x, nfe)`: x equals x_known on the known coordinates exactly.
    """
    sde = require_linear(sde, "sample_impute")
    x_known = check_x("x_known", x_known)
    mask = jnp.asarray(mask, x_known.dtype)
    try:
        jnp.broadcast_shapes(mask.shape, x_known.shape)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to x_known's shape {x_known.shape}"
        ) from None
    mask_values = np.unique(np.asarray(mask))
    if not set(mask_values.tolist()) <= {0.0, 1.0}:
        raise ValueError(f"mask must hold only 0 (unknown) and 1 (known); got {mask_values}")
    if basis is not None:
        basis = jnp.asarray(basis, x_known.dtype)
        c = x_known.shape[-1]
        if basis.shape != (c, c):
            raise ValueError(f"basis must be ({c}, {c}) for {c} channels; got {basis.shape}")
        if not np.allclose(np.asarray(basis) @ np.asarray(basis).T, np.eye(c), atol=1e-5):
            raise ValueError("basis must be orthogonal (basis @ basis.T = I)")
    sampler = PCSampler(
        predictor, corrector, num_steps, eps, denoise, snr=snr, n_corrector_steps=n_corrector_steps
    )
    check_eps(eps, sde.T)
    check_score_fn(score_fn, x_known.shape, x_known.dtype)

    replace = _Replacement(sde, _to_basis(x_known, basis), mask, basis)
    return _impute(sampler, key, sde, score_fn, replace), sampler.nfe


@eqx.filter_jit
def _impute(sampler, key, sde, score_fn, replace):
    x = sampler.chain(key, sde, score_fn, replace.y_known.shape, project=replace)
    return replace.restore(x)


def sample_inpaint(
    key: PRNGKeyArray, sde: AbstractSDE, score_fn: ScoreFn, x_known: Array, mask: Array, **kwargs
) -> tuple[Array, int]:
    """Fill in the pixels where `mask == 0` given those where `mask == 1` (score_sde's
    inpainting). `mask` broadcasts to `x_known` (e.g. `(1, H, W, 1)`); `kwargs` go to
    `sample_impute` (predictor, corrector, snr, num_steps, ...)."""
    return sample_impute(key, sde, score_fn, x_known, mask, **kwargs)


def sample_colorize(
    key: PRNGKeyArray, sde: AbstractSDE, score_fn: ScoreFn, gray: Array, **kwargs
) -> tuple[Array, int]:
    """Color images whose channel mean is `gray` (`(B, H, W)` or `(B, H, W, 1)`), with a
    score function of RGB images `(B, H, W, 3)`. The result's channel mean equals `gray`
    exactly. `kwargs` go to `sample_impute`."""
    gray = jnp.asarray(gray)
    if gray.ndim == 4 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 3:
        raise ValueError(f"gray must be (B, H, W) or (B, H, W, 1); got shape {gray.shape}")
    x_known = jnp.repeat(gray[..., None], 3, axis=-1)
    mask = jnp.asarray([1.0, 0.0, 0.0], x_known.dtype)
    return sample_impute(key, sde, score_fn, x_known, mask, basis=COLOR_BASIS, **kwargs)
