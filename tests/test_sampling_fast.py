"""Fast PF-ODE solvers against the closed-form Gaussian flow and the mixture oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import (
    CosineVP,
    assert_mixture_samples,
    assert_mixture_weights,
    count_compiles,
    count_score_evaluations,
    mixture_2d,
)

import sde_gen as sg
from sde_gen.experiments import config as cfg
from sde_gen.sampling import FAST_SOLVERS, GRIDS, get_fast_solver

EPS = 1e-3
METHODS = list(FAST_SOLVERS)
# The order each method's global error should show (UniPC-3's corrector adds one).
ORDERS = {
    "ddim": 1,
    "dpm_solver_2": 2,
    "dpm_solver_3": 3,
    "dpm_solver++_2m": 2,
    "dpm_solver++_3m": 3,
    "dpm_solver_2m": 2,
    "dpm_solver_3m": 3,
    "unipc": 4,
    "heun_edm": 2,
}


def test_every_registered_method_has_an_expected_order():
    assert set(ORDERS) == set(METHODS)
    for name, order in ORDERS.items():
        assert FAST_SOLVERS[name].order == order


# ------------------------------------------------------------------------------------
# log-SNR and grids


@pytest.mark.parametrize("sde", [sg.VPSDE(), sg.SubVPSDE(), sg.VESDE()], ids=["vp", "subvp", "ve"])
def test_log_snr_inverse_closed_form_matches_bisection(sde):
    """The closed forms equal the generic numerical inverse (float64: both exact to ~1e-12)."""
    with jax.enable_x64(True):
        t = jnp.asarray([1e-4, 1e-3, 0.05, 0.3, 0.7, 0.999, 1.0], jnp.float64)
        lam = sde.log_snr(t)
        closed = sde.log_snr_inverse(lam)
        numeric = sg.AbstractLinearSDE.log_snr_inverse(sde, lam)
        np.testing.assert_allclose(closed, t, rtol=1e-10)
        np.testing.assert_allclose(numeric, t, rtol=1e-9)
        assert np.all(np.diff(np.asarray(lam)) < 0), "log-SNR must decrease in t"


def test_log_snr_of_the_sdes_in_closed_form():
    """VP: lambda = -log(e^B - 1)/2; sub-VP: -log(2 sinh(B/2)); VE: -log sigma(t)."""
    with jax.enable_x64(True):
        t = jnp.asarray([0.01, 0.5, 1.0], jnp.float64)
        vp, subvp, ve = sg.VPSDE(), sg.SubVPSDE(), sg.VESDE()
        b = vp.integrated_beta(t)
        np.testing.assert_allclose(vp.log_snr(t), -0.5 * np.log(np.expm1(b)), rtol=1e-12)
        np.testing.assert_allclose(subvp.log_snr(t), -np.log(2 * np.sinh(b / 2)), rtol=1e-12)
        np.testing.assert_allclose(ve.log_snr(t), -np.log(ve.sigma(t)), rtol=1e-12)


def test_log_snr_inverse_of_a_user_sde_by_bisection():
    """An SDE defined only by its coefficients gets lambda^-1 from the numerical fallback."""
    sde = CosineVP()
    t = jnp.asarray([2e-3, 0.1, 0.5, 0.9])
    back = sde.log_snr_inverse(sde.log_snr(t))
    # float32: lambda is known to ~1 ulp, so t to ~1 ulp / |d lambda / dt|.
    np.testing.assert_allclose(back, t, rtol=2e-5)


@pytest.mark.parametrize("sde", [sg.VPSDE(), sg.SubVPSDE(), sg.VESDE()], ids=["vp", "subvp", "ve"])
def test_time_grids_are_uniform_in_their_variable(sde):
    n = 12
    with jax.enable_x64(True):
        checks = {
            "uniform": lambda ts: ts,
            "logsnr": sde.log_snr,
            "karras": lambda ts: jnp.exp(-sde.log_snr(ts) / 7.0),
            "quadratic": jnp.sqrt,
        }
        assert set(checks) == set(GRIDS)
        for grid, variable in checks.items():
            ts = sg.time_grid(sde, n, grid, eps=EPS)
            assert ts.shape == (n + 1,)
            assert float(ts[0]) == sde.T and float(ts[-1]) == pytest.approx(EPS, rel=1e-12)
            assert np.all(np.diff(np.asarray(ts)) < 0), grid
            steps = np.diff(np.asarray(variable(ts)))
            np.testing.assert_allclose(steps, steps[0], rtol=1e-8, err_msg=grid)


def test_time_grid_checks_its_arguments():
    with pytest.raises(ValueError, match="eps must satisfy 0 < eps < T"):
        sg.time_grid(sg.VPSDE(), 10, eps=1.5)
    with pytest.raises(ValueError, match="unknown time grid 'edm'"):
        sg.time_grid(sg.VPSDE(), 10, "edm")


def test_karras_grid_takes_rho():
    sde = sg.VESDE()
    with jax.enable_x64(True):
        ts = sg.time_grid(sde, 8, "karras", rho=3.0)
        steps = np.diff(np.asarray(sde.marginal(ts)[1] ** (1 / 3)))
        np.testing.assert_allclose(steps, steps[0], rtol=1e-8)


# ------------------------------------------------------------------------------------
# Accuracy against closed forms


def _gaussian(d=8):
    return sg.Gaussian(jnp.linspace(-1.0, 1.0, d), jnp.logspace(-2, 0, d))


ORDER_STEPS = (40, 80, 160)
# Three step counts fit one slope; the fitted orders lie within 0.17 of the expected ones
# (below), while a third-order method whose second difference is weighted wrongly
# converges at ~2 over this range (DPM-Solver++(3M) with D_2 weighted by g_2: 1.9 VP).
ORDER_TOLERANCE = 0.25


def _measured_order(sde, method, steps=ORDER_STEPS):
    """The least-squares slope of -log error against log steps, the error measured against
    the exact flow map in float64 (8 dimensions, 16 samples).

    Gaussian data with variances over two decades, on the quadratic grid: its step ratios
    vary smoothly, so multistep methods show their generic order (on the uniform log-SNR
    grid DPM-Solver++(3M) and multistep DPM-Solver-3 superconverge at order ~4 for
    Gaussian data).
    """
    with jax.enable_x64(True):
        g = _gaussian()
        x_T = g.marginal(sde, sde.T).sample(jax.random.key(0), 16).astype(jnp.float64)
        exact = g.flow(sde, x_T, sde.T, EPS)
        errors = []
        for n in steps:
            x, nfe = sg.sample_fast(
                jax.random.key(1), sde, g.score_fn(sde), x_T.shape, method, num_steps=n,
                grid="quadratic", x_init=x_T, denoise=False,
            )  # fmt: skip
            assert nfe == FAST_SOLVERS[method].evals_per_step * n
            errors.append(float(jnp.sqrt(jnp.mean((x - exact) ** 2))))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    return slope, errors


@pytest.mark.parametrize("method", METHODS)
def test_error_shrinks_at_the_expected_order(method):
    """The error against the exact flow map falls as steps^-order (VP), the order fitted
    over 40, 80, 160 steps.

    Measured: 0.99, 2.01, 2.97, 2.11, 3.16, 1.91, 2.89, 3.94, 2.03 in the order of ORDERS.
    """
    rate, errors = _measured_order(sg.VPSDE(), method)
    assert abs(rate - ORDERS[method]) <= ORDER_TOLERANCE, (errors, rate)


@pytest.mark.parametrize("sde", [sg.SubVPSDE(), sg.VESDE()], ids=["subvp", "ve"])
@pytest.mark.parametrize("method", ["dpm_solver_3", "dpm_solver++_3m", "heun_edm"])
def test_solvers_keep_their_order_for_every_sde(sde, method):
    """The same code, written in a, s and lambda only, converges for sub-VP and VE too.

    Measured (sub-VP, VE): DPM-Solver-3 2.86, 3.10; DPM-Solver++(3M) 3.16, 3.17; Heun 2.03,
    2.05.
    """
    rate, errors = _measured_order(sde, method)
    assert abs(rate - ORDERS[method]) <= ORDER_TOLERANCE, (errors, rate)


@pytest.mark.parametrize("method", METHODS)
def test_reproduces_the_mixture_weights_at_20_nfe(method):
    """From exact draws of p_T, 20 score evaluations send each component its share.

    Weights within 4.5 binomial standard errors (measured: all within 0.007 of the truth).
    Means and variances still carry the discretization error at 20 NFE (variances 10-25%
    off for this mixture, whose trajectories bend sharply where the modes separate); the
    closed-form convergence tests above cover them.
    """
    sde, mixture = sg.VPSDE(), mixture_2d()
    x_init = mixture.marginal(sde, sde.T).sample(jax.random.key(7), 20_000)
    n = 20 // FAST_SOLVERS[method].evals_per_step
    x, nfe = sg.sample_fast(
        jax.random.key(0), sde, mixture.score_fn(sde), x_init.shape, method, num_steps=n,
        x_init=x_init, denoise=False,
    )  # fmt: skip
    assert 18 <= nfe <= 20
    assert_mixture_weights(x, mixture.marginal(sde, EPS))


def test_stochastic_ddim_with_eta_one_samples_the_mixture():
    """eta = 1 is DDPM's ancestral sampler: from prior noise to the data distribution."""
    sde, mixture = sg.VESDE(), mixture_2d()
    solver = get_fast_solver("ddim", eta=1.0)
    x, nfe = sg.sample_fast(
        jax.random.key(3), sde, mixture.score_fn(sde), (20_000, 2), solver, num_steps=200,
        denoise=False,
    )
    assert nfe == 200
    assert_mixture_samples(x, mixture.marginal(sde, EPS), bias=0.02)


