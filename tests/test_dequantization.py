"""Variational dequantization: the flow's density against the change of variables, the
bound against the exact discrete likelihood of discretized Gaussian data, the settings'
checks, and the joint training and evaluation of the digits ML config."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.scipy.special import ndtr

import sde_gen as sg
from sde_gen.analytic import Gaussian
from sde_gen.dequantization import FlowDequantizer, bin_index, dequantize
from sde_gen.experiments import config as cfg
from sde_gen.experiments.kinds import make_experiment
from sde_gen.experiments.state import DEQUANTIZER
from sde_gen.likelihood import bits_per_dim
from sde_gen.losses import ImportanceTime, nll_bound_losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def perturbed(variables, scale, seed=2):
    """Random weights everywhere (a fresh flow's zero-initialised outputs test nothing)."""
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, noisy)


@pytest.mark.parametrize(
    "shape",
    [pytest.param((3, 6), marks=pytest.mark.slow), (2, 3, 3, 2)],  # images: the digits' path
    ids=["vectors", "images"],
)
def test_flow_log_density_is_the_change_of_variables(shape):
    """`log q(u | k)` equals `log N(eps) - log |det du/deps|` with the Jacobian by autodiff
    (float64: agreement to rounding)."""
    with jax.enable_x64(True):
        flow = FlowDequantizer(features=8, num_couplings=3, num_logistics=3)
        x = jnp.round(jax.random.uniform(jax.random.key(0), shape) * 3) / 3
        variables = perturbed(flow.init(jax.random.key(1), jnp.zeros(shape), x), 0.05)
        eps = jax.random.normal(jax.random.key(3), shape)
        u, log_q = jax.jit(flow.apply)(variables, eps, x)
        assert u.shape == shape and log_q.shape == (shape[0],)
        assert bool(jnp.all((u > 0) & (u < 1)))
        d = math.prod(shape[1:])

        @jax.jit
        def expected(e, xi):
            one = lambda e: flow.apply(variables, e[None], xi[None])[0][0].reshape(-1)
            jac = jax.jacfwd(one)(e).reshape(d, d)
            return (
                -0.5 * jnp.sum(e**2) - 0.5 * d * math.log(2 * math.pi) - jnp.linalg.slogdet(jac)[1]
            )

        for i in range(shape[0]):
            assert float(log_q[i]) == pytest.approx(float(expected(eps[i], x[i])), abs=1e-9)


@pytest.mark.slow  # 16 s of compilation for a range check
def test_dequantized_values_stay_in_their_bins():
    """`y = lo + (hi - lo) (k + u) / L` lies inside bin k of the data's grid."""
    n_levels, data_range = 17, (-1.0, 1.0)
    k = jax.random.randint(jax.random.key(0), (4, 8, 8, 1), 0, n_levels)
    x = -1.0 + 2.0 * k / (n_levels - 1)  # the pipeline's values without dequantization
    assert bool(jnp.all(bin_index(x, n_levels, data_range) == k))
    flow = FlowDequantizer(features=8, num_couplings=2)
    variables = perturbed(jax.jit(flow.init)(jax.random.key(1), x, x), 0.3)
    draw = jax.jit(lambda v, k, x: dequantize(flow, v, k, x, n_levels, data_range))
    y, log_q = draw(variables, jax.random.key(2), x)
    width, rounding = 2.0 / n_levels, 1e-6  # float32 rounding where u is within 1e-7 of 0 or 1
    lower, upper = -1.0 + k * width, -1.0 + (k + 1) * width
    assert bool(jnp.all((y >= lower - rounding) & (y <= upper + rounding)))
    assert bool(jnp.all(jnp.isfinite(log_q)))


