"""Discrete DDPM tables and the cosine schedule as SDEs (`DiscreteVPSDE`, `CosineVPSDE`).

Against the reference code's values (`fixtures/discrete_schedules.npz`, written by
`fixtures/make_discrete_schedule_fixtures.py` from DPM-Solver's `NoiseScheduleVP` and
guided-diffusion's beta tables, in float64), against closed forms, and through every
sampler, the likelihood and the losses with exact scores.
"""

import os

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_mixture_samples

import sde_gen as sg
from sde_gen.experiments import config as cfg

FIXTURES = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "discrete_schedules.npz"))
N = 1000
EPS = 1e-3
TABLES = ("linear", "cosine")


def _table(name, n=N):
    return sg.DiscreteVPSDE(betas=sg.discrete_betas(name, n))


SDES = {
    "linear_table": _table("linear"),
    "cosine_table": _table("cosine"),
    "cosine": sg.CosineVPSDE(),
}


def _reference_knots(name):
    """DPM-Solver's knot times with the added (0, 0), and the exact `n / N`."""
    return np.concatenate([[0.0], FIXTURES[f"{name}_knots"]]), np.arange(N + 1) / N


# ------------------------------------------------------------------------------------
# the reference code's values


@pytest.mark.parametrize("name", TABLES)
def test_beta_tables_equal_guided_diffusions(name):
    """Measured: linear identical, cosine within 3e-12 (relative)."""
    np.testing.assert_allclose(sg.discrete_betas(name, N), FIXTURES[f"{name}_betas"], rtol=1e-10)


@pytest.mark.parametrize("name", TABLES)
def test_table_matches_dpm_solvers_interpolation(name):
    """log a, std, lambda and the inverse of lambda against `NoiseScheduleVP('discrete')`.

    DPM-Solver's knots are `torch.linspace` in float32 (within 5.2e-8 of n / N); ours are
    n / N. At the reference's times mapped onto our knots by its own piecewise-linear map
    the two interpolations agree to 1e-8 (measured 9.5e-9, at t = 1/N, which lies below
    the reference's first knot, on its extrapolated first segment); at the same times,
    the difference is within |f(t)| times the largest knot shift (measured 0.92 of it),
    under 1e-6 relative. The current reference, which drops cosine-table steps with
    lambda < -5.1, leaves the linear table unchanged and keeps 996 cosine steps.
    """
    with jax.enable_x64(True):
        sde = sg.DiscreteVPSDE(betas=FIXTURES[f"{name}_betas"])
        ref_knots, knots = _reference_knots(name)
        t = FIXTURES[f"{name}_t"]
        mapped = np.interp(t, ref_knots, knots)
        a, std = sde.marginal(mapped)
        np.testing.assert_allclose(np.log(a), FIXTURES[f"{name}_log_alpha"], rtol=1e-8)
        np.testing.assert_allclose(std, FIXTURES[f"{name}_std"], rtol=1e-8)
        np.testing.assert_allclose(sde.log_snr(mapped), FIXTURES[f"{name}_lambda"], atol=1e-7)
        back = np.interp(sde.log_snr_inverse(FIXTURES[f"{name}_lambda_grid"]), knots, ref_knots)
        np.testing.assert_allclose(back, FIXTURES[f"{name}_inverse_t"], rtol=1e-8)

        diff = np.abs(np.asarray(sde.log_mean_coeff(t)) - FIXTURES[f"{name}_log_alpha"])
        bound = np.abs(np.asarray(sde.drift_coeff(t))) * np.max(np.abs(ref_knots - knots))
        assert np.all(diff <= bound), np.max(diff / bound)
        np.testing.assert_allclose(sde.marginal(t)[1], FIXTURES[f"{name}_std"], rtol=1e-6)

        from_ac = sg.DiscreteVPSDE(alphas_cumprod=np.cumprod(1 - FIXTURES[f"{name}_betas"]))
        np.testing.assert_allclose(
            from_ac.log_mean_coeff(mapped), FIXTURES[f"{name}_from_alphas_cumprod_log_alpha"],
            rtol=1e-8,
        )  # fmt: skip
    np.testing.assert_array_equal(FIXTURES["latest_linear_log_alpha"], FIXTURES["linear_log_alpha"])
    assert int(FIXTURES["latest_cosine_num_steps"]) == 996