def test_eta_zero_ddim_is_deterministic_and_eta_adds_noise():
    sde, g = sg.VPSDE(), _gaussian(4)
    x_T = g.marginal(sde, sde.T).sample(jax.random.key(0), 8)
    run = lambda key, solver: sg.sample_fast(
        key, sde, g.score_fn(sde), x_T.shape, solver, num_steps=10, x_init=x_T
    )[0]
    np.testing.assert_array_equal(run(jax.random.key(1), "ddim"), run(jax.random.key(2), "ddim"))
    noisy = get_fast_solver("ddim", eta=0.5)
    assert not np.allclose(run(jax.random.key(1), noisy), run(jax.random.key(2), noisy))


def test_ddim_step_is_the_first_order_exponential_integrator():
    """One DDIM step: x_t = (s_t / s_u) x_u + a_t (1 - e^{-h}) x0(x_u, u) (PAPERS.md sec. 5)."""
    sde, g = sg.SubVPSDE(), _gaussian(4)
    score_fn = g.score_fn(sde)
    x_u = g.marginal(sde, 0.6).sample(jax.random.key(0), 8)
    ts = jnp.asarray([0.6, 0.2])
    x, _ = sg.sample_fast(
        jax.random.key(1), sde, score_fn, x_u.shape, "ddim", num_steps=1, grid=ts, x_init=x_u,
        denoise=False,
    )  # fmt: skip
    s_u, (a_t, s_t) = sde.marginal(0.6)[1], sde.marginal(0.2)
    h = sde.log_snr(0.2) - sde.log_snr(0.6)
    x0 = sde.x0_from_score(x_u, 0.6, score_fn(x_u, jnp.full((8,), 0.6)))
    expected = s_t / s_u * x_u + a_t * (1 - jnp.exp(-h)) * x0
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-6)  # float32 rounding


