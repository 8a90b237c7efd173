"""Reference statistics from the files people share (pytorch-fid / clean-fid mu and sigma,
score_sde's pool_3 features, clean-fid's KID features) and the checks on them."""

import numpy as np
import pytest

from sde_gen import metrics


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
