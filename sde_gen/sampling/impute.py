r"""Inverse problems: imputation, inpainting and colorization with an unconditional score.

"Coordinates" live in an orthogonal basis of the last (channel) axis: the identity for
inpainting; for colorization score_sde's decoupling matrix, whose first column is
`(1, 1, 1) / sqrt(3)`, so the known coordinate is the gray level and the two others carry
the color. The known values `y` are restored exactly at the end. Three methods, chosen by
`sample_impute(method=...)`:

- `"replacement"` (the default; Song et al. 2021, sec. 5 and appendix I): the
  predictor-corrector chain runs as usual, and after every step the known coordinates are
  replaced by a fresh draw of their forward marginal, `y(t) = a(t) y + std(t) z`. An
  approximation of `p(x_unknown | y)`: the replaced coordinates are drawn independently of
  the current unknown ones, and the error does not vanish with more steps (on a 2-D
  Gaussian with correlation 0.8 the imputed coordinate regresses on the known one with
  slope about 0.5 instead of 0.8, `docs/sampling.md`).
- `"smc"`: a particle filter over the reverse chain (SMCDiff, Trippe et al. 2022; in the
  spirit of MCGdiff and filtering posterior sampling). One path of the known coordinates
  `y_{t_N} ... y_{t_1}` is drawn exactly from the forward process given `y` (backwards, by
  the Gaussian bridge `q(y_s | y_t, y)`). K particles per observation start from the prior
  with known part `y_T`; each step `t -> s` of a Gaussian predictor
  `x_s ~ N(m(x_t), std^2 I)` splits into independent known and unknown parts, so the
  particle is weighted by the known part's density `N(y_s; m_known(x_t), std^2 I)`,
  resampled (systematic resampling within each observation's K particles, when the
  effective sample size falls below `ess_threshold * K`), and its unknown part moved by
  the rest of the step. Since the forward noise is independent across coordinates,
  `q(x_0 | y_{0:T}) = q(x_0 | y)`, so with the exact score the returned draw converges to
  `p(x_unknown | y)` as K grows and the step shrinks. The last step, from eps to 0, is
  unweighted (its known-part std, about `sqrt(beta(0) eps)` for VP, leaves the weights
  all but degenerate): one particle per observation is drawn from the final weights and
  denoised as the other samplers do. With K = 1 this is replacement along one consistent
  path.
- `"reconstruction_guidance"` (Ho et al. 2022, "Video diffusion models", eq. 7):
  replacement with the score corrected by the gradient of the Gaussian approximation
  `log p(y | x_t) ~ -a(t)^2 ||y - known(x0_hat(x_t))||^2 / (2 std(t)^2)`, times
  `guidance_weight`; x0_hat is Tweedie's estimate, so the gradient goes through the score
  function (one backward pass per evaluation). Faster to converge than replacement, still
  biased: the Gaussian approximation of `p(y | x_t)` is exact only as t -> 0.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._checks import check_eps, check_score_fn, check_steps, check_x, choose
from ..score import ScoreFn
from ..sde import AbstractLinearSDE, AbstractSDE, batch_broadcast, sum_event
from .base import check_bool, check_eps_setting
from .correctors import AbstractCorrector
from .pc import PCSampler
from .predictors import AbstractGaussianPredictor, AbstractPredictor, get_predictor, require_linear

# score_sde's decoupling of RGB: orthonormal columns, the first one the gray direction.
COLOR_BASIS = np.asarray(
    [
        [1 / math.sqrt(3), -2 / math.sqrt(6), 0.0],
        [1 / math.sqrt(3), 1 / math.sqrt(6), 1 / math.sqrt(2)],
        [1 / math.sqrt(3), 1 / math.sqrt(6), -1 / math.sqrt(2)],
    ]
)


IMPUTE_METHODS = ("replacement", "smc", "reconstruction_guidance")
DEFAULT_PARTICLES = 16  # method "smc"
DEFAULT_ESS_THRESHOLD = 0.5  # method "smc": resample when ESS < this * num_particles
DEFAULT_GUIDANCE_WEIGHT = 1.0  # method "reconstruction_guidance"


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


class _ReconstructionGuidance(eqx.Module):
    """The score plus `weight` times the gradient of the Gaussian approximation
    `log p(y | x_t) ~ -a(t)^2 ||mask (y - to_basis(x0_hat(x_t)))||^2 / (2 std(t)^2)`, with
    Tweedie's x0_hat (Ho et al. 2022, eq. 7, in score units)."""

    sde: AbstractLinearSDE
    score_fn: ScoreFn
    replace: _Replacement
    weight: float

    def __call__(self, x, t):
        a, std = self.sde.marginal(t)
        coef = a**2 / (2 * std**2)
        replace = self.replace

        def misfit(x):
            score = self.score_fn(x, t)
            x0_hat = self.sde.x0_from_score(x, t, score)
            residual = replace.mask * (replace.y_known - replace.to_basis(x0_hat))
            return jnp.sum(coef * sum_event(residual**2)), score

        grad, score = jax.grad(misfit, has_aux=True)(x)
        return score - self.weight * grad