def test_denoise_is_tweedie_at_eps(key):
    sde, g = sg.VPSDE(), _gaussian(4)
    x_T = g.marginal(sde, sde.T).sample(key, 8)
    common = dict(x_init=x_T, eps=EPS)
    x_eps, nfe = sg.sample_fast(
        key, sde, g.score_fn(sde), x_T.shape, "unipc", num_steps=12, **common
    )
    x0, nfe_d = sg.sample_fast(
        key, sde, g.score_fn(sde), x_T.shape, "unipc", num_steps=12, denoise=True, **common
    )
    np.testing.assert_allclose(x0, sde.x0_from_score(x_eps, EPS, g.score_t(sde, x_eps, EPS)))
    assert (nfe, nfe_d) == (12, 13)


@pytest.mark.parametrize("method", METHODS)
def test_nfe_counts_real_evaluations(method):
    sde, mixture = sg.VESDE(), mixture_2d()
    x_T = mixture.marginal(sde, sde.T).sample(jax.random.key(0), 4)
    reported = []

    def run(score_fn):
        x, nfe = sg.sample_fast(
            jax.random.key(1), sde, score_fn, x_T.shape, method, num_steps=7, x_init=x_T
        )
        reported.append(nfe)
        return x

    assert count_score_evaluations(run, mixture.score_fn(sde)) == reported[0]
    solver = FAST_SOLVERS[method]
    assert reported[0] == 7 * solver.evals_per_step + int(solver.denoise)