@pytest.mark.parametrize("name", TABLES)
def test_discrete_time_label_is_dpm_solvers_for_1000_steps(name):
    """`timestep(t) = N t - 1` is `model_wrapper`'s `(t - 1/N) * 1000` at N = 1000, and a
    ModelScore with time_input="discrete" hands it to the network."""
    with jax.enable_x64(True):
        sde = sg.DiscreteVPSDE(betas=FIXTURES[f"{name}_betas"])
        t = FIXTURES[f"{name}_t"]
        np.testing.assert_allclose(sde.timestep(t), FIXTURES[f"{name}_t_input"], atol=1e-9)


def test_cosine_closed_form_matches_dpm_solvers():
    """`NoiseScheduleVP('cosine')`: the same T; log a, std, lambda, inverse to 1e-8
    (measured 5e-10: the reference's `log cos - log cos(phi(0))` cancels near t = 0)."""
    with jax.enable_x64(True):
        sde = sg.CosineVPSDE()
        assert sde.T == float(FIXTURES["cosine_closed_T"])
        t = FIXTURES["cosine_closed_t"]
        a, std = sde.marginal(t)
        np.testing.assert_allclose(np.log(a), FIXTURES["cosine_closed_log_alpha"], rtol=1e-8)
        np.testing.assert_allclose(std, FIXTURES["cosine_closed_std"], rtol=1e-8)
        np.testing.assert_allclose(sde.log_snr(t), FIXTURES["cosine_closed_lambda"], rtol=1e-8)
        inverse = sde.log_snr_inverse(FIXTURES["cosine_closed_lambda_grid"])
        np.testing.assert_allclose(inverse, FIXTURES["cosine_closed_inverse_t"], rtol=1e-8)


# ------------------------------------------------------------------------------------
# closed forms


@pytest.mark.parametrize("name", TABLES)
def test_marginal_at_the_grid_times_is_the_table(name):
    """At `t_n = T (n + 1) / N` (DiscreteTime's grid) `a = sqrt(alphas_cumprod[n])`:
    float64 to rounding (measured 5e-15); also float32, in which the table is stored."""
    betas = sg.discrete_betas(name, N)
    alphas_cumprod = np.cumprod(1 - betas)
    grid = np.arange(1, N + 1)
    with jax.enable_x64(True):
        sde = sg.DiscreteVPSDE(betas=betas)
        a, std = sde.marginal(sde.T * jnp.asarray(grid) / N)
        np.testing.assert_allclose(a, np.sqrt(alphas_cumprod), rtol=1e-14)
        np.testing.assert_allclose(std, np.sqrt(1 - alphas_cumprod), rtol=1e-12)
    sde = sg.DiscreteVPSDE(betas=betas)
    t, _ = sg.DiscreteTime(N)(jax.random.key(0), sde, 4096)
    n = np.rint(np.asarray(t) * N - 1).astype(int)
    np.testing.assert_allclose(sde.marginal(t)[0], np.sqrt(alphas_cumprod[n]), rtol=2e-6)


