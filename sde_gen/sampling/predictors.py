r"""Predictors: one step of a reverse-time sampler from time t to t_next < t.

Song et al. 2021, Algorithms 2-3 and appendix E-F. Each predictor returns `(x, x_mean)`:
the new sample and its mean before the noise of this step, so that the sampler's final
step can return the noise-free mean ("denoising").

- `AbstractGaussianPredictor`: a step `N(mean, std^2 I)`; the three below are such steps.
- `EulerMaruyama`: Euler-Maruyama on the reverse SDE; any `AbstractSDE`.
- `ReverseDiffusion`: `x <- x - f + G^2 s + G z` with the forward discretization
  `(f, G) = sde.discretize(x, t_next, t)`; any `AbstractSDE` (exact kernel for linear ones).
- `AncestralSampling`: draw from the forward chain's posterior
  `q(x_{t_next} | x_t, x_0 = x0_hat)` with Tweedie's `x0_hat`; any `AbstractLinearSDE`.
  For VE this is SMLD's ancestral step exactly; for VP it is DDPM's step with the
  posterior variance `beta_tilde`. The step leaves out the `Var[x_0 | x_t]` part of the
  true reverse kernel, so it under-disperses by about `beta(0) dt log(N)` in variance:
  negligible for score_sde's schedules (beta_min = 0.1), visible for coarse steps on a
  schedule with large beta near t = 0.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from .._checks import choose
from ..score import ScoreFn
from ..sde import AbstractLinearSDE, AbstractSDE, batch_broadcast, batch_times
from .base import tweedie


def require_linear(sde: AbstractSDE, what: str) -> AbstractLinearSDE:
    if not isinstance(sde, AbstractLinearSDE):
        raise ValueError(
            f"{what} needs an AbstractLinearSDE (it uses the Gaussian transition kernel); "
            f"got {type(sde).__name__}"
        )
    return sde


class AbstractPredictor(eqx.Module):
    """One reverse step `x_t -> x_{t_next}`; `nfe` score evaluations per step."""

    @property
    def nfe(self) -> int:
        """Score evaluations per step."""
        return 1

    @abc.abstractmethod
    def __call__(
        self,
        key: PRNGKeyArray,
        sde: AbstractSDE,
        score_fn: ScoreFn,
        x: Array,
        t: Array,
        t_next: Array,
    ) -> tuple[Array, Array]:
        """Returns `(x_next, x_next_mean)`; t and t_next are scalars with t_next < t."""


class AbstractGaussianPredictor(AbstractPredictor):
    """A predictor whose step is a Gaussian with isotropic covariance,
    `x_next ~ N(mean(x, t, t_next), std(t, t_next)^2 I)`, the std the same for every
    example. Subclasses give `mean_and_std`; the step draws the noise. Sequential Monte
    Carlo imputation (`sample_impute(method="smc")`) weights its particles by this density.
    """

    @abc.abstractmethod
    def mean_and_std(
        self,
        sde: AbstractSDE,
        score_fn: ScoreFn,
        x: Array,
        t: Array,
        t_next: Array,
    ) -> tuple[Array, Array]:
        """`(mean, std)`: the step's mean (shaped like x) and its std (a scalar or `(B,)`)."""

    def __call__(self, key, sde, score_fn, x, t, t_next):
        mean, std = self.mean_and_std(sde, score_fn, x, t, t_next)
        noise = jax.random.normal(key, x.shape, x.dtype)
        return mean + batch_broadcast(std, x) * noise, mean


class EulerMaruyama(AbstractGaussianPredictor):
    """`x <- x + [f - g^2 s] dt + g sqrt(|dt|) z` with dt = t_next - t < 0."""

    def mean_and_std(self, sde, score_fn, x, t, t_next):
        dt = t_next - t
        x_mean = x + sde.reverse(score_fn).drift(x, t) * dt
        return x_mean, sde.diffusion(t) * jnp.sqrt(-dt)


class ReverseDiffusion(AbstractGaussianPredictor):
    """Reverse the forward discretization: `x <- x - f + G^2 s + G z`."""

    def mean_and_std(self, sde, score_fn, x, t, t_next):
        f, std = sde.discretize(x, t_next, t)
        big_g = batch_broadcast(std, x)
        return x - f + big_g**2 * score_fn(x, batch_times(t, x)), std


class AncestralSampling(AbstractGaussianPredictor):
    """Sample the forward chain's posterior given Tweedie's estimate of x_0."""

    def mean_and_std(self, sde, score_fn, x, t, t_next):
        sde = require_linear(sde, "the ancestral predictor")
        x0_hat = tweedie(sde, score_fn, x, t)
        return sde.bridge(x0_hat, x, t_next, t)


PREDICTORS = {
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral": AncestralSampling,
    "none": None,
}


def get_predictor(predictor: str | AbstractPredictor | None) -> AbstractPredictor | None:
    """A predictor object from a name in `PREDICTORS`, an object, or None."""
    if isinstance(predictor, AbstractPredictor):
        return predictor
    cls = choose("predictor", predictor, PREDICTORS)
    return None if cls is None else cls()
