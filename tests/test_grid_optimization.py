"""Optimized time grids and the two multistep conventions, against closed-form Gaussian flows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sde_gen as sg

EPS = 1e-3


def _power_law(d=16):
    """A Gaussian with variances from 1 down to 1e-3 (power law), as in the benchmark."""
    alpha = np.log(1e3) / np.log(d)
    return sg.Gaussian(jnp.linspace(-1.0, 1.0, d), jnp.arange(1, d + 1) ** -alpha)


def _rms(sde, data, method, grid, num_steps, x_T):
    x, _ = sg.sample_fast(
        jax.random.key(0), sde, data.score_fn(sde), x_T.shape, method, num_steps=num_steps,
        grid=grid, eps=EPS, x_init=x_T, denoise=False,
    )  # fmt: skip
    return float(jnp.sqrt(jnp.mean((x - data.flow(sde, x_T, sde.T, EPS)) ** 2)))


def test_optimize_grid_returns_a_grid_from_T_to_eps_that_sample_fast_accepts(tmp_path):
    sde, data = sg.VPSDE(), _power_law()
    ts = sg.optimize_grid(
        jax.random.key(1), sde, data.score_fn(sde), (32, 16), "dpm_solver_3m", 5, iterations=5
    )
    values = np.asarray(ts)
    assert values.shape == (6,) and values[0] == sde.T and values[-1] == np.float32(EPS)
    assert np.all(np.diff(values) < 0)
    x, nfe = sg.sample_fast(jax.random.key(2), sde, data.score_fn(sde), (8, 16), "dpm_solver_3m",
                            num_steps=5, grid=ts)  # fmt: skip
    assert nfe == 5 and np.all(np.isfinite(x))
    assert sg.FastSampler("dpm_solver_3m", 5, grid=ts).run_name().startswith("fast-")
    sg.save_grid(tmp_path / "grid.npy", ts, method="dpm_solver_3m", eps=EPS)
    loaded, settings = sg.load_grid(tmp_path / "grid.npy")
    np.testing.assert_array_equal(loaded, values)
    assert settings == {"method": "dpm_solver_3m", "eps": EPS, "num_steps": 5}


def test_the_logsnr_grid_is_where_the_optimization_starts():
    """Zero logits are the uniform log-SNR grid, and logits_from_grid inverts it."""
    from sde_gen.sampling.fast.optimize import grid_from_logits, logits_from_grid

    with jax.enable_x64(True):
        sde = sg.VPSDE()
        logsnr = sg.time_grid(sde, 7, "logsnr", eps=EPS)
        np.testing.assert_allclose(grid_from_logits(sde, jnp.zeros(7), EPS), logsnr, rtol=1e-10)
        karras = sg.time_grid(sde, 7, "karras", eps=EPS)
        back = grid_from_logits(sde, logits_from_grid(sde, karras), EPS)
        np.testing.assert_allclose(back, karras, rtol=1e-6)


@pytest.mark.parametrize("method, num_steps", [("unipc", 5), ("dpm_solver_3m", 8)])
def test_an_optimized_grid_beats_the_logsnr_grid_on_held_out_draws(method, num_steps):
    """Fitted on 128 prior draws, checked on 256 others (float64, exact score, D = 16).

    Measured: unipc 5 steps 3.4e-2 -> 2.5e-3, dpm_solver_3m 8 steps 7.4e-3 -> 8e-4.
    """
    with jax.enable_x64(True):
        sde, data = sg.VPSDE(), _power_law()
        ts = sg.optimize_grid(
            jax.random.key(1), sde, data.score_fn(sde), (128, 16), method, num_steps,
            iterations=150, reference_tol=1e-8,
        )  # fmt: skip
        x_T = data.marginal(sde, sde.T).sample(jax.random.key(7), 256).astype(jnp.float64)
        before = _rms(sde, data, method, "logsnr", num_steps, x_T)
        after = _rms(sde, data, method, ts, num_steps, x_T)
    assert after < before / 3, (before, after)


def _order(solver, grid="quadratic", steps=(40, 80)):
    """log2 of the error ratio as the steps double (float64, exact flow map, VP)."""
    with jax.enable_x64(True):
        sde, data = sg.VPSDE(), sg.Gaussian(jnp.linspace(-1.0, 1.0, 8), jnp.logspace(-2, 0, 8))
        x_T = data.marginal(sde, sde.T).sample(jax.random.key(0), 16).astype(jnp.float64)
        errors = [_rms(sde, data, solver, grid, n, x_T) for n in steps]
    return np.log2(errors[0] / errors[1])


def test_the_reference_d2_weight_converges_at_second_order_and_taylor_at_third():
    """Multistep DPM-Solver-3 (noise prediction) on the sqrt(t) grid, 40 -> 80 steps.

    Measured: 2.29 (reference, phi_3; 2.20 at 80 -> 160) and 2.87 (taylor, 2 phi_3; 2.90).
    """
    reference = sg.DPMSolverMultistep(3, "noise", d2_weight="reference")
    taylor = sg.DPMSolverMultistep(3, "noise", d2_weight="taylor")
    assert abs(_order(reference) - 2.0) <= 0.4
    assert abs(_order(taylor) - 3.0) <= 0.4


def test_lowering_the_order_at_every_step_count_costs_an_order():
    """The reference UniPC's rule ends every run with first-order steps: global order 2."""
    assert abs(_order(sg.UniPC(lower_order_final="always")) - 2.0) <= 0.5
    assert abs(_order(sg.UniPC(lower_order_final="never")) - 4.0) <= 0.5


