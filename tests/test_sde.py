"""SDE coefficients, marginals, kernels and the reverse-time SDE against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SDES
from oracles import ConstantBetaVP, CosineVP, moment_ode_marginal

import sde_gen as sg

ALL_SDES = {**SDES, "user_constant": ConstantBetaVP(), "user_cosine": CosineVP()}
TIMES = np.array([1e-5, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.77, 1.0])


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_marginal_matches_moment_odes(name):
    sde = ALL_SDES[name]
    a, std = sde.marginal(jnp.asarray(TIMES))
    v0 = float(sde.marginal(0.0)[1]) ** 2  # VE starts at sigma_min (score_sde convention)
    a_ref, std_ref = moment_ode_marginal(sde, TIMES, v0=v0)
    np.testing.assert_allclose(a, a_ref, rtol=2e-5)
    np.testing.assert_allclose(std, std_ref, rtol=2e-5, atol=1e-7)


def test_quadrature_marginal_of_user_sde_equals_closed_form():
    sde = ConstantBetaVP(beta=4.0)
    t = jnp.asarray(TIMES)
    a, std = sde.marginal(t)
    np.testing.assert_allclose(a, np.exp(-2.0 * TIMES), rtol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(-np.expm1(-4.0 * TIMES)), rtol=1e-5)


def test_closed_form_constants_match_papers_table():
    vp, subvp, ve = sg.VPSDE(), sg.SubVPSDE(), sg.VESDE()
    b = 0.1 * 0.5 + 0.5 * 19.9 * 0.25  # B(0.5)
    np.testing.assert_allclose(vp.marginal(0.5), (np.exp(-b / 2), np.sqrt(1 - np.exp(-b))), 1e-6)
    np.testing.assert_allclose(subvp.marginal(0.5), (np.exp(-b / 2), 1 - np.exp(-b)), 1e-6)
    np.testing.assert_allclose(ve.marginal(0.5), (1.0, 0.01 * 5000**0.5), 1e-6)
    np.testing.assert_allclose(
        ve.diffusion(0.5) ** 2, 2 * (0.01 * 5000**0.5) ** 2 * np.log(5000), 1e-5
    )
    np.testing.assert_allclose(
        subvp.diffusion(0.5) ** 2, (0.1 + 0.5 * 19.9) * (1 - np.exp(-2 * b)), 1e-5
    )
    assert float(vp.prior_std()) == 1.0 and float(ve.prior_std()) == 50.0


@pytest.mark.parametrize(
    "sde", [sg.VPSDE(), sg.SubVPSDE(beta_min=0.5, beta_max=3.0), sg.VPSDE(10.0, 10.0)]
)
def test_inverse_integrated_beta_inverts_b(sde):
    t = jnp.asarray([1e-5, 1e-3, 0.2, 0.7, 1.0])
    np.testing.assert_allclose(sde.inverse_integrated_beta(sde.integrated_beta(t)), t, rtol=1e-5)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_transition_composes_with_marginals(name):
    sde = ALL_SDES[name]
    s, t = jnp.asarray([0.01, 0.2, 0.5]), jnp.asarray([0.3, 0.21, 0.9])
    a_s, std_s = sde.marginal(s)
    a_t, std_t = sde.marginal(t)
    a_ts, std_ts = sde.transition(s, t)
    np.testing.assert_allclose(a_ts * a_s, a_t, rtol=1e-5)
    np.testing.assert_allclose(a_ts**2 * std_s**2 + std_ts**2, std_t**2, rtol=1e-4)


def test_vp_discretization_is_ddpm_chain():
    """The exact kernel is DDPM's step x' = sqrt(1 - beta_i) x + sqrt(beta_i) z with
    beta_i = 1 - exp(-(B(t) - B(s))), which is beta(t) / N up to O(beta_i^2)."""
    sde, n = sg.VPSDE(), 1000
    s, t = 0.6 - 1 / n, 0.6
    x = jnp.ones((1, 3))
    f, big_g = sde.discretize(x, s, t)
    beta_i = -np.expm1(-(float(sde.integrated_beta(t)) - float(sde.integrated_beta(s))))
    np.testing.assert_allclose(big_g**2, beta_i, rtol=1e-5)
    np.testing.assert_allclose(f, (np.sqrt(1 - beta_i) - 1) * np.ones((1, 3)), rtol=1e-4)
    first_order = float(sde.beta(t)) / n
    np.testing.assert_allclose(beta_i, first_order, rtol=first_order)


def test_ve_discretization_is_smld_chain():
    sde = sg.VESDE()
    x = jnp.zeros((1, 2))
    f, big_g = sde.discretize(x, 0.4, 0.5)
    np.testing.assert_allclose(f, 0.0)
    np.testing.assert_allclose(big_g, np.sqrt(sde.sigma(0.5) ** 2 - sde.sigma(0.4) ** 2), rtol=1e-6)


@pytest.mark.parametrize("name", list(ALL_SDES))
def test_bridge_is_gaussian_conditioning(name):
    """q(x_s | x_t, x_0) from the joint Gaussian of (x_s, x_t) given x_0."""
    sde = ALL_SDES[name]
    s, t = 0.3, 0.55
    x0, xt = jnp.asarray([[0.7, -1.2]]), jnp.asarray([[0.1, 0.4]])
    a_s, std_s = (float(v) for v in sde.marginal(s))
    a_ts, std_ts = (float(v) for v in sde.transition(s, t))
    # Joint: x_s = a_s x0 + std_s u, x_t = a_ts x_s + std_ts w.
    cov_ss, cov_st = std_s**2, a_ts * std_s**2
    cov_tt = a_ts**2 * std_s**2 + std_ts**2
    mean_ref = a_s * x0 + cov_st / cov_tt * (xt - a_ts * a_s * x0)
    var_ref = cov_ss - cov_st**2 / cov_tt
    mean, std = sde.bridge(x0, xt, s, t)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std**2, var_ref, rtol=1e-4)


def test_tweedie_recovers_gaussian_posterior_mean():
    sde, t = sg.VPSDE(), 0.4
    data = sg.Gaussian(jnp.asarray([1.0, -1.0]), jnp.asarray([0.5, 2.0]))
    xt = jnp.asarray([[0.3, 0.2], [-1.0, 2.0]])
    a, std = (float(v) for v in sde.marginal(t))
    # E[x0 | xt] for Gaussian data: m + s^2 a (xt - a m) / (a^2 s^2 + std^2).
    m, s2 = np.asarray(data.mean), np.asarray(data.variance)
    ref = m + s2 * a * (np.asarray(xt) - a * m) / (a**2 * s2 + std**2)
    x0 = sde.x0_from_score(xt, t, data.score_t(sde, xt, t))
    np.testing.assert_allclose(x0, ref, rtol=1e-5)


def test_prior_logp_is_normal_density(sde, key):
    z = sde.prior_sample(key, (5, 3, 2))
    std = float(sde.prior_std())
    ref = jax.scipy.stats.norm.logpdf(z, scale=std).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(sde.prior_logp(z), ref, rtol=1e-5)


def test_prior_sample_has_prior_std(sde, key):
    z = sde.prior_sample(key, (20000, 2))
    std = float(sde.prior_std())
    assert abs(float(jnp.std(z)) / std - 1) < 4 * np.sqrt(1 / (2 * 40000))


def test_marginal_prob_is_score_sde_form(sde):
    x0 = jnp.arange(6.0).reshape(3, 2)
    t = jnp.asarray([0.1, 0.5, 0.9])
    mean, std = sde.marginal_prob(x0, t)
    a, std_ref = sde.marginal(t)
    np.testing.assert_allclose(mean, a[:, None] * x0, rtol=1e-6)
    np.testing.assert_allclose(std, std_ref)


def test_reverse_sde_and_probability_flow_drifts(sde):
    data = sg.Gaussian(jnp.zeros(2), jnp.ones(2))
    score_fn = data.score_fn(sde)
    x, t = jnp.asarray([[0.5, -1.0], [2.0, 0.1]]), jnp.asarray([0.3, 0.7])
    g2 = sde.diffusion(t)[:, None] ** 2
    f, s = sde.drift(x, t), score_fn(x, t)
    np.testing.assert_allclose(sde.reverse(score_fn).drift(x, t), f - g2 * s, rtol=1e-6)
    pf = sde.reverse(score_fn, probability_flow=True)
    np.testing.assert_allclose(pf.drift(x, t), f - 0.5 * g2 * s, rtol=1e-6)
    np.testing.assert_allclose(pf.diffusion(t), 0.0)
    np.testing.assert_allclose(sde.reverse(score_fn).diffusion(t), sde.diffusion(t))


def test_scalar_and_batched_times_agree(sde):
    x = jnp.ones((3, 2))
    np.testing.assert_allclose(sde.drift(x, 0.4), sde.drift(x, jnp.full((3,), 0.4)))
    f1, g1 = sde.discretize(x, 0.3, 0.4)
    f2, g2 = sde.discretize(x, jnp.full((3,), 0.3), jnp.full((3,), 0.4))
    np.testing.assert_allclose(f1, f2, rtol=1e-6)
    np.testing.assert_allclose(jnp.broadcast_to(g1, (3,)), g2, rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sg.VPSDE(beta_min=0.0), "beta_min"),
        (lambda: sg.VPSDE(beta_max=-1.0), "beta_max"),
        (lambda: sg.SubVPSDE(beta_min=float("nan")), "beta_min"),
        (lambda: sg.VESDE(sigma_min=-0.01), "sigma_min"),
        (lambda: sg.VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max must exceed"),
        (lambda: sg.VPSDE(T=0.0), "T"),
    ],
)
def test_bad_schedule_constants_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_perturb_is_the_marginal_draw(name):
    """`perturb(x0, t, z) = a(t) x0 + std(t) z`, per example or for one t, and over many
    draws of z it has the marginal's mean `a(t) x0` and std `std(t)`."""
    sde = SDES[name]
    x0 = jnp.asarray([[1.5, -2.0], [0.3, 4.0]])
    t = jnp.asarray([0.2, 0.9])
    z = jax.random.normal(jax.random.key(0), x0.shape)
    a, std = sde.marginal(t)
    np.testing.assert_allclose(sde.perturb(x0, t, z), a[:, None] * x0 + std[:, None] * z, rtol=1e-6)
    a5, std5 = sde.marginal(0.5)
    np.testing.assert_allclose(sde.perturb(x0, 0.5, z), a5 * x0 + std5 * z, rtol=1e-6)
    n = 40000
    zs = jax.random.normal(jax.random.key(1), (n, 2))
    xt = np.asarray(sde.perturb(jnp.tile(x0[:1], (n, 1)), jnp.full((n,), 0.2), zs))
    np.testing.assert_allclose(xt.mean(0), a[0] * x0[0], atol=4 * float(std[0]) / np.sqrt(n))
    np.testing.assert_allclose(xt.std(0), float(std[0]), rtol=4 / np.sqrt(2 * n))
