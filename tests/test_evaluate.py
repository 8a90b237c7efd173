"""Evaluation: the NLL path against exact densities, and a tiny train -> eval round trip."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_gen import data
from sde_gen.experiments import config as cfg
from sde_gen.experiments import evaluate, train
from sde_gen.experiments.classifier import load_guidance_classifier
from sde_gen.experiments.kinds import make_experiment
from sde_gen.experiments.reporting import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name):
    return cfg.load_file(os.path.join(ROOT, "configs", f"{name}.py"))


@pytest.mark.parametrize("divergence, z", [("exact", 0.0), ("hutchinson", 4.0)])
def test_nll_path_reports_the_exact_bits_per_dim_of_the_mixture(tmp_path, divergence, z):
    """The exact score of the toy ring through eval's likelihood path: the reported NLL
    equals the closed-form `-log p(x) / (D ln 2)` of the same test points (Hutchinson: within
    its reported standard error; exact divergence: to ODE tolerance)."""
    config = load_config("toy_2d")
    config.eval.update(
        bpd_num_examples=400, bpd_batch_size=400, divergence=divergence, enable_bound=True
    )
    experiment = make_experiment(cfg.load(config))
    density = data.toy_density()
    exact_score = density.score_fn(experiment.sde)
    report = experiment.likelihood_of(jax.random.key(0), lambda labels: exact_score)
    x, _, _ = data.load_arrays("gmm", "test", 400)
    exact = float(jnp.mean(-density.log_prob(jnp.asarray(x)) / (2 * np.log(2))))
    assert report["bpd_examples"] == 400
    tolerance = z * report["nll_bits_per_dim_stderr"] + 2e-3
    assert report["nll_bits_per_dim"] == pytest.approx(exact, abs=tolerance)
    # the bound, with the exact score, exceeds the exact value only by the prior gap (~1e-4
    # nats here), i.e. agrees within its Monte Carlo error
    bound_se = report["bound_nll_bits_per_dim_stderr"]
    assert report["bound_nll_bits_per_dim"] == pytest.approx(exact, abs=4 * bound_se)


def tiny_digits_config():
    config = load_config("vp_digits_cond")  # the class-conditional variant: labels throughout
    t = config.training
    t.n_iters, t.log_freq, t.snapshot_freq, t.snapshot_sampling = 20, 10, 20, False
    config.sampling.method, config.sampling.num_steps = "pc", 20
    config.eval.update(
        batch_size=32, num_samples=64, classifier_steps=300, bpd_num_examples=16,
        bpd_batch_size=16, bpd_rtol=1e-3, bpd_atol=1e-3, reference_examples=297,
    )  # fmt: skip
    return config


def test_tiny_digits_run_then_eval_writes_a_report_and_grid(tmp_path):
    """Train a class-conditional model 20 steps, evaluate, evaluate again (resumed), then the
    error paths on the same run (one test: the training and compilation are the expensive
    part)."""
    workdir = str(tmp_path / "run")
    config = tiny_digits_config()
    train.train_and_evaluate(config, workdir)
    (report,) = evaluate.evaluate(config, workdir)
    name = make_experiment(cfg.load(config)).sampling_run(20)[0]
    assert name.startswith("20_pc-euler_maruyama-none-20_")
    saved = json.loads((tmp_path / "run" / "eval" / f"report_{name}.json").read_text())
    assert saved.keys() == report.keys() and saved["classifier_fid"] == report["classifier_fid"]
    assert report["features"] == "classifier" and report["num_samples"] == 64
    assert report["nfe"] == 20 and report["sampler"]["predictor"] == "euler_maruyama"
    for key in ("classifier_fid", "classifier_kid", "classifier_score", "bpd"):
        assert np.isfinite(report[key]), key
    # a barely trained model is far from the data in classifier space, and the classifier
    # itself has learned the digits
    assert report["classifier_fid"] > 0
    assert report["classifier_test_accuracy"] > 0.8
    assert 0 < report["bpd"] < 20
    assert os.path.getsize(tmp_path / "run" / "eval" / f"samples_{name}" / "grid.png") > 0

    # Resumable: a second run reuses every finished sample batch and the cached classifier.
    config.eval.enable_bpd = False
    (again,) = evaluate.evaluate(config, workdir)
    assert again["batches_sampled_now"] == 0
    assert again["classifier_fid"] == pytest.approx(report["classifier_fid"])

    # balanced classes: the domain classifier's accuracy on them; conditional bits/dim
    assert 0 <= report["classifier_accuracy"] <= 1 and report["bpd_class_conditional"]
    assert 0 <= report["classifier_precision"] <= 1 and 0 <= report["classifier_recall"] <= 1
    samples = np.load(tmp_path / "run" / "eval" / f"samples_{name}" / "batch_1.npz")
    assert samples["labels"].tolist() == [(32 + i) % 10 for i in range(32)]

    check_error_paths(tmp_path / "empty", workdir)


def tiny_classifier_config(n_iters):
    config = load_config("classifier_digits")
    t = config.training
    t.n_iters, t.log_freq, t.snapshot_freq, t.snapshot_freq_for_preemption = n_iters, 2, 4, 4
    config.model.update(nf=8, head_channels=8)
    return config


def train_tiny_classifier(clf_dir):
    """A noise-conditional classifier trained by the train loop (checkpoints and resume are
    the score models' machinery, tested in test_train_loop.py)."""
    train.train_and_evaluate(tiny_classifier_config(8), clf_dir)


@pytest.mark.slow  # the classifier step: test_conditional.py (against the Bayes classifier)
def test_classifier_config_trains_and_reports_accuracy_against_t(tmp_path):
    clf_dir = str(tmp_path / "clf")
    train_tiny_classifier(clf_dir)
    records = read_metrics(os.path.join(clf_dir, "metrics.jsonl"))
    assert [m["step"] for m in records] == [2, 4, 6, 8]
    assert sorted(os.listdir(os.path.join(clf_dir, "checkpoints"))) == ["4", "8"]
    assert all(0 <= m["accuracy"] <= 1 for m in records)
    (clf_report,) = evaluate.evaluate(tiny_classifier_config(8), clf_dir)
    assert clf_report["step"] == 8 and len(clf_report["accuracy"]) == 11
    assert all(0 <= a <= 1 for a in clf_report["accuracy"])
    assert os.path.exists(os.path.join(clf_dir, "eval", "classifier_8.png"))
    with pytest.raises(cfg.ConfigError, match="a classifier: it has nothing to sample"):
        evaluate.sample(tiny_classifier_config(8), clf_dir)


@pytest.mark.slow
def test_guided_eval_of_a_run_with_its_classifier(tmp_path):
    """Classifier guidance by a classifier trained by the loop, with classifier-free
    guidance, through --mode=eval: another sampler, so its own samples and report; then
    --mode=sample inpainting on the same run."""
    workdir, clf_dir = str(tmp_path / "run"), str(tmp_path / "clf")
    config = tiny_digits_config()
    config.eval.enable_bpd = False
    train.train_and_evaluate(config, workdir)
    train_tiny_classifier(clf_dir)
    config.sampling.update(cfg_weight=1.0, classifier_scale=2.0, classifier_workdir=clf_dir)
    config.sampling.method, config.sampling.num_steps = "fast", 10
    (guided,) = evaluate.evaluate(config, workdir)
    experiment = make_experiment(cfg.load(config))
    experiment.prepare(workdir, "eval")
    guided_name = experiment.sampling_run(20)[0]
    assert guided_name.startswith("20_fast-unipc-logsnr-10-") and "-cfg1-cg2_" in guided_name
    assert guided["guidance"]["classifier_workdir"] == os.path.abspath(clf_dir)
    assert guided["nfe"] == 11
    assert guided["batches_sampled_now"] == 2 and np.isfinite(guided["classifier_fid"])
    assert 0 <= guided["classifier_accuracy"] <= 1
    assert os.path.exists(os.path.join(workdir, "eval", f"report_{guided_name}.json"))
    config.model.beta_max = 10.0  # another SDE than the run's and the classifier's
    with pytest.raises(cfg.ConfigError, match="holds checkpoints of a run with config.model"):
        evaluate.evaluate(config, workdir)
    other = cfg.load(config)
    with pytest.raises(cfg.ConfigError, match="was trained for VPSDE"):
        load_guidance_classifier(other.sampling.guidance, other.sde, "digits")
    config.model.beta_max = 20.0
    config.sampling.update(cfg_weight=0.0, classifier_scale=0.0)
    check_inpainting(config, workdir)


def check_inpainting(config, workdir):
    config.sampling.update(
        task="inpaint", inpaint_mask="left_half", task_examples=8, method="pc", num_steps=20
    )
    (folder,) = evaluate.sample(config, workdir)
    out = np.load(os.path.join(folder, "results.npz"))
    np.testing.assert_array_equal(out["result"][:, :, :4], out["original"][:, :, :4])
    assert np.abs(out["result"][:, :, 4:] - out["original"][:, :, 4:]).max() > 0
    report = json.loads(open(os.path.join(folder, "report.json")).read())
    assert report["nfe"] == 20 and report["corrector"] is None  # 20 PC steps, the config's
    assert np.isfinite(report["mse_restored"])
    assert os.path.getsize(os.path.join(folder, "before_after.png")) > 0
    config.sampling.task = "generate"


def check_error_paths(empty, workdir):
    config = tiny_digits_config()
    with pytest.raises(FileNotFoundError, match="no checkpoints in .*train first"):
        evaluate.evaluate(config, str(empty))
    config.eval.checkpoint = "7"
    with pytest.raises(cfg.ConfigError, match=r"checkpoint=7: no such checkpoint .* have \[20\]"):
        evaluate.evaluate(config, workdir)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("features", "clip", "unknown config.eval.features 'clip'; choose one of auto"),
        ("divergence", "skilling", "unknown config.eval.divergence 'skilling'"),
        ("batch_size", 12, "eval.batch_size=12 must be divisible by the number of devices"),
    ],
)
def test_bad_eval_values_fail_early(key, value, message):
    config = tiny_digits_config()
    config.eval[key] = value
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(config)
