"""Cylinder test: forelimb wall contacts while rearing, scored like the lab's hand scoring.

A fore paw is on the wall when it is within `wall_distance_mm` of the cylinder wall (radially) and
more than `min_height_mm` above the floor; a hysteresis (looser distance to stay) and a minimum
contact duration keep tracking noise from splitting or inventing contacts.

Scoring (Schallert et al. 2000's cylinder test): each wall placement is one event, scored by the limb
that made it; when the other fore paw is placed within `both_window_ms` of the first, the two
placements are one "both" event. Contralateral use % = (contra + both / 2) / (ipsi + contra + both)
x 100.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.series import fill_short_gaps, hysteresis, runs
from analysis.session import PoseSession, neck_mm

FORE_PAWS = ("front_left_paw", "front_right_paw")


@dataclass(frozen=True, slots=True)
class CylinderParams:
    wall_distance_mm: float = 15.0  # paw at most this far inside the wall to touch it
    release_distance_mm: float = 25.0  # a touching paw has left the wall beyond this
    max_beyond_mm: float = 30.0  # tracked positions up to this far outside the wall still touch it
    min_height_mm: float = 40.0  # paw raised off the floor: a rearing placement, not a step near the wall
    min_contact_ms: float = 100.0
    both_window_ms: float = 200.0
    rear_height_mm: float = 110.0  # neck above this: the rat is rearing (reported, not used for scoring)
    min_rear_ms: float = 300.0
    max_fill_ms: float = 150.0  # shorter tracking gaps are interpolated (they must not split a contact)


@dataclass(frozen=True, slots=True)
class WallContact:
    """One scored wall placement. `limb`: 'left', 'right' or 'both'; `laterality`: 'ipsi', 'contra',
    'both' or '' without a lesion side. Position: median of the first paw while on the wall, mm."""

    time_s: float
    end_s: float
    limb: str
    laterality: str
    x_mm: float
    y_mm: float
    z_mm: float


def paw_wall_intervals(times_s: np.ndarray, paw_mm: np.ndarray, center_mm: np.ndarray, radius_mm: float,
                       params: CylinderParams) -> tuple[np.ndarray, np.ndarray]:
    """(T,), (T, 3), (2,), R -> (first_frame, last_frame) of each wall contact of one paw."""
    paw_mm = fill_short_gaps(times_s, paw_mm, params.max_fill_ms / 1000.0)
    r = np.hypot(paw_mm[:, 0] - center_mm[0], paw_mm[:, 1] - center_mm[1])
    gap = radius_mm - r  # distance inside the wall (negative: beyond it, e.g. tracking error)
    with np.errstate(invalid="ignore"):
        near = gap >= -params.max_beyond_mm  # a paw far outside the cylinder is a geometry or tracking error
        strong = near & (gap <= params.wall_distance_mm) & (paw_mm[:, 2] >= params.min_height_mm)
        weak = near & (gap <= params.release_distance_mm) & (paw_mm[:, 2] >= 0.75 * params.min_height_mm)
    on = hysteresis(strong, weak)
    a, b = runs(on)
    period = float(np.median(np.diff(times_s))) if times_s.size > 1 else 0.0
    ok = (times_s[b] - times_s[a] + period) >= params.min_contact_ms / 1000.0 - 1e-9
    return a[ok], b[ok]


def score_wall_contacts(session: PoseSession, params: CylinderParams = CylinderParams()) -> tuple[list[WallContact], dict]:
    """A cylinder session -> (scored wall placements, JSON-ready summary)."""
    app = session.apparatus
    center = np.asarray(app.cylinder_center_mm, dtype=float)
    t = session.times_s
    onsets = []  # (time, side, first, last, paw index)
    for side, paw in zip(("left", "right"), FORE_PAWS):
        p = session.kp(paw)
        a, b = paw_wall_intervals(t, p, center, app.cylinder_radius_mm, params)
        for i, j in zip(a, b):
            onsets.append((float(t[i]), side, int(i), int(j), paw))
    onsets.sort()
    used = [False] * len(onsets)
    window = params.both_window_ms / 1000.0
    events: list[WallContact] = []
    for k, (tk, side, i, j, paw) in enumerate(onsets):
        if used[k]:
            continue
        used[k] = True
        limb, end = side, t[j]
        for m in range(k + 1, len(onsets)):
            if onsets[m][0] - tk > window:
                break
            if not used[m] and onsets[m][1] != side:
                used[m] = True
                limb, end = "both", max(end, t[onsets[m][3]])
                break
        pos = np.nanmedian(session.kp(paw)[i:j + 1], axis=0)  # where the paw rested, not where it arrived
        lat = "both" if limb == "both" else session.meta.laterality(limb)
        events.append(WallContact(tk, float(end), limb, lat, float(pos[0]), float(pos[1]), float(pos[2])))
    n_left = sum(e.limb == "left" for e in events)
    n_right = sum(e.limb == "right" for e in events)
    n_both = sum(e.limb == "both" for e in events)
    total = n_left + n_right + n_both
    summary: dict = {"n_contacts": total, "left": n_left, "right": n_right, "both": n_both,
                     "cylinder_center_mm": list(map(float, center)), "cylinder_radius_mm": app.cylinder_radius_mm}
    lesion = session.meta.lesion_side
    if lesion != "none":
        ipsi, contra = (n_left, n_right) if lesion == "left" else (n_right, n_left)
        summary.update({"ipsi": ipsi, "contra": contra,
                        "contralateral_use_pct": 100.0 * (contra + 0.5 * n_both) / total if total else None,
                        "ipsilateral_use_pct": 100.0 * (ipsi + 0.5 * n_both) / total if total else None})
    summary["right_use_pct"] = 100.0 * (n_right + 0.5 * n_both) / total if total else None
    summary["n_rears"], summary["rearing_s"] = count_rears(session, params)
    return events, summary


def count_rears(session: PoseSession, params: CylinderParams = CylinderParams()) -> tuple[int, float]:
    """Rears: runs of the neck above `rear_height_mm` lasting `min_rear_ms`. -> (count, total s)."""
    neck = neck_mm(session)
    if neck is None:
        return 0, 0.0
    with np.errstate(invalid="ignore"):
        up = neck[:, 2] >= params.rear_height_mm
    a, b = runs(up)
    t = session.times_s
    dur = t[b] - t[a]
    ok = dur >= params.min_rear_ms / 1000.0
    return int(ok.sum()), float(dur[ok].sum())
