"""Guidance as score composition, against the exact mixture classifier, and imputation
against the closed-form Gaussian posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_mixture_samples, mixture_2d

import sde_gen as sg

EPS = 1e-3


def _component(mixture, k):
    weights, means, variances = mixture.components()
    return sg.GaussianMixture(means[k : k + 1], variances[k : k + 1])


def _exact_classifier(mixture, sde, label):
    return lambda x, t: mixture.log_responsibilities_t(sde, x, t)[:, label]


def test_guidance_with_the_exact_classifier_is_the_conditional_score():
    """s(x) + grad log p_t(y | x) = grad log p_t(x | y): the component's own score."""
    sde, mixture = sg.VPSDE(), mixture_2d()
    guided = sg.classifier_guidance(mixture.score_fn(sde), _exact_classifier(mixture, sde, 2))
    target = _component(mixture, 2).score_fn(sde)
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 3
    for t in (0.05, 0.4, 0.9):
        tb = jnp.full((64,), t)
        np.testing.assert_allclose(guided(x, tb), target(x, tb), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_guided_sampling_draws_the_chosen_component(sampler):
    sde, mixture = sg.VPSDE(), mixture_2d()
    guided = sg.classifier_guidance(mixture.score_fn(sde), _exact_classifier(mixture, sde, 1))
    key, shape = jax.random.key(1), (4000, 2)
    if sampler == "pc":
        x, _ = sg.sample_pc(key, sde, guided, shape, num_steps=500, denoise=False)
    else:
        x, _ = sg.sample_ode(key, sde, guided, shape, rtol=1e-4, atol=1e-4)
    assert_mixture_samples(x, _component(mixture, 1).marginal(sde, EPS))


def test_larger_guidance_scales_give_sharper_samples():
    """Two overlapping components: scale 4 puts the samples deeper into class 0 than scale 1
    (higher classifier confidence, smaller spread along the axis joining them). Sampled
    with a fast solver, which takes the guided score like any other."""
    sde = sg.VPSDE()
    mixture = sg.GaussianMixture(means=[[-1.0, 0.0], [1.0, 0.0]], variances=0.5)
    stats = []
    for scale in (1.0, 4.0):
        guided = sg.classifier_guidance(
            mixture.score_fn(sde), _exact_classifier(mixture, sde, 0), scale
        )
        x, nfe = sg.sample_fast(
            jax.random.key(2), sde, guided, (4000, 2), "dpm_solver++_2m", num_steps=20
        )
        confidence = float(jnp.mean(mixture.log_responsibilities_t(sde, x, EPS)[:, 0]))
        stats.append((confidence, float(jnp.var(x[:, 0]))))
    (conf_1, var_1), (conf_4, var_4) = stats
    assert conf_4 > conf_1 + 0.1, stats
    assert var_4 < 0.8 * var_1, stats


def test_classifier_free_guidance_combines_the_two_scores():
    sde, mixture = sg.VPSDE(), mixture_2d()
    cond, uncond = _component(mixture, 0).score_fn(sde), mixture.score_fn(sde)
    x, t = jax.random.normal(jax.random.key(0), (16, 2)), jnp.full((16,), 0.3)
    np.testing.assert_array_equal(sg.classifier_free_guidance(cond, uncond, 0.0)(x, t), cond(x, t))
    np.testing.assert_allclose(
        sg.classifier_free_guidance(cond, uncond, 2.5)(x, t),
        3.5 * cond(x, t) - 2.5 * uncond(x, t), rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def test_bad_guidance_arguments():
    score = mixture_2d().score_fn(sg.VPSDE())
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        sg.classifier_guidance(score, lambda x, t: x[:, 0], -1.0)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        sg.classifier_free_guidance(score, score, float("nan"))
    guided = sg.classifier_guidance(score, lambda x, t: x)  # (B, 2): not one per example
    with pytest.raises(ValueError, match="one log-probability per example"):
        guided(jnp.zeros((4, 2)), jnp.full((4,), 0.5))


# ------------------------------------------------------------------------------------
# Imputation


def _correlated_gaussian():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    return sg.MultivariateGaussian(np.linspace(-1, 1, 6), a @ a.T / 6 + 0.05 * np.eye(6))


def test_multivariate_gaussian_score_is_the_gradient_of_its_log_density():
    sde, g = sg.SubVPSDE(), _correlated_gaussian()
    x, t = jax.random.normal(jax.random.key(0), (5, 6)), jnp.full((5,), 0.3)
    a, std = sde.marginal(0.3)
    cov_t = a**2 * g.cov + std**2 * jnp.eye(6)
    logp = lambda x: jax.scipy.stats.multivariate_normal.logpdf(x, a * g.mean, cov_t).sum()
    np.testing.assert_allclose(g.score_t(sde, x, t), jax.grad(logp)(x), rtol=1e-4, atol=1e-4)


def test_inpainting_keeps_the_known_values_and_approaches_the_posterior():
    """Replacement with a Langevin corrector, VE, 500 steps, exact score of a correlated
    Gaussian. Measured: imputed means within 0.022 of the closed-form posterior (which lies
    0.3-0.4 from the prior's), variances 0.99-1.05 of the posterior's. Without the corrector
    the bias is ~0.3 and the variances 1.1-1.6x (docs/sampling.md)."""
    sde, g = sg.VESDE(), _correlated_gaussian()
    known = np.array([1, 0, 1, 0, 0, 1], bool)
    x_obs = np.asarray(g.sample(jax.random.key(3), 1))[0]
    post_mean, post_cov = g.conditional(x_obs, known)
    x, nfe = sg.sample_inpaint(
        jax.random.key(0), sde, g.score_fn(sde), jnp.tile(x_obs, (4000, 1)),
        known.astype(np.float32), num_steps=500,
    )  # fmt: skip
    assert nfe == 1000
    x = np.asarray(x)
    np.testing.assert_array_equal(x[:, known], np.tile(x_obs[known], (4000, 1)))
    mean_err = np.abs(x[:, ~known].mean(0) - post_mean)
    gap = np.abs(np.asarray(g.mean)[~known] - post_mean)
    assert np.all(mean_err < 0.06) and np.all(mean_err < 0.25 * gap), (mean_err, gap)
    ratio = np.diag(np.cov(x[:, ~known].T)) / np.diag(post_cov)
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio


def test_colorization_keeps_the_gray_level_exactly():
    sde = sg.VPSDE()
    data = sg.Gaussian(jnp.zeros((4, 4, 3)), jnp.full((4, 4, 3), 0.3))
    gray = jax.random.uniform(jax.random.key(0), (8, 4, 4), minval=-1, maxval=1)
    x, _ = sg.sample_colorize(jax.random.key(1), sde, data.score_fn(sde), gray, num_steps=50)
    assert x.shape == (8, 4, 4, 3)
    np.testing.assert_allclose(x.mean(-1), gray, atol=1e-5)
    assert float(jnp.std(x - x.mean(-1, keepdims=True))) > 0.1  # color was sampled
    np.testing.assert_allclose(
        sg.sampling.COLOR_BASIS @ sg.sampling.COLOR_BASIS.T, np.eye(3), atol=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask=jnp.full((3,), 0.5)), "mask must hold only 0"),
        (dict(mask=jnp.ones((5,))), "does not broadcast"),
        (dict(basis=jnp.ones((3, 3))), "basis must be orthogonal"),
        (dict(basis=jnp.eye(2)), "basis must be \\(3, 3\\)"),
        (dict(predictor=None, corrector=None), "needs a predictor or a corrector"),
    ],
)
def test_bad_imputation_arguments(kwargs, message):
    sde, g = sg.VPSDE(), sg.Gaussian(jnp.zeros(3), jnp.ones(3))
    args = dict(mask=jnp.asarray([1.0, 0.0, 0.0]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        sg.sample_impute(jax.random.key(0), sde, g.score_fn(sde), jnp.zeros((4, 3)), **args)
    with pytest.raises(ValueError, match="gray must be"):
        sg.sample_colorize(jax.random.key(0), sde, g.score_fn(sde), jnp.zeros((4, 3)))
