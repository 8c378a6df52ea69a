import numpy as np
import pytest

from htr_augment.gan.quality import frechet_distance, mean_pairwise_distance


def test_frechet_distance_matches_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # Independent dims: FD = sum (mu_a - mu_b)^2 + (s_a - s_b)^2.
    b = rng.normal(0, 1, (20000, 3)) * np.array([1, 2, 3]) + np.array([1, 0, -2])
    expected = 1 + 4 + (0 + 1 + 4)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)


def test_mean_pairwise_distance():
    groups = [np.array([[0, 0], [3, 4]]), np.array([[1, 1]]), np.array([[0, 0], [0, 1], [0, 2]])]
    # pairs: 5 ; (1, 1, 2)
    assert mean_pairwise_distance(groups) == pytest.approx((5 + 1 + 1 + 2) / 4)
    assert np.isnan(mean_pairwise_distance([np.zeros((1, 2))]))
