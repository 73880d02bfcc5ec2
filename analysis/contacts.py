"""Stance and swing of a paw from its 3D height and speed (no glass floor, no pressure plate).

A paw is on the floor when it is low and still. Its speed is the central difference over the two
neighbouring frames: a real paw slows down before touchdown and speeds up after liftoff, so
the frame either side of a contact is already (or still) slow, and the central difference puts
the boundary within about half a frame of the true contact on both ends (one-sided differences
bias stance long by a frame on such paths). A hysteresis (strict thresholds to enter a stance,
looser ones to stay in it) and minimum stance and swing durations keep noise from splitting
contacts; touchdown and liftoff are placed half-way between the last swing and first stance frame.

Heights are measured from the fitted floor plane and from each paw's own low baseline (the
5th percentile of its height), because a paw keypoint sits some millimetres above the floor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.series import fill_short_gaps, hysteresis, runs


@dataclass(frozen=True, slots=True)
class ContactParams:
    """Thresholds of the stance detector. Heights are above the paw's own floor baseline."""

    touchdown_height_mm: float = 6.0  # below this (and slow) a paw enters stance
    liftoff_height_mm: float = 10.0  # above this a paw leaves stance
    touchdown_speed_mm_s: float = 80.0
    liftoff_speed_mm_s: float = 120.0
    min_stance_ms: float = 40.0  # shorter stances are noise
    min_swing_ms: float = 40.0  # shorter swings are noise splitting one stance: merged
    baseline_percentile: float = 5.0
    max_fill_ms: float = 100.0  # shorter tracking gaps are interpolated before detection

    def __post_init__(self) -> None:
        if self.liftoff_height_mm < self.touchdown_height_mm:
            raise ValueError("ContactParams: liftoff_height_mm must be >= touchdown_height_mm")
        if self.liftoff_speed_mm_s < self.touchdown_speed_mm_s:
            raise ValueError("ContactParams: liftoff_speed_mm_s must be >= touchdown_speed_mm_s")


@dataclass(frozen=True, slots=True)
class PawContacts:
    """Stance phases of one paw.

    Attributes:
        first_frame, last_frame: (M,) inclusive frame indices of each stance.
        touchdown_s, liftoff_s: (M,) times, half-way between the last swing frame and the first
            stance frame (and vice versa), so frame quantisation errors are centred on zero.
    """

    first_frame: np.ndarray
    last_frame: np.ndarray
    touchdown_s: np.ndarray
    liftoff_s: np.ndarray

    @property
    def n(self) -> int:
        return int(self.first_frame.size)

    def as_array(self) -> np.ndarray:
        """(M, 2) [touchdown_s, liftoff_s]."""
        return np.c_[self.touchdown_s, self.liftoff_s]


def paw_speed_mm_s(times_s: np.ndarray, paw_mm: np.ndarray) -> np.ndarray:
    """(T,), (T, 3) -> (T,) central-difference 3D speed, mm/s (NaN where a neighbour is unseen)."""
    p = np.asarray(paw_mm, dtype=float)
    t = np.asarray(times_s, dtype=float)
    out = np.full(t.shape, np.nan)
    if t.size < 2:
        return out
    # central difference inside, one-sided at the ends
    out[1:-1] = np.linalg.norm(p[2:] - p[:-2], axis=1) / (t[2:] - t[:-2])
    out[0] = np.linalg.norm(p[1] - p[0]) / (t[1] - t[0])
    out[-1] = np.linalg.norm(p[-1] - p[-2]) / (t[-1] - t[-2])
    return out


def detect_contacts(
    times_s: np.ndarray,
    paw_mm: np.ndarray,
    height_mm: np.ndarray,
    params: ContactParams = ContactParams(),
) -> PawContacts:
    """(T,) times, (T, 3) paw positions, (T,) paw heights above the floor -> the paw's stances.

    `height_mm` is usually `FloorPlane.height_mm(paw_mm)`; the paw's baseline is subtracted here.
    Tracking gaps up to `max_fill_ms` are interpolated first; longer NaN runs are neither stance nor
    swing evidence and end a stance.
    """
    t = np.asarray(times_s, dtype=float)
    both = fill_short_gaps(t, np.c_[paw_mm, height_mm], params.max_fill_ms / 1000.0)
    paw_mm, h = both[:, :3], both[:, 3]
    finite = np.isfinite(h)
    if finite.sum() < 3:
        empty = np.zeros(0, dtype=np.int64)
        return PawContacts(empty, empty, np.zeros(0), np.zeros(0))
    h = h - np.percentile(h[finite], params.baseline_percentile)
    v = paw_speed_mm_s(t, paw_mm)
    with np.errstate(invalid="ignore"):
        strong = (h < params.touchdown_height_mm) & (v < params.touchdown_speed_mm_s)
        weak = (h < params.liftoff_height_mm) & (v < params.liftoff_speed_mm_s)
    stance = hysteresis(strong, weak)
    starts, ends = runs(stance)
    td, lo = _boundary_times(t, starts, ends)
    if starts.size:
        # swings too short to be real are noise inside one stance: merge across them
        short = (td[1:] - lo[:-1]) < params.min_swing_ms / 1000.0 - 1e-9
        starts, ends = starts[np.r_[True, ~short]], ends[np.r_[~short, True]]
        td, lo = _boundary_times(t, starts, ends)
        ok = (lo - td) >= params.min_stance_ms / 1000.0 - 1e-9
        starts, ends, td, lo = starts[ok], ends[ok], td[ok], lo[ok]
    return PawContacts(starts.astype(np.int64), ends.astype(np.int64), td, lo)


def _boundary_times(t: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Touchdown and liftoff times half-way between the frames either side of each stance."""
    period = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    prev = np.where(starts > 0, t[np.maximum(starts - 1, 0)], t[starts] - period)
    nxt = np.where(ends < t.size - 1, t[np.minimum(ends + 1, t.size - 1)], t[ends] + period)
    return 0.5 * (t[starts] + prev), 0.5 * (t[ends] + nxt)
