"""Predictor-corrector sampling against the exact 2-D mixture."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_mixture_samples, count_compiles, count_score_evaluations, mixture_2d

import sde_gen as sg

N = 20_000


@pytest.mark.parametrize("predictor", ["euler_maruyama", "reverse_diffusion", "ancestral"])
def test_pc_predictors_sample_the_mixture(sde, predictor, key):
    mixture = mixture_2d()
    x_init = mixture.marginal(sde, sde.T).sample(jax.random.key(7), N)
    x, nfe = sg.sample_pc(
        key, sde, mixture.score_fn(sde), (N, 2), predictor=predictor, num_steps=500, x_init=x_init
    )
    assert nfe == 500
    assert_mixture_samples(x, mixture.marginal(sde, 0.0))


def test_pc_with_langevin_corrector_samples_the_mixture(sde, key):
    """At snr=0.05 the corrector's step-size bias is below the statistical resolution."""
    mixture = mixture_2d()
    x_init = mixture.marginal(sde, sde.T).sample(jax.random.key(7), N)
    x, nfe = sg.sample_pc(
        key,
        sde,
        mixture.score_fn(sde),
        (N, 2),
        predictor="reverse_diffusion",
        corrector="langevin",
        snr=0.05,
        num_steps=500,
        x_init=x_init,
    )
    assert nfe == 1000
    assert_mixture_samples(x, mixture.marginal(sde, 0.0))


def test_langevin_corrector_leaves_the_marginal_invariant(sde, key):
    """Many corrector steps at a fixed time keep p_t (exact score, small step)."""
    mixture, t = mixture_2d(), 0.05
    p_t = mixture.marginal(sde, t)
    x = p_t.sample(jax.random.key(3), N)
    corrector = sg.LangevinCorrector(snr=0.05, n_steps=200)
    x, _ = eqx.filter_jit(corrector)(
        key, sde, mixture.score_fn(sde), x, jnp.asarray(t), jnp.asarray(t - 1e-3)
    )
    assert_mixture_samples(x, p_t)


def test_langevin_corrector_restores_the_marginal_variance(key):
    """From a quarter of each component's variance, Langevin steps regrow the full spread.

    (Not from the modes themselves: there the batch-averaged score norm vanishes.)
    """
    sde, mixture, t = sg.VESDE(), mixture_2d(), 0.05
    p_t = mixture.marginal(sde, t)
    k_comp, k_noise, k_run = jax.random.split(key, 3)
    comp = jax.random.categorical(k_comp, jnp.log(p_t.weights), shape=(N,))
    x_start = p_t.means[comp] + 0.5 * jnp.sqrt(p_t.variances[comp]) * jax.random.normal(
        k_noise, (N, 2)
    )
    corrector = sg.LangevinCorrector(snr=0.1, n_steps=400)
    x, _ = eqx.filter_jit(corrector)(
        k_run, sde, mixture.score_fn(sde), x_start, jnp.asarray(t), jnp.asarray(t - 1e-3)
    )
    assert_mixture_samples(x, p_t)



def _vp_alpha(t, t_next, beta_min=0.1, beta_max=20.0):
    """`1 - beta_i = a(t)^2 / a(t_next)^2 = exp(-(B(t) - B(t_next)))` of the VP SDE."""
    big_b = lambda u: beta_min * u + 0.5 * (beta_max - beta_min) * u**2
    return float(np.exp(-(big_b(t) - big_b(t_next))))


