"""The sampler objects: one call signature, settings as fields, names derived from them."""

import json

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import mixture_2d

import sde_gen as sg
from sde_gen.sampling import FAST_SOLVERS, SAMPLERS, get_sampler
from sde_gen.sampling.fast import solve

SHAPE = (8, 2)

# (sampler object, the thin function's keyword arguments that build the same sampler)
CASES = {
    "pc": (
        sg.PCSampler("reverse_diffusion", "langevin", num_steps=6, snr=0.1),
        lambda k, s, f, x: sg.sample_pc(
            k, s, f, SHAPE, predictor="reverse_diffusion", corrector="langevin", snr=0.1,
            num_steps=6, x_init=x,
        ),
    ),
    "ode": (
        sg.ODESampler("heun", num_steps=5, denoise=True),
        lambda k, s, f, x: sg.sample_ode(
            k, s, f, SHAPE, solver="heun", num_steps=5, denoise=True, x_init=x
        ),
    ),
    "ode_adaptive": (
        sg.ODESampler(rtol=1e-3, atol=1e-3),
        lambda k, s, f, x: sg.sample_ode(k, s, f, SHAPE, rtol=1e-3, atol=1e-3, x_init=x),
    ),
    "sde": (
        sg.SDESampler("shark", 6, eps=1e-2),
        lambda k, s, f, x: sg.sample_sde(
            k, s, f, SHAPE, solver="shark", num_steps=6, eps=1e-2, x_init=x
        ),
    ),
    "fast": (
        sg.FastSampler(sg.DDIM(eta=0.5), 5, grid="karras"),
        lambda k, s, f, x: sg.sample_fast(
            k, s, f, SHAPE, sg.DDIM(eta=0.5), num_steps=5, grid="karras", x_init=x
        ),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("from_prior", [True, False], ids=["prior", "x_init"])
def test_sampler_object_equals_the_thin_function_bit_for_bit(case, from_prior):
    sde, mixture = sg.VPSDE(), mixture_2d()
    score_fn = mixture.score_fn(sde)
    x_init = None if from_prior else mixture.marginal(sde, sde.T).sample(jax.random.key(4), 8)
    sampler, function = CASES[case]
    key = jax.random.key(1)
    x, nfe = sampler(key, sde, score_fn, SHAPE, x_init=x_init)
    x_fn, nfe_fn = function(key, sde, score_fn, x_init)
    np.testing.assert_array_equal(x, x_fn)
    assert type(nfe) is int and type(nfe_fn) is int and nfe == nfe_fn > 0
    assert x.shape == SHAPE and np.all(np.isfinite(x))


def test_nfe_is_a_python_int_for_every_sampler():
    sde, mixture = sg.VESDE(), mixture_2d()
    score_fn = mixture.score_fn(sde)
    samplers = [
        sg.PCSampler(num_steps=3),
        sg.ODESampler(),  # adaptive: counted by the solve
        sg.ODESampler("euler", num_steps=3),
        sg.SDESampler(num_steps=3, denoise=True),
        *(sg.FastSampler(solver, 3) for solver in FAST_SOLVERS.values()),
    ]
    for sampler in samplers:
        _, nfe = sampler(jax.random.key(0), sde, score_fn, (4, 2))
        assert type(nfe) is int, sampler.run_name()


def _variants():
    """Pairs of samplers that differ in one setting that changes the results."""
    return {
        "pc num_steps": (sg.PCSampler(num_steps=10), sg.PCSampler(num_steps=11)),
        "pc eps": (sg.PCSampler(num_steps=10), sg.PCSampler(num_steps=10, eps=1e-4)),
        "pc denoise": (sg.PCSampler(num_steps=10), sg.PCSampler(num_steps=10, denoise=False)),
        "pc predictor": (sg.PCSampler("ancestral"), sg.PCSampler("reverse_diffusion")),
        "pc snr": (
            sg.PCSampler(corrector="langevin"),
            sg.PCSampler(corrector=sg.LangevinCorrector(snr=0.1)),
        ),
        "pc corrector steps": (
            sg.PCSampler(corrector="langevin"),
            sg.PCSampler(corrector="langevin", n_corrector_steps=2),
        ),
        "ode solver": (sg.ODESampler("tsit5"), sg.ODESampler(diffrax.Dopri5())),
        "ode rtol": (sg.ODESampler(rtol=1e-5), sg.ODESampler(rtol=1.0000001e-5)),
        "ode atol": (sg.ODESampler(), sg.ODESampler(atol=1e-4)),
        "ode fixed vs rtol": (sg.ODESampler("heun", rtol=10), sg.ODESampler("heun", num_steps=10)),
        "ode denoise": (sg.ODESampler(), sg.ODESampler(denoise=True)),
        "sde solver": (sg.SDESampler("euler", 100), sg.SDESampler("shark", 100)),
        "sde eps": (sg.SDESampler(num_steps=100), sg.SDESampler(num_steps=100, eps=2e-3)),
        "fast solver": (sg.FastSampler("unipc", 10), sg.FastSampler("dpm_solver_3m", 10)),
        "fast steps": (sg.FastSampler("unipc", 10), sg.FastSampler("unipc", 12)),
        "fast grid": (sg.FastSampler("unipc", 10), sg.FastSampler("unipc", 10, grid="karras")),
        "fast rho": (
            sg.FastSampler("unipc", 10, grid="karras"),
            sg.FastSampler("unipc", 10, grid="karras", rho=5.0),
        ),
        "fast eta": (sg.FastSampler("ddim", 10), sg.FastSampler(sg.DDIM(eta=1.0), 10)),
        "fast denoise": (sg.FastSampler("ddim", 10), sg.FastSampler("ddim", 10, denoise=False)),
        "fast explicit grid": (
            sg.FastSampler("ddim", 2, grid=jnp.asarray([1.0, 0.5, 0.1])),
            sg.FastSampler("ddim", 2, grid=jnp.asarray([1.0, 0.4, 0.1])),
        ),
        "fast unipc variant": (
            sg.FastSampler("unipc", 10),
            sg.FastSampler(sg.UniPC(variant="bh2"), 10),
        ),
        "method": (sg.ODESampler("euler", num_steps=10), sg.SDESampler("euler", 10)),
    }


@pytest.mark.parametrize("name", list(_variants()))
def test_different_settings_give_different_descriptions_and_run_names(name):
    a, b = _variants()[name]
    assert a.describe() != b.describe()
    assert a.run_name() != b.run_name()


def test_equal_settings_give_equal_descriptions_and_run_names():
    pairs = [
        (sg.PCSampler("ancestral", "langevin", 100), sg.PCSampler(
            sg.AncestralSampling(), sg.LangevinCorrector(), num_steps=100
        )),
        (sg.ODESampler("Dopri5"), sg.ODESampler(diffrax.Dopri5())),
        (sg.SDESampler("shark", 50), sg.SDESampler(diffrax.ShARK(), 50)),
        (sg.FastSampler("ddim", 10), sg.FastSampler(sg.DDIM(), 10, denoise=True)),
        (sg.FastSampler("unipc", 20), get_sampler("fast", solver="unipc", num_steps=20)),
    ]  # fmt: skip
    for a, b in pairs:
        assert a.describe() == b.describe()
        assert a.run_name() == b.run_name()


def test_run_names_are_short_readable_and_json_describes_the_rest():
    assert sg.PCSampler("euler_maruyama", "langevin", 500).run_name() == (
        "pc-euler_maruyama-langevin-500"
    )
    assert sg.ODESampler("tsit5").run_name() == "ode-tsit5-1e-05"
    assert sg.SDESampler("euler", 1000).run_name() == "sde-euler-1000"
    assert sg.FastSampler("dpm_solver_3m", 20).run_name() == "fast-dpm_solver_3m-logsnr-20"
    # A setting outside the readable part adds a hash of describe()
    name = sg.PCSampler("euler_maruyama", "langevin", 500, eps=1e-4).run_name()
    assert name.startswith("pc-euler_maruyama-langevin-500-") and len(name) == 39
    for sampler in (a for pair in _variants().values() for a in pair):
        described = sampler.describe()
        assert json.loads(json.dumps(described)) == described
        assert described["method"] == sampler.method
        assert all(c.isalnum() or c in "-_.+" for c in sampler.run_name())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sg.PCSampler("eulr"), "unknown predictor 'eulr'; choose one of euler_maruyama"),
        (lambda: sg.PCSampler(corrector="lang"), "unknown corrector 'lang'; choose one of lang"),
        (lambda: sg.PCSampler(None, None), "needs a predictor or a corrector"),
        (lambda: sg.PCSampler(num_steps=0), "num_steps must be a positive int; got 0"),
        (lambda: sg.PCSampler(eps=-1.0), "eps must satisfy 0 < eps < T; got -1.0"),
        (lambda: sg.PCSampler(denoise="yes"), "denoise must be True or False; got 'yes'"),
        (lambda: sg.ODESampler("rk4"), "unknown ODE solver 'rk4'; choose one of euler, heun"),
        (lambda: sg.ODESampler("euler"), "Euler has no error estimate"),
        (lambda: sg.ODESampler(rtol=0.0), "rtol must be a finite positive number"),
        (lambda: sg.SDESampler("milstein"), "unknown SDE solver 'milstein'; choose one of euler"),
        (lambda: sg.SDESampler(num_steps=2.5), "num_steps must be a positive int; got 2.5"),
        (lambda: sg.FastSampler("dpm", 10), "unknown fast sampling method 'dpm'; choose one of"),
        (lambda: sg.FastSampler("unipc", 10, grid="log"), "unknown time grid 'log'; choose one of"),
        (lambda: sg.FastSampler("unipc", 10, rho=0.0), "rho must be a positive number; got 0.0"),
        (lambda: sg.FastSampler("unipc", 2, grid=[1.0, 0.5]), "num_steps \\+ 1 = 3 times"),
        (lambda: get_sampler("flow"), "unknown sampling method 'flow'; choose one of pc, ode"),
        (lambda: get_sampler("fast", solver="unipc", steps=3), "fast sampler: .*steps"),
    ],
)
def test_bad_settings_raise_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_get_sampler_maps_methods_to_classes():
    assert set(SAMPLERS) == {"pc", "ode", "sde", "fast"}
    assert isinstance(get_sampler("pc", num_steps=3), sg.PCSampler)
    assert isinstance(get_sampler("ode"), sg.ODESampler)
    assert isinstance(get_sampler("sde", solver="heun"), sg.SDESampler)
    assert isinstance(get_sampler("FAST", solver="unipc", num_steps=4), sg.FastSampler)


