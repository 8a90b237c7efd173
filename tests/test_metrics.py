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
    shifted_mean, _ = metrics.kernel_distance(x, y + 0.5, num_subsets=10, subset_size=500)
    assert shifted_mean > 20 * se


def test_polynomial_mmd2_is_the_u_statistic_over_distinct_pairs():
    """Against a loop over pairs: `k(a, b) = (a . b / d + 1)^3`, the same-set sums over
    `i != j` only; keeping the diagonal (the biased V-statistic) gives another value."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(a, b) for a in x for b in y) / (5 * 4)
    assert metrics.polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    biased = (
        sum(k(a, b) for a in x for b in x) / 25 + sum(k(a, b) for a in y for b in y) / 16 - 2 * xy
    )
    assert abs(biased - (xx + yy - 2 * xy)) > 0.1


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


def test_inception_score_is_exp_of_the_mean_kl_not_the_mean_of_exp_kl():
    """Two confident examples of different classes (KL = log 2 to the marginal (1/2, 1/2))
    and two uniform ones (KL = 0): IS = exp(log(2) / 2) = sqrt(2), while the mean of
    exp(KL) would be (2 + 2 + 1 + 1) / 4 = 1.5. In two splits, [confident, confident] and
    [uniform, uniform], the scores are 2 and 1: mean 1.5, std 0.5."""
    logits = np.asarray([[0.0, -1e4], [-1e4, 0.0], [0.0, 0.0], [0.0, 0.0]])
    score, spread = metrics.inception_score(logits, num_splits=1)
    assert score == pytest.approx(np.sqrt(2.0), rel=1e-12) and spread == 0.0
    assert metrics.inception_score(logits, num_splits=2) == pytest.approx((1.5, 0.5), rel=1e-12)


def test_precision_recall_uses_the_third_neighbour_radius():
    """1-D points. Real 0, 1, ..., 6: the 3rd-neighbour radius is 3 at the ends (2 at 1 and
    5), so the real balls cover [-3, 9]; with the 5th neighbour they reach [-5, 11]. Of the
    fake points -10, -4, 2.5, 4.5, 10, 20, 30, two lie in [-3, 9] and four in [-5, 11]:
    precision 2/7 at k = 3, 4/7 at k = 5. The fake balls (3rd-neighbour radii 14.5, 8.5,
    7.5, 8.5, 10, 15.5, 25.5) cover all of [0, 6]: recall 1. Swapping the sets swaps the
    two numbers."""
    real = np.arange(7.0)[:, None]
    fake = np.asarray([-10.0, -4.0, 2.5, 4.5, 10.0, 20.0, 30.0])[:, None]
    assert metrics.precision_recall(real, fake) == pytest.approx((2 / 7, 1.0))
    assert metrics.precision_recall(real, fake, k=5) == pytest.approx((4 / 7, 1.0))
    assert metrics.precision_recall(fake, real) == pytest.approx((1.0, 2 / 7))
