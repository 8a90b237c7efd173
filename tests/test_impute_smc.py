"""Imputation by sequential Monte Carlo against exact conditionals: the slope and spread of
a correlated Gaussian's conditional, the posterior component weights of a two-component
mixture, the error against the particle count, and the replacement and
reconstruction-guidance methods it is compared with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg

RHO = 0.8  # x0 | x1 ~ N(0.8 x1, 0.36): slope 0.8, conditional std 0.6
N_OBS = 4000
MASK = jnp.asarray([0.0, 1.0])  # x1 known, x0 imputed


def _gaussian_problem():
    g = sg.MultivariateGaussian(np.zeros(2), np.array([[1.0, RHO], [RHO, 1.0]]))
    x1 = jax.random.normal(jax.random.key(5), (N_OBS,))
    return g, jnp.stack([jnp.zeros(N_OBS), x1], axis=1)


def _slope_and_std(x, x_obs):
    """Least-squares slope of the imputed x0 on the known x1, and the residual std.

    Monte Carlo error with N_OBS = 4000 independent draws (x1 ~ N(0, 1)): the slope's
    standard error is 0.6 / sqrt(4000) = 0.0095, the std's 0.6 / sqrt(2 * 4000) = 0.0067
    (1.1%), against tolerances of 0.05 (5.3 s.e.) and 5% (4.4 s.e.)."""
    x, x_obs = np.asarray(x, np.float64), np.asarray(x_obs, np.float64)
    np.testing.assert_array_equal(x[:, 1], x_obs[:, 1])  # the known coordinate, exactly
    design = np.stack([np.ones(len(x)), x_obs[:, 1]], axis=1)
    coef, *_ = np.linalg.lstsq(design, x[:, 0], rcond=None)
    return coef[1], np.std(x[:, 0] - design @ coef, ddof=2)


def _impute(g, x_obs, **kwargs):
    sde = sg.VPSDE()
    return sg.sample_impute(jax.random.key(1), sde, g.score_fn(sde), x_obs, MASK, **kwargs)


def test_smc_recovers_the_gaussian_conditional_slope_and_std():
    """VP, reverse diffusion, 500 steps, 32 particles. Measured: slope 0.783, std 0.606."""
    g, x_obs = _gaussian_problem()
    x, nfe = _impute(g, x_obs, method="smc", num_particles=32, num_steps=500)
    assert nfe == 32 * 499 + 1
    slope, std = _slope_and_std(x, x_obs)
    assert abs(slope - RHO) < 0.05, slope
    assert abs(std / 0.6 - 1) < 0.05, std


def test_smc_error_falls_with_the_particles_and_replacement_stays_biased():
    """200 steps. Measured slopes: replacement 0.49 (the issue's 0.48), reconstruction
    guidance (weight 1) 0.62; SMC with 1, 4 and 16 particles 0.49, 0.70, 0.77. With one
    particle SMC is replacement along one forward path. Each slope has s.e. 0.0095, so the
    steps between the errors (0.21, 0.07) are 15 and 5 s.e. of their difference."""
    g, x_obs = _gaussian_problem()
    errors = []
    for k in (1, 4, 16):
        x, _ = _impute(g, x_obs, method="smc", num_particles=k, num_steps=200)
        errors.append(abs(_slope_and_std(x, x_obs)[0] - RHO))
    assert errors[0] > errors[1] + 0.1 > errors[2] + 0.13, errors
    x, nfe = _impute(g, x_obs, corrector=None, num_steps=200)
    replacement, _ = _slope_and_std(x, x_obs)
    assert nfe == 200 and replacement < 0.6, replacement  # far from 0.8: not SMC in disguise
    x, nfe = _impute(g, x_obs, method="reconstruction_guidance", corrector=None, num_steps=200)
    guided, _ = _slope_and_std(x, x_obs)
    assert nfe == 200 and replacement + 0.05 < guided < RHO - 0.1, (replacement, guided)


def test_smc_gives_the_mixture_posterior_component_weights():
    """Two components, x0 at -2 / 2 (std 0.5), x1 at -1 / 1 (std 1), weights 0.7 / 0.3;
    observing x1 = 1 moves the second component's weight to sigmoid(log(3/7) + 2) = 0.760.
    8000 draws of x0 (its sign is the component: misassignment 3e-5): the weight's s.e. is
    0.0048, the tolerance 0.02. Measured (200 steps, 64 particles): 0.750; replacement 0.41."""
    sde = sg.VPSDE()
    mixture = sg.GaussianMixture(
        means=[[-2.0, -1.0], [2.0, 1.0]], variances=[[0.25, 1.0], [0.25, 1.0]], weights=[0.7, 0.3]
    )
    y, n = 1.0, 8000
    log_odds = np.log(0.3 / 0.7) + 2 * y  # the x1 likelihood ratio of N(1, 1) to N(-1, 1)
    exact = 1 / (1 + np.exp(-log_odds))
    x_obs = jnp.tile(jnp.asarray([0.0, y]), (n, 1))
    weight = {}
    for method, kwargs in [("smc", dict(num_particles=64)), ("replacement", dict(corrector=None))]:
        x, _ = sg.sample_impute(
            jax.random.key(1), sde, mixture.score_fn(sde), x_obs, MASK, method=method,
            num_steps=200, **kwargs,
        )  # fmt: skip
        x = np.asarray(x)
        np.testing.assert_array_equal(x[:, 1], y)
        weight[method] = np.mean(x[:, 0] > 0)
    assert abs(weight["smc"] - exact) < 0.02, (weight, exact)
    assert weight["replacement"] < exact - 0.15, (weight, exact)


@pytest.mark.slow  # 14 s; inpainting through SMC stays in the default suite
def test_smc_colorization_keeps_the_gray_level_and_samples_color():
    sde = sg.VPSDE()
    data = sg.Gaussian(jnp.zeros((4, 4, 3)), jnp.full((4, 4, 3), 0.3))
    gray = jax.random.uniform(jax.random.key(0), (3, 4, 4), minval=-1, maxval=1)
    x, nfe = sg.sample_colorize(
        jax.random.key(1), sde, data.score_fn(sde), gray, num_steps=20, method="smc",
        num_particles=4, predictor="ancestral",
    )  # fmt: skip
    assert x.shape == (3, 4, 4, 3) and nfe == 4 * 19 + 1
    np.testing.assert_allclose(x.mean(-1), gray, atol=1e-5)
    assert float(jnp.std(x - x.mean(-1, keepdims=True))) > 0.1
    mask = np.ones((1, 4, 4, 1), np.float32)
    mask[:, :, 1] = 0.0  # column 1 unknown
    x, _ = sg.sample_inpaint(
        jax.random.key(2), sde, data.score_fn(sde), jnp.ones((2, 4, 4, 3)), mask,
        num_steps=10, method="smc", num_particles=3, predictor="euler_maruyama", denoise=False,
    )  # fmt: skip
    x = np.asarray(x)
    assert np.all(x[:, :, [0, 2, 3]] == 1.0) and np.all(np.isfinite(x))
    assert np.std(x[:, :, 1]) > 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="smcc"), "unknown imputation method 'smcc'; choose one of replacement, smc"),
        (dict(method="smc", num_particles=0), "num_particles must be a positive int; got 0"),
        (dict(method="smc", num_particles=2.5), "num_particles must be a positive int; got 2.5"),
        (dict(method="smc", ess_threshold=1.5), r"ess_threshold must be a number in \[0, 1\]"),
        (dict(num_particles=8), "num_particles is a setting of method='smc'; got method='rep"),
        (dict(method="smc", guidance_weight=1.0), "guidance_weight is a setting of method='re"),
        (dict(method="reconstruction_guidance", guidance_weight=-1.0), "finite number >= 0"),
        (dict(method="smc", corrector="langevin"), "method='smc' takes no corrector"),
        (dict(method="smc", predictor=None), "method='smc' needs a predictor with a Gaussian"),
        (dict(method="smc", num_steps=0), "num_steps must be a positive int; got 0"),
    ],
)
def test_bad_imputation_method_arguments(kwargs, message):
    sde, g = sg.VPSDE(), sg.Gaussian(jnp.zeros(3), jnp.ones(3))
    with pytest.raises(ValueError, match=message):
        sg.sample_impute(
            jax.random.key(0), sde, g.score_fn(sde), jnp.zeros((4, 3)), jnp.asarray([1.0, 0, 0]),
            **kwargs,
        )  # fmt: skip