@pytest.mark.parametrize("method", list(FAST_SOLVERS))
def test_init_and_step_in_a_python_loop_reproduce_sample_fast(method):
    """The solver API alone (init, step_inputs, step, final_step, final_denoise), driven by
    a Python loop instead of the one scan, gives what sample_fast gives (float64: an eager
    loop and one compiled program round differently, by ~1e-16 here)."""
    with jax.enable_x64(True):
        sde, mixture = sg.SubVPSDE(), mixture_2d()
        score_fn = mixture.score_fn(sde)
        x_T = mixture.marginal(sde, sde.T).sample(jax.random.key(0), 8).astype(jnp.float64)
        sampler = sg.FastSampler(method, 4, grid="quadratic", denoise=True)
        key = jax.random.key(3)
        expected, nfe = sampler(key, sde, score_fn, x_T.shape, x_init=x_T)

        solver = sampler.solver
        _, solve_key = jax.random.split(key)  # the first half draws the prior
        ts = sampler.times(sde, x_T.dtype)
        inputs = solver.step_inputs(solve_key, sde, ts)
        at = lambda i: jax.tree_util.tree_map(lambda leaf: leaf[i], inputs)
        state = solver.init(sde, score_fn, x_T, ts)
        for i in range(len(ts) - 2):
            state = solver.step(sde, score_fn, state, at(i))
        x = solver.final_step(sde, score_fn, state, at(len(ts) - 2))
        x = solver.final_denoise(sde, score_fn, x, ts[-1])
        np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-12)
        scanned = solve(solver, solve_key, sde, score_fn, x_T, ts)  # the one scan, unjitted
        scanned = solver.final_denoise(sde, score_fn, scanned, ts[-1])
        np.testing.assert_allclose(scanned, x, rtol=1e-10)
    assert nfe == 4 * solver.evals_per_step + 1


