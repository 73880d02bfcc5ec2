"""Stance and swing of a paw from its 3D height and speed (no glass floor, no pressure plate).

A paw is on the floor when it is low and still. Its speed is the central difference over the two
neighbouring frames: a real paw slows down before touchdown and speeds up after liftoff, so
the frame either side of a contact is already (or still) slow, and the central difference puts
the boundary within about half a frame of the true contact on both ends (one-sided differences
bias stance long by a frame on such paths). A hysteresis (strict thresholds to enter a stance,
looser ones to stay in it) and minimum stance and swing durations keep noise from splitting
contacts; touchdown and liftoff are placed half-way between the last swing and first stance frame.

Heights are measured from the fitted floor plane and from each paw's own floor level (a low
percentile of its heights while it is still), because a paw keypoint sits some millimetres above
the floor.

Triangulated paws are noisy and, where only two cameras see a paw, sometimes plainly wrong (a 2D
detection on the wrong paw triangulates tens of millimetres away, with a small reprojection error
because two rays always nearly meet). Differentiating such a track makes every outlier a burst of
speed that splits or hides stances, so `clean_paw_track` comes first (the analysis is offline and may
look ahead): samples with a large reprojection error, or far from a running median of the track
(a paw cannot jump that far and back within a few frames), are dropped, short holes (dropped frames
included, on the camera's frame grid) are interpolated, and the track is smoothed with a zero-phase
Savitzky-Golay filter, which keeps the onset of a swing where it is (no lag) while averaging the noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter
from scipy.signal import savgol_filter

from analysis.series import fill_short_gaps, hysteresis, runs


@dataclass(frozen=True, slots=True)
class TrackCleanParams:
    """How a paw track is cleaned before stances are detected and prints measured (0 turns a step off)."""

    max_error_px: float = 8.0  # larger reprojection error: a wrong match (fusion's own outlier threshold)
    below_floor_mm: float = 15.0  # a sample this far under the paw's floor level is impossible
    outlier_window_ms: float = 250.0  # running median the samples are compared with (about a step)
    outlier_mm: float = 20.0  # a sample farther than this from the running median is an outlier...
    outlier_sigmas: float = 5.0  # ...or than this many per-axis noise sigmas (robust), if larger
    max_fill_ms: float = 150.0  # holes up to this long (outliers, dropped frames) are interpolated; a
    # swing bridged this way keeps its displacement, so it still reads as fast movement
    smooth_ms: float = 170.0  # Savitzky-Golay window; about half a swing, so a swing keeps its shape
    smooth_order: int = 2

    def __post_init__(self) -> None:
        if self.smooth_order < 1:
            raise ValueError("TrackCleanParams: smooth_order must be >= 1")


def _odd_frames(ms: float, period_s: float) -> int:
    n = int(round(ms / 1000.0 / period_s)) if period_s > 0 else 0
    return n + 1 if n % 2 == 0 else n


def clean_paw_track(
    times_s: np.ndarray,
    paw_mm: np.ndarray,
    error_px: np.ndarray | None = None,
    params: TrackCleanParams = TrackCleanParams(),
    height_mm: np.ndarray | None = None,
) -> np.ndarray:
    """(T,) times, (T, 3) raw paw positions, optional (T,) reprojection errors and (T,) heights above
    the floor -> (T, 3) cleaned track.

    Rows are put on the camera's frame grid (the median frame period), so frames the pipeline dropped
    count as holes rather than shortening time. Then: samples with `error_px > max_error_px` are
    dropped, and so are samples more than `below_floor_mm` under the paw's floor level (its median
    height) when heights are given; samples farther from the running median (of `outlier_window_ms`, NaN holes bridged) than
    max(`outlier_mm`, `outlier_sigmas` x the per-axis noise sigma, from the median deviation) are dropped, twice (a
    cleaner median finds the rest); holes up to `max_fill_ms` are interpolated; finite runs are
    smoothed with a zero-phase Savitzky-Golay filter of `smooth_ms`. Longer holes stay NaN.
    """
    t = np.asarray(times_s, dtype=float)
    p = np.array(paw_mm, dtype=float, copy=True)
    if t.size < 3:
        return p
    if error_px is not None and params.max_error_px > 0:
        with np.errstate(invalid="ignore"):
            p[np.asarray(error_px, dtype=float) > params.max_error_px] = np.nan
    if height_mm is not None and params.below_floor_mm > 0:
        # a paw cannot be under the floor: a two-view triangulation that puts it there is wrong. The
        # paw's floor level is its median height (a walking paw stands more than half the time).
        h = np.asarray(height_mm, dtype=float)
        ok = np.isfinite(h) & np.all(np.isfinite(p), axis=1)
        if ok.any():
            with np.errstate(invalid="ignore"):
                p[h < float(np.median(h[ok])) - params.below_floor_mm] = np.nan
    period = float(np.median(np.diff(t)))
    if not period > 0:
        return p
    slot = np.round((t - t[0]) / period).astype(np.int64)
    if slot[-1] > 4 * t.size:  # capture times too irregular for a frame grid: work on rows
        slot = np.arange(t.size)
    grid = np.full((int(slot[-1]) + 1, 3), np.nan)
    grid[slot] = p
    gt = t[0] + period * np.arange(grid.shape[0])
    w = _odd_frames(params.outlier_window_ms, period)
    if w >= 3 and params.outlier_mm > 0:
        for _ in range(2):
            ok = np.all(np.isfinite(grid), axis=1)
            if ok.sum() < w:
                break
            bridged = np.stack([np.interp(gt, gt[ok], grid[ok, d]) for d in range(3)], axis=1)
            ref = median_filter(bridged, size=(w, 1), mode="nearest")
            dev = np.linalg.norm(grid - ref, axis=1)
            # per-axis sigma of isotropic Gaussian noise: the median of a 3D deviation's length is 1.538 sigma
            sigma = float(np.median(dev[ok])) / 1.538
            with np.errstate(invalid="ignore"):
                grid[dev > max(params.outlier_mm, params.outlier_sigmas * sigma)] = np.nan
    grid = fill_short_gaps(gt, grid, params.max_fill_ms / 1000.0)
    ws = _odd_frames(params.smooth_ms, period)
    if ws > params.smooth_order:
        starts, ends = runs(np.all(np.isfinite(grid), axis=1))
        for a, b in zip(starts, ends):
            if b - a + 1 >= ws:
                grid[a:b + 1] = savgol_filter(grid[a:b + 1], ws, params.smooth_order, axis=0, mode="interp")
    return grid[slot]


@dataclass(frozen=True, slots=True)
class ContactParams:
    """Thresholds of the stance detector. Heights are above the paw's own floor baseline."""

    touchdown_height_mm: float = 6.0  # below this (and slow) a paw enters stance
    liftoff_height_mm: float = 10.0  # above this a paw leaves stance
    touchdown_speed_mm_s: float = 80.0
    liftoff_speed_mm_s: float = 120.0
    min_stance_ms: float = 40.0  # shorter stances are noise
    min_swing_ms: float = 40.0  # shorter swings are noise splitting one stance: merged
    baseline_percentile: float = 25.0  # of the heights while the paw is still: its floor level
    max_fill_ms: float = 100.0  # shorter tracking gaps are interpolated before detection
    noise_sigmas: float = 2.0  # the touchdown height is at least this many sigmas of a resting paw's height
    # the touchdown speed is at least this many sigmas of one velocity component of a resting paw:
    # 2.8 is the 95th percentile of the length of a 3D Gaussian vector (chi, 3 degrees of freedom)
    speed_noise_sigmas: float = 2.8

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

    `height_mm` is usually `FloorPlane.height_mm(paw_mm)`; the paw's floor level (the
    `baseline_percentile` of its heights while still) is subtracted here. The touchdown height and
    speed are raised above the parameters' values where the track's own noise (measured on the still
    paw) would otherwise cross them; the liftoff thresholds keep their margin over the touchdown ones.
    Pass a cleaned track (`clean_paw_track`) for triangulated data. Tracking gaps up to `max_fill_ms`
    are interpolated first; longer NaN runs are neither stance nor swing evidence and end a stance.
    """
    t = np.asarray(times_s, dtype=float)
    both = fill_short_gaps(t, np.c_[paw_mm, height_mm], params.max_fill_ms / 1000.0)
    paw_mm, h = both[:, :3], both[:, 3]
    finite = np.isfinite(h)
    if finite.sum() < 3:
        empty = np.zeros(0, dtype=np.int64)
        return PawContacts(empty, empty, np.zeros(0), np.zeros(0))
    v = paw_speed_mm_s(t, paw_mm)
    # the paw's floor level: its height while it is still (mostly stances). A low percentile of all
    # heights would follow the few samples triangulated under the floor instead. On a noisy track
    # even a resting paw seems to move, so "still" is at least the slowest fifth of the frames
    # (a walking paw stands for more than half of each stride).
    with np.errstate(invalid="ignore"):
        v_still = max(params.touchdown_speed_mm_s, float(np.nanpercentile(v, 20)) if np.isfinite(v).any() else 0.0)
        still = finite & (v <= v_still)
    base = h[still] if still.sum() >= 3 else h[finite]
    h = h - np.percentile(base, params.baseline_percentile)
    # the thresholds never sit inside the scatter of a resting paw: the height noise is the robust
    # sigma of the still heights, the speed noise that of the vertical velocity of the paw near the
    # floor (a resting paw's vertical velocity is pure noise; its 3D speed is the norm of three such)
    sigma_h = 1.4826 * float(np.median(np.abs(base - np.median(base))))
    td_h = max(params.touchdown_height_mm, params.noise_sigmas * sigma_h)
    lo_h = td_h + (params.liftoff_height_mm - params.touchdown_height_mm)
    vz = np.gradient(h, t) if t.size > 1 else np.zeros_like(h)
    with np.errstate(invalid="ignore"):
        near = finite & (h < td_h) & np.isfinite(vz)
    sigma_v = 1.4826 * float(np.median(np.abs(vz[near] - np.median(vz[near])))) if near.sum() >= 3 else 0.0
    td_v = max(params.touchdown_speed_mm_s, params.speed_noise_sigmas * sigma_v)
    lo_v = td_v * params.liftoff_speed_mm_s / params.touchdown_speed_mm_s if params.touchdown_speed_mm_s > 0 else td_v
    with np.errstate(invalid="ignore"):
        strong = (h < td_h) & (v < td_v)
        weak = (h < lo_h) & (v < lo_v)
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
