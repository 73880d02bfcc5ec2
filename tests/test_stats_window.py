"""ratrig.stats.LatencyWindow: exact percentiles over a fixed window, constant memory."""
from __future__ import annotations

import numpy as np
import pytest

from ratrig.stats import LatencyWindow


def test_window_keeps_the_last_maxlen_samples_in_order() -> None:
    w = LatencyWindow(maxlen=4)
    assert w.summary() is None and w.values().size == 0
    for v in range(10):
        w.add(v)
    np.testing.assert_array_equal(w.values(), [6, 7, 8, 9])
    s = w.summary()
    assert s == {"p50": 7.5, "p99": round(float(np.percentile([6, 7, 8, 9], 99)), 3), "max": 9.0, "n": 10}


def test_percentiles_match_numpy_before_the_window_wraps() -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 10.0, 999)
    w = LatencyWindow(maxlen=1000)
    for v in x:
        w.add(v)
    s = w.summary()
    assert s["p50"] == round(float(np.percentile(x, 50)), 3)
    assert s["p99"] == round(float(np.percentile(x, 99)), 3)


def test_memory_does_not_grow_with_the_run() -> None:
    w = LatencyWindow(maxlen=100)
    w.add(1.0)
    nbytes = w._ring.nbytes
    for v in range(100_000):
        w.add(float(v))
    assert w._ring.nbytes == nbytes == 800
    assert w.summary()["max"] == 99_999.0 and w.count == 100_001


def test_maxlen_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxlen"):
        LatencyWindow(0)
