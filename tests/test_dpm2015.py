"""The 2015 discrete chains against closed forms: forward marginals, posteriors, the bound K
with the true reverse kernels plugged in, ancestral samples, the entropy bounds, and
posterior sampling by multiplying distributions."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_gen import dpm2015

BETAS = dpm2015.linear_betas(40, 1e-3, 0.25)
COV = (
    np.array(
        [[1.0, 0.7, 0.3, 0.0], [0.7, 1.0, 0.5, 0.2], [0.3, 0.5, 1.0, 0.6], [0.0, 0.2, 0.6, 1.0]]
    )
    * np.array([0.5, 1.0, 1.5, 0.8])[:, None] ** 0.5
    * np.array([0.5, 1.0, 1.5, 0.8])[None] ** 0.5
)
MEAN = np.array([1.0, -0.5, 0.3, 2.0])


def _data(n, key=0):
    return jax.random.multivariate_normal(jax.random.key(key), MEAN, COV, (n,))


def test_gaussian_forward_marginals_are_the_product_of_the_steps():
    chain = dpm2015.GaussianChain(BETAS)
    coef, var = 1.0, 0.0
    for t, beta in enumerate(np.asarray(BETAS, np.float64), start=1):
        coef, var = np.sqrt(1 - beta) * coef, (1 - beta) * var + beta
        c, v = chain.marginal(t)
        assert float(c) == pytest.approx(coef, rel=1e-5)
        assert float(v) == pytest.approx(var, rel=1e-4)  # float32 1 - abar
    x0 = jnp.full((20000, 1), 2.0)
    states = chain.forward_trajectory(jax.random.key(1), x0)
    for t in (1, 10, 40):
        c, v = chain.marginal(t)
        assert float(states[t].mean()) == pytest.approx(
            2 * float(c), abs=4 * float(np.sqrt(v / 20000))
        )
        assert float(states[t].var()) == pytest.approx(float(v), rel=0.05)


def test_binomial_forward_marginals():
    chain = dpm2015.BinomialChain(dpm2015.linear_betas(30, 0.01, 0.2))
    x0 = jnp.tile(jnp.asarray([[0.0, 1.0]]), (20000, 1))
    prob = np.asarray(x0[:1])
    for t in range(1, 31):
        beta = float(chain.betas[t - 1])
        prob = prob * (1 - beta) + beta / 2  # one step of the chain, in probability
        np.testing.assert_allclose(chain.marginal_prob(x0[:1], t), prob, rtol=1e-5)
    abar = float(chain.alpha_bar[30])
    np.testing.assert_allclose(prob, [[(1 - abar) / 2, abar + (1 - abar) / 2]], rtol=1e-5)
    x = x0
    keys = jax.random.split(jax.random.key(0), 30)
    for t in range(1, 31):  # simulate the chain step by step
        beta = chain.betas[t - 1]
        x = jax.random.bernoulli(keys[t - 1], x * (1 - beta) + beta / 2).astype(jnp.float32)
    np.testing.assert_allclose(x.mean(0), prob[0], atol=4 * 0.5 / np.sqrt(20000))


def test_gaussian_posterior_is_the_conditional_of_the_joint():
    chain = dpm2015.GaussianChain(BETAS)
    x0, xt = jnp.asarray([[0.3, -1.0]]), jnp.asarray([[1.2, 0.4]])
    for t in (1, 2, 17, 40):
        ab_t, ab_prev = float(chain.alpha_bar[t]), float(chain.alpha_bar[t - 1])
        a = 1 - float(BETAS[t - 1])
        # (x_{t-1}, x_t) | x_0: means sqrt(abar) x0, variances 1 - abar, covariance
        # sqrt(a) (1 - abar_{t-1})
        cov, v_t = np.sqrt(a) * (1 - ab_prev), 1 - ab_t
        mean = np.sqrt(ab_prev) * x0 + cov / v_t * (xt - np.sqrt(ab_t) * x0)
        var = (1 - ab_prev) - cov**2 / v_t
        got_mean, got_var = chain.posterior(x0, xt, t)
        np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.ravel(got_var), var, rtol=1e-4, atol=1e-7)


def test_binomial_posterior_matches_simulated_pairs():
    chain = dpm2015.BinomialChain(dpm2015.linear_betas(10, 0.05, 0.3))
    n, t = 200000, 6
    x0 = jnp.ones((n, 1))
    k1, k2 = jax.random.split(jax.random.key(3))
    prev = chain.sample_marginal(k1, x0, t - 1)
    beta = chain.betas[t - 1]
    xt = jax.random.bernoulli(k2, prev * (1 - beta) + beta / 2).astype(jnp.float32)
    for value in (0.0, 1.0):
        chosen = xt[:, 0] == value
        empirical = float(prev[chosen, 0].mean())
        se = np.sqrt(empirical * (1 - empirical) / int(chosen.sum()))
        exact = float(chain.posterior_prob(x0[:1], jnp.full((1, 1), value), t)[0, 0])
        assert empirical == pytest.approx(exact, abs=4 * se)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_k_of_the_exact_reverse_chain_is_the_closed_form(covariance):
    chain = dpm2015.GaussianChain(BETAS)
    cov = np.diag(COV) if covariance == "diagonal" else COV
    data = (
        _data(3000)
        if covariance == "full"
        else MEAN
        + np.sqrt(np.diag(COV)) * np.asarray(jax.random.normal(jax.random.key(0), (3000, 4)))
    )
    reverse = dpm2015.exact_reverse(chain, MEAN, cov)
    terms = jax.jit(lambda k, x: chain.bound(k, reverse, x))(jax.random.key(5), jnp.asarray(data))
    k = np.asarray(terms["K"])
    exact = dpm2015.exact_bound(chain, MEAN, cov)
    assert k.mean() == pytest.approx(exact, abs=4 * k.std() / np.sqrt(len(k)))
    assert abs(exact - (-0.5 * (4 * dpm2015.LOG_2PI_E + np.linalg.slogdet(np.atleast_2d(
        np.diag(cov) if cov.ndim == 1 else cov))[1]))) < 0.05  # fmt: skip  # small prior gap
    # an estimate of the sum over t from 4 draws of t is unbiased
    sampled = chain.bound(jax.random.key(6), reverse, jnp.asarray(data), num_t=4)
    se = np.asarray(sampled["K"]).std() / np.sqrt(len(k))
    assert float(sampled["K"].mean()) == pytest.approx(exact, abs=4 * se)


def test_ancestral_samples_of_the_exact_chain_match_the_data():
    chain = dpm2015.GaussianChain(BETAS)
    reverse = dpm2015.exact_reverse(chain, MEAN, COV)
    x = np.asarray(chain.sample(jax.random.key(2), reverse, (8000, 4)))
    np.testing.assert_allclose(x.mean(0), MEAN, atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), COV, atol=0.06)
    states = chain.sample(jax.random.key(2), reverse, (16, 4), trajectory=True)
    assert states.shape == (41, 16, 4)
    np.testing.assert_allclose(states[-1], x[:16], rtol=1e-5, atol=1e-5)


def test_exact_reverse_entropies_lie_within_the_entropy_bounds():
    chain = dpm2015.GaussianChain(BETAS)
    reverse = dpm2015.exact_reverse(chain, MEAN, COV)
    binomial = dpm2015.BinomialChain(dpm2015.linear_betas(30, 0.01, 0.2))
    prob = np.array([0.1, 0.5, 0.8])
    binary_reverse = dpm2015.exact_reverse_binary(binomial, prob)
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log1p(-p))
    for t in range(2, 31):
        _, cov = reverse(jnp.zeros((1, 4)), jnp.asarray([t]))
        entropy = 0.5 * (4 * dpm2015.LOG_2PI_E + np.linalg.slogdet(np.asarray(cov[0]))[1])
        lower, upper = chain.entropy_bounds(t, 4)
        assert float(lower) - 1e-4 <= entropy <= float(upper) + 1e-4, t
        # binomial: H(X_{t-1} | X_t) = E over x_t of the entropy of the reverse kernel
        ab = float(binomial.alpha_bar[t])
        p_t = prob * ab + (1 - ab) / 2
        ones = np.asarray(binary_reverse(jnp.ones((1, 3)), jnp.asarray([t])))[0]
        zeros = np.asarray(binary_reverse(jnp.zeros((1, 3)), jnp.asarray([t])))[0]
        entropy = np.sum(p_t * h(ones) + (1 - p_t) * h(zeros))
        lower, upper = binomial.entropy_bounds(t, 3)
        assert float(lower) - 1e-5 <= entropy <= float(upper) + 1e-5, t
    lower, upper = chain.entropy_bounds(jnp.arange(2, 41), 4)
    assert np.all(np.asarray(lower) < np.asarray(upper))


def test_binomial_k_of_the_exact_reverse_chain_is_the_closed_form():
    chain = dpm2015.BinomialChain(dpm2015.sohl_dickstein_betas(20))
    prob = np.array([0.1, 0.5, 0.8, 0.95])
    x0 = jax.random.bernoulli(jax.random.key(0), prob, (4000, 4)).astype(jnp.float32)
    reverse = dpm2015.exact_reverse_binary(chain, prob)
    k = np.asarray(chain.bound(jax.random.key(1), reverse, x0)["K"])
    exact = dpm2015.exact_bound_binary(chain, prob)
    assert k.mean() == pytest.approx(exact, abs=4 * k.std() / np.sqrt(len(k)))
    assert float(chain.alpha_bar[-1]) == 0.0  # the paper's schedule ends at the prior
    samples = chain.sample(jax.random.key(2), reverse, (8000, 4))
    np.testing.assert_allclose(samples.mean(0), prob, atol=4 * 0.5 / np.sqrt(8000))


def test_inpainting_factor_conditions_each_step_exactly():
    """One reverse step multiplied by the factor is the step's Gaussian conditioned on the
    known dimensions (closed form of `MultivariateGaussian.conditional`)."""
    import sde_gen as sg

    chain = dpm2015.GaussianChain(BETAS)
    reverse = dpm2015.exact_reverse(chain, MEAN, COV)
    known = np.array([True, False, True, False])
    values = jnp.asarray([[0.2, 0.0, 1.5, 0.0]])
    mean, cov = reverse(jnp.asarray([[0.5, -0.3, 1.0, 0.8]]), jnp.asarray([7]))
    got_mean, got_cov = dpm2015.inpaint_factor(known, values)(None, (mean, cov), None)
    want_mean, want_cov = sg.MultivariateGaussian(mean[0], cov[0]).conditional(values[0], known)
    np.testing.assert_allclose(got_mean[0, ~known], want_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_mean[0, known], values[0, known])
    np.testing.assert_allclose(got_cov[0][np.ix_(~known, ~known)], want_cov, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(got_cov[0][known]).max()) == 0.0


@pytest.mark.parametrize("noised", [False, True])
def test_posterior_inpainting_keeps_the_known_dims_and_moves_towards_the_posterior(noised):
    """The whole chain with the factor at every step: the known dims are kept exactly; the
    imputed ones move from the prior's towards the closed-form conditional, but not all the
    way: measured (T = 40, 8,000 draws) mean errors 0.39 / 0.22 (constant factor) and
    0.29 / 0.33 (noised), gaps prior -> posterior 0.37 / 0.78, variances ~1.2-1.3x the
    posterior's. The normalizer of each multiplied step, which the paper neglects, is
    what is missing (docs/dpm2015.md)."""
    chain = dpm2015.GaussianChain(BETAS)
    reverse = dpm2015.exact_reverse(chain, MEAN, COV)
    known = np.array([True, False, True, False])
    observed = jnp.asarray([0.2, 0.0, 1.5, 0.0])
    values = jnp.tile(observed, (8000, 1))
    factor = dpm2015.inpaint_factor(known, values, chain if noised else None)
    x = np.asarray(chain.sample(jax.random.key(4), reverse, (8000, 4), perturb=factor))
    np.testing.assert_array_equal(x[:, known], np.asarray(values)[:, known])
    k, u = np.flatnonzero(known), np.flatnonzero(~known)
    gain = COV[np.ix_(u, k)] @ np.linalg.inv(COV[np.ix_(k, k)])
    post_mean = MEAN[u] + gain @ (np.asarray(observed)[k] - MEAN[k])
    moved = np.abs(x[:, u].mean(0) - MEAN[u]) + np.abs(x[:, u].mean(0) - post_mean)
    gap = np.abs(post_mean - MEAN[u])
    # between the prior's and the posterior's means (within sampling error), nearer the
    # posterior for the larger shift
    np.testing.assert_array_less(moved, gap + 0.05)
    assert np.abs(x[:, u[1]].mean() - post_mean[1]) < 0.5 * gap[1]


def test_gaussian_factor_is_a_product_of_gaussians():
    factor = dpm2015.gaussian_factor(jnp.asarray([[1.0, -1.0]]), 0.5)
    mean, var = factor(None, (jnp.asarray([[0.0, 0.0]]), jnp.asarray([[1.0, 2.0]])), None)
    np.testing.assert_allclose(var, [[1 / 3, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(mean, [[2 / 3, -0.8]], rtol=1e-6)
    full_mean, full_cov = factor(
        None, (jnp.asarray([[0.0, 0.0]]), jnp.diag(jnp.asarray([1.0, 2.0]))[None]), None
    )
    np.testing.assert_allclose(full_mean, mean, rtol=1e-5)
    np.testing.assert_allclose(jnp.diagonal(full_cov[0]), var[0], rtol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: dpm2015.GaussianChain(jnp.asarray([0.1])), "T >= 2"),
        (lambda: dpm2015.GaussianChain(jnp.asarray([0.1, 1.0])), r"must lie in \(0, 1"),
        (lambda: dpm2015.BinomialChain(jnp.asarray([0.0, 0.5])), "must lie in"),
        (lambda: dpm2015.linear_betas(0), "num_steps"),
    ],
)
def test_bad_schedules_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- Learned reverse chains, trained through the loop ----------------------------------------


def _load(name):
    return __import__(f"configs.{name}", fromlist=["get_config"]).get_config()


def test_learned_reverse_steps_stay_within_the_entropy_bounds_and_betas_learn():
    from sde_gen import models
    from sde_gen.dpm2015 import loss, reverse_fn
    from sde_gen.experiments import state as train

    model = models.get_model("dpm2015_mlp", dim=2, num_steps=10, beta_T=0.3, learn_betas=True,
                             hidden=16, num_layers=1, embed_dim=8)  # fmt: skip
    optimizer = train.make_optimizer(lr=1e-2, warmup=0)
    x = jax.random.normal(jax.random.key(0), (16, 2))
    state = train.init_state(jax.random.key(1), model, optimizer, x)
    params = jax.tree_util.tree_map(  # random outputs: the last layer starts at zero
        lambda p: p + 0.5 * jax.random.normal(jax.random.key(2), p.shape), state.params
    )
    chain, reverse = reverse_fn(model, params)
    for t in range(2, 11):
        _, var = reverse(x, jnp.full((16,), t))
        entropy = 0.5 * jnp.sum(jnp.log(2 * jnp.pi * jnp.e * var), -1)
        lower, upper = chain.entropy_bounds(t, 2)
        assert bool(jnp.all(entropy >= lower - 1e-4)) and bool(jnp.all(entropy <= upper + 1e-4))
    step = train.pmap_train_step(
        train.make_step(
            lambda params, x, labels, keys, dropout_key: loss(model, params, x, keys),
            optimizer, ema_decay=0.0,
        ),
        devices=jax.local_devices()[:1],
    )
    new, metrics = step(train.replicate(state, jax.local_devices()[:1]), x[None], jax.random.key(3))
    old_betas = model.apply(state.params, method=type(model).betas)
    new_betas = model.apply(train.unreplicate(new).params, method=type(model).betas)
    assert float(new_betas[0]) == float(old_betas[0])  # beta_1 is fixed
    assert float(jnp.abs(new_betas[1:] - old_betas[1:]).max()) > 0  # the others learn
    assert np.isfinite(float(metrics["K_bits"][0]))


def test_heartbeat_data_are_the_papers_sequences():
    from sde_gen import data
    from sde_gen.dpm2015.experiment import heartbeat_metrics

    it, info = data.get_dataset("heartbeat", "test", 500, num_devices=1)
    x = np.asarray(next(it)["x"][0])
    assert info.shape == (20,) and set(np.unique(x)) == {0.0, 1.0}
    assert np.all(x.sum(1) == 4)
    assert heartbeat_metrics(x)["valid_sequence_fraction"] == 1.0
    x[0, 0] = 1 - x[0, 0]
    assert heartbeat_metrics(x)["valid_sequence_fraction"] == 1 - 1 / 500


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) for n in ("dpm2015_swissroll", "dpm2015_binary")],
)
def test_short_runs_improve_k_and_eval_reports_it(tmp_path, name):
    """Train 150 steps through the loop; K on the test split (every step summed) at the
    checkpoints 50, 100, 150 increases; eval also reports the entropy bounds."""
    from sde_gen.experiments import evaluate, train

    config = _load(name)
    t = config.training
    t.n_iters, t.snapshot_freq, t.log_freq, t.snapshot_samples = 150, 50, 50, 100
    config.eval.update(checkpoint="all", num_samples=200, bpd_num_examples=600)
    train.train_and_evaluate(config, str(tmp_path))
    reports = evaluate.evaluate(config, str(tmp_path))
    assert [r["step"] for r in reports] == [50, 100, 150]
    k = [r["K_bits"] for r in reports]
    se = max(r["K_nats_stderr"] for r in reports) / np.log(2)
    assert k[0] + 2 * se < k[1] and k[1] + 2 * se < k[2], k
    bounds = reports[-1]["entropy_bounds_nats"]
    assert np.all(np.asarray(bounds["lower"]) <= np.asarray(bounds["upper"]))
    if name == "dpm2015_binary":
        assert k[-1] < reports[-1]["data_log_likelihood_bits"]  # a bound: below -log2 5
        assert 0 <= reports[-1]["valid_sequence_fraction"] <= 1
    else:
        lower, learned = np.asarray(bounds["lower"]), np.asarray(bounds["learned"])
        assert np.all(learned >= lower - 1e-3) and np.all(
            learned <= np.asarray(bounds["upper"]) + 1e-3
        )
        config.eval.checkpoint = "latest"
        (folder,) = evaluate.sample(config, str(tmp_path))
        assert os.path.getsize(os.path.join(folder, "trajectories.png")) > 0


def test_a_dimension_mismatch_is_refused(tmp_path):
    from sde_gen.experiments import config as cfg

    config = _load("dpm2015_swissroll")
    config.model.dim = 3
    with pytest.raises(cfg.ConfigError, match="model.dim=3, but data set 'swiss_roll'"):
        cfg.load(config)


def test_images_must_be_flattened():
    chain = dpm2015.GaussianChain(BETAS)
    reverse = dpm2015.exact_reverse(chain, MEAN, COV)
    with pytest.raises(ValueError, match=r"take vectors \(B, D\)"):
        chain.bound(jax.random.key(0), reverse, jnp.zeros((2, 2, 2)))


@pytest.mark.parametrize("noised", [False, True])
def test_binomial_inpainting_keeps_the_known_bits_exactly(noised):
    """The conditioning callback of the Gaussian chain, `condition(key, kernel, t)`, works
    unchanged on the binomial chain: the known bits of every sample are the observed ones,
    the others follow the exact reverse chain (independent bits: their data marginals)."""
    chain = dpm2015.BinomialChain(dpm2015.sohl_dickstein_betas(20))
    prob = np.array([0.1, 0.5, 0.8, 0.95])
    reverse = dpm2015.exact_reverse_binary(chain, prob)
    known = np.array([True, False, False, True])
    values = jnp.tile(jnp.asarray([[1.0, 0.0, 0.0, 0.0]]), (4000, 1))
    factor = dpm2015.inpaint_factor(known, values, chain if noised else None)
    x = np.asarray(chain.sample(jax.random.key(7), reverse, (4000, 4), perturb=factor))
    np.testing.assert_array_equal(x[:, known], np.asarray(values)[:, known])
    np.testing.assert_allclose(x[:, ~known].mean(0), prob[~known], atol=4 * 0.5 / np.sqrt(4000))


def test_one_callback_shape_for_both_chains():
    """A user's callback `(key, kernel, t) -> kernel` sees each chain's own kernel form and
    the steps `(B,)`, T down to 1."""
    seen = []

    def record(key, kernel, t):
        jax.debug.callback(lambda s: seen.append(int(s[0])), t)
        return kernel

    gaussian = dpm2015.GaussianChain(BETAS)
    out = gaussian.sample(jax.random.key(0), dpm2015.exact_reverse(gaussian, MEAN, COV), (3, 4),
                          perturb=record)  # fmt: skip
    assert out.shape == (3, 4) and np.all(np.isfinite(np.asarray(out)))
    jax.effects_barrier()
    assert seen == list(range(40, 0, -1))
    binomial = dpm2015.BinomialChain(dpm2015.linear_betas(5, 0.1, 0.5))
    flip = lambda key, prob, t: 1.0 - prob  # the form: probabilities of 1
    reverse = dpm2015.exact_reverse_binary(binomial, np.array([1.0 - 1e-6, 1e-6]))
    x = binomial.sample(jax.random.key(1), reverse, (500, 2), perturb=flip)
    np.testing.assert_allclose(np.asarray(x).mean(0), [0.0, 1.0], atol=0.02)


def test_a_chain_missing_an_abstract_method_cannot_be_made():
    """`AbstractChain` declares every kernel-form method; a subclass missing one fails at
    construction, naming it."""

    class NoEntropy(dpm2015.AbstractChain):
        def __init__(self, betas):
            self.betas = jnp.asarray(betas)

        def sample_marginal(self, key, x0, t): ...
        def posterior(self, x0, xt, t): ...
        def entropy_bounds(self, t, dim): ...
        def prior_kl(self, x0): ...
        def prior_sample(self, key, shape): ...
        def kernel_kl(self, q, p): ...
        def kernel_log_prob(self, x, p): ...
        def kernel_sample(self, key, p): ...
        @classmethod
        def network_outputs(cls, dim): ...
        def kernel_from_network(self, out, xt, t): ...

    with pytest.raises(TypeError, match="kernel_entropy"):
        NoEntropy(BETAS)
    with pytest.raises(TypeError, match="abstract"):
        dpm2015.AbstractChain()
    assert dpm2015.GaussianChain(BETAS).num_steps == 40  # the concrete chains are complete
    assert dpm2015.BinomialChain(BETAS).num_steps == 40
