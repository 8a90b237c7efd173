"""Class conditioning of DDPM++/NCSN++, the conditional and classifier train steps (the
classifier against the exact Bayes classifier of a Gaussian mixture), DDIM-form
guidance, the configs' class and guidance checks, and improved precision/recall."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from oracles import mixture_2d

import sde_gen as sg
from sde_gen import models
from sde_gen.experiments import config as cfg
from sde_gen.experiments import state as train
from sde_gen.experiments.base import balanced_labels
from sde_gen.experiments.inverse import task_mask
from sde_gen.experiments.kinds import make_experiment
from sde_gen.metrics import precision_recall

TINY = dict(nf=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0, init_scale=1.0)
X = jax.random.normal(jax.random.key(0), (3, 4, 4, 1))
T = jnp.asarray([10.0, 500.0, 900.0])


def test_ddpmpp_class_embedding_has_one_row_per_class_and_changes_the_output():
    plain = models.get_model("ddpmpp", **TINY)
    cond = models.get_model("ddpmpp", num_classes=5, null_class=True, **TINY)
    v_plain = plain.init(jax.random.key(0), X, T)
    v_cond = cond.init(jax.random.key(0), X, T, y=jnp.asarray([0, 4, 5]))
    # the class embedding: (5 classes + null) x 4 nf, nothing else
    assert models.count_params(v_cond) - models.count_params(v_plain) == 6 * 4 * 8
    out = lambda y: np.asarray(cond.apply(v_cond, X, T, y=jnp.full((3,), y)))
    assert np.abs(out(1) - out(2)).mean() > 1e-3 * np.abs(out(1)).mean()
    labels = jnp.asarray([1, 4, 5])  # 5: the null class
    np.testing.assert_allclose(
        cond.apply(v_cond, X, T, y=labels), shifted_time_embedding(plain, v_cond, labels),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def shifted_time_embedding(plain, v_cond, labels):
    """The class embedding is added to the time embedding (the output of the second time
    Dense): the unconditional network with that Dense's bias moved by embedding row y_i
    gives example i's output, one label at a time."""
    params = dict(v_cond["params"])
    table = params.pop("Embed_0")["embedding"]
    rows = []
    for i, y in enumerate(np.asarray(labels)):
        dense = params["Dense_1"]
        shifted = {**params, "Dense_1": {**dense, "bias": dense["bias"] + table[y]}}
        rows.append(np.asarray(plain.apply({**v_cond, "params": shifted}, X, T))[i])
    return np.stack(rows)


@pytest.mark.parametrize(
    "name, options, y, message",
    [
        ("ncsnpp", dict(num_classes=3, conditional=False), None, "needs conditional=True"),
        ("ddpmpp", dict(), jnp.asarray([0, 1, 2]), "num_classes=0"),
        ("ddpmpp", dict(num_classes=3), jnp.asarray([0, 1, 3]), r"must lie in \[0, 3\)"),
        ("ddpmpp", dict(num_classes=3, null_class=True), jnp.asarray([0, 4, 1]), r"\[0, 4\)"),
        ("ddpmpp", dict(num_classes=3), None, "class-conditional .* pass y"),
    ],
)
def test_bad_class_settings_and_labels_are_refused(name, options, y, message):
    with pytest.raises(ValueError, match=message):
        model = models.get_model(name, **{**TINY, **options})
        model.init(jax.random.key(0), X, T, y=y)


def test_model_score_and_classifier_pass_the_labels():
    sde = sg.VPSDE()
    cond = models.get_model("ddpmpp", num_classes=3, **TINY)
    y = jnp.asarray([2, 0, 1])
    variables = cond.init(jax.random.key(0), X, T, y=y)
    t = jnp.asarray([0.1, 0.5, 0.9])
    score = sg.ModelScore(cond, variables, sde, labels=y)(X, t)
    _, std = sde.marginal(t)
    eps = cond.apply(variables, X, 999 * t, y=y)
    np.testing.assert_allclose(score, -eps / std[:, None, None, None], rtol=1e-6)

    clf = models.get_model("adm_classifier", num_classes=3, nf=8, ch_mult=(1,),
                           num_res_blocks=1, attn_resolutions=(), head_channels=8)  # fmt: skip
    cv = clf.init(jax.random.key(1), X, T)
    classifier = sg.ModelClassifier(clf, cv, sde)
    logits = classifier.logits(X, t)
    log_p = dataclasses.replace(classifier, labels=y)(X, t)
    np.testing.assert_allclose(log_p, jax.nn.log_softmax(logits)[jnp.arange(3), y], rtol=1e-6)
    with pytest.raises(ValueError, match="set labels"):
        classifier(X, t)


