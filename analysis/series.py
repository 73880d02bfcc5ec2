"""Small helpers over time series with gaps: boolean runs, hysteresis, short-gap filling."""
from __future__ import annotations

import numpy as np


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,) bool -> (starts, ends) inclusive indices of its True runs."""
    m = np.r_[False, np.asarray(mask, dtype=bool), False]
    d = np.diff(m.astype(np.int8))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def hysteresis(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """(T,) bool, (T,) bool -> (T,) bool: the runs of `weak | strong` that contain a `strong` frame."""
    weak = weak | strong
    starts, ends = runs(weak)
    if starts.size == 0:
        return np.zeros_like(weak)
    csum = np.r_[0, np.cumsum(strong)]
    keep = (csum[ends + 1] - csum[starts]) > 0
    start_mark = np.zeros(weak.size, dtype=np.int64)
    start_mark[starts] = 1
    run_index = np.cumsum(start_mark) - 1  # index of the weak run each frame belongs to
    return weak & keep[np.maximum(run_index, 0)]


def fill_short_gaps(times_s: np.ndarray, values: np.ndarray, max_gap_s: float) -> np.ndarray:
    """(T,), (T, D) -> (T, D) with NaN runs of at most `max_gap_s` linearly interpolated.

    A frame or two lost to tracking must not split a stance or a wall contact in two; longer gaps
    stay NaN (nothing is known there). A row counts as missing when any of its values is NaN.
    """
    v = np.array(values, dtype=float, copy=True)
    t = np.asarray(times_s, dtype=float)
    bad = ~np.all(np.isfinite(v.reshape(v.shape[0], -1)), axis=1)
    if not bad.any() or bad.all():
        return v
    starts, ends = runs(bad)
    inner = (starts > 0) & (ends < t.size - 1)
    starts, ends = starts[inner], ends[inner]
    short = (t[ends + 1] - t[starts - 1]) <= max_gap_s + 1e-9
    for a, b in zip(starts[short], ends[short]):
        w = ((t[a:b + 1] - t[a - 1]) / (t[b + 1] - t[a - 1]))[:, None]
        v[a:b + 1] = (1 - w) * v[a - 1] + w * v[b + 1]
    return v
