"""Reference statistics from the files people share (pytorch-fid / clean-fid mu and sigma,
score_sde's pool_3 features, clean-fid's KID features), the checks on them, and the eval
setting that uses them."""

import os

import numpy as np
import pytest

from sde_gen import metrics
from sde_gen.experiments import config as cfg
from sde_gen.experiments import quality

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def features(n=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


def test_pytorch_fid_and_clean_fid_files_give_their_mu_and_sigma(tmp_path):
    x = features()
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    # pytorch-fid's --save-stats writes float64, clean-fid's downloads hold float32
    for name, dtype in (("pytorch_fid.npz", np.float64), ("clean_fid.npz", np.float32)):
        np.savez_compressed(tmp_path / name, mu=mu.astype(dtype), sigma=sigma.astype(dtype))
        ref = metrics.load_reference_stats(str(tmp_path / name), dim=8)
        np.testing.assert_allclose(ref.stats.mu, mu, rtol=1e-6)
        np.testing.assert_allclose(ref.stats.sigma, sigma, rtol=1e-6)
        assert ref.features is None and ref.n is None and ref.format == "mu_sigma"
        assert ref.describe()["reference_stats_sha256"] == metrics.sha256_of_file(
            str(tmp_path / name)
        )
    metrics.feature_stats(x).save(str(tmp_path / "ours.npz"))  # sde_gen's own: with n
    assert metrics.load_reference_stats(str(tmp_path / "ours.npz"), dim=8).n == 40


def test_score_sde_pool_3_and_clean_fid_feats_give_statistics_of_their_features(tmp_path):
    x = features().astype(np.float32)
    np.savez(tmp_path / "cifar10_stats.npz", pool_3=x)  # score_sde: features, no mu/sigma
    np.savez_compressed(tmp_path / "cifar10_kid.npz", feats=x)
    for name, fmt in (
        ("cifar10_stats.npz", "score_sde_pool_3"),
        ("cifar10_kid.npz", "clean_fid_feats"),
    ):
        ref = metrics.load_reference_stats(str(tmp_path / name), dim=8)
        assert ref.format == fmt and ref.n == 40 and ref.stats.n == 40
        np.testing.assert_array_equal(ref.features, x)
        # FID against the same features computed directly: zero up to rounding
        assert abs(metrics.frechet_distance(ref.stats, metrics.feature_stats(x))) < 1e-9


def test_the_default_dimension_is_inceptions_2048(tmp_path):
    x = features(n=30, d=2048)
    np.savez(tmp_path / "stats.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    ref = metrics.load_reference_stats(str(tmp_path / "stats.npz"))
    assert ref.stats.sigma.shape == (2048, 2048)
    with pytest.raises(ValueError, match=r"mu has shape \(2048,\); expected \(8,\)"):
        metrics.load_reference_stats(str(tmp_path / "stats.npz"), dim=8)


def bad_files(tmp_path):
    x = features()
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    asymmetric = sigma.copy()
    asymmetric[0, 1] += 1.0
    nan_mu = mu.copy()
    nan_mu[3] = np.nan
    negative = sigma - 100 * np.eye(8)
    (tmp_path / "text.npz").write_text("mu,sigma\n")
    yield "text.npz", r"not a readable \.npz file"
    for name, arrays, message in [
        ("keys.npz", {"m": mu, "s": sigma}, r"holds \['m', 's'\]; expected mu and sigma"),
        ("mu.npz", {"mu": mu[:7], "sigma": sigma}, r"mu has shape \(7,\); expected \(8,\)"),
        ("sigma.npz", {"mu": mu, "sigma": sigma[:, :7]}, r"sigma has shape \(8, 7\)"),
        ("asym.npz", {"mu": mu, "sigma": asymmetric}, "sigma is not symmetric"),
        ("nan.npz", {"mu": nan_mu, "sigma": sigma}, "mu has 1 non-finite values"),
        ("neg.npz", {"mu": mu, "sigma": negative}, "sigma has negative variances"),
        ("pool.npz", {"pool_3": x[:, :7]}, r"pool_3 has shape \(40, 7\); expected \(n >= 2, 8\)"),
        ("one.npz", {"feats": x[:1]}, r"feats has shape \(1, 8\)"),
    ]:
        np.savez(tmp_path / name, **arrays)
        yield name, message


def test_a_bad_statistics_file_is_one_line_naming_it_and_the_fault(tmp_path):
    for name, message in bad_files(tmp_path):
        path = str(tmp_path / name)
        with pytest.raises(ValueError, match=message) as err:
            metrics.load_reference_stats(path, dim=8)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="set config.eval.reference_stats"):
        metrics.load_reference_stats(str(tmp_path / "absent.npz"))


def load_config(name):
    return cfg.load_file(os.path.join(ROOT, "configs", f"{name}.py"))


def test_cifar_configs_follow_score_sdes_protocol_and_digits_keep_theirs():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        for name in ("vp_cifar", "ve_cifar", "subvp_cifar", "ddpm_cifar", "vp_cifar_ml"):
            ev = cfg.load(load_config(name)).eval
            assert (ev.num_samples, ev.reference_split, ev.reference_examples) == (
                50_000, "train", 50_000,
            ), name  # fmt: skip
            assert ev.features == "inception" and ev.reference_stats is None
        ev = cfg.load(load_config("classifier_cifar")).eval  # accuracy on the test split
        assert ev.reference_split == "test"
    ev = cfg.load(load_config("vp_digits")).eval
    assert (ev.num_samples, ev.reference_split, ev.reference_examples) == (1000, "test", 10_000)


def test_reference_stats_setting_is_checked_before_sampling(tmp_path):
    import tensorflow_datasets as tfds

    config = load_config("vp_digits")
    config.eval.reference_stats = "cifar10_stats.npz"
    with pytest.raises(cfg.ConfigError, match="features resolves to 'classifier'"):
        cfg.load(config)

    weights = tmp_path / "inception_fid.npz"
    weights.write_bytes(b"")  # only its existence is checked here
    config = load_config("vp_cifar")
    config.eval.inception_weights = str(weights)
    x = features(n=10, d=2048)
    np.savez(tmp_path / "good.npz", pool_3=x)
    np.savez(tmp_path / "small.npz", pool_3=x[:, :8])
    (tmp_path / "text.npz").write_text("mu,sigma\n")
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        for name, message in [
            ("small.npz", r"pool_3 has shape \(10, 8\); expected \(n >= 2, 2048\) features$"),
            ("text.npz", r"not a readable \.npz file"),
        ]:
            path = str(tmp_path / name)
            config.eval.reference_stats = path
            with pytest.raises(cfg.ConfigError, match=message) as err:
                cfg.load(config).eval.check_feature_weights()
            assert str(err.value).startswith(f"config.eval.reference_stats={path!r}: ")
            assert str(err.value).count(path) == 1 and "\n" not in str(err.value)
        config.eval.reference_stats = str(tmp_path / "absent.npz")
        with pytest.raises(cfg.ConfigError, match="reference statistics not found at"):
            cfg.load(config).eval.check_feature_weights()
        config.eval.reference_stats = str(tmp_path / "good.npz")
        cfg.load(config).eval.check_feature_weights()


class FakeInceptionSpace:
    """What sample_quality asks of a feature space, without the 24M-parameter network."""

    kind = "inception"
    extra = {"feature_extractor": "test features"}

    def __call__(self, x):
        return {"features": np.asarray(x, np.float64).reshape(len(x), -1)}


def test_the_report_names_the_statistics_file_and_skips_kid_without_features(tmp_path):
    x = features(n=60)
    samples = features(n=60, seed=1)
    np.savez(tmp_path / "mu_sigma.npz", mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    np.savez(tmp_path / "pool.npz", pool_3=x)
    reports = {}
    for name in ("mu_sigma.npz", "pool.npz"):
        ref = metrics.load_reference_stats(str(tmp_path / name), dim=8)
        reference = quality.Reference(
            ref.stats, ref.features, {"reference_split": "train", **ref.describe()}
        )
        reports[name] = quality.sample_quality(samples, FakeInceptionSpace(), reference)
    a, b = reports["mu_sigma.npz"], reports["pool.npz"]
    assert a["fid"] == pytest.approx(b["fid"], rel=1e-9) and a["fid"] > 0
    assert "kid" not in a and "precision" not in a and {"kid", "precision", "recall"} <= set(b)
    assert a["reference_stats"] == str(tmp_path / "mu_sigma.npz")
    assert a["reference_examples"] is None and b["reference_examples"] == 60
    assert b["reference_stats_sha256"] == metrics.sha256_of_file(str(tmp_path / "pool.npz"))
    assert b["reference_split"] == "train" and b["feature_extractor"] == "test features"


@pytest.mark.slow  # builds the 24M-parameter network and runs it on four images
def test_an_inception_report_names_extractor_weights_split_and_statistics_file(tmp_path):
    import jax

    from sde_gen.data import DataInfo
    from sde_gen.metrics import inception

    weights = str(tmp_path / "inception_fid.npz")
    source = {"file": "pt_inception-2015-12-05-6726825d.pth", "sha256": "6726825d" + "0" * 56}
    inception.save_variables(weights, inception.init_random(jax.random.key(0), 75), source)
    stats_file = str(tmp_path / "cifar10_stats.npz")
    np.savez(stats_file, pool_3=features(n=20, d=2048))
    info = DataInfo("cifar10", (32, 32, 3), 256, (-1.0, 1.0), 50_000)
    never = lambda split, limit: pytest.fail("the statistics file replaces the data")  # noqa: E731
    space = quality.FeatureSpace(
        "inception", info, str(tmp_path), never, data_key={}, inception_weights=weights
    )
    reference = space.reference("train", 50_000, stats_file)
    samples = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3))
    report = quality.sample_quality(samples, space, reference)
    assert report["feature_extractor"] == inception.FEATURE_EXTRACTOR
    assert report["inception_weights"] == weights
    assert report["inception_weights_sha256"] == metrics.sha256_of_file(weights)
    assert report["inception_weights_converted_from"] == source["file"]
    assert report["inception_weights_converted_from_sha256"] == source["sha256"]
    assert report["reference_split"] == "train" and report["reference_examples"] == 20
    assert report["reference_stats"] == stats_file
    assert report["reference_stats_format"] == "score_sde_pool_3"
    assert np.isfinite(report["fid"]) and np.isfinite(report["kid"])
