"""Probability-flow log-likelihoods and bits/dim against exact log-densities."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import count_compiles, mixture_2d

import sde_gen as sg

EPS = 1e-5


def _exact_model_logp(density, sde, logp, z):
    """The PF-ODE model uses the prior pi, not the true p_T. Swapping log pi(z) for
    log p_T(z) at the returned latent turns the model's value into log p_eps(x) exactly."""
    return logp - sde.prior_logp(z) + density.marginal(sde, sde.T).log_prob(z)


def _image_mixture():
    means = jnp.stack([jnp.full((1, 2, 2), -1.0), jnp.asarray([[[0.5, 2.0], [1.0, 0.0]]])])
    return sg.GaussianMixture(means, variances=jnp.asarray([0.2, 0.7])[:, None, None, None])


@pytest.mark.parametrize("density", [mixture_2d(), _image_mixture()], ids=["2d", "image"])
def test_exact_divergence_likelihood_matches_closed_form(sde, density, key):
    x = density.sample(key, 32)
    d = int(np.prod(density.event_shape))
    logp, z, nfe = sg.log_likelihood(key, sde, density.score_fn(sde), x, divergence="exact")
    recovered = _exact_model_logp(density, sde, logp, z)
    err = np.abs(np.asarray(recovered - density.log_prob_t(sde, x, EPS))) / d
    assert err.max() < 1e-3, f"max error {err.max():.2e} nats/dim"
    assert logp.shape == (32,) and z.shape == x.shape and int(nfe) > 0



@pytest.mark.parametrize(
    "sde, prior_std", [(sg.VPSDE(), 1.0), (sg.VESDE(), 50.0)], ids=["vp", "ve"]
)
def test_raw_likelihood_includes_the_models_own_prior(sde, prior_std, key):
    """The model density, prior term included: the exact flow carries p_eps to p_T, so
    `log p_model(x) = log p_eps(x) - log p_T(z) + log N(z; 0, prior_std^2 I)` at the
    returned latent z, with the paper's priors N(0, I) (VP) and N(0, sigma_max^2 I) (VE)
    written out here. Same tolerance as the exact-divergence test (ODE rtol 1e-5); a prior
    std off by 10% moves each example by `-d log 1.1 + |z|^2 / (2 s^2) (1 - 1 / 1.21)`:
    -0.095 nats/dim at z = 0, +0.087 per unit of `|z|^2 / (d s^2)` (which is ~1 on average)."""
    density = sg.Gaussian(jnp.linspace(-1.0, 1.0, 4), jnp.logspace(-1, 0, 4))
    x = density.sample(key, 32)
    logp, z, _ = sg.log_likelihood(key, sde, density.score_fn(sde), x, divergence="exact")
    z = np.asarray(z, np.float64)
    log_prior = -0.5 * np.sum(z**2, 1) / prior_std**2 - 2 * np.log(2 * np.pi * prior_std**2)
    p_T = density.marginal(sde, sde.T)
    expected = density.log_prob_t(sde, x, EPS) - p_T.log_prob(jnp.asarray(z)) + log_prior
    err = np.abs(np.asarray(logp) - np.asarray(expected)) / 4
    assert err.max() < 1e-3, f"max error {err.max():.2e} nats/dim"

def test_fixed_step_likelihood_converges_to_the_exact_value(key):
    """Heun on a uniform grid: the error shrinks ~4x per halving of the step (2nd order)."""
    sde, density = sg.SubVPSDE(), mixture_2d()
    x = density.sample(key, 8)
    exact = density.log_prob_t(sde, x, EPS)
    errors = []
    for n in (100, 200):
        logp, z, nfe = sg.log_likelihood(
            key,
            sde,
            density.score_fn(sde),
            x,
            divergence="exact",
            solver=diffrax.Heun(),
            num_steps=n,
        )
        assert int(nfe) == 2 * n
        errors.append(float(jnp.max(jnp.abs(_exact_model_logp(density, sde, logp, z) - exact))))
    assert errors[1] < 1e-3 * 2 and errors[0] / errors[1] > 3, errors


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(probe, key):
    """Each of 4 points is repeated 1024 times with independent probes: the mean estimate is
    within 3 standard errors (plus the ODE error, 1e-3 nats/dim) of the exact value."""
    sde, density, reps = sg.VPSDE(), mixture_2d(), 1024
    points = density.marginal(sde, 0.3).sample(key, 4)  # away from the modes: non-diagonal Jacobian
    x = jnp.repeat(points, reps, axis=0)
    logp, z, _ = sg.log_likelihood(
        jax.random.key(11), sde, density.score_fn(sde), x, divergence="hutchinson", probe=probe
    )
    estimates = np.asarray(_exact_model_logp(density, sde, logp, z)).reshape(4, reps)
    exact = np.asarray(density.log_prob_t(sde, points, EPS))
    se = estimates.std(axis=1, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(estimates.mean(axis=1) - exact) <= 3 * se + 2e-3), (
        estimates.mean(axis=1),
        exact,
        se,
    )
    if probe == "gaussian":
        assert np.all(se > 0)  # a real estimator, not the exact trace in disguise