def test_lower_order_final_rules_give_the_reference_step_orders():
    unipc = lambda rule: sg.UniPC(lower_order_final=rule)
    np.testing.assert_array_equal(unipc("always").step_orders(12), [1, 2] + [3] * 8 + [2, 1])
    np.testing.assert_array_equal(unipc("below_10").step_orders(12), [1, 2] + [3] * 10)
    np.testing.assert_array_equal(unipc("never").step_orders(5), [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(unipc(True).step_orders(5), [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(unipc(30).step_orders(12), unipc("always").step_orders(12))
    np.testing.assert_array_equal(unipc(30).step_orders(30), [1, 2] + [3] * 28)
    with pytest.raises(ValueError, match="unknown lower_order_final 'sometimes'"):
        unipc("sometimes")
    with pytest.raises(ValueError, match="unknown d2_weight 'phi'"):
        sg.DPMSolverMultistep(3, d2_weight="phi")


def test_the_sampler_chooses_the_rule_per_grid_and_names_it():
    by_grid = {g: sg.FastSampler("unipc", 12, grid=g) for g in ("logsnr", "uniform", "quadratic")}
    assert by_grid["logsnr"].solver.lower_order_final == "below_10"
    assert by_grid["uniform"].solver.lower_order_final == "always"
    assert by_grid["quadratic"].solver.lower_order_final == 30
    for grid, sampler in by_grid.items():
        assert sampler.run_name() == f"fast-unipc-{grid}-12"
        assert "lower_order_final" in sampler.describe()["solver"]
    # A rule given explicitly is kept, and named
    given = sg.FastSampler(sg.UniPC(lower_order_final="always"), 12)
    assert given.solver.lower_order_final == "always"
    assert given.run_name() != by_grid["logsnr"].run_name()
    d2 = sg.FastSampler(sg.DPMSolverMultistep(3, d2_weight="reference"), 12)
    assert d2.describe()["solver"]["d2_weight"] == "reference"
    assert d2.run_name() != sg.FastSampler("dpm_solver++_3m", 12).run_name()


def test_a_saved_grid_is_a_config_setting_and_its_step_count_is_checked(tmp_path):
    """`--config.sampling.grid=PATH.npy` samples on a grid written by `save_grid` (the
    eval and sample modes then use the fitted grid); a contradicting `num_steps` or a
    missing file is one ConfigError naming it."""
    import os

    from sde_gen.experiments import config as cfg
    from sde_gen.sampling.fast.grids import make_grid

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    times = np.asarray(make_grid(sg.VPSDE(), 9, "quadratic", 1e-3, 7.0))
    path = str(tmp_path / "grid.npy")
    sg.save_grid(path, times, method="unipc")
    config = cfg.load_file(os.path.join(root, "configs", "vp_digits.py"))
    config.sampling.update(grid=path, num_steps=0)
    sampler = cfg.load(config).sampling.sampler
    assert sampler.num_steps == 9 and np.array_equal(np.asarray(sampler.grid), times)
    assert sampler.run_name().startswith("fast-unipc-explicit-9-")
    config.sampling.num_steps = 5
    with pytest.raises(cfg.ConfigError, match="num_steps=5, but the grid .* has 9 steps"):
        cfg.load(config)
    config.sampling.update(grid=str(tmp_path / "missing.npy"), num_steps=0)
    with pytest.raises(cfg.ConfigError, match="missing.npy': no such file"):
        cfg.load(config)
