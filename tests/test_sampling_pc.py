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