def test_lower_order_final_below_ten_steps():
    solver = FAST_SOLVERS["dpm_solver++_3m"]
    np.testing.assert_array_equal(solver.step_orders(6), [1, 2, 3, 3, 2, 1])
    np.testing.assert_array_equal(solver.step_orders(10), [1, 2] + [3] * 8)
    plain = get_fast_solver("dpm_solver++_3m", lower_order_final=False)
    np.testing.assert_array_equal(plain.step_orders(6), [1, 2, 3, 3, 3, 3])


def test_explicit_grid_equals_the_named_grid(key):
    sde, mixture = sg.VPSDE(), mixture_2d()
    x_T = mixture.marginal(sde, sde.T).sample(key, 8)
    ts = sg.time_grid(sde, 9, "karras", eps=EPS)
    run = lambda grid: sg.sample_fast(
        key, sde, mixture.score_fn(sde), x_T.shape, "dpm_solver++_2m", num_steps=9, grid=grid,
        x_init=x_T,
    )[0]
    np.testing.assert_allclose(run(ts), run("karras"), rtol=1e-6, atol=1e-6)


def test_guided_score_compositions_work(key):
    """A composed score (here: a mixture's score plus a constant drift) is just a score."""
    sde, mixture = sg.VPSDE(), mixture_2d()
    base = mixture.score_fn(sde)
    shifted = lambda x, t: base(x, t) + 0.1
    x, nfe = sg.sample_fast(key, sde, shifted, (16, 2), "dpm_solver++_2m", num_steps=10)
    assert x.shape == (16, 2) and np.all(np.isfinite(x)) and nfe == 10


def test_no_recompilation_for_new_inputs_of_the_same_shapes(key):
    sde = sg.VPSDE()
    first = mixture_2d()
    second = sg.GaussianMixture(first.means + 1.0, first.variances, first.weights)
    sg.sample_fast(key, sde, first.score_fn(sde), (16, 2), "unipc", num_steps=10)
    with count_compiles() as compiles:
        x, _ = sg.sample_fast(
            jax.random.key(5), sde, second.score_fn(sde), (16, 2), "unipc", num_steps=10
        )
        jax.block_until_ready(x)
    assert len(compiles) == 0


# ------------------------------------------------------------------------------------
# Errors