def test_divergence_estimators_on_a_linear_field(key):
    """For x -> x A^T: the exact divergence is tr(A); Hutchinson gives e^T A e per probe."""
    a = jax.random.normal(key, (5, 5))
    fn = lambda x: x @ a.T
    x = jax.random.normal(jax.random.key(1), (3, 5))
    out, div = sg.exact_divergence(fn, x)
    np.testing.assert_allclose(out, fn(x), rtol=1e-6)
    np.testing.assert_allclose(div, jnp.full((3,), jnp.trace(a)), rtol=1e-5)
    e = jax.random.rademacher(jax.random.key(2), (3, 5), dtype=jnp.float32)
    _, est = sg.hutchinson_divergence(fn, x, e)
    np.testing.assert_allclose(est, jnp.einsum("bi,ij,bj->b", e, a, e), rtol=1e-5)


def test_exact_divergence_of_image_shaped_field(key):
    """Per-example divergence of an elementwise nonlinearity: sum of its derivatives."""
    x = jax.random.normal(key, (2, 1, 3, 3))
    _, div = sg.exact_divergence(jnp.tanh, x)
    np.testing.assert_allclose(div, (1 - jnp.tanh(x) ** 2).reshape(2, -1).sum(-1), rtol=1e-5)


@pytest.mark.parametrize(
    "data_range, n_bins",
    [((0.0, 1.0), 256), ((-1.0, 1.0), 256), ((0.0, 1.0), 17), ((-1.0, 1.0), 2)],
)
def test_bits_per_dim_of_the_uniform_density_is_log2_bins(data_range, n_bins):
    """Uniform over the dequantized range is uniform over the bins: log2(n_bins) bits/dim."""
    x_shape = (4, 3, 8, 8)
    d = 3 * 8 * 8
    logp = jnp.full((4,), -d * np.log(data_range[1] - data_range[0]))
    np.testing.assert_allclose(
        bits_per_dim := sg.bits_per_dim(logp, x_shape, data_range, n_bins),
        np.log2(n_bins),
        rtol=1e-6,
    )
    assert bits_per_dim.shape == (4,)


def test_bits_per_dim_offsets_match_score_sde():
    """+8 for 8-bit data in [0, 1], +7 for data scaled to [-1, 1]."""
    logp, shape = jnp.asarray([-1000.0]), (1, 3, 32, 32)
    base = 1000.0 / (3 * 32 * 32 * np.log(2))
    np.testing.assert_allclose(sg.bits_per_dim(logp, shape, (0, 1)), base + 8, rtol=1e-6)
    np.testing.assert_allclose(sg.bits_per_dim(logp, shape, (-1, 1)), base + 7, rtol=1e-6)


def test_likelihood_does_not_recompile_for_new_inputs(key):
    sde, density = sg.VESDE(), mixture_2d()
    x = density.sample(key, 8)
    sg.log_likelihood(key, sde, density.score_fn(sde), x)
    other = sg.GaussianMixture(density.means + 0.5, density.variances, density.weights)
    x_new = density.sample(jax.random.key(5), 8)
    with count_compiles() as compiles:
        logp, _, _ = sg.log_likelihood(jax.random.key(4), sde, other.score_fn(sde), x_new)
        logp.block_until_ready()
    assert len(compiles) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(divergence="hutch"), "unknown divergence 'hutch'; choose one of hutchinson, exact"),
        (dict(probe="normal"), "unknown probe 'normal'; choose one of rademacher, gaussian"),
        (dict(eps=0.0), r"eps must lie in \(0, 1.0\]"),
        (dict(atol=-1.0), "atol must be a finite positive number"),
    ],
)
def test_bad_likelihood_arguments_raise_before_work(kwargs, message, key):
    sde, density = sg.VPSDE(), mixture_2d()
    with pytest.raises(ValueError, match=message):
        sg.log_likelihood(key, sde, density.score_fn(sde), jnp.zeros((4, 2)), **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (((2,), (0, 1), 256), "x_shape must be the batch shape"),
        (((2, 3), (1, 0), 256), "data_range must be"),
        (((2, 3), (0, 1), 0), "n_bins must be a positive int"),
    ],
)
def test_bad_bits_per_dim_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        sg.bits_per_dim(jnp.zeros(2), *args)


def test_nats_to_bits_per_dim_hand_computed():
    """`ln 2` nats are one bit; 8 ln 2 nats over 4 dimensions are 2 bits per dimension; and
    bits_per_dim is that conversion of -log p plus the dequantization offset."""
    assert float(sg.nats_to_bits_per_dim(np.log(2.0))) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(
        sg.nats_to_bits_per_dim(jnp.asarray([8 * np.log(2.0), -4 * np.log(2.0)]), 4),
        [2.0, -1.0],
        rtol=1e-6,
    )
    # -log p = 12 ln 2 nats over 3 dims = 4 bits/dim; 256 bins on [-1, 1]: + 8 - 1
    bpd = sg.bits_per_dim(jnp.asarray([-12 * np.log(2.0)]), (1, 3), (-1.0, 1.0), 256)
    assert float(bpd[0]) == pytest.approx(4.0 + 7.0, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_likelihood_input_is_refused_before_solving(bad, key):
    sde, density = sg.VPSDE(), mixture_2d()
    x = np.zeros((4, 2), np.float32)
    x[1, 0] = x[3, 1] = bad
    with pytest.raises(ValueError, match=r"x has 2 non-finite entries \(NaN or inf\) of 8"):
        sg.log_likelihood(key, sde, density.score_fn(sde), jnp.asarray(x))


def test_non_finite_bits_per_dim_input_is_refused():
    with pytest.raises(ValueError, match=r"logp has 1 non-finite entries"):
        sg.bits_per_dim(jnp.asarray([0.0, np.nan]), (2, 3))