def test_constant_beta_table_is_the_constant_vp_sde():
    """A constant beta gives log a(t_n) linear in n, so the interpolation is exact: the
    VP SDE with `beta(t) = -N log(1 - beta)` (float64)."""
    with jax.enable_x64(True):
        beta, n = 0.01, 50
        table = sg.DiscreteVPSDE(betas=np.full(n, beta))
        b = -n * np.log1p(-beta)
        twin = sg.VPSDE(beta_min=b, beta_max=b)
        t = jnp.linspace(1e-5, 1.0, 301)
        for ours, theirs in zip(table.marginal(t), twin.marginal(t)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)
        np.testing.assert_allclose(table.drift_coeff(t), twin.drift_coeff(t), rtol=1e-12)
        np.testing.assert_allclose(table.diffusion(t), twin.diffusion(t), rtol=1e-12)
        np.testing.assert_allclose(table.log_snr_inverse(twin.log_snr(t)), t, rtol=1e-12)
        u = jnp.linspace(0.0, 0.999, 50)
        for ours, theirs in zip(table.importance_time(u, 1e-5), twin.importance_time(u, 1e-5)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_cosine_marginal_is_the_cosine_schedule():
    """`alpha_bar(t) = f(t) / f(0)`, `f = cos^2((t + s) / (1 + s) pi / 2)`, and its table at
    t_n. float32 near t = 0, where `log cos - log cos(phi(0))` loses all digits, keeps
    std to 1e-5 (measured 3e-7 at t = 1e-5)."""
    phase = lambda t: (t + 0.008) / 1.008 * np.pi / 2  # noqa: E731
    with jax.enable_x64(True):
        sde = sg.CosineVPSDE()
        t = np.linspace(0.0, sde.T, 501)
        alpha_bar = np.cos(phase(t)) ** 2 / np.cos(phase(0.0)) ** 2
        a, std = sde.marginal(t)
        np.testing.assert_allclose(a**2, alpha_bar, rtol=1e-12)
        np.testing.assert_allclose(std[1:] ** 2, 1 - alpha_bar[1:], rtol=1e-9)
        grid = np.arange(1, 995) / N  # the table's times below T
        table = np.cumprod(1 - sg.discrete_betas("cosine", N))[:994]
        np.testing.assert_allclose(sde.marginal(grid)[0] ** 2, table, rtol=1e-12)
        small = np.asarray([1e-5, 1e-4, 1e-3])
        exact_std = np.asarray(sde.marginal(small)[1])
    np.testing.assert_allclose(
        sg.CosineVPSDE().marginal(jnp.asarray(small))[1], exact_std, rtol=1e-5
    )


@pytest.mark.parametrize("name", list(SDES))
def test_drift_and_diffusion_are_consistent_with_the_marginal(name):
    """`d log a / dt = f` and `d std^2 / dt = 2 f std^2 + g^2`, by central differences
    inside the table's segments (float64, h = 1e-7: error ~1e-9)."""
    with jax.enable_x64(True):
        sde = sg.CosineVPSDE() if name == "cosine" else _table(name.removesuffix("_table"))
        t = jnp.asarray([0.3e-3, 2.5e-3, 0.1005, 0.5005, 0.9005, 0.9935])
        h = 1e-7
        a = lambda t: sde.marginal(t)[0]  # noqa: E731
        var = lambda t: sde.marginal(t)[1] ** 2  # noqa: E731
        d_log_a = (jnp.log(a(t + h)) - jnp.log(a(t - h))) / (2 * h)
        d_var = (var(t + h) - var(t - h)) / (2 * h)
        f, g = sde.drift_coeff(t), sde.diffusion(t)
        np.testing.assert_allclose(d_log_a, f, rtol=1e-6)
        np.testing.assert_allclose(d_var, 2 * f * var(t) + g**2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(SDES))
def test_log_snr_inverse_inverts_log_snr(name):
    """Exact inverses: float64 to 1e-12; float32 to what lambda's rounding allows (1 ulp of
    lambda over |d lambda / dt|, under 2e-5 relative here)."""
    t = np.unique(np.concatenate([np.geomspace(1e-5, 0.5, 20), np.linspace(0.5, 0.9946, 20)]))
    with jax.enable_x64(True):
        sde = sg.CosineVPSDE() if name == "cosine" else _table(name.removesuffix("_table"))
        np.testing.assert_allclose(sde.log_snr_inverse(sde.log_snr(t)), t, rtol=1e-12)
        lam = np.asarray(sde.log_snr(t))
        assert np.all(np.diff(lam) < 0), "log-SNR must decrease in t"
    sde = SDES[name]
    t32 = jnp.asarray(t, jnp.float32)
    np.testing.assert_allclose(sde.log_snr_inverse(sde.log_snr(t32)), t32, rtol=2e-5)


@pytest.mark.parametrize("name", list(SDES))
def test_importance_time_is_the_inverse_cdf_of_g2_over_std2(name):
    """`t = F^{-1}(u)` and `q(t) = F'(t)` for `F(t) ∝ int_eps^t g^2 / std^2`, F by the
    midpoint rule on 400,001 log-spaced times plus the table's knots, so that no panel
    straddles a jump of g (float64; measured |F(t) - u| <= 2e-7). The base class's
    tabulated rule, 4097 points in log t, cannot resolve the cosine table's last segment
    (beta = 0.999 in one step: a fifth of the mass in t > 0.999) and is 30% off there."""
    with jax.enable_x64(True):
        sde = sg.CosineVPSDE() if name == "cosine" else _table(name.removesuffix("_table"))
        eps = 1e-5
        grid = np.geomspace(eps, sde.T, 400_001)
        if name != "cosine":
            grid = np.union1d(grid, np.asarray(sde.knots())[1:])
        mid = (grid[1:] + grid[:-1]) / 2
        density = np.asarray(sde.diffusion(mid) ** 2 / sde.marginal(mid)[1] ** 2)
        cdf = np.concatenate([[0.0], np.cumsum(np.diff(grid) * density)])
        u = np.linspace(0.0, 0.999, 60)
        t, q = sde.importance_time(jnp.asarray(u), eps)
        np.testing.assert_allclose(np.interp(t, grid, cdf) / cdf[-1], u, atol=2e-6)
        np.testing.assert_allclose(
            q, np.asarray(sde.diffusion(t) ** 2 / sde.marginal(t)[1] ** 2) / cdf[-1], rtol=1e-5
        )


def test_bad_tables_are_refused():
    for kwargs, message in [
        ({}, "exactly one of betas= or alphas_cumprod="),
        ({"betas": [0.1], "alphas_cumprod": [0.9]}, "exactly one"),
        ({"betas": [0.1, 1.0]}, r"every beta must lie in \(0, 1\)"),
        ({"betas": [[0.1]]}, "non-empty 1-D table"),
        ({"alphas_cumprod": [0.9, 0.95]}, "must decrease strictly"),
        ({"betas": [0.1], "T": 0.0}, "T must be a finite positive number"),
    ]:
        with pytest.raises(ValueError, match=message):
            sg.DiscreteVPSDE(**kwargs)
    with pytest.raises(ValueError, match=r"T must lie in \(0, 1\)"):
        sg.CosineVPSDE(T=1.0)
    with pytest.raises(ValueError, match="unknown beta schedule 'quadratic'; choose one of"):
        sg.discrete_betas("quadratic", 10)


# ------------------------------------------------------------------------------------
# time labels


class _EchoLabel:
    """A stand-in network whose output is the time label it was given."""

    def apply(self, variables, x, label, train=False, **kwargs):
        return jnp.broadcast_to(label[:, None], x.shape)


def test_discrete_label_reaches_the_network():
    sde = _table("linear", 100)
    score = sg.ModelScore(_EchoLabel(), {}, sde, output="score", time_input="discrete")
    t = jnp.arange(1, 101) / 100
    np.testing.assert_allclose(score(jnp.zeros((100, 1)), t)[:, 0], np.arange(100), atol=1e-4)
    with pytest.raises(ValueError, match="needs an SDE with one, such as DiscreteVPSDE; got VPSDE"):
        sg.ModelScore(_EchoLabel(), {}, sg.VPSDE(), time_input="discrete")


# ------------------------------------------------------------------------------------
# samplers, likelihood and losses with exact scores (float32)

GAUSSIAN = sg.Gaussian(jnp.linspace(-1.0, 1.0, 4), jnp.logspace(-2, 0, 4))
# The PF-ODE's drift jumps at each of a table's N - 1 knots; an adaptive solver's error
# estimate does not see jumps, so its error on a table stays near 2e-3 (linear) and 6e-3
# (cosine) whatever rtol (measured at 1e-4 .. 1e-6, also in float64). The smooth
# cosine SDE keeps the usual tolerance.
ODE_ATOL = {"linear_table": 5e-3, "cosine_table": 1.5e-2, "cosine": 3e-4}
LIKELIHOOD_TOL = {"linear_table": 6e-3, "cosine_table": 6e-3, "cosine": 1e-3}


@pytest.mark.parametrize("name", list(SDES))
def test_pf_ode_matches_the_closed_form_flow(name):
    sde = SDES[name]
    x_T = GAUSSIAN.marginal(sde, sde.T).sample(jax.random.key(0), 64)
    x, nfe = sg.ode_flow(sde, GAUSSIAN.score_fn(sde), x_T, sde.T, EPS)
    np.testing.assert_allclose(x, GAUSSIAN.flow(sde, x_T, sde.T, EPS), atol=ODE_ATOL[name])
    assert 10 < int(nfe) < 2000


@pytest.mark.parametrize("name", list(SDES))
def test_likelihood_matches_the_closed_form(name):
    """Exact divergence; error per dimension (measured 2.7e-3, 2.8e-3, 6e-6 nats)."""
    sde = SDES[name]
    x = GAUSSIAN.sample(jax.random.key(1), 32)
    logp, z, _ = sg.log_likelihood(
        jax.random.key(0), sde, GAUSSIAN.score_fn(sde), x, divergence="exact"
    )
    recovered = logp - sde.prior_logp(z) + GAUSSIAN.marginal(sde, sde.T).log_prob(z)
    err = np.abs(np.asarray(recovered - GAUSSIAN.log_prob_t(sde, x, 1e-5))) / 4
    assert err.max() < LIKELIHOOD_TOL[name], err.max()


FAST = [("dpm_solver++_3m", "logsnr"), ("unipc", "logsnr"), ("heun_edm", "karras")]


def _fast_error(sde, method, grid):
    """Max error against the exact flow map, 20 steps (39 NFE for Heun), from T to eps."""
    x_T = GAUSSIAN.marginal(sde, sde.T).sample(jax.random.key(0), 64)
    x, _ = sg.sample_fast(
        jax.random.key(1), sde, GAUSSIAN.score_fn(sde), x_T.shape, method, num_steps=20,
        grid=grid, x_init=x_T, denoise=False,
    )  # fmt: skip
    return float(jnp.max(jnp.abs(x - GAUSSIAN.flow(sde, x_T, sde.T, EPS))))


@pytest.mark.parametrize("method, grid", FAST)
def test_fast_solvers_on_the_linear_table_match_its_continuous_twin(method, grid):
    """The linear table is DDPM's discretization of VPSDE(0.1, 20); the fast solvers use
    a, std and lambda (the grids lambda's inverse), never the drift, so the table's kinks
    cost them nothing: the same error within 25% (measured 1.0e-2 vs 1.0e-2, 6.4e-4 vs
    5.4e-4, 0.129 vs 0.126)."""
    ours, twin = (_fast_error(sde, method, grid) for sde in (SDES["linear_table"], sg.VPSDE()))
    assert ours <= 1.25 * twin, (ours, twin)


# Measured: cosine table 0.048, 0.036, 0.81 (its lambda(T) = -9.9 against -5.0 for VP:
# the same 20 steps span twice the log-SNR range and EDM's sigma_max is 2e4); cosine
# SDE 0.011, 1.1e-3, 0.12.
FAST_ATOL = {
    "cosine_table": {"dpm_solver++_3m": 0.08, "unipc": 0.06, "heun_edm": 1.2},
    "cosine": {"dpm_solver++_3m": 0.02, "unipc": 2e-3, "heun_edm": 0.2},
}


@pytest.mark.parametrize("name", list(FAST_ATOL))
@pytest.mark.parametrize("method, grid", FAST)
def test_fast_solvers_on_the_cosine_schedules(name, method, grid):
    assert _fast_error(SDES[name], method, grid) < FAST_ATOL[name][method]


# A 2-D Gaussian as a one-component mixture, for the sample-moment oracle.
MOMENTS = sg.GaussianMixture(means=[[0.5, -1.0]], variances=[[0.25, 2.0]])
SAMPLES = 20_000


def _pc(predictor, corrector):
    def run(sde, score_fn, x_init):
        return sg.sample_pc(
            jax.random.key(3), sde, score_fn, x_init.shape, predictor=predictor,
            corrector=corrector, snr=0.05, num_steps=200, x_init=x_init, denoise=False,
        )[0]  # fmt: skip

    return run


STOCHASTIC = {
    "euler_maruyama": _pc("euler_maruyama", None),
    "reverse_diffusion+langevin": _pc("reverse_diffusion", "langevin"),
    "ancestral": _pc("ancestral", None),
    "sde_shark": lambda sde, score_fn, x: sg.sample_sde(
        jax.random.key(3),
        sde,
        score_fn,
        x.shape,
        solver=diffrax.ShARK(),
        num_steps=200,
        x_init=x,
        denoise=False,
    )[0],  # fmt: skip
}


@pytest.mark.parametrize("name", ["linear_table", pytest.param("cosine", marks=pytest.mark.slow)])
@pytest.mark.parametrize("sampler", list(STOCHASTIC))
def test_stochastic_samplers_reach_the_marginal_at_eps(name, sampler):
    """From exact prior draws, 200 steps: means and variances of p_eps within 4.5 standard
    errors (plus 0.02 for the discretization)."""
    sde = SDES[name]
    x_init = MOMENTS.marginal(sde, sde.T).sample(jax.random.key(7), SAMPLES)
    x = STOCHASTIC[sampler](sde, MOMENTS.score_fn(sde), x_init)
    assert_mixture_samples(x, MOMENTS.marginal(sde, EPS), bias=0.02)


LOSS_DATA = sg.Gaussian(jnp.linspace(-1.0, 1.0, 16), jnp.logspace(-2, 0, 16))


def _residual(sde, t):
    """`E[(std s + z)^2]` per dimension with the exact score: `a^2 s^2 / (a^2 s^2 + std^2)`."""
    a, std = (np.asarray(v, np.float64)[..., None] for v in sde.marginal(np.asarray(t)))
    s2 = np.asarray(LOSS_DATA.variance, np.float64)
    return np.mean(a**2 * s2 / (a**2 * s2 + std**2), axis=-1)


def _mean_and_se(losses):
    losses = np.asarray(losses, np.float64)
    return losses.mean(), losses.std(ddof=1) / np.sqrt(len(losses))


@pytest.mark.parametrize("name", TABLES)
def test_ddpm_loss_on_the_table_is_the_grid_average(name):
    """`DiscreteTime(N)` draws the table's steps: DDPM's L_simple, whose expectation with
    the exact score is the average over the N steps of the closed form."""
    sde = SDES[f"{name}_table"]
    x0 = LOSS_DATA.sample(jax.random.key(1), 20_000)
    losses = sg.dsm_loss(
        jax.random.key(0), sde, LOSS_DATA.score_fn(sde), x0, time_sampler=sg.DiscreteTime(N)
    )
    mean, se = _mean_and_se(losses)
    exact = np.mean(_residual(sde, np.arange(1, N + 1) / N))
    assert abs(mean - exact) < 4.5 * se, (mean, exact, se)


@pytest.mark.parametrize("name", list(SDES))
def test_importance_sampled_likelihood_loss_is_unbiased(name):
    """Likelihood weighting with uniform and importance-sampled times estimate the same
    `E_U[g^2 / std^2 residual]` (trapezoid in log t on the exact integrand)."""
    sde, eps = SDES[name], 1e-3
    x0 = LOSS_DATA.sample(jax.random.key(1), 50_000)
    score_fn = LOSS_DATA.score_fn(sde)
    log_t = np.linspace(np.log(eps), np.log(sde.T), 40_001)
    t = np.exp(log_t)
    g2 = np.asarray(sde.diffusion(t), np.float64) ** 2
    std2 = 1 - np.asarray(sde.marginal(t)[0], np.float64) ** 2
    integrand = g2 / std2 * _residual(sde, t) * t
    exact = np.sum(np.diff(log_t) * (integrand[1:] + integrand[:-1]) / 2) / (sde.T - eps)
    for sampler in ("uniform", "importance"):
        losses = sg.dsm_loss(
            jax.random.key(0), sde, score_fn, x0, weighting="likelihood", time_sampler=sampler,
            eps=eps,
        )  # fmt: skip
        mean, se = _mean_and_se(losses)
        assert abs(mean - exact) < 4.5 * se + 1e-3 * abs(exact), (sampler, mean, exact, se)


# ------------------------------------------------------------------------------------
# config


def _config(**values):
    config = cfg.load_file(
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "vp_digits.py")
    )
    for key, value in values.items():
        cfg.set_value(config, key, value)
    return config


