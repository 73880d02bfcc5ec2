"""bench/touchdown_errors.py's classification of touchdown errors (by how fusion saw the paw)."""
from __future__ import annotations

import importlib.util
import math

from tests.helpers import REPO


def load():
    spec = importlib.util.spec_from_file_location("bench_touchdown_errors", REPO / "bench" / "touchdown_errors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_error_is_put_in_the_first_class_that_fits() -> None:
    m = load()
    nan = math.nan
    assert m.classify([2, 3, 0], [9.0, 4.0, nan], [4.0, 4.0, 4.0]) == ">= 3 views"  # one 3-view frame is enough
    assert m.classify([2, 2, 0], [4.5, 10.0, nan], [4.0, 4.0, 4.0]) == "2 views, z off"  # 6 mm off in one frame
    assert m.classify([2, 0, 2], [8.9, nan, -0.9], [4.0, 4.0, 4.0]) == "2 views"  # within 5 mm both times
    assert m.classify([0, 1, 0], [nan, nan, nan], [4.0, 4.0, 4.0]) == "<= 1 view"
    assert m.classify([], [], []) == "<= 1 view"  # no frame set at all in the window