def _cond_step(label_dropout, null_class=True):
    sde = sg.VPSDE()
    model = models.get_model("mlp", hidden=16, num_layers=1, embed_dim=8, num_classes=4,
                             null_class=null_class)  # fmt: skip
    optimizer = optax.sgd(1.0)  # linear in the gradients (Adam would amplify float noise)
    step = train.make_train_step(
        sde, model, optimizer, weighting=sg.sigma2_weighting, time_sampler=sg.UniformTime(),
        ema_decay=0.9, label_dropout=label_dropout,
    )  # fmt: skip
    state = train.init_state(jax.random.key(0), model, optimizer, jnp.zeros((1, 2)))
    # the zero-initialized output layer would stop every gradient before the embedding
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.key(9), p.shape), state.params
    )
    return step, state.replace(params=params)


def _embedding(params):
    (table,) = [v for k, v in params["params"].items() if k.startswith("Embed")]
    return np.asarray(table["embedding"])


def test_label_dropout_trains_the_null_class_and_is_keyed_per_example():
    batch = {
        "x": jax.random.normal(jax.random.key(3), (16, 2)),
        "label": jnp.asarray([0, 1] * 8),  # classes 2 and 3 never appear
    }
    step, state = _cond_step(0.5)
    results = {}
    for n in (2, 1):  # the drops are keyed per example: the device split does not matter
        devices = jax.local_devices()[:n]
        sharded = jax.tree_util.tree_map(lambda a: a.reshape(n, -1, *a.shape[1:]), batch)
        run = train.pmap_train_step(step, devices=devices)
        new, _ = run(train.replicate(state, devices), sharded, jax.random.key(7))
        results[n] = train.unreplicate(new)
    for a, b in zip(jax.tree_util.tree_leaves(results[2]), jax.tree_util.tree_leaves(results[1])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    moved = np.abs(_embedding(results[1].params) - _embedding(state.params)).max(axis=1)
    assert moved[0] > 0 and moved[1] > 0 and moved[4] > 0  # seen classes and the null class
    assert moved[2] == 0 and moved[3] == 0

    plain_step, plain_state = _cond_step(0.0)
    run = train.pmap_train_step(plain_step, devices=jax.local_devices()[:1])
    sharded = jax.tree_util.tree_map(lambda a: a[None], batch)
    new, _ = run(train.replicate(plain_state, jax.local_devices()[:1]), sharded, jax.random.key(7))
    moved = np.abs(_embedding(train.unreplicate(new).params) - _embedding(plain_state.params))
    assert moved.max(axis=1)[4] == 0  # without dropout the null class is never trained


def test_conditional_train_step_errors():
    with pytest.raises(ValueError, match="needs a class-conditional network with a null class"):
        _cond_step(0.1, null_class=False)
    step, state = _cond_step(0.0)
    run = train.pmap_train_step(step, devices=jax.local_devices()[:1])
    with pytest.raises(ValueError, match="must be a dict with 'label'"):
        x = jnp.zeros((1, 2, 2))
        run(train.replicate(state, jax.local_devices()[:1]), x, jax.random.key(0))


@pytest.mark.slow  # 150 training steps of an ADM classifier
def test_noise_conditional_classifier_learns_the_bayes_classifier_of_a_mixture():
    """Two Gaussian classes of 4x4 images (means -/+0.4, std 0.5 per pixel): trained on x_t
    from the VP marginal, the classifier's cross-entropy over t approaches the exact Bayes
    classifier's, `log p_t(y | x)` of the mixture (closed form)."""
    sde, d = sg.VPSDE(), 16
    means = np.stack([-0.4 * np.ones(d), 0.4 * np.ones(d)])
    mixture = sg.GaussianMixture(means, variances=0.25)
    model = models.get_model("adm_classifier", num_classes=2, nf=16, ch_mult=(1,),
                             num_res_blocks=1, attn_resolutions=(), head_channels=16)  # fmt: skip
    optimizer = train.make_optimizer(lr=3e-3, warmup=0)
    step = train.make_classifier_train_step(
        sde, model, optimizer, time_sampler=sg.UniformTime(eps=1e-3), ema_decay=0.0
    )
    run = train.pmap_train_step(step, devices=jax.local_devices()[:1])
    state = train.init_state(jax.random.key(0), model, optimizer, X[:1])
    state = train.replicate(state, jax.local_devices()[:1])

    def batch(key, n):
        k1, k2 = jax.random.split(key)
        y = jax.random.bernoulli(k1, 0.5, (n,)).astype(jnp.int32)
        x = jnp.asarray(means, jnp.float32)[y] + 0.5 * jax.random.normal(k2, (n, d))
        return x.reshape(n, 4, 4, 1), y

    for i in range(150):
        x, y = batch(jax.random.key(100 + i), 64)
        state, metrics = run(state, {"x": x[None], "label": y[None]}, jax.random.key(1))
    params = train.unreplicate(state).params

    x0, y = batch(jax.random.key(5), 2000)
    t = jax.random.uniform(jax.random.key(6), (2000,), minval=1e-3, maxval=1.0)
    a, std = sde.marginal(t)
    xt = a[:, None, None, None] * x0 + std[:, None, None, None] * jax.random.normal(
        jax.random.key(7), x0.shape
    )
    logits = sg.ModelClassifier(model, params, sde).logits(xt, t)
    learned = -jax.nn.log_softmax(logits)[jnp.arange(2000), y].mean()
    exact = -mixture.log_responsibilities_t(sde, xt.reshape(2000, d), t)[jnp.arange(2000), y]
    exact = exact.mean()
    assert float(learned) == pytest.approx(float(exact), abs=0.04)
    assert float(exact) < np.log(2) - 0.2  # informative: chance is log 2, 6x the tolerance off


def test_ddim_guidance_is_the_guided_score_in_noise_form():
    sde, mixture = sg.VPSDE(), mixture_2d()
    log_p = lambda x, t: mixture.log_responsibilities_t(sde, x, t)[:, 1]
    key, shape = jax.random.key(2), (256, 2)
    score = mixture.score_fn(sde)
    ddim = sg.DDIM(classifier=log_p, classifier_scale=2.0)
    x_ddim, nfe = sg.sample_fast(key, sde, score, shape, ddim, num_steps=15)
    guided = sg.classifier_guidance(score, log_p, 2.0)
    x_comp, nfe_comp = sg.sample_fast(key, sde, guided, shape, sg.DDIM(), num_steps=15)
    assert nfe == nfe_comp == 16
    np.testing.assert_allclose(x_ddim, x_comp, rtol=1e-4, atol=1e-4)
    plain, _ = sg.sample_fast(key, sde, score, shape, sg.DDIM(), num_steps=15)
    assert np.abs(np.asarray(plain) - np.asarray(x_ddim)).max() > 0.1
    for bad, message in [
        (dict(classifier=3.0), "must be a callable"),
        (dict(classifier=log_p, classifier_scale=-1.0), "classifier_scale must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            sg.DDIM(**bad)


def test_precision_and_recall_separate_fidelity_from_diversity():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((2000, 2))
    narrow = 0.3 * rng.standard_normal((2000, 2))  # faithful, not diverse
    wide = 3.0 * rng.standard_normal((2000, 2))  # diverse, not faithful
    same = rng.standard_normal((2000, 2))
    p, r = precision_recall(real, narrow)
    assert p > 0.95 and r < 0.55  # measured 0.969, 0.47
    p, r = precision_recall(real, wide)
    assert p < 0.6 and r > 0.95  # 0.52 (about P(|x| < 3) under N(0, 9 I) plus the balls), 0.97
    p, r = precision_recall(real, same)
    assert p > 0.95 and r > 0.95  # 0.98, 0.98
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same d"):
        precision_recall(real, rng.standard_normal((10, 3)))


def _digits_config(**overrides):
    from configs.vp_digits_cond import get_config

    config = get_config()
    for key, value in overrides.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.num_classes": 7}, "num_classes=7, but data set 'digits' has 10 classes"),
        ({"model.null_class": False}, "label_dropout=0.1 .* model.null_class=True"),
        ({"training.label_dropout": 1.0}, r"must lie in \[0, 1\)"),
        ({"sampling.cfg_weight": -1.0}, r"cfg_weight must lie in \[0, inf\)"),
        ({"sampling.classifier_scale": 2.0}, "needs config.sampling.classifier_workdir"),
        ({"sampling.task": "deblur"}, "unknown config.sampling.task 'deblur'"),
        ({"sampling.task": "inpaint", "sampling.inpaint_mask": "ring"}, "inpaint_mask 'ring'"),
        ({"sampling.task": "colorize"}, r"needs color images .*'digits' has 1 channel"),
    ],
)
def test_class_and_guidance_config_errors(overrides, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(_digits_config(**overrides))


def test_cfg_without_a_null_class_and_classifiers_on_unlabelled_data_are_refused():
    config = _digits_config(**{"training.label_dropout": 0.0, "model.null_class": False})
    config.sampling.cfg_weight = 1.0
    with pytest.raises(cfg.ConfigError, match="null_class=True"):
        cfg.load(config)
    from configs.classifier_digits import get_config

    import tensorflow_datasets as tfds

    config = get_config()
    config.data.update(dataset="celeba", image_size=8, num_channels=3)
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(cfg.ConfigError, match="'celeba' has no class labels"):
            cfg.load(config)


def test_guided_score_fn_and_sampler_names(tmp_path):
    config = _digits_config(**{"sampling.cfg_weight": 1.5})
    for key in [k for k in config.model if k not in cfg.NON_NETWORK_KEYS]:
        del config.model[key]  # a small class-conditional MLP instead of the DDPM++
    config.model.update(name="mlp", hidden=16, num_layers=1, embed_dim=8, num_classes=10,
                        null_class=True)  # fmt: skip
    settings = cfg.load(config)
    experiment = make_experiment(settings)
    sde, model = experiment.sde, experiment.network
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    y = jnp.asarray([0, 1, 2, 3])
    variables = train.init_state(jax.random.key(1), model, train.make_optimizer(), x).params
    variables = jax.tree_util.tree_map(  # the zero-initialized output layers randomized
        lambda v: v + 0.05 * jax.random.normal(jax.random.key(2), v.shape), variables
    )
    t = jnp.full((4,), 0.5)
    cond = experiment.score_fn(variables, y)(x, t)
    uncond = experiment.score_fn(variables, jnp.full((4,), 10))(x, t)
    guided = experiment.score_fn(variables, y, guided=True)(x, t)
    np.testing.assert_allclose(guided, 2.5 * cond - 1.5 * uncond, rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(cond - uncond)).max() > 1e-4
    # classifier guidance on top, with a noise-conditional classifier for the same labels
    clf = models.get_model("adm_classifier", num_classes=10, nf=8, ch_mult=(1,),
                           num_res_blocks=1, attn_resolutions=(), head_channels=8)  # fmt: skip
    classifier = sg.ModelClassifier(clf, clf.init(jax.random.key(3), x, t), sde)
    guidance = cfg.GuidanceSettings(1.5, 3.0, str(tmp_path))
    sampling = dataclasses.replace(settings.sampling, guidance=guidance)
    experiment = make_experiment(dataclasses.replace(settings, sampling=sampling))
    both = experiment.score_fn(variables, y, guided=True, classifier=classifier)(x, t)
    log_p = lambda x: jnp.sum(dataclasses.replace(classifier, labels=y)(x, t))
    np.testing.assert_allclose(both, guided + 3.0 * jax.grad(log_p)(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="pass labels"):
        experiment.score_fn(variables)
    name, description = experiment.sampling_run(20)
    # the config's final Tweedie step is not UniPC's default: the settings hash follows
    assert name.startswith("20_fast-unipc-logsnr-19-") and "-cfg1.5-cg3_" in name
    assert description["guidance"]["classifier_scale"] == 3.0
    assert balanced_labels(10, 8, 5).tolist() == [8, 9, 0, 1, 2]


def test_inpainting_masks():
    known = {n: task_mask(n, 8, 8) for n in cfg.INPAINT_MASKS}
    for name in ("left_half", "right_half", "top_half", "bottom_half"):
        assert known[name].mean() == 0.5
    np.testing.assert_array_equal(known["left_half"] + known["right_half"], np.ones((8, 8)))
    assert known["left_half"][:, :4].all() and known["top_half"][:4].all()
    assert known["center"].mean() == 0.75 and not known["center"][2:6, 2:6].any()
    assert 0.3 < known["random"].mean() < 0.7