def test_every_fast_solver_declares_order_and_evals_the_same_way():
    for solver in FAST_SOLVERS.values():
        assert isinstance(solver.order, int) and solver.order >= 1
        assert isinstance(solver.evals_per_step, int) and solver.evals_per_step >= 1
        assert isinstance(solver.denoise, bool)
        assert solver.nfe(5) == 5 * solver.evals_per_step


def test_tweedie_is_the_final_step_of_ode_sde_and_fast():
    sde, mixture = sg.VPSDE(), mixture_2d()
    score_fn = mixture.score_fn(sde)
    x_T = mixture.marginal(sde, sde.T).sample(jax.random.key(0), 8)
    eps = 1e-2
    for plain, denoised in [
        (sg.ODESampler("heun", num_steps=4, eps=eps), sg.ODESampler(
            "heun", num_steps=4, eps=eps, denoise=True)),
        (sg.SDESampler(num_steps=4, eps=eps), sg.SDESampler(num_steps=4, eps=eps, denoise=True)),
        (sg.FastSampler("unipc", 4, eps=eps), sg.FastSampler("unipc", 4, eps=eps, denoise=True)),
    ]:  # fmt: skip
        x, nfe = plain(jax.random.key(1), sde, score_fn, x_T.shape, x_init=x_T)
        x0, nfe_d = denoised(jax.random.key(1), sde, score_fn, x_T.shape, x_init=x_T)
        np.testing.assert_allclose(x0, sg.sampling.tweedie(sde, score_fn, x, eps), rtol=1e-6)
        assert nfe_d == nfe + 1


def test_pc_chain_takes_a_projection(key):
    """`PCSampler.chain(..., project=)` applies the constraint after every sub-step."""
    sde, mixture = sg.VPSDE(), mixture_2d()
    sampler = sg.PCSampler(num_steps=5, denoise=False)

    def pin_first_coordinate(key, x, x_mean, t):
        return x.at[:, 0].set(0.5), x_mean.at[:, 0].set(0.5)

    x = sampler.chain(key, sde, mixture.score_fn(sde), (4, 2), project=pin_first_coordinate)
    np.testing.assert_array_equal(x[:, 0], 0.5)
    free = sampler.chain(key, sde, mixture.score_fn(sde), (4, 2))
    np.testing.assert_array_equal(free, sampler(key, sde, mixture.score_fn(sde), (4, 2))[0])
