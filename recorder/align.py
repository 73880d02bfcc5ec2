"""Offline grouping of recorded frames into frame sets (one moment seen by several cameras).

Anipose and every offline triangulation assume that row n of each camera's table shows the same
moment. Recorded cameras can drop frames independently, so the offline tools first group frames by
capture time into a common timeline, leaving holes (-1) where a camera has no frame.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def align_frame_sets(capture_ns: Sequence[np.ndarray], tolerance_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Group per-camera capture times into frame sets.

    Args:
        capture_ns: C arrays (N_c,) of each camera's capture times, ns, increasing.
        tolerance_ns: frames closer than this to a set's first frame join the set (half a frame
            period for synchronised cameras).

    Returns:
        (S,) capture time of each frame set (its earliest frame, ns) and (C, S) row index into each
        camera's array, -1 where the camera has no frame in the set.
    """
    cams = [np.asarray(c, np.int64) for c in capture_ns]
    if not cams or sum(len(c) for c in cams) == 0:
        return np.zeros(0, np.int64), np.zeros((len(cams), 0), np.int64)
    t = np.concatenate(cams)
    cam = np.concatenate([np.full(len(c), i) for i, c in enumerate(cams)])
    row = np.concatenate([np.arange(len(c)) for c in cams])
    order = np.lexsort((cam, t))
    sets: list[int] = []
    rows: list[list[int]] = []
    start = None
    for k in order:
        if start is None or t[k] - start > tolerance_ns or rows[-1][cam[k]] >= 0:
            start = int(t[k])
            sets.append(start)
            rows.append([-1] * len(cams))
        rows[-1][cam[k]] = int(row[k])
    return np.asarray(sets, np.int64), np.asarray(rows, np.int64).T.reshape(len(cams), len(sets))


def take_rows(values: np.ndarray, rows: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """(N, ...) per-camera values, (S,) row indices with -1 = none -> (S, ...) with `fill` for none."""
    out = np.full((len(rows),) + values.shape[1:], fill, dtype=np.float64)
    ok = rows >= 0
    out[ok] = values[rows[ok]]
    return out
