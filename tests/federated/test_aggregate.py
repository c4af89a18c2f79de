import numpy as np
import pytest

from molfed.federated.aggregate import fedavg, weighted_metrics


def test_fedavg_weights_by_samples_exactly():
    a = {
        "w": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32),
        "b": np.array([1.0], np.float32),
    }
    b = {
        "w": np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]], dtype=np.float32),
        "b": np.array([5.0], np.float32),
    }
    out = fedavg([(a, 1), (b, 3)])
    # (1*a + 3*b) / 4, computed by hand
    np.testing.assert_array_equal(out["w"], np.array([[2.5, 2.0, 1.5], [1.0, 2.0, 3.0]], dtype=np.float32))
    np.testing.assert_array_equal(out["b"], np.array([4.0], dtype=np.float32))
    assert out["w"].dtype == np.float32


def test_fedavg_rejects_empty_and_zero_samples():
    with pytest.raises(ValueError, match="no results"):
        fedavg([])
    with pytest.raises(ValueError, match="total sample count 0"):
        fedavg([({"w": np.ones(2, np.float32)}, 0)])


def test_weighted_metrics_skips_missing_and_nan():
    out = weighted_metrics([({"loss": 1.0, "r2": float("nan")}, 1), ({"loss": 4.0}, 2)])
    assert out == {"loss": 3.0}