def test_langevin_step_is_the_closed_form_update(key):
    """Two steps by hand: `z` from the split key, `e = 2 alpha (snr mean|z| / mean|s|)^2`
    (per-example norms averaged over the batch), `x_mean = x + e s`, `x = x_mean +
    sqrt(2 e) z`, with alpha from VP's closed form. Float32 with the same operations: the
    results agree to rounding."""
    sde, t, t_next, snr = sg.VPSDE(), 0.5, 0.4, 0.3
    g = sg.Gaussian(jnp.asarray([0.5, -1.0, 2.0]), jnp.asarray([0.3, 1.0, 2.0]))
    score_fn = g.score_fn(sde)
    x0 = g.marginal(sde, t).sample(jax.random.key(4), 5)
    alpha = _vp_alpha(t, t_next)
    x = x0
    for step_key in jax.random.split(key, 2):
        s = score_fn(x, jnp.full((5,), t))
        z = jax.random.normal(step_key, x.shape)
        ratio = jnp.mean(jnp.linalg.norm(z, axis=-1)) / jnp.mean(jnp.linalg.norm(s, axis=-1))
        e = 2 * alpha * (snr * ratio) ** 2
        x_mean = x + e * s
        x = x_mean + jnp.sqrt(2 * e) * z
    got, got_mean = sg.LangevinCorrector(snr=snr, n_steps=2)(
        key, sde, score_fn, x0, jnp.asarray(t), jnp.asarray(t_next)
    )
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_mean, x_mean, rtol=1e-5, atol=1e-6)


def test_langevin_stationary_variance_at_large_snr(key):
    """For `p_t = N(0, sigma^2 I)` and its exact score `-x / sigma^2`, a step of size e is
    `x <- (1 - e / sigma^2) x + sqrt(2 e) z`, whose stationary variance v solves
    `v = (1 - e / sigma^2)^2 v + 2 e`: `v = sigma^2 / (1 - e / (2 sigma^2))`. The
    corrector's step `e = 2 alpha (snr |z| / |s|)^2`, at stationarity (|s| = sqrt(v) |z| /
    sigma^2 in batch mean, exact up to O(1 / (B D))), is `2 alpha snr^2 sigma^4 / v`; the
    fixed point is `v = sigma^2 (1 + alpha snr^2)`. At snr 1 and alpha = 0.40 that is 1.40
    sigma^2; half the step gives 1.20 sigma^2. The estimate from B D = 32000 values has a
    relative standard error sqrt(2 / 32000) = 0.8%: the tolerance is 5 of them."""
    sde, t, t_next, snr = sg.VPSDE(), 0.5, 0.4, 1.0
    data = sg.Gaussian(jnp.zeros(16), jnp.full((16,), 0.25))
    p_t = data.marginal(sde, t)
    sigma2 = float(p_t.variance[0])
    alpha = _vp_alpha(t, t_next)
    x = p_t.sample(jax.random.key(3), 2000)
    x, _ = eqx.filter_jit(sg.LangevinCorrector(snr=snr, n_steps=60))(
        key, sde, data.score_fn(sde), x, jnp.asarray(t), jnp.asarray(t_next)
    )
    expected = sigma2 * (1 + alpha * snr**2)
    measured = float(jnp.mean(x**2))
    assert measured == pytest.approx(expected, rel=5 * np.sqrt(2 / x.size)), (measured, expected)

def test_pc_from_the_prior_samples_the_mixture(key):
    """The default start, a prior draw, is accurate for VP (prior mismatch ~ exp(-B(T)/2))."""
    sde, mixture = sg.VPSDE(), mixture_2d()
    x, _ = sg.sample_pc(key, sde, mixture.score_fn(sde), (N, 2), num_steps=500)
    assert_mixture_samples(x, mixture.marginal(sde, 0.0))


def test_mixture_check_detects_a_wrong_score(key):
    """The statistical oracle is sharp: a score off by 10% fails it."""
    sde, mixture = sg.VPSDE(), mixture_2d()
    exact = mixture.score_fn(sde)
    x_init = mixture.marginal(sde, sde.T).sample(jax.random.key(7), N)
    x, _ = sg.sample_pc(
        key, sde, lambda x, t: 0.9 * exact(x, t), (N, 2), num_steps=500, x_init=x_init
    )
    with pytest.raises(AssertionError):
        assert_mixture_samples(x, mixture.marginal(sde, 0.0))


