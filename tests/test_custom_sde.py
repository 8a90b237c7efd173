"""A linear SDE defined by a user (coefficients only) works through every sampler."""

import diffrax
import jax
import numpy as np
import pytest
from oracles import ConstantBetaVP, assert_mixture_samples, mixture_2d

import sde_gen as sg

N = 20_000
SDE = ConstantBetaVP(beta=10.0)


@pytest.fixture(scope="module")
def setup():
    mixture = mixture_2d()
    x_init = mixture.marginal(SDE, SDE.T).sample(jax.random.key(7), N)
    return mixture, mixture.score_fn(SDE), x_init


def _samplers():
    key = jax.random.key(3)

    def pc(predictor, corrector):
        def run(sde, score_fn, x):
            return sg.sample_pc(
                key,
                sde,
                score_fn,
                x.shape,
                predictor=predictor,
                corrector=corrector,
                num_steps=50,
                x_init=x,
            )[0]

        return run

    return {
        "euler_maruyama": pc("euler_maruyama", None),
        "reverse_diffusion+langevin": pc("reverse_diffusion", "langevin"),
        "ancestral": pc("ancestral", None),
        "ode": lambda sde, f, x: sg.sample_ode(key, sde, f, x.shape, x_init=x)[0],
        "sde_shark": lambda sde, f, x: sg.sample_sde(
            key, sde, f, x.shape, solver=diffrax.ShARK(), num_steps=50, x_init=x
        )[0],
        "likelihood": lambda sde, f, x: sg.log_likelihood(key, sde, f, x, divergence="exact")[0],
    }


@pytest.mark.parametrize("sampler", list(_samplers()))
def test_user_sde_matches_its_builtin_twin_path_by_path(setup, sampler):
    """Coefficients only (quadrature marginal) vs VPSDE(beta_min = beta_max = 10) (closed form):
    the same key gives the same samples, through every sampler."""
    mixture, _, _ = setup
    twin = sg.VPSDE(beta_min=10.0, beta_max=10.0)
    x = mixture.marginal(twin, 0.5).sample(jax.random.key(9), 64)
    run = _samplers()[sampler]
    np.testing.assert_allclose(
        run(SDE, mixture.score_fn(SDE), x),
        run(twin, mixture.score_fn(twin), x),
        rtol=2e-3,
        atol=2e-3,
    )


@pytest.mark.parametrize(
    "predictor, corrector", [("euler_maruyama", None), ("reverse_diffusion", "langevin")]
)
def test_user_sde_pc(setup, predictor, corrector):
    mixture, score_fn, x_init = setup
    x, _ = sg.sample_pc(
        jax.random.key(0),
        SDE,
        score_fn,
        (N, 2),
        predictor=predictor,
        corrector=corrector,
        snr=0.05,
        num_steps=400,
        x_init=x_init,
    )
    assert_mixture_samples(x, mixture.marginal(SDE, 0.0))


def test_user_sde_probability_flow(setup):
    mixture, score_fn, x_init = setup
    x, _ = sg.sample_ode(
        jax.random.key(0), SDE, score_fn, (N, 2), x_init=x_init, rtol=1e-4, atol=1e-4
    )
    assert_mixture_samples(x, mixture.marginal(SDE, 1e-3))


def test_user_sde_reverse_sde(setup):
    mixture, score_fn, x_init = setup
    x, _ = sg.sample_sde(
        jax.random.key(0),
        SDE,
        score_fn,
        (N, 2),
        solver=diffrax.ShARK(),
        num_steps=300,
        x_init=x_init,
    )
    assert_mixture_samples(x, mixture.marginal(SDE, 1e-3))


def test_user_sde_likelihood(setup):
    mixture, score_fn, _ = setup
    x = mixture.sample(jax.random.key(1), 16)
    logp, z, _ = sg.log_likelihood(jax.random.key(0), SDE, score_fn, x, divergence="exact")
    exact = mixture.log_prob_t(SDE, x, 1e-5)
    recovered = logp - SDE.prior_logp(z) + mixture.marginal(SDE, SDE.T).log_prob(z)
    assert np.abs(np.asarray(recovered - exact)).max() / 2 < 1e-3