def _call(**overrides):
    sde, mixture = sg.VPSDE(), mixture_2d()
    kwargs = dict(
        key=jax.random.key(0), sde=sde, score_fn=mixture.score_fn(sde), shape=(4, 2),
        method="ddim", num_steps=5,
    )  # fmt: skip
    kwargs.update(overrides)
    return sg.sample_fast(**kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(method="dpm_solver++2m"), "unknown fast sampling method 'dpm_solver\\+\\+2m'"),
        (dict(grid="log_snr"), "unknown time grid 'log_snr'; choose one of uniform, logsnr"),
        (dict(num_steps=0), "num_steps must be a positive int"),
        (dict(eps=0.0), "eps must satisfy 0 < eps < T"),
        (dict(rho=-1.0), "rho must be a positive number"),
        (dict(grid=jnp.asarray([1.0, 0.5, 0.1])), "num_steps \\+ 1 = 6 times"),
        (dict(grid=jnp.asarray([1.0, 0.5, 0.6, 0.2, 0.1, 0.01])), "decrease strictly"),
        (dict(x_init=jnp.zeros((3, 2))), "x_init has shape"),
        (dict(grid=jnp.linspace(0.9, 0.1, 6)), "< T = 1.0 needs x_init"),
        (dict(sde=sg.ReverseSDE(sg.VPSDE(), lambda x, t: x)), "needs an AbstractLinearSDE"),
    ],
)
def test_bad_arguments_fail_before_any_work(overrides, message):
    with pytest.raises(ValueError, match=message):
        _call(**overrides)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        _call(method="dpm")
    for name in METHODS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sg.DDIM(eta=1.5), "eta must lie in"),
        (lambda: sg.DPMSolver(solver_order=4), "order must be 2 or 3"),
        (lambda: sg.DPMSolverMultistep(solver_order=1), "solver_order must be one of 2, 3"),
        (lambda: sg.UniPC(variant="bh3"), "unknown variant 'bh3'"),
        (lambda: sg.UniPC(prediction="score"), "unknown prediction 'score'"),
        (lambda: get_fast_solver("unipc", order=2), "unknown option"),
    ],
)
def test_bad_solver_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ------------------------------------------------------------------------------------
# From a config


def _config(**sampling):
    from configs.vp_digits import get_config

    config = get_config()
    config.sampling.method = "fast"
    config.sampling.num_steps = 0
    for key, value in sampling.items():
        config.sampling[key] = value
    return config


def test_config_selects_a_fast_solver_with_its_options():
    config = _config(fast_solver="ddim", fast_options={"eta": 1.0}, num_steps=12, grid="karras")
    sampler = cfg.load(config).sampling.sampler
    assert sampler == sg.FastSampler(sg.DDIM(eta=1.0), 12, "karras", eps=1e-3, denoise=True)
    assert sampler.describe() == {
        "method": "fast", "solver": {"name": "DDIM", "eta": 1.0, "classifier_scale": 1.0},
        "num_steps": 12, "grid": "karras", "eps": 1e-3, "denoise": True, "rho": 7.0,
    }  # fmt: skip
    sde, mixture = sg.VPSDE(), mixture_2d()
    x, nfe = sampler(jax.random.key(0), sde, mixture.score_fn(sde), (8, 2))
    assert x.shape == (8, 2) and nfe == 13  # 12 steps and the final Tweedie step
    # eta = 1 draws noise: another key, another sample
    assert not np.allclose(x, sampler(jax.random.key(1), sde, mixture.score_fn(sde), (8, 2))[0])


def test_config_fast_defaults():
    """A config that only says method="fast" gets DPM-Solver-3 (multistep) in 20 steps."""
    config = _config()
    for key in ("fast_solver", "grid", "eps"):
        del config.sampling[key]
    sampler = cfg.load(config).sampling.sampler
    assert sampler == sg.FastSampler("dpm_solver_3m", 20, "logsnr", eps=1e-3, denoise=True)


@pytest.mark.parametrize(
    "sampling, message",
    [
        (dict(fast_solver="dpm"), "unknown fast sampling method 'dpm'"),
        (dict(grid="log"), "unknown time grid 'log'"),
        (dict(fast_solver="ddim", fast_options={"eta": 2.0}), "DDIM: eta must lie in"),
        (dict(fast_solver="unipc", fast_options={"eta": 1.0}), "unknown option"),
    ],
)
def test_bad_fast_sampling_config_fails_when_the_config_is_read(sampling, message):
    with pytest.raises(cfg.ConfigError, match=f"config.sampling: {message}"):
        cfg.load(_config(**sampling))
