r"""Weighted denoising score matching (Song et al. 2021, eq. 7; Song, Durkan et al. 2021).

For a linear SDE, `x_t = a(t) x_0 + std(t) z` and `grad log p_0t(x_t | x_0) = -z / std(t)`,
so the per-example objective is

    lambda(t) || s(x_t, t) + z / std(t) ||^2  =  lambda(t) / std(t)^2 || std(t) s(x_t, t) + z ||^2,

reduced over data dimensions by a mean (`reduce_mean=True`) or half a sum (score_sde's
convention), with t drawn by a time sampler. The pieces compose, optax-style:

- weightings `lambda(sde, t)`: `sigma2_weighting` (`std^2`, score_sde's default; the
  noise-prediction loss) and `likelihood_weighting` (`g^2`, which makes the objective a
  bound on the KL divergence, up to `KL(p_T || prior)`);
- time samplers returning `(t, w)` with `E[w f(t)] = E_{t ~ U(eps, T)}[f(t)]`:
  `UniformTime`, `ImportanceTime` (density proportional to `g^2 / std^2`, which removes
  most of the variance of the likelihood-weighted loss), and `DiscreteTime` (a grid of
  `num_scales` times: the discrete DDPM objective with a VP SDE, SMLD's with a VE SDE).

`dsm_loss` returns per-example losses `(B,)`; average them for a batch loss.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_eps, check_score_fn, check_steps, check_x, choose
from .score import ScoreFn
from .sde import AbstractLinearSDE, batch_broadcast

Weighting = Callable[[AbstractLinearSDE, Array], Array]


def sigma2_weighting(sde: AbstractLinearSDE, t: Array) -> Array:
    """`lambda(t) = std(t)^2`: the loss becomes `|| std s + z ||^2` (noise prediction)."""
    return sde.marginal(t)[1] ** 2


def likelihood_weighting(sde: AbstractLinearSDE, t: Array) -> Array:
    """`lambda(t) = g(t)^2`: the weighting that bounds the negative log-likelihood."""
    return sde.diffusion(t) ** 2


WEIGHTINGS = {"sigma2": sigma2_weighting, "likelihood": likelihood_weighting}


class AbstractTimeSampler(eqx.Module):
    """Draws `(t, w)` for a batch, with `E[w f(t)] = E_{t ~ U(eps, T)}[f(t)]`."""

    @abc.abstractmethod
    def __call__(self, key: PRNGKeyArray, sde: AbstractLinearSDE, n: int) -> tuple[Array, Array]:
        """Times `(n,)` and weights `(n,)`."""


class UniformTime(AbstractTimeSampler):
    """`t ~ U(eps, T)`, weight 1 (score_sde's continuous training)."""

    eps: float = 1e-5

    def __call__(self, key, sde, n):
        t = jax.random.uniform(key, (n,), minval=self.eps, maxval=sde.T)
        return t, jnp.ones((n,))


class ImportanceTime(AbstractTimeSampler):
    """`t ~ q(t) ∝ g(t)^2 / std(t)^2` on `[eps, T]`, weight `1 / ((T - eps) q(t))`.

    With `likelihood_weighting` the weighted loss becomes `Z / (T - eps) || std s + z ||^2`
    (Z the normalizer of q): the likelihood bound with the variance of sigma^2 weighting.
    The inverse CDF is `sde.importance_time` (closed form for VP and VE, numeric otherwise).
    """

    eps: float = 1e-5

    def __call__(self, key, sde, n):
        t, density = sde.importance_time(jax.random.uniform(key, (n,)), self.eps)
        return t, 1.0 / ((sde.T - self.eps) * density)


class DiscreteTime(AbstractTimeSampler):
    """t uniform on the grid `T (i + 1) / num_scales`, i = 0 .. num_scales - 1, weight 1.

    With `sigma2_weighting` this is DDPM's `L_simple` for a VP SDE (noise levels given by
    the SDE's exact marginals at the grid times) and SMLD's objective for a VE SDE.
    """

    num_scales: int = eqx.field(static=True, default=1000)

    def __check_init__(self):
        check_steps("num_scales", self.num_scales)

    def __call__(self, key, sde, n):
        i = jax.random.randint(key, (n,), 0, self.num_scales)
        return sde.T * (i + 1) / self.num_scales, jnp.ones((n,))


TIME_SAMPLERS = {"uniform": UniformTime, "importance": ImportanceTime}


def dsm_loss(
    key: PRNGKeyArray,
    sde: AbstractLinearSDE,
    score_fn: ScoreFn,
    x0: Float[Array, "batch *dims"],
    weighting: str | Weighting = "sigma2",
    time_sampler: str | AbstractTimeSampler = "uniform",
    reduce_mean: bool = True,
    eps: float = 1e-5,
) -> Float[Array, " batch"]:
    """Per-example weighted denoising score matching losses, shape `(B,)`.

    Args:
        key: draws the times and the noise; a scalar key, or one key per example `(B,)`.
        sde: a linear SDE (its Gaussian perturbation kernel is the target).
        score_fn: `score_fn(x, t)`, shaped like x.
        x0: clean data `(B, *dims)`.
        weighting: "sigma2", "likelihood", or a function `(sde, t) -> lambda(t)`.
        time_sampler: "uniform", "importance" (both on `[eps, T]`), or an
            `AbstractTimeSampler` such as `DiscreteTime(num_scales)`.
        reduce_mean: mean over data dimensions; otherwise half the sum (score_sde).
        eps: smallest time for samplers given by name.
    """
    x0 = check_x("x0", x0)
    if key.shape not in ((), (x0.shape[0],)):
        raise ValueError(
            f"key must be one key or one per example ({x0.shape[0]},); got {key.shape}"
        )
    if not callable(weighting):
        weighting = choose("weighting", weighting, WEIGHTINGS)
    if not isinstance(time_sampler, AbstractTimeSampler):
        check_eps(eps, sde.T)
        time_sampler = choose("time sampler", time_sampler, TIME_SAMPLERS)(eps=eps)
    check_score_fn(score_fn, x0.shape, x0.dtype)
    return dsm_losses(key, sde, score_fn, x0, weighting, time_sampler, reduce_mean)


def draw_times_and_noise(
    key: PRNGKeyArray, sde: AbstractLinearSDE, time_sampler: AbstractTimeSampler, x0: Array
) -> tuple[Float[Array, " batch"], Float[Array, " batch"], Float[Array, "batch *dims"]]:
    """`(t, w, z)`: times, weights and standard normal noise shaped like x0 for the batch,
    from one key, or one key per example `(B,)` (then each example's draws depend on its
    own key alone, whatever the batch is split into)."""
    if key.shape == ():
        t_key, z_key = jax.random.split(key)
        t, w = time_sampler(t_key, sde, x0.shape[0])
        return t, w, jax.random.normal(z_key, x0.shape, x0.dtype)

    def one(example_key):
        t_key, z_key = jax.random.split(example_key)
        t, w = time_sampler(t_key, sde, 1)
        return t[0], w[0], jax.random.normal(z_key, x0.shape[1:], x0.dtype)

    return jax.vmap(one)(key)


def dsm_losses(
    key: PRNGKeyArray,
    sde: AbstractLinearSDE,
    score_fn: ScoreFn,
    x0: Float[Array, "batch *dims"],
    weighting: Weighting,
    time_sampler: AbstractTimeSampler,
    reduce_mean: bool,
) -> Float[Array, " batch"]:
    """The per-example losses of `dsm_loss` without its argument checks (for use inside a
    compiled train step): `weighting` a function, `time_sampler` an object."""
    t, w, z = draw_times_and_noise(key, sde, time_sampler, x0)
    t, w = t.astype(x0.dtype), w.astype(x0.dtype)
    std = sde.marginal(t)[1]
    xt = sde.perturb(x0, t, z)
    residual = (batch_broadcast(std, x0) * score_fn(xt, t) + z) ** 2
    residual = residual.reshape(x0.shape[0], -1)
    reduced = jnp.mean(residual, axis=1) if reduce_mean else 0.5 * jnp.sum(residual, axis=1)
    return w * weighting(sde, t) / std**2 * reduced


def nll_bound(
    key: PRNGKeyArray,
    sde: AbstractLinearSDE,
    score_fn: ScoreFn,
    x0: Float[Array, "batch *dims"],
    num_samples: int = 16,
    eps: float = 1e-5,
    time_sampler: str | AbstractTimeSampler = "importance",
) -> tuple[Float[Array, " batch"], Float[Array, " batch"]]:
    r"""Per-example upper bound on `-log p_eps(x)` in nats (Song, Durkan et al. 2021, Thm. 3),
    by Monte Carlo over `num_samples` draws of `(t, x_t)` per example:

        -log p(x) <= -E[log pi(x_T)]
                     + 1/2 int_eps^T E[ g^2 ||s - grad log p_0t||^2 - g^2 ||grad log p_0t||^2
                                        - 2 div f ] dt,

    with `grad log p_0t = -z / std`, `E ||grad log p_0t||^2 = D / std^2` and `div f = D f(t)`
    for a linear SDE. Returns the estimate and its Monte Carlo standard error, both `(B,)`.
    `time_sampler`: "importance" or "uniform" on `[eps, T]`, or a `UniformTime` /
    `ImportanceTime` (whose own eps then sets the interval).
    """
    x0 = check_x("x0", x0)
    check_eps(eps, sde.T)
    check_steps("num_samples", num_samples)
    if not isinstance(time_sampler, AbstractTimeSampler):
        time_sampler = choose("time sampler", time_sampler, TIME_SAMPLERS)(eps=eps)
    _check_bound_sampler(time_sampler)
    check_score_fn(score_fn, x0.shape, x0.dtype)
    b = x0.shape[0]
    prior_key, *keys = jax.random.split(key, num_samples + 1)
    terms = jnp.stack(
        [_bound_integral(jax.random.split(k, b), sde, score_fn, x0, time_sampler) for k in keys]
    )  # (num_samples, B)
    prior_noise = jax.random.normal(prior_key, x0.shape, x0.dtype)
    estimate = _prior_term(sde, x0, prior_noise) + jnp.mean(terms, axis=0)
    stderr = jnp.std(terms, axis=0, ddof=1) / math.sqrt(num_samples)
    return estimate, stderr


def nll_bound_losses(
    key: PRNGKeyArray,
    sde: AbstractLinearSDE,
    score_fn: ScoreFn,
    x0: Float[Array, "batch *dims"],
    time_sampler: AbstractTimeSampler,
) -> Float[Array, " batch"]:
    """One-draw unbiased estimates of `nll_bound`'s bound per example, in nats (one `(t, z)`
    and one prior draw each; `key` one per example): a training loss whose gradient in the
    score is that of likelihood-weighted DSM, and which is also differentiable in x0 (for
    a learned dequantization of x0). Without argument checks, for compiled train steps;
    `time_sampler` is a `UniformTime` or `ImportanceTime`."""
    integral_keys, prior_keys = jnp.moveaxis(jax.vmap(jax.random.split)(key), 1, 0)
    integral = _bound_integral(integral_keys, sde, score_fn, x0, time_sampler)
    prior_noise = jax.vmap(lambda k: jax.random.normal(k, x0.shape[1:], x0.dtype))(prior_keys)
    return _prior_term(sde, x0, prior_noise) + integral


def _check_bound_sampler(time_sampler: AbstractTimeSampler) -> None:
    if not isinstance(time_sampler, (UniformTime, ImportanceTime)):
        raise ValueError(
            f"the likelihood bound needs times on [eps, T] (UniformTime or ImportanceTime); "
            f"got {type(time_sampler).__name__}"
        )


def _bound_integral(keys, sde, score_fn, x0, time_sampler):
    """The bound's integral over `[eps, T]` by one draw of `(t, x_t)` per example."""
    b, d = x0.shape[0], math.prod(x0.shape[1:])
    t, w, z = draw_times_and_noise(keys, sde, time_sampler, x0)
    t, w = t.astype(x0.dtype), w.astype(x0.dtype)
    std = sde.marginal(t)[1]
    xt = sde.perturb(x0, t, z)
    residual = (score_fn(xt, t) + z / batch_broadcast(std, x0)).reshape(b, -1)
    g2 = sde.diffusion(t) ** 2
    integrand = g2 * (jnp.sum(residual**2, axis=1) - d / std**2) - 2 * d * sde.drift_coeff(t)
    return 0.5 * (sde.T - time_sampler.eps) * w * integrand


def _prior_term(sde, x0, noise):
    """`-log pi(x_T)` for the draw `x_T = a(T) x0 + std(T) noise` of `p_0T(. | x0)`."""
    t_T = jnp.full((x0.shape[0],), sde.T, x0.dtype)
    return -sde.prior_logp(sde.perturb(x0, t_T, noise))
