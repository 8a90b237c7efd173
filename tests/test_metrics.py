"""Sample-quality metrics against closed forms."""

import numpy as np
import pytest
import scipy.linalg

from sde_gen import metrics


def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_commuting_gaussians_is_the_closed_form():
    """Covariances sharing eigenvectors: d^2 = |dmu|^2 + sum (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(
        metrics.FeatureStats(mu1, s1, 0), metrics.FeatureStats(mu2, s2, 0)
    )
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_general_gaussians_matches_the_sqrtm_formula():
    rng = np.random.default_rng(1)
    s1, s2 = random_spd(rng, 20), random_spd(rng, 20)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    got = metrics.frechet_distance(
        metrics.FeatureStats(mu1, s1, 0), metrics.FeatureStats(mu2, s2, 0)
    )
    assert got == pytest.approx(expected, rel=1e-9)
    same = metrics.FeatureStats(mu1, s1, 0)
    assert abs(metrics.frechet_distance(same, same)) < 1e-10


def test_frechet_distance_is_stable_for_singular_covariances():
    """Rank-deficient covariances (fewer samples than dimensions) stay real and >= 0."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((10, 50)), rng.standard_normal((10, 50)) + 0.5
    d = metrics.frechet_distance(metrics.feature_stats(x), metrics.feature_stats(y))
    assert np.isfinite(d) and d > 0


def test_feature_stats_round_trip_and_shape_errors(tmp_path):
    rng = np.random.default_rng(3)
    stats = metrics.feature_stats(rng.standard_normal((100, 4)))
    stats.save(tmp_path / "s.npz")
    loaded = metrics.FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.n == 100
    other = metrics.feature_stats(rng.standard_normal((100, 5)))
    with pytest.raises(ValueError, match="statistics do not match"):
        metrics.frechet_distance(stats, other)
    with pytest.raises(ValueError, match="features must be"):
        metrics.feature_stats(np.zeros(5))


def test_kid_is_unbiased_on_identical_distributions_and_positive_on_different_ones():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2000, 16)), rng.standard_normal((2000, 16))
    values = [metrics.polynomial_mmd2(x[i::20], y[i::20]) for i in range(20)]
    mean, se = np.mean(values), np.std(values) / np.sqrt(len(values))
    assert abs(mean) < 3 * se  # unbiased: zero in expectation (the biased V-statistic is > 0)
    biased_offset = np.mean([((x[i::20] @ x[i::20].T / 16 + 1) ** 3).trace() for i in range(3)])
    assert biased_offset > 100 * se  # so dropping the diagonal is what makes it unbiased
    shifted_mean, _ = metrics.kernel_distance(x, y + 0.5, num_subsets=10, subset_size=500)
    assert shifted_mean > 20 * se


def test_inception_score_extremes():
    uniform = np.zeros((100, 10))
    assert metrics.inception_score(uniform) == pytest.approx((1.0, 0.0))
    confident = np.full((100, 10), -1e4)
    confident[np.arange(100), np.arange(100) % 10] = 0.0
    score, _ = metrics.inception_score(confident, num_splits=10)
    assert score == pytest.approx(10.0, rel=1e-6)
    collapsed = np.full((100, 10), -1e4)
    collapsed[:, 3] = 0.0  # confident but always the same class
    assert metrics.inception_score(collapsed)[0] == pytest.approx(1.0)