class _SMC(eqx.Module):
    """The particle filter of method "smc" (see the module docstring); its fields are its
    settings."""

    predictor: AbstractGaussianPredictor
    num_steps: int
    eps: float
    denoise: bool
    num_particles: int
    ess_threshold: float

    @property
    def nfe(self) -> int:
        """Score evaluations per returned sample: K particles for the first `num_steps - 1`
        steps, then one for the final step of the chosen particle."""
        return self.predictor.nfe * (self.num_particles * (self.num_steps - 1) + 1)


def _systematic_resample(key, log_w):
    """Systematic resampling of each row of `log_w` `(B, K)`: indices `(B, K)`."""
    b, k = log_w.shape
    cdf = jnp.cumsum(jax.nn.softmax(log_w, axis=1), axis=1)
    u = (jax.random.uniform(key, (b, 1), cdf.dtype) + jnp.arange(k, dtype=cdf.dtype)) / k
    idx = jax.vmap(jnp.searchsorted)(cdf, u)
    return jnp.minimum(idx, k - 1)


@eqx.filter_jit
def _smc_chain(smc: _SMC, key, sde, score_fn, replace: _Replacement):
    y0 = replace.y_known  # (B, *dims), in the basis
    b, dims, k = y0.shape[0], y0.shape[1:], smc.num_particles
    mask = jnp.broadcast_to(replace.mask, y0.shape)
    mask_k = mask[:, None]  # (B, 1, *dims), against the particles (B, K, *dims)
    n_known = sum_event(mask)[:, None]  # (B, 1)

    def flat(y):
        return replace.from_basis(y.reshape(b * k, *dims))

    def step_mean(y, t, t_next):
        mean, std = smc.predictor.mean_and_std(sde, score_fn, flat(y), t, t_next)
        std = jnp.broadcast_to(std, (b * k,)).reshape(b, k)
        return replace.to_basis(mean).reshape(b, k, *dims), std

    init_key, path_key, loop_key, pick_key, last_key = jax.random.split(key, 5)
    a_T, std_T = sde.marginal(jnp.asarray(sde.T, y0.dtype))
    known_T = a_T * y0 + std_T * jax.random.normal(path_key, y0.shape, y0.dtype)
    prior = replace.to_basis(sde.prior_sample(init_key, (b * k, *dims))).reshape(b, k, *dims)
    y = prior * (1 - mask_k) + known_T[:, None] * mask_k
    ts = jnp.linspace(sde.T, smc.eps, smc.num_steps, dtype=y0.dtype)

    def step(carry, inputs):
        y, log_w, known = carry
        step_key, t, t_next = inputs
        bridge_key, resample_key, noise_key = jax.random.split(step_key, 3)
        # the known coordinates' forward path, drawn backwards: q(y_{t_next} | y_t, y_0)
        bridge_mean, bridge_std = sde.bridge(y0, known, t_next, t)
        noise = jax.random.normal(bridge_key, y0.shape, y0.dtype)
        known_next = bridge_mean + batch_broadcast(bridge_std, noise) * noise
        # weight: the density of the predictor's step at the path's known values
        mean, std = step_mean(y, t, t_next)
        misfit = sum_event((mask_k * (known_next[:, None] - mean)).reshape(b * k, -1) ** 2)
        log_w = log_w - 0.5 * misfit.reshape(b, k) / std**2 - n_known * jnp.log(std)
        log_w = log_w - jnp.max(log_w, axis=1, keepdims=True)
        w = jax.nn.softmax(log_w, axis=1)
        ess = 1.0 / jnp.sum(w**2, axis=1)
        resample = ess < smc.ess_threshold * k  # (B,)
        idx = jnp.where(resample[:, None], _systematic_resample(resample_key, log_w), jnp.arange(k))
        mean = jnp.take_along_axis(mean, idx.reshape(b, k, *(1,) * len(dims)), axis=1)
        std = jnp.take_along_axis(std, idx, axis=1)
        log_w = jnp.where(resample[:, None], 0.0, log_w)
        noise = jax.random.normal(noise_key, mean.shape, mean.dtype)
        y = mean + std.reshape(b, k, *(1,) * len(dims)) * noise
        y = y * (1 - mask_k) + known_next[:, None] * mask_k
        return (y, log_w, known_next), ess

    keys = jax.random.split(loop_key, smc.num_steps - 1)
    log_w = jnp.zeros((b, k), y0.dtype)
    (y, log_w, _), ess = jax.lax.scan(step, (y, log_w, known_T), (keys, ts[:-1], ts[1:]))
    # one particle per observation from the final weights, then the unweighted last step
    pick = jax.random.categorical(pick_key, log_w, axis=1)
    y = jnp.take_along_axis(y, pick.reshape(b, 1, *(1,) * len(dims)), axis=1)[:, 0]
    x = replace.from_basis(y)
    mean, std = smc.predictor.mean_and_std(sde, score_fn, x, ts[-1], jnp.zeros((), y0.dtype))
    if not smc.denoise:
        noise = jax.random.normal(last_key, x.shape, x.dtype)
        mean = mean + batch_broadcast(std, x) * noise
    return replace.restore(mean), ess


