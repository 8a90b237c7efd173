"""The ADM U-Net: shapes, the class embedding, and errors for bad labels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_gen import models

SMALL = dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)
X = jax.random.normal(jax.random.key(1), (3, 8, 8, 1))
T = jnp.asarray([1.0, 300.0, 900.0])


def _randomized(variables):
    """Random weights everywhere (the zero-initialized output layers hide the inputs)."""
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [0.2 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
    )


def test_shapes_the_class_embedding_and_its_effect():
    plain = models.get_model("adm", **SMALL)
    cond = models.get_model("adm", num_classes=10, null_class=True, **SMALL)
    v_plain = plain.init(jax.random.key(0), X, T)
    v_cond = cond.init(jax.random.key(0), X, T, y=jnp.asarray([0, 3, 10]))
    assert plain.apply(v_plain, X, T).shape == X.shape
    # the class embedding is the only difference: (10 classes + null) x 4 nf
    assert models.count_params(v_cond) - models.count_params(v_plain) == 11 * 4 * 32
    big = models.get_model("adm")  # defaults: nf 128, (1, 2, 2, 2), attention at 16 and 8
    shapes = jax.eval_shape(lambda: big.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), T[:1]))
    assert models.count_params(shapes) == 44_173_827  # from the layer shapes
    # the labels change the output (random weights: the zero-initialized layers hide inputs)
    v = _randomized(v_cond)
    apply = jax.jit(lambda y: cond.apply(v, X, T, y=y))
    out = lambda y: np.asarray(apply(jnp.full((3,), y)))
    # independently: the class embedding shifts the time embedding (the second time Dense's
    # output), so the unconditional network with that bias moved by row y_i gives example i
    labels = jnp.asarray([4, 7, 10])
    got = np.asarray(cond.apply(v, X, T, y=labels))
    params = dict(v["params"])
    table = params.pop("Embed_0")["embedding"]
    for i, y in enumerate(np.asarray(labels)):
        dense = {**params["Dense_1"], "bias": params["Dense_1"]["bias"] + table[y]}
        expected = plain.apply({"params": {**params, "Dense_1": dense}}, X, T)[i]
        np.testing.assert_allclose(got[i], expected, rtol=1e-4, atol=1e-5)
    assert np.abs(out(4) - out(7)).mean() > 1e-3 * np.abs(out(4)).mean()
    assert np.abs(out(10) - out(7)).mean() > 1e-3 * np.abs(out(4)).mean()  # null class


def test_time_labels_change_the_output():
    plain = models.get_model("adm", **SMALL)
    v = _randomized(plain.init(jax.random.key(0), X, T))
    a = plain.apply(v, X, T)
    b = plain.apply(v, X, T + 100.0)
    assert float(jnp.abs(a - b).mean()) > 1e-3 * float(jnp.abs(a).mean())


@pytest.mark.parametrize(
    "num_classes, y, message",
    [
        (10, jnp.asarray([0, 1, 10]), r"class labels must lie in \[0, 10\)"),
        (10, jnp.asarray([0, -1, 2]), r"class labels must lie in \[0, 10\)"),
        (10, None, "class-conditional .* pass y"),
        (10, jnp.asarray([0, 1]), "one label per example"),
        (0, jnp.asarray([0, 1, 2]), "num_classes=0"),
    ],
)
def test_bad_labels_are_refused(num_classes, y, message):
    model = models.get_model("adm", num_classes=num_classes, **SMALL)
    with pytest.raises(ValueError, match=message):
        model.init(jax.random.key(0), X, T, y=y)


def test_noise_conditional_classifier_guides_a_fast_sampler():
    """ADMClassifier's log-softmax is a `log_prob_y_fn`: its input gradient enters the score."""
    import sde_gen as sg

    clf = models.ADMClassifier(num_classes=10, **SMALL)
    variables = _randomized(clf.init(jax.random.key(0), X, T))
    logits = clf.apply(variables, X, T)
    assert logits.shape == (3, 10)
    assert not np.allclose(logits, clf.apply(variables, X, T + 200.0))  # time-conditional
    sde = sg.VPSDE()
    data = sg.Gaussian(jnp.zeros((8, 8, 1)), jnp.full((8, 8, 1), 0.5))
    labels = jnp.asarray([0, 3, 7])

    def log_prob_y(x, t):
        logp = jax.nn.log_softmax(clf.apply(variables, x, 999.0 * t), -1)
        return jnp.take_along_axis(logp, labels[:, None], 1)[:, 0]

    guided = sg.classifier_guidance(data.score_fn(sde), log_prob_y, scale=2.0)
    t = jnp.full((3,), 0.5)
    assert float(jnp.abs(guided(X, t) - data.score_fn(sde)(X, t)).max()) > 0
    # (samplers driven by a guided ADM classifier: tests/test_evaluate.py, slow suite)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        models.ADMClassifier(num_classes=1, **SMALL).init(jax.random.key(0), X, T)
