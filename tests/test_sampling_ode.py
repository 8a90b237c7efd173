"""Probability-flow ODE sampling and encoding against the closed-form Gaussian flow."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_mixture_samples, count_compiles, count_score_evaluations, mixture_2d

import sde_gen as sg

EPS = 1e-3


def _power_law_gaussian(d=16):
    """Variances spanning two decades, as in the sampler benchmark."""
    variance = jnp.logspace(-2, 0, d)
    return sg.Gaussian(jnp.linspace(-1.0, 1.0, d), variance)


def _standardized(g, sde, x, t):
    a, std = sde.marginal(t)
    return (x - a * g.mean) / jnp.sqrt(a**2 * g.variance + std**2)


def test_pf_ode_matches_closed_form_flow(sde, key):
    """The standardized coordinate (x - a m) / sqrt(a^2 s^2 + std^2) is invariant.

    Measured at rtol = atol = 1e-5: |x error| <= 1.5e-4 and the standardized error (which
    divides by std(eps) ~ 0.1) <= 1.5e-3, both proportional to the tolerance.
    """
    g = _power_law_gaussian()
    x_T = g.marginal(sde, sde.T).sample(key, 64)
    x, nfe = sg.ode_flow(sde, g.score_fn(sde), x_T, sde.T, EPS, rtol=1e-5, atol=1e-5)
    z_err = np.abs(np.asarray(_standardized(g, sde, x, EPS) - _standardized(g, sde, x_T, sde.T)))
    assert z_err.max() < 3e-3, z_err.max()
    np.testing.assert_allclose(x, g.flow(sde, x_T, sde.T, EPS), atol=3e-4)
    assert 10 < int(nfe) < 500


def test_sample_ode_from_x_init_equals_decoding(sde, key):
    g = _power_law_gaussian()
    x_T = g.marginal(sde, sde.T).sample(key, 32)
    x_flow, nfe_flow = sg.ode_flow(sde, g.score_fn(sde), x_T, sde.T, EPS)
    x_samp, nfe_samp = sg.sample_ode(key, sde, g.score_fn(sde), x_T.shape, eps=EPS, x_init=x_T)
    np.testing.assert_allclose(x_samp, x_flow, rtol=1e-6, atol=1e-6)
    assert int(nfe_samp) == int(nfe_flow)


def test_encode_then_decode_is_the_identity(sde, key):
    g = _power_law_gaussian()
    x = g.marginal(sde, EPS).sample(key, 32)
    score_fn = g.score_fn(sde)
    z, _ = sg.ode_flow(sde, score_fn, x, EPS, sde.T, rtol=1e-6, atol=1e-6)
    scale = float(sde.prior_std())
    np.testing.assert_allclose(z, g.flow(sde, x, EPS, sde.T), atol=1e-4 * scale)
    x_back, _ = sg.ode_flow(sde, score_fn, z, sde.T, EPS, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x_back, x, atol=2e-4)


@pytest.mark.parametrize("solver, order", [(diffrax.Euler(), 1), (diffrax.Heun(), 2)])
def test_fixed_step_solvers_converge_at_their_order(solver, order):
    """Halving the step divides the global error by 2^order (float64, smooth VP flow)."""
    with jax.enable_x64(True):
        sde, g = sg.VPSDE(), sg.Gaussian(jnp.asarray([0.5, -0.5]), jnp.asarray([0.1, 2.0]))
        x_T = jnp.asarray([[0.3, -1.2], [1.5, 0.7]], jnp.float64)
        exact = g.flow(sde, x_T, 1.0, 0.05)
        errors = []
        for n in (100, 200, 400):
            x, nfe = sg.ode_flow(sde, g.score_fn(sde), x_T, 1.0, 0.05, solver=solver, num_steps=n)
            errors.append(float(jnp.max(jnp.abs(x - exact))))
            assert int(nfe) == n * (1 if order == 1 else 2)
    rates = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    np.testing.assert_allclose(rates, order, atol=0.15)


def test_pf_ode_samples_the_mixture(sde, key):
    mixture = mixture_2d()
    x_init = mixture.marginal(sde, sde.T).sample(jax.random.key(7), 20_000)
    x, _ = sg.sample_ode(
        key, sde, mixture.score_fn(sde), x_init.shape, x_init=x_init, rtol=1e-4, atol=1e-4
    )
    assert_mixture_samples(x, mixture.marginal(sde, EPS))


def test_solver_names_select_the_same_solvers(key):
    sde, mixture = sg.VPSDE(), mixture_2d()
    x_T = mixture.marginal(sde, sde.T).sample(key, 8)
    by_name, _ = sg.ode_flow(sde, mixture.score_fn(sde), x_T, 1.0, EPS, solver="Dopri5")
    by_object, _ = sg.ode_flow(sde, mixture.score_fn(sde), x_T, 1.0, EPS, solver=diffrax.Dopri5())
    np.testing.assert_array_equal(by_name, by_object)


def test_denoise_applies_tweedie_at_eps(key):
    sde, g = sg.VPSDE(), _power_law_gaussian()
    x_T = g.marginal(sde, sde.T).sample(key, 8)
    x_eps, nfe = sg.sample_ode(key, sde, g.score_fn(sde), x_T.shape, x_init=x_T)
    x0, nfe_d = sg.sample_ode(key, sde, g.score_fn(sde), x_T.shape, x_init=x_T, denoise=True)
    expected = sde.x0_from_score(x_eps, EPS, g.score_t(sde, x_eps, EPS))
    np.testing.assert_allclose(x0, expected, rtol=1e-5, atol=1e-6)
    assert int(nfe_d) == int(nfe) + 1


@pytest.mark.parametrize(
    "solver, num_steps",
    [
        (diffrax.Tsit5(), None),
        (diffrax.Dopri8(), None),
        (diffrax.Heun(), 9),
        (diffrax.Euler(), 9),
        (diffrax.Bosh3(), None),
    ],
)
def test_ode_nfe_counts_real_evaluations(solver, num_steps, key):
    sde, mixture = sg.VESDE(), mixture_2d()
    x_T = mixture.marginal(sde, sde.T).sample(key, 4)
    reported = []

    def run(score_fn):
        x, nfe = sg.ode_flow(
            sde, score_fn, x_T, sde.T, EPS, solver=solver, num_steps=num_steps, rtol=1e-3, atol=1e-3
        )
        reported.append(int(nfe))
        return x

    assert count_score_evaluations(run, mixture.score_fn(sde)) == reported[0]


def test_ode_does_not_recompile_for_new_inputs_of_the_same_shapes(key):
    sde = sg.SubVPSDE()
    first = mixture_2d()
    second = sg.GaussianMixture(first.means - 1.0, first.variances, first.weights)
    sg.sample_ode(key, sde, first.score_fn(sde), (16, 2))
    sg.ode_flow(sde, first.score_fn(sde), jnp.ones((16, 2)), 0.1, 0.7)
    with count_compiles() as compiles:
        x, _ = sg.sample_ode(jax.random.key(3), sde, second.score_fn(sde), (16, 2))
        y, _ = sg.ode_flow(sde, second.score_fn(sde), jnp.zeros((16, 2)), 0.9, 0.2)
        jax.block_until_ready((x, y))
    assert len(compiles) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(solver=diffrax.ImplicitEuler()), "unsupported ODE solver ImplicitEuler"),
        (dict(solver="rk4"), "unknown ODE solver 'rk4'; choose one of euler, heun, midpoint"),
        (dict(solver=diffrax.Euler()), "Euler has no error estimate"),
        (dict(solver=diffrax.Euler(), num_steps=0), "num_steps must be a positive int"),
        (dict(rtol=0.0), "rtol must be a finite positive number"),
        (dict(t1=1.5), r"t1 must lie in \[0, 1.0\]"),
        (dict(t0=-0.1), r"t0 must lie in \[0, 1.0\]"),
        (dict(t0=0.5, t1=0.5), "t0 and t1 must differ"),
    ],
)
def test_bad_ode_arguments_raise_before_work(kwargs, message):
    sde, mixture = sg.VPSDE(), mixture_2d()
    args = dict(t0=1.0, t1=EPS) | kwargs
    with pytest.raises(ValueError, match=message):
        sg.ode_flow(sde, mixture.score_fn(sde), jnp.zeros((4, 2)), **args)
