"""Rotation: full turns of the body axis, counted by the 360-degree rule of rotometers.

The body axis (tail base -> neck) heading is unwrapped over time. A turn is counted each time the
heading has advanced a full 360 degrees in one direction from the last counted position; the
reference then moves on by 360 degrees. Back-and-forth head-and-body swings never add up to a
turn, and a rat turning three times one way and once back scores 3 + 1 (not a net 2): the lab
reports both directions and their difference.

Counter-clockwise seen from above (z up) is a turn to the rat's left.
"""
from __future__ import annotations

import numpy as np

from analysis.session import PoseSession, body_axis_heading_rad


def count_turns(heading_rad: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(T,) heading, NaN where unseen -> (left turns, right turns, (N,) index of each counted turn
    (sign +1 left, -1 right) as an (N, 2) array [frame, sign]).

    Unseen frames are skipped; the heading is unwrapped across them, which assumes the rat turns
    less than 180 degrees while unseen.
    """
    idx = np.flatnonzero(np.isfinite(heading_rad))
    if idx.size < 2:
        return 0, 0, np.zeros((0, 2), dtype=np.int64)
    theta = np.unwrap(heading_rad[idx])
    full = 2.0 * np.pi
    ref = theta[0]
    left = right = 0
    marks: list[tuple[int, int]] = []
    # a plain loop: the reference moves after each count, which no cumulative trick reproduces
    for k in range(1, theta.size):
        d = theta[k] - ref
        while d >= full:
            left += 1
            ref += full
            d -= full
            marks.append((int(idx[k]), 1))
        while d <= -full:
            right += 1
            ref -= full
            d += full
            marks.append((int(idx[k]), -1))
    return left, right, np.asarray(marks, dtype=np.int64).reshape(-1, 2)


def rotation_summary(session: PoseSession) -> dict:
    """A session -> turn counts by direction (and ipsi/contra with a lesion side), turns per minute."""
    heading = body_axis_heading_rad(session)
    left, right, marks = count_turns(heading)
    minutes = session.duration_s / 60.0 if session.duration_s > 0 else float("nan")
    out: dict = {"left_turns": left, "right_turns": right,
                 "turns_per_min": (left + right) / minutes if minutes == minutes and minutes > 0 else None,
                 "turn_times_s": [float(session.times_s[i]) for i in marks[:, 0]],
                 "turn_directions": ["left" if s > 0 else "right" for s in marks[:, 1]]}
    lesion = session.meta.lesion_side
    if lesion != "none":
        ipsi, contra = (left, right) if lesion == "left" else (right, left)
        out.update({"ipsi_turns": ipsi, "contra_turns": contra, "net_ipsi_turns": ipsi - contra,
                    "net_ipsi_turns_per_min": (ipsi - contra) / minutes if minutes > 0 else None})
    return out