def test_denoise_returns_the_noise_free_mean_of_the_last_step(key):
    sde, mixture = sg.VESDE(), mixture_2d()
    score_fn = mixture.score_fn(sde)
    kwargs = dict(predictor="euler_maruyama", num_steps=50, x_init=jnp.ones((4, 2)) * 3.0)
    x_mean, _ = sg.sample_pc(key, sde, score_fn, (4, 2), denoise=True, **kwargs)
    x_noisy, _ = sg.sample_pc(key, sde, score_fn, (4, 2), denoise=False, **kwargs)
    # The last step runs from eps to 0; its noise is g(eps) sqrt(eps) z.
    scale = float(sde.diffusion(1e-3)) * np.sqrt(1e-3)
    diff = np.abs(np.asarray(x_noisy - x_mean))
    assert 0 < diff.max() < 6 * scale


def test_pc_is_a_deterministic_function_of_key_and_x_init(key):
    sde, mixture = sg.SubVPSDE(), mixture_2d()
    args = (sde, mixture.score_fn(sde), (8, 2))
    a, _ = sg.sample_pc(key, *args, num_steps=20, corrector="langevin")
    b, _ = sg.sample_pc(key, *args, num_steps=20, corrector="langevin")
    c, _ = sg.sample_pc(jax.random.key(1), *args, num_steps=20, corrector="langevin")
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    "predictor, corrector, n_corrector_steps, per_step",
    [("euler_maruyama", None, 1, 1), ("ancestral", "langevin", 3, 4), (None, "langevin", 2, 2)],
)
def test_pc_nfe_counts_real_evaluations(key, predictor, corrector, n_corrector_steps, per_step):
    sde, mixture = sg.VPSDE(), mixture_2d()
    reported = []

    def run(score_fn):
        x, nfe = sg.sample_pc(
            key,
            sde,
            score_fn,
            (4, 2),
            predictor=predictor,
            corrector=corrector,
            n_corrector_steps=n_corrector_steps,
            num_steps=7,
        )
        reported.append(nfe)
        return x

    counted = count_score_evaluations(run, mixture.score_fn(sde))
    assert counted == reported[0] == 7 * per_step


def test_pc_does_not_recompile_for_new_inputs_of_the_same_shapes(key):
    sde = sg.VPSDE()
    first = mixture_2d()
    second = sg.GaussianMixture(first.means + 1.0, first.variances * 2.0, first.weights)
    kwargs = dict(predictor="reverse_diffusion", corrector="langevin", num_steps=10)
    sg.sample_pc(key, sde, first.score_fn(sde), (16, 2), **kwargs)
    with count_compiles() as compiles:
        x, _ = sg.sample_pc(jax.random.key(1), sde, second.score_fn(sde), (16, 2), **kwargs)
        x.block_until_ready()
    assert len(compiles) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(predictor="eulr"),
            "unknown predictor 'eulr'; choose one of euler_maruyama, "
            "reverse_diffusion, ancestral, none",
        ),
        (dict(corrector="lagevin"), "unknown corrector 'lagevin'; choose one of langevin, none"),
        (dict(predictor=None, corrector=None), "needs a predictor or a corrector"),
        (dict(num_steps=0), "num_steps must be a positive int"),
        (dict(eps=0.0), "eps must satisfy 0 < eps < T"),
        (dict(eps=1.5), "eps must satisfy 0 < eps < T"),
        (dict(x_init=jnp.zeros((3, 2))), r"x_init has shape \(3, 2\)"),
        (dict(corrector="langevin", snr=-0.1), "snr must be a finite positive number"),
    ],
)
def test_bad_pc_arguments_raise_before_work(kwargs, message, key):
    sde, mixture = sg.VPSDE(), mixture_2d()
    with pytest.raises(ValueError, match=message):
        sg.sample_pc(key, sde, mixture.score_fn(sde), (4, 2), **kwargs)


def test_score_fn_with_wrong_output_shape_is_rejected(key):
    with pytest.raises(ValueError, match=r"shaped like x \(4, 2\); got \(4,\)"):
        sg.sample_pc(key, sg.VPSDE(), lambda x, t: x[:, 0], (4, 2))
    with pytest.raises(ValueError, match="shape must be"):
        sg.sample_pc(key, sg.VPSDE(), lambda x, t: x, (4,))