def test_learned_dequantization_closes_the_jensen_gap_with_the_exact_score():
    """Discrete data: a 2-D standard Gaussian of std 0.3 binned into 4 levels per axis on
    [-1, 1]. The flow is trained on the loss of ML training (one-draw likelihood bound with
    importance-sampled t, the exact score of the Gaussian under VP, plus `log q`); its bound
    `E_q[-log p(y) + log q_y]`, with the exact `log p`, then lies within 0.05 nats of the
    exact `-log P(k)` on average over P (uniform dequantization: 0.25 nats, in closed form),
    and never below it (a bound)."""
    n_levels, lo, hi, sigma, d = 4, -1.0, 1.0, 0.3, 2
    sde = sg.VPSDE()
    density = Gaussian(jnp.zeros(d), sigma**2 * jnp.ones(d))
    score = density.score_fn(sde)
    edges = lo + (hi - lo) * jnp.arange(n_levels + 1) / n_levels
    p_level = ndtr(edges[1:] / sigma) - ndtr(edges[:-1] / sigma)
    k = jnp.stack(jnp.meshgrid(*[jnp.arange(n_levels)] * d, indexing="ij"), -1).reshape(-1, d)
    x = lo + (hi - lo) * k / (n_levels - 1)
    p_k = jnp.prod(p_level[k], axis=1)
    exact = -jnp.sum(jnp.log(p_level[k]), axis=1)  # -log P(k), nats
    offset = d * math.log(n_levels / (hi - lo))  # log q_y - log q_u
    # uniform: E_U[y^2] over a bin [a, b] is (b^3 - a^3) / (3 (b - a))
    a, b = edges[k], edges[k + 1]
    mean_sq = (b**3 - a**3) / (3 * (b - a))
    uniform = jnp.sum(0.5 * mean_sq / sigma**2 + 0.5 * math.log(2 * math.pi * sigma**2), 1) + offset
    uniform_gap = float(jnp.sum(p_k * (uniform - exact)))
    assert uniform_gap == pytest.approx(0.254, abs=0.002)

    flow = FlowDequantizer(features=32, num_couplings=4)
    params = flow.init(jax.random.key(0), x, x)
    reps = 16
    xs, weights = jnp.repeat(x, reps, 0), jnp.repeat(p_k, reps)
    sampler = ImportanceTime(eps=1e-5)

    def loss(params, key):
        flow_key, bound_key = jax.random.split(key)
        y, log_q = dequantize(
            flow, params, jax.random.split(flow_key, len(xs)), xs, n_levels, (lo, hi)
        )
        nats = nll_bound_losses(jax.random.split(bound_key, len(xs)), sde, score, y, sampler)
        return jnp.sum(weights * (nats + log_q)) / jnp.sum(weights)

    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, key):
        grads = jax.grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    opt_state = optimizer.init(params)
    for i in range(1500):
        params, opt_state = step(params, opt_state, jax.random.key(i))

    draws = 4096
    y, log_q = dequantize(
        flow, params, jax.random.key(7), jnp.repeat(x, draws, 0), n_levels, (lo, hi)
    )
    learned = (-density.log_prob(y) + log_q).reshape(len(x), draws).mean(1) + offset
    learned_gap = float(jnp.sum(p_k * (learned - exact)))
    # Monte Carlo error of `learned` per bin: ~ std(log ratio) / sqrt(4096) < 0.005 nats
    assert learned_gap < 0.05 < uniform_gap / 5
    assert float(jnp.min(learned - exact)) > -0.01
    # the same bound in bits/dim through the one conversion
    bits = bits_per_dim(-(learned - offset), (1, d), (lo, hi), n_levels)
    assert float(jnp.sum(p_k * bits)) == pytest.approx(
        float(jnp.sum(p_k * learned)) / (d * math.log(2)), rel=1e-5
    )


def ml_digits_config():
    return cfg.load_file(os.path.join(ROOT, "configs", "vp_digits_ml.py"))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("dequantizer.name", "flows", "'flows'"),
        ("data.uniform_dequantization", True, "set data.uniform_dequantization=False"),
        ("training.likelihood_weighting", False, "set training.likelihood_weighting=True"),
    ],
)
def test_bad_dequantizer_settings_are_one_line(key, value, message):
    config = ml_digits_config()
    cfg.set_value(config, key, value)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(config)


def test_a_learned_dequantizer_needs_discrete_data():
    config = cfg.load_file(os.path.join(ROOT, "configs", "toy_2d.py"))
    config.dequantizer.name = "flow"
    config.training.likelihood_weighting = True
    with pytest.raises(cfg.ConfigError, match="'gmm' is continuous"):
        cfg.load(config)


def test_the_network_and_the_dequantizer_train_jointly_and_eval_reports_both_bounds():
    """The digits ML config's experiment: its state holds the dequantizer's parameters
    beside the network's; one loss carries gradients into both (the loss is the bound in
    bits/dim of the discrete batch); eval's likelihood reports the learned bound beside
    the uniform one."""
    config = ml_digits_config()
    config.model.update(nf=8, ch_mult=(1,), attn_resolutions=())
    config.dequantizer.features = 8
    config.eval.update(bpd_num_examples=4, bpd_batch_size=4, bpd_rtol=1e-2, bpd_atol=1e-2)
    experiment = make_experiment(cfg.load(config))
    state = experiment.init_state(jax.random.key(0))
    assert set(state.params) == {"params", DEQUANTIZER}
    x, _ = experiment.load_split("train", 8)  # the discrete digits (no uniform dequantization)
    assert np.allclose(x * 8, np.round(x * 8))  # 17 levels on [-1, 1]: multiples of 1/8
    keys = jax.random.split(jax.random.key(1), 8)
    loss_fn = experiment.loss_fn()
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        state.params, jnp.asarray(x), None, keys, jax.random.key(2)
    )
    # an untrained network's bound: worse than the 4.09 bits of a uniform P over 17 levels
    assert 4 < float(loss) < 100 and np.isfinite(float(metrics["log_q"]))
    for collection in ("params", DEQUANTIZER):
        norm = float(optax.tree.norm(grads[collection]))
        assert np.isfinite(norm) and norm > 0, collection
    report = experiment.likelihood(jax.random.key(3), state.params)
    for key in ("bpd", "bpd_stderr", "vardeq_bpd", "vardeq_bpd_stderr"):
        assert np.isfinite(report[key]), key
    assert report["vardeq_bpd"] == pytest.approx(report["bpd"], rel=0.5)
