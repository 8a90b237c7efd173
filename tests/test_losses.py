"""Denoising score matching losses against their closed-form expectations.

With the exact score of Gaussian data N(m, s^2) (per dimension), `std s + z` has
`E[(std s + z)^2] = a^2 s^2 / (a^2 s^2 + std^2)`, so every expected loss below is an
integral over t of known functions, evaluated by scipy quadrature in float64.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from conftest import SDES
from oracles import ConstantBetaVP

import sde_gen as sg

N = 50_000
GAUSSIAN = sg.Gaussian(jnp.linspace(-1.0, 1.0, 16), jnp.logspace(-2, 0, 16))
ALL_SDES = {**SDES, "user": ConstantBetaVP()}


class FixedTime(sg.AbstractTimeSampler):
    """Every example at one time (a sampler written as a user would)."""

    t: float

    def __call__(self, key, sde, n):
        return jnp.full((n,), self.t), jnp.ones((n,))


def per_dim_residual(sde, t):
    """`mean_d a^2 s_d^2 / (a^2 s_d^2 + std^2)` at times t (float64)."""
    a, std = (np.asarray(v, np.float64)[..., None] for v in sde.marginal(np.asarray(t)))
    s2 = np.asarray(GAUSSIAN.variance, np.float64)
    return np.mean(a**2 * s2 / (a**2 * s2 + std**2), axis=-1)


def expected(sde, integrand, eps):
    """`E_{t ~ U(eps, T)}[integrand(t)]`: trapezoid rule in log t on 40,001 points, whose
    error (~1e-8 relative for these smooth integrands) is far below the Monte Carlo SE."""
    log_t = np.linspace(np.log(eps), np.log(sde.T), 40_001)
    t = np.exp(log_t)
    return scipy.integrate.trapezoid(integrand(t) * t, log_t) / (sde.T - eps)


def mc_mean_and_se(losses):
    losses = np.asarray(losses, np.float64)
    return losses.mean(), losses.std(ddof=1) / np.sqrt(len(losses))


@pytest.mark.parametrize("t", [1e-3, 0.1, 0.5, 0.9])
def test_sigma2_loss_with_exact_score_equals_closed_form(sde, t, key):
    x0 = GAUSSIAN.sample(jax.random.key(1), N)
    losses = sg.dsm_loss(key, sde, GAUSSIAN.score_fn(sde), x0, time_sampler=FixedTime(t))
    mean, se = mc_mean_and_se(losses)
    exact = float(per_dim_residual(sde, t))
    assert abs(mean - exact) < 4.5 * se, (mean, exact, se)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_expected_sigma2_loss_over_uniform_time(name, key):
    sde, eps = ALL_SDES[name], 1e-3
    x0 = GAUSSIAN.sample(jax.random.key(1), N)
    losses = sg.dsm_loss(key, sde, GAUSSIAN.score_fn(sde), x0, eps=eps)
    mean, se = mc_mean_and_se(losses)
    exact = expected(sde, lambda t: per_dim_residual(sde, t), eps)
    assert abs(mean - exact) < 4.5 * se, (mean, exact, se)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_importance_sampled_and_plain_likelihood_losses_agree_in_expectation(name, key):
    """Both estimate E_U[g^2 / std^2 * residual]; importance sampling with far less variance."""
    sde, eps = ALL_SDES[name], 1e-3
    x0 = GAUSSIAN.sample(jax.random.key(1), N)
    score_fn = GAUSSIAN.score_fn(sde)

    def integrand(t):
        g2 = np.asarray(sde.diffusion(t), np.float64) ** 2
        std2 = np.asarray(sde.marginal(t)[1], np.float64) ** 2
        return g2 / std2 * per_dim_residual(sde, t)

    exact = expected(sde, integrand, eps)
    plain = sg.dsm_loss(key, sde, score_fn, x0, weighting="likelihood", eps=eps)
    importance = sg.dsm_loss(
        key, sde, score_fn, x0, weighting="likelihood", time_sampler="importance", eps=eps
    )
    for losses in (plain, importance):
        mean, se = mc_mean_and_se(losses)
        assert abs(mean - exact) < 4.5 * se, (mean, exact, se)
    if name != "ve":  # for VE, g^2 / std^2 is constant: importance sampling is uniform
        assert np.var(np.asarray(importance)) < np.var(np.asarray(plain)) / 10


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_importance_weights_are_unbiased(name, key):
    """`E_q[1 / ((T - eps) q(t))] = 1` and `E_q[w t] = E_U[t]`: the reweighting is exact."""
    sde, eps = ALL_SDES[name], 1e-4
    t, w = sg.ImportanceTime(eps=eps)(key, sde, 200_000)
    assert float(jnp.min(t)) >= eps * (1 - 1e-5) and float(jnp.max(t)) <= sde.T
    for values, target in ((w, 1.0), (w * t, (sde.T + eps) / 2)):
        mean, se = mc_mean_and_se(values)
        assert abs(mean - target) <= 4.5 * se + 1e-6, (mean, target, se)  # VE: w == 1 exactly


def test_vp_closed_form_importance_time_matches_the_numeric_rule():
    sde, u = sg.VPSDE(), jnp.linspace(0.0, 0.999, 50)
    t_closed, q_closed = sde.importance_time(u, 1e-5)
    t_numeric, q_numeric = sg.AbstractLinearSDE.importance_time(sde, u, 1e-5)
    np.testing.assert_allclose(t_closed, t_numeric, rtol=1e-4)
    np.testing.assert_allclose(q_closed, q_numeric, rtol=5e-3)


def test_discrete_time_is_uniform_on_the_grid(key):
    sde, n_scales = sg.VESDE(), 10
    t, w = sg.DiscreteTime(n_scales)(key, sde, 100_000)
    index = np.asarray(t) * n_scales - 1
    np.testing.assert_allclose(index, np.round(index), atol=1e-4)
    counts = np.bincount(np.round(index).astype(int), minlength=n_scales)
    assert counts.shape == (n_scales,)
    np.testing.assert_allclose(counts / 100_000, 0.1, atol=4.5 * np.sqrt(0.09 / 100_000))
    np.testing.assert_array_equal(w, 1.0)


def test_discrete_loss_with_exact_score_equals_grid_average(sde, key):
    """DDPM's L_simple (VP) / SMLD's objective (VE): the grid average of the closed form."""
    n_scales = 8
    x0 = GAUSSIAN.sample(jax.random.key(1), N)
    losses = sg.dsm_loss(
        key, sde, GAUSSIAN.score_fn(sde), x0, time_sampler=sg.DiscreteTime(n_scales)
    )
    exact = np.mean(per_dim_residual(sde, (np.arange(n_scales) + 1) / n_scales))
    mean, se = mc_mean_and_se(losses)
    assert abs(mean - exact) < 4.5 * se


def test_reduce_sum_is_half_the_sum_over_dimensions(key):
    sde, x0 = sg.VPSDE(), GAUSSIAN.sample(jax.random.key(1), 64)
    score_fn = GAUSSIAN.score_fn(sde)
    mean_losses = sg.dsm_loss(key, sde, score_fn, x0, reduce_mean=True)
    sum_losses = sg.dsm_loss(key, sde, score_fn, x0, reduce_mean=False)
    np.testing.assert_allclose(sum_losses, 0.5 * 16 * mean_losses, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("sampler", ["uniform", "importance", "at_eps"])
def test_gradients_are_finite_near_eps(sde, weighting, sampler, key):
    """A parametric score (a Gaussian with learnable mean and variance), trained at t ~ eps."""
    eps = 1e-5

    def score(params, x, t):
        a, std = sde.marginal(t)
        var = a[:, None] ** 2 * jnp.exp(params["log_var"]) + std[:, None] ** 2
        return -(x - a[:, None] * params["mean"]) / var

    x0 = GAUSSIAN.sample(jax.random.key(1), 256)
    time_sampler = FixedTime(eps) if sampler == "at_eps" else sampler

    def loss(params):
        score_fn = jax.tree_util.Partial(score, params)
        return jnp.mean(sg.dsm_loss(key, sde, score_fn, x0, weighting, time_sampler, eps=eps))

    params = {"mean": jnp.zeros(16), "log_var": jnp.zeros(16)}
    value, grads = jax.value_and_grad(loss)(params)
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    assert float(jnp.max(jnp.abs(grads["mean"]))) > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(weighting="sigma"), "unknown weighting 'sigma'; choose one of sigma2, likelihood"),
        (dict(time_sampler="imp"), "unknown time sampler 'imp'; choose one of uniform, importance"),
        (dict(eps=0.0), "eps must satisfy 0 < eps < T"),
    ],
)
def test_bad_loss_arguments_raise_before_work(kwargs, message, key):
    sde = sg.VPSDE()
    with pytest.raises(ValueError, match=message):
        sg.dsm_loss(key, sde, GAUSSIAN.score_fn(sde), jnp.zeros((4, 16)), **kwargs)


def test_bad_loss_inputs_raise(key):
    sde = sg.VPSDE()
    with pytest.raises(ValueError, match="event shape"):
        sg.dsm_loss(key, sde, GAUSSIAN.score_fn(sde), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="num_scales must be a positive int"):
        sg.DiscreteTime(0)


SLOW = pytest.mark.slow  # the same code for every SDE: VP in the default suite


@pytest.mark.parametrize(
    "sde",
    [sg.VPSDE(), pytest.param(sg.SubVPSDE(), marks=SLOW), pytest.param(sg.VESDE(), marks=SLOW)],
    ids=["vp", "subvp", "ve"],
)
def test_nll_bound_with_the_exact_score_is_the_entropy_plus_the_prior_gap(sde):
    """With the true score the per-example bound is tight up to the prior mismatch: its mean
    over data equals E[-log p(x)] + KL(p_T || pi), both closed-form for Gaussian data. A
    wrong score (scaled by 0.7) raises it clearly."""
    mean, var = jnp.array([0.5, -1.0, 2.0, 0.0]), jnp.array([0.3, 1.0, 0.05, 0.5])
    data = sg.Gaussian(mean, var)
    x = data.sample(jax.random.key(0), 20_000)
    bound = eqx.filter_jit(lambda k, s: sg.nll_bound(k, sde, s, x, num_samples=16)[0])
    exact_score = data.score_fn(sde)
    est = bound(jax.random.key(1), exact_score)
    a, std = (float(v[0]) for v in sde.marginal(jnp.ones(1)))
    prior_var = sde.sigma_max**2 if isinstance(sde, sg.VESDE) else 1.0
    m_T, v_T = a * mean, a**2 * var + std**2
    kl = jnp.sum(0.5 * (v_T / prior_var + m_T**2 / prior_var - 1 - jnp.log(v_T / prior_var)))
    expected = float(jnp.mean(-data.log_prob(x)) + kl)
    se = float(jnp.std(est) / np.sqrt(len(x)))
    assert float(jnp.mean(est)) == pytest.approx(expected, abs=4 * se)
    worse = bound(jax.random.key(1), lambda y, t: 0.7 * exact_score(y, t))
    assert float(jnp.mean(worse)) > expected + 10 * se
