"""Reverse-time SDE sampling through diffrax against the exact 2-D mixture."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from oracles import assert_mixture_samples, count_compiles, count_score_evaluations, mixture_2d

import sde_gen as sg

N = 20_000
SOLVERS = {"euler": diffrax.Euler(), "heun": "heun", "shark": diffrax.ShARK()}  # object or name


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_reverse_sde_samples_the_mixture(sde, solver, key):
    mixture = mixture_2d()
    x_init = mixture.marginal(sde, sde.T).sample(jax.random.key(7), N)
    x, _ = sg.sample_sde(
        key,
        sde,
        mixture.score_fn(sde),
        (N, 2),
        solver=SOLVERS[solver],
        num_steps=400,
        x_init=x_init,
    )
    assert_mixture_samples(x, mixture.marginal(sde, 1e-3))


def test_sample_sde_is_a_deterministic_function_of_key_and_x_init(key):
    sde, g = sg.VPSDE(), sg.Gaussian(jnp.zeros(2), jnp.asarray([0.2, 1.0]))
    x_T = g.marginal(sde, 1.0).sample(key, 64)
    run = lambda k: sg.sample_sde(
        k, sde, g.score_fn(sde), x_T.shape, solver=diffrax.ShARK(), num_steps=64, x_init=x_T
    )[0]
    np.testing.assert_array_equal(run(key), run(key))
    assert not np.allclose(run(key), run(jax.random.key(1)))


@pytest.mark.parametrize("solver, per_step", [("euler", 1), ("heun", 2), ("shark", 2)])
def test_sde_nfe_counts_real_evaluations(solver, per_step, key):
    sde, mixture = sg.VPSDE(), mixture_2d()
    reported = []

    def run(score_fn):
        x, nfe = sg.sample_sde(key, sde, score_fn, (4, 2), solver=SOLVERS[solver], num_steps=11)
        reported.append(nfe)
        return x

    assert count_score_evaluations(run, mixture.score_fn(sde)) == reported[0] == 11 * per_step


def test_sde_does_not_recompile_for_new_inputs_of_the_same_shapes(key):
    sde = sg.VESDE()
    first = mixture_2d()
    second = sg.GaussianMixture(first.means * 0.5, first.variances, first.weights)
    sg.sample_sde(key, sde, first.score_fn(sde), (16, 2), num_steps=20)
    with count_compiles() as compiles:
        x, _ = sg.sample_sde(jax.random.key(2), sde, second.score_fn(sde), (16, 2), num_steps=20)
        x.block_until_ready()
    assert len(compiles) == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(solver=diffrax.Tsit5()), "unsupported SDE solver Tsit5; choose one of Euler"),
        (dict(solver="milstein"), "unknown SDE solver 'milstein'; choose one of euler, heun"),
        (dict(num_steps=-3), "num_steps must be a positive int"),
        (dict(eps=1.0), "eps must satisfy"),
    ],
)
def test_bad_sde_arguments_raise_before_work(kwargs, message, key):
    sde, mixture = sg.VPSDE(), mixture_2d()
    with pytest.raises(ValueError, match=message):
        sg.sample_sde(key, sde, mixture.score_fn(sde), (4, 2), **kwargs)
