"""Behaviour matrix O against hand-computed values."""

import numpy as np
import pytest

from jmf.data.behavior import behavior_matrix
from jmf.data.interactions import from_columns


@pytest.fixture
def toy():
    # users a, b, c; categories k1 (items x, y), k2 (item z)
    return from_columns(["a", "a", "a", "b", "c", "c"], ["x", "y", "z", "x", "x", "z"], [4, 2, 5, 3, 1, 1],
                        category=["k1", "k1", "k2", "k1", "k1", "k2"])


def test_count_mean_normalised(toy):
    np.testing.assert_array_equal(behavior_matrix(toy, "count"), [[2, 1], [1, 0], [1, 1]])
    np.testing.assert_allclose(behavior_matrix(toy, "mean"), [[3, 5], [3, 0], [1, 1]])
    np.testing.assert_allclose(behavior_matrix(toy, "normalised"), [[2 / 3, 1 / 3], [1, 0], [0.5, 0.5]])
    np.testing.assert_allclose(behavior_matrix(toy, "count", log1p=True)[0], np.log1p([2, 1]))


def test_fills(toy):
    assert np.isnan(behavior_matrix(toy, "mean", fill="none")[1, 1])
    # mean fill: the category mean over users who have it: (5 + 1) / 2
    assert behavior_matrix(toy, "mean", fill="mean")[1, 1] == pytest.approx(3.0)
    # knn fill with k=1: b = (3, ·) is closer (cosine) to a = (3, 5) than to c = (1, 1)? cos(b,a)=0.51, cos(b,c)=0.71
    assert behavior_matrix(toy, "mean", fill="knn", knn_k=1)[1, 1] == pytest.approx(1.0)
    assert behavior_matrix(toy, "mean", fill="knn", knn_k=2)[1, 1] == pytest.approx(3.0)


def test_bad_names(toy):
    with pytest.raises(ValueError, match="behavior.agg"):
        behavior_matrix(toy, "sum")
    with pytest.raises(ValueError, match="behavior.fill"):
        behavior_matrix(toy, fill="median")
