"""Straight walking bouts: the only stretches gait parameters are computed on.

A frame belongs to straight walking when the trunk moves forward (travel direction within
`max_axis_offset_deg` of the body axis) faster than `min_speed_mm_s` and the travel direction turns
slower than `max_turn_deg_s`. Runs of such frames shorter than `min_duration_s` are dropped; turns
at the ends of the corridor, rears and pauses fall out.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from analysis.series import runs
from analysis.session import PoseSession, body_axis_heading_rad, body_center_mm


@dataclass(frozen=True, slots=True)
class BoutParams:
    min_speed_mm_s: float = 60.0
    max_turn_deg_s: float = 60.0
    max_axis_offset_deg: float = 40.0
    min_duration_s: float = 0.6
    max_gap_s: float = 0.1  # shorter interruptions do not split a bout
    smooth_s: float = 0.25  # trunk trajectory smoothing window
    min_straightness: float = 0.9  # net displacement / path length over the bout


@dataclass(frozen=True, slots=True)
class Bouts:
    """Straight walking bouts.

    Attributes:
        first_frame, last_frame: (B,) inclusive frame indices.
        start_s, end_s: (B,) times.
        direction: (B, 2) unit travel direction in the floor plane.
        speed_mm_s: (B,) mean trunk speed.
    """

    first_frame: np.ndarray
    last_frame: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    direction: np.ndarray
    speed_mm_s: np.ndarray

    @property
    def n(self) -> int:
        return int(self.first_frame.size)

    @property
    def total_s(self) -> float:
        return float(np.sum(self.end_s - self.start_s))

    def bout_of_time(self, t_s: np.ndarray) -> np.ndarray:
        """(N,) times -> (N,) index of the bout containing each time, -1 outside every bout."""
        t_s = np.asarray(t_s, dtype=float)
        i = np.searchsorted(self.start_s, t_s, side="right") - 1
        ok = (i >= 0) & (t_s <= self.end_s[np.clip(i, 0, max(self.n - 1, 0))]) if self.n else np.zeros(t_s.shape, bool)
        return np.where(ok, i, -1)


def fill_nan_linear(times_s: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(T,), (T, D) -> (T, D) with NaN runs linearly interpolated per column (edges held)."""
    out = np.array(values, dtype=float, copy=True)
    for d in range(out.shape[1]):
        col = out[:, d]
        ok = np.isfinite(col)
        if ok.sum() >= 2 and not ok.all():
            out[:, d] = np.interp(times_s, times_s[ok], col[ok])
    return out


def trunk_kinematics(session: PoseSession, smooth_s: float = 0.25) -> dict[str, np.ndarray]:
    """Smoothed trunk position, velocity, speed and body-axis heading.

    Returns {"center_mm": (T, 3), "velocity_mm_s": (T, 2), "speed_mm_s": (T,), "heading_rad": (T,),
    "valid": (T,) bool (trunk seen in this frame)}.
    """
    t = session.times_s
    center = body_center_mm(session)  # short tracking gaps already bridged
    valid = np.all(np.isfinite(center), axis=1)
    filled = fill_nan_linear(t, center)
    win = max(1, int(round(smooth_s / session.frame_period_s))) if session.n_frames > 1 else 1
    smooth = uniform_filter1d(filled, size=win, axis=0, mode="nearest")
    if session.n_frames > 1:
        vel = np.gradient(smooth[:, :2], t, axis=0)
    else:
        vel = np.zeros((session.n_frames, 2))
    heading = body_axis_heading_rad(session)
    return {"center_mm": smooth, "velocity_mm_s": vel, "speed_mm_s": np.hypot(vel[:, 0], vel[:, 1]),
            "heading_rad": heading, "valid": valid}


def straight_walking_bouts(session: PoseSession, params: BoutParams = BoutParams(),
                           kin: dict[str, np.ndarray] | None = None) -> Bouts:
    """A session -> its straight walking bouts."""
    t = session.times_s
    kin = kin if kin is not None else trunk_kinematics(session, params.smooth_s)
    vel, speed = kin["velocity_mm_s"], kin["speed_mm_s"]
    travel = np.unwrap(np.arctan2(vel[:, 1], vel[:, 0]))
    turn = np.degrees(np.abs(np.gradient(travel, t))) if t.size > 1 else np.zeros(t.size)
    win = max(1, int(round(params.smooth_s / session.frame_period_s))) if t.size > 1 else 1
    turn = uniform_filter1d(turn, size=win, mode="nearest")
    offset = np.degrees(np.abs(np.angle(np.exp(1j * (travel - kin["heading_rad"])))))
    with np.errstate(invalid="ignore"):
        ok = (kin["valid"] & (speed >= params.min_speed_mm_s) & (turn <= params.max_turn_deg_s)
              & (offset <= params.max_axis_offset_deg))
    starts, ends = runs(ok)
    if starts.size:
        gap = t[starts[1:]] - t[ends[:-1]]
        join = gap <= params.max_gap_s
        starts, ends = starts[np.r_[True, ~join]], ends[np.r_[~join, True]]
    keep = (t[ends] - t[starts]) >= params.min_duration_s if starts.size else np.zeros(0, bool)
    starts, ends = starts[keep], ends[keep]
    c = kin["center_mm"][:, :2]
    dirs, speeds, good = [], [], []
    step = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(c, axis=0), axis=1))]
    for a, b in zip(starts, ends):
        net = c[b] - c[a]
        path = step[b] - step[a]
        dist = float(np.hypot(*net))
        good.append(path > 0 and dist / path >= params.min_straightness)
        dirs.append(net / dist if dist > 0 else np.array([1.0, 0.0]))
        speeds.append(dist / max(t[b] - t[a], 1e-9))
    good_a = np.asarray(good, dtype=bool)
    return Bouts(
        first_frame=starts[good_a].astype(np.int64),
        last_frame=ends[good_a].astype(np.int64),
        start_s=t[starts[good_a]],
        end_s=t[ends[good_a]],
        direction=np.asarray(dirs, dtype=float).reshape(-1, 2)[good_a],
        speed_mm_s=np.asarray(speeds, dtype=float)[good_a],
    )