def _method_settings(method, num_particles, ess_threshold, guidance_weight):
    """The method's name and its settings, defaults filled in; a setting of another method
    raises."""
    choose("imputation method", method, dict.fromkeys(IMPUTE_METHODS))
    method = method.lower()
    given = dict(
        num_particles=(num_particles, "smc"),
        ess_threshold=(ess_threshold, "smc"),
        guidance_weight=(guidance_weight, "reconstruction_guidance"),
    )
    for name, (value, owner) in given.items():
        if value is not None and method != owner:
            raise ValueError(f"{name} is a setting of method={owner!r}; got method={method!r}")
    if method == "smc":
        num_particles = check_steps(
            "num_particles", DEFAULT_PARTICLES if num_particles is None else num_particles
        )
        ess_threshold = DEFAULT_ESS_THRESHOLD if ess_threshold is None else ess_threshold
        if isinstance(ess_threshold, bool) or not (
            isinstance(ess_threshold, (int, float, np.floating)) and 0 <= ess_threshold <= 1
        ):
            raise ValueError(f"ess_threshold must be a number in [0, 1]; got {ess_threshold!r}")
        return method, dict(num_particles=num_particles, ess_threshold=float(ess_threshold))
    if method == "reconstruction_guidance":
        weight = DEFAULT_GUIDANCE_WEIGHT if guidance_weight is None else guidance_weight
        if isinstance(weight, bool) or not (
            isinstance(weight, (int, float, np.floating)) and math.isfinite(weight) and weight >= 0
        ):
            raise ValueError(f"guidance_weight must be a finite number >= 0; got {weight!r}")
        return method, dict(guidance_weight=float(weight))
    return method, {}


