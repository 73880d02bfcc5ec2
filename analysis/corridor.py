"""Corridor test: retrievals from the pots on the rat's ipsilateral and contralateral side.

A retrieval is a visit of the nose to a pot's zone: the nose comes within `pot_zone_radius_mm`
(horizontally) of the pot centre, stays at least `min_visit_ms`, and leaves beyond the zone plus
`exit_margin_mm` (hysteresis). Which side the pot was on is judged in the rat's own frame: the
side of the pot relative to the body axis (tail base -> neck) averaged over `heading_window_s`
before the visit, so a rat walking back down the corridor scores the same wall's pots on its
other side.

Side-bias index = (ipsi - contra) / (ipsi + contra): positive when the rat neglects the
contralateral side, as unilateral 6-OHDA rats do (Dowd et al. 2005).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.series import fill_short_gaps, hysteresis, runs
from analysis.session import PoseSession, body_center_mm, neck_mm


@dataclass(frozen=True, slots=True)
class CorridorParams:
    exit_margin_mm: float = 6.0
    min_visit_ms: float = 100.0
    heading_window_s: float = 0.5
    max_fill_ms: float = 150.0  # shorter tracking gaps are interpolated (they must not split a visit)


@dataclass(frozen=True, slots=True)
class Retrieval:
    """One pot visit. `side`: the pot's side relative to the rat ('left'/'right'); `laterality`:
    'ipsi'/'contra' ('' without a lesion side)."""

    time_s: float
    end_s: float
    pot: int
    side: str
    laterality: str


def score_retrievals(session: PoseSession, params: CorridorParams = CorridorParams()) -> tuple[list[Retrieval], dict]:
    """A corridor session -> (retrievals in time order, JSON-ready summary)."""
    pots = session.apparatus.pots_array_mm
    if pots.shape[0] == 0:
        raise ValueError(
            f"session {session.meta.session_id!r}: corridor test needs pot positions "
            "([apparatus] pots_mm in the rig config, or --pots)"
        )
    t = session.times_s
    nose = fill_short_gaps(t, session.kp("nose"), params.max_fill_ms / 1000.0)
    zone = session.apparatus.pot_zone_radius_mm
    tail = session.kp("tail_base")
    neck = neck_mm(session)
    axis = neck[:, :2] - tail[:, :2]
    norm = np.linalg.norm(axis, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = axis / norm
    unit = np.where(np.isfinite(unit), unit, 0.0)
    cu = np.r_[np.zeros((1, 2)), np.cumsum(unit, axis=0)]
    center = body_center_mm(session)[:, :2]
    period = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    win = max(1, int(round(params.heading_window_s / period))) if period > 0 else 1
    visits: list[Retrieval] = []
    for k, pot in enumerate(pots):
        d = np.hypot(nose[:, 0] - pot[0], nose[:, 1] - pot[1])
        with np.errstate(invalid="ignore"):
            inside = hysteresis(d <= zone, d <= zone + params.exit_margin_mm)
        a, b = runs(inside)
        for i, j in zip(a, b):
            if t[j] - t[i] + period < params.min_visit_ms / 1000.0 - 1e-9:
                continue
            i0 = max(0, i - win)
            h = cu[i + 1] - cu[i0]
            c = center[i]
            if not np.all(np.isfinite(c)):
                c = np.nanmean(center[i0:i + 1], axis=0)
            v = pot - c
            cross = h[0] * v[1] - h[1] * v[0]
            side = "left" if cross > 0 else "right"
            visits.append(Retrieval(float(t[i]), float(t[j]), k, side, session.meta.laterality(side)))
    visits.sort(key=lambda r: r.time_s)
    n_left = sum(r.side == "left" for r in visits)
    n_right = sum(r.side == "right" for r in visits)
    summary: dict = {"n_retrievals": len(visits), "left": n_left, "right": n_right, "n_pots": int(pots.shape[0]),
                     "latency_first_s": visits[0].time_s - float(t[0]) if visits else None}
    lesion = session.meta.lesion_side
    if lesion != "none":
        ipsi, contra = (n_left, n_right) if lesion == "left" else (n_right, n_left)
        first = {lat: next((r.time_s - float(t[0]) for r in visits if r.laterality == lat), None)
                 for lat in ("ipsi", "contra")}
        summary.update({
            "ipsi": ipsi, "contra": contra,
            "side_bias_index": (ipsi - contra) / (ipsi + contra) if ipsi + contra else None,
            "ipsilateral_pct": 100.0 * ipsi / (ipsi + contra) if ipsi + contra else None,
            "latency_first_ipsi_s": first["ipsi"], "latency_first_contra_s": first["contra"],
        })
    else:
        summary["side_bias_index_right"] = (n_right - n_left) / (n_right + n_left) if visits else None
    return visits, summary