def test_config_builds_the_discrete_and_cosine_sdes():
    settings = cfg.load(
        _config(**{"training.sde": "vpsde_discrete", "model.num_scales": 100,
                   "model.time_input": "discrete"})
    )  # fmt: skip
    assert settings.sde == sg.DiscreteVPSDE(betas=sg.discrete_betas("linear", 100))
    assert settings.model.time_input == "discrete"
    settings = cfg.load(
        _config(**{"training.sde": "vpsde_discrete", "model.beta_schedule": "cosine"})
    )
    assert settings.sde == sg.DiscreteVPSDE(betas=sg.discrete_betas("cosine", 1000))
    assert cfg.load(_config(**{"training.sde": "vpsde_cosine"})).sde == sg.CosineVPSDE()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"training.sde": "vpsde_cos"},
         "unknown config.training.sde 'vpsde_cos'; choose one of vpsde, subvpsde, vesde, "
         "vpsde_discrete, vpsde_cosine"),
        ({"training.sde": "vpsde_discrete", "model.beta_schedule": "quadratic"},
         "unknown config.model.beta_schedule 'quadratic'; choose one of linear, cosine"),
        ({"model.beta_schedule": "quad"}, "unknown config.model.beta_schedule 'quad'"),
        ({"training.sde": "vpsde_discrete", "model.num_scales": 0},
         "config.model.num_scales must be a positive integer; got 0"),
        ({"model.time_input": "discrete"},
         "config.model.time_input='discrete' .* needs training.sde='vpsde_discrete'; got "
         "training.sde='vpsde'"),
        ({"model.time_input": "step"},
         "unknown config.model.time_input 'step'; choose one of t, std, discrete"),
    ],
)  # fmt: skip
def test_bad_schedule_settings_are_one_config_error(values, message):
    with pytest.raises(cfg.ConfigError, match=message) as error:
        cfg.load(_config(**values))
    assert "\n" not in str(error.value)