def sample_impute(
    key: PRNGKeyArray,
    sde: AbstractSDE,
    score_fn: ScoreFn,
    x_known: Array,
    mask: Array,
    basis: Array | None = None,
    predictor: str | AbstractPredictor | None = "reverse_diffusion",
    corrector: str | AbstractCorrector | None = "auto",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    num_steps: int = 1000,
    eps: float = 1e-3,
    denoise: bool = True,
    *,
    method: str = "replacement",
    num_particles: int | None = None,
    ess_threshold: float | None = None,
    guidance_weight: float | None = None,
) -> tuple[Array, int]:
    """Sample the unknown coordinates given the known ones (see the module docstring).

    Args:
        key: randomness for the prior draw and every step.
        sde: an `AbstractLinearSDE`.
        score_fn: the score of the unconditional model, `score_fn(x, t)`. Method "smc"
            calls it on batches of `B * num_particles`.
        x_known: `(B, *dims)`; its values count where `mask` is 1 (elsewhere they are ignored).
        mask: 1 for known, 0 for unknown coordinates (in `basis`), broadcastable to x_known.
        basis: an orthogonal `(C, C)` matrix on the last axis (`y = x @ basis`); None for
            the identity.
        predictor, snr, n_corrector_steps, num_steps, eps, denoise: as in `sample_pc`.
            Method "smc" needs a Gaussian predictor (`AbstractGaussianPredictor`: all three
            named ones).
        corrector: as in `sample_pc`; "auto" (the default) is "langevin" for replacement
            and reconstruction guidance and None for "smc", which takes no corrector (its
            weights are the predictor's transition density).
        method: "replacement" (score_sde's, the default), "smc" (converges to the exact
            conditional as num_particles grows) or "reconstruction_guidance".
        num_particles: method "smc": particles per observation (default 16).
        ess_threshold: method "smc": resample an observation's particles when their
            effective sample size falls below this fraction of num_particles (default 0.5;
            1 resamples at every step, 0 never).
        guidance_weight: method "reconstruction_guidance": the weight of the gradient
            term (default 1; 0 is replacement).

    Returns:
        `(x, nfe)`: x equals x_known on the known coordinates exactly; nfe is the number of
        score evaluations per returned sample: the PC sampler's for replacement and
        reconstruction guidance (each guided evaluation also backpropagates through the
        score), `num_particles * (num_steps - 1) + 1` predictor steps' for "smc".
    """
    method, settings = _method_settings(method, num_particles, ess_threshold, guidance_weight)
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
    replace = _Replacement(sde, _to_basis(x_known, basis), mask, basis)
    if method == "smc":
        if corrector not in ("auto", None, "none"):
            raise ValueError(
                f"method='smc' takes no corrector (its weights are the predictor's transition "
                f"density); got corrector={corrector!r}"
            )
        step = get_predictor(predictor)
        if not isinstance(step, AbstractGaussianPredictor):
            raise ValueError(
                "method='smc' needs a predictor with a Gaussian step (euler_maruyama, "
                f"reverse_diffusion, ancestral or an AbstractGaussianPredictor); got {predictor!r}"
            )
        smc = _SMC(
            step, check_steps("num_steps", num_steps), check_eps_setting(eps),
            check_bool("denoise", denoise), **settings,
        )  # fmt: skip
        check_eps(eps, sde.T)
        k = settings["num_particles"]
        check_score_fn(score_fn, (x_known.shape[0] * k, *x_known.shape[1:]), x_known.dtype)
        x, _ = _smc_chain(smc, key, sde, score_fn, replace)
        return x, smc.nfe
    if corrector == "auto":
        corrector = "langevin"
    sampler = PCSampler(
        predictor, corrector, num_steps, eps, denoise, snr=snr, n_corrector_steps=n_corrector_steps
    )
    check_eps(eps, sde.T)
    check_score_fn(score_fn, x_known.shape, x_known.dtype)
    if method == "reconstruction_guidance":
        score_fn = _ReconstructionGuidance(sde, score_fn, replace, settings["guidance_weight"])
    return _impute(sampler, key, sde, score_fn, replace), sampler.nfe


@eqx.filter_jit
def _impute(sampler, key, sde, score_fn, replace):
    x = sampler.chain(key, sde, score_fn, replace.y_known.shape, project=replace)
    return replace.restore(x)


def sample_inpaint(
    key: PRNGKeyArray, sde: AbstractSDE, score_fn: ScoreFn, x_known: Array, mask: Array, **kwargs
) -> tuple[Array, int]:
    """Fill in the pixels where `mask == 0` given those where `mask == 1`. `mask`
    broadcasts to `x_known` (e.g. `(1, H, W, 1)`); `kwargs` go to `sample_impute` (method,
    num_particles, predictor, corrector, snr, num_steps, ...)."""
    return sample_impute(key, sde, score_fn, x_known, mask, **kwargs)


def sample_colorize(
    key: PRNGKeyArray, sde: AbstractSDE, score_fn: ScoreFn, gray: Array, **kwargs
) -> tuple[Array, int]:
    """Color images whose channel mean is `gray` (`(B, H, W)` or `(B, H, W, 1)`), with a
    score function of RGB images `(B, H, W, 3)`. The result's channel mean equals `gray`
    exactly. `kwargs` go to `sample_impute` (method, num_particles, predictor, ...)."""
    gray = jnp.asarray(gray)
    if gray.ndim == 4 and gray.shape[-1] == 1:
        gray = gray[..., 0]
    if gray.ndim != 3:
        raise ValueError(f"gray must be (B, H, W) or (B, H, W, 1); got shape {gray.shape}")
    x_known = jnp.repeat(gray[..., None], 3, axis=-1)
    mask = jnp.asarray([1.0, 0.0, 0.0], x_known.dtype)
    return sample_impute(key, sde, score_fn, x_known, mask, basis=COLOR_BASIS, **kwargs)
