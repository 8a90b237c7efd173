"""The closed-form oracle itself: densities, scores, marginals and the Gaussian flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import mixture_2d

import sde_gen as sg


def _image_mixture():
    """A mixture over image-shaped events (1, 2, 2), as a network would see."""
    means = jnp.stack([jnp.full((1, 2, 2), -1.0), jnp.asarray([[[0.5, 2.0], [1.0, 0.0]]])])
    return sg.GaussianMixture(means, variances=jnp.asarray([0.2, 0.7])[:, None, None, None])


@pytest.mark.parametrize("density", [mixture_2d(), _image_mixture()], ids=["2d", "image"])
def test_mixture_score_equals_autodiff_of_log_density(sde, density, key):
    x = density.marginal(sde, 0.5).sample(key, 16)
    t = jnp.linspace(0.01, 0.99, 16)
    autodiff = jax.grad(lambda x: jnp.sum(density.log_prob_t(sde, x, t)))(x)
    np.testing.assert_allclose(density.score_t(sde, x, t), autodiff, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(density.score_fn(sde)(x, t), autodiff, rtol=1e-4, atol=1e-5)


def test_marginal_density_matches_log_prob_t(sde, key):
    density = mixture_2d()
    x = jax.random.normal(key, (32, 2)) * 3
    for t in (0.0, 0.2, 1.0):
        np.testing.assert_allclose(
            density.marginal(sde, t).log_prob(x), density.log_prob_t(sde, x, t), rtol=1e-5
        )


def test_log_prob_of_gaussian_is_normal_density(key):
    g = sg.Gaussian(jnp.asarray([1.0, -2.0, 0.5]), jnp.asarray([0.3, 2.0, 1.0]))
    x = g.sample(key, 10)
    ref = jax.scipy.stats.norm.logpdf(x, g.mean, jnp.sqrt(g.variance)).sum(-1)
    np.testing.assert_allclose(g.log_prob(x), ref, rtol=1e-6)
    np.testing.assert_allclose(g.score(x), -(x - g.mean) / g.variance, rtol=1e-5)


def test_mixture_samples_have_mixture_moments(key):
    density = mixture_2d()
    x = np.asarray(density.sample(key, 200_000), np.float64)
    w, m, v = (np.asarray(a, np.float64) for a in density.components())
    mean = (w[:, None] * m).sum(0)
    second = (w[:, None] * (v + m**2)).sum(0)
    var = second - mean**2
    se_mean = np.sqrt(var / len(x))
    # A mixture is not Gaussian: the sample variance's standard error comes from its 4th moment.
    se_var = np.std((x - x.mean(0)) ** 2, axis=0) / np.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 4.5 * se_mean)
    assert np.all(np.abs(x.var(0) - var) < 4.5 * se_var)


def test_gaussian_flow_is_invertible_and_transports_marginals(sde, key):
    g = sg.Gaussian(jnp.asarray([1.0, -2.0]), jnp.asarray([0.25, 0.5]))
    x_s = g.marginal(sde, 0.2).sample(key, 50_000)
    x_t = g.flow(sde, x_s, 0.2, 0.8)
    np.testing.assert_allclose(g.flow(sde, x_t, 0.8, 0.2), x_s, rtol=1e-4, atol=1e-4)
    target = g.marginal(sde, 0.8)
    mean_err = np.abs(np.asarray(x_t.mean(0) - target.mean))
    assert np.all(mean_err < 4.5 * np.sqrt(np.asarray(target.variance) / 50_000))
    var_ratio = np.asarray(x_t.var(0) / target.variance)
    assert np.all(np.abs(var_ratio - 1) < 4.5 * np.sqrt(2 / 50_000))


def test_gaussian_flow_solves_the_probability_flow_ode(sde):
    """d/dt flow(x, s, t) equals the PF-ODE drift with the exact score."""
    g = sg.Gaussian(jnp.asarray([1.0, -2.0]), jnp.asarray([0.25, 0.5]))
    x_s = jnp.asarray([[0.3, -1.0], [2.0, 0.5]])
    t = 0.6
    x_t = g.flow(sde, x_s, 0.2, t)
    dxdt = jax.jacfwd(lambda t: g.flow(sde, x_s, 0.2, t))(jnp.asarray(t))
    drift = sde.reverse(g.score_fn(sde), probability_flow=True).drift(x_t, t)
    np.testing.assert_allclose(dxdt, drift, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sg.GaussianMixture(jnp.zeros(3), 1.0), "means must have shape"),
        (
            lambda: sg.GaussianMixture(jnp.zeros((2, 3)), jnp.ones((3, 3))),
            "does not broadcast to means",
        ),
        (lambda: sg.GaussianMixture(jnp.zeros((2, 3)), -1.0), "variances must be positive"),
        (lambda: sg.GaussianMixture(jnp.zeros((2, 3)), 1.0, [1.0]), "weights must have shape"),
        (
            lambda: sg.GaussianMixture(jnp.zeros((2, 3)), 1.0, [1.0, 0.0]),
            "weights must be positive",
        ),
        (lambda: sg.Gaussian(jnp.zeros(2), jnp.asarray([1.0, 0.0])), "variance must be positive"),
        (lambda: mixture_2d().log_prob(jnp.zeros((4, 3))), "event shape"),
    ],
)
def test_bad_densities_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_gaussian_conditional_matches_the_precision_form():
    """`gaussian.conditional` (the one Gaussian conditioning of sde_gen) against the
    precision-matrix form: `Cov(u | k) = (P_uu)^{-1}`, `E[u | k] = mu_u - P_uu^{-1} P_uk
    (x_k - mu_k)`, for one Gaussian and for a batch of them."""
    from sde_gen import gaussian

    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + 5 * np.eye(5)
    mean, x = rng.normal(size=5), rng.normal(size=5)
    known = np.array([True, False, True, True, False])
    u, k = np.flatnonzero(~known), np.flatnonzero(known)
    prec = np.linalg.inv(cov)
    want_cov = np.linalg.inv(prec[np.ix_(u, u)])
    want_mean = mean[u] - want_cov @ prec[np.ix_(u, k)] @ (x[k] - mean[k])
    got_mean, got_cov = gaussian.conditional(jnp.asarray(mean), jnp.asarray(cov), known, x)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_cov, want_cov, rtol=1e-4, atol=1e-5)
    batch_mean, batch_cov = gaussian.conditional(
        jnp.tile(jnp.asarray(mean), (3, 1)), jnp.tile(jnp.asarray(cov), (3, 1, 1)), known,
        jnp.tile(jnp.asarray(x), (3, 1)),
    )  # fmt: skip
    np.testing.assert_allclose(batch_mean[2], want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(batch_cov[1], want_cov, rtol=1e-4, atol=1e-5)
