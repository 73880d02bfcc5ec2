"""Data quality first: how much of the session the numbers can rest on.

Per keypoint: fraction of frames with a 3D position, fraction that was gap-filled rather than
triangulated, reprojection error and camera count; and a floor plane fitted to the paws, whose tilt
and offset say whether the calibration's floor is where the analyses assume it is (z = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.session import PoseSession
from ratrig.skeleton import PAWS


@dataclass(frozen=True, slots=True)
class FloorPlane:
    """z = slope_x * x + slope_y * y + offset_mm, fitted to low paw positions.

    Attributes:
        slope_x, slope_y: dimensionless slopes.
        offset_mm: plane height at the origin.
        tilt_deg: angle between the plane's normal and +z.
        rms_mm: RMS residual of the inlier points.
        n_points: inlier points the fit rests on.
    """

    slope_x: float
    slope_y: float
    offset_mm: float
    tilt_deg: float
    rms_mm: float
    n_points: int

    def height_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """(..., 3) points -> (...,) height above this plane, mm (vertical distance)."""
        p = np.asarray(points_mm, dtype=float)
        return p[..., 2] - (self.slope_x * p[..., 0] + self.slope_y * p[..., 1] + self.offset_mm)


def fit_floor_plane(paw_mm: np.ndarray, low_fraction: float = 0.2, min_points: int = 30) -> FloorPlane | None:
    """(T, P, 3) paw positions -> the floor plane under them, or None with too few points.

    Paws spend about half their time on the floor; the lowest `low_fraction` of each paw's samples,
    taken per 100 mm cell along x and y so a tilted floor still contributes everywhere, are floor
    contacts. A least-squares plane is refitted twice without points beyond 3 robust sigmas.
    """
    pts = np.asarray(paw_mm, dtype=float).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if pts.shape[0] < min_points:
        return None
    cell = np.floor(pts[:, :2] / 100.0).astype(np.int64)
    key = (cell[:, 0] - cell[:, 0].min()) * (cell[:, 1].max() - cell[:, 1].min() + 1) + (cell[:, 1] - cell[:, 1].min())
    order = np.lexsort((pts[:, 2], key))
    key_sorted = key[order]
    starts = np.flatnonzero(np.r_[True, key_sorted[1:] != key_sorted[:-1]])
    counts = np.diff(np.r_[starts, key_sorted.size])
    rank = np.arange(key_sorted.size) - np.repeat(starts, counts)
    keep = rank < np.maximum(1, np.ceil(low_fraction * np.repeat(counts, counts)))
    low = pts[order[keep]]
    if low.shape[0] < min_points:
        return None
    inliers = np.ones(low.shape[0], dtype=bool)
    coef = np.zeros(3)
    for _ in range(3):
        a = np.c_[low[inliers, 0], low[inliers, 1], np.ones(int(inliers.sum()))]
        coef, *_ = np.linalg.lstsq(a, low[inliers, 2], rcond=None)
        resid = low[:, 2] - (coef[0] * low[:, 0] + coef[1] * low[:, 1] + coef[2])
        sigma = 1.4826 * np.median(np.abs(resid[inliers] - np.median(resid[inliers]))) + 1e-6
        new = np.abs(resid - np.median(resid[inliers])) <= 3.0 * sigma + 0.5
        if new.sum() < min_points or np.array_equal(new, inliers):
            break
        inliers = new
    resid = low[inliers, 2] - (coef[0] * low[inliers, 0] + coef[1] * low[inliers, 1] + coef[2])
    tilt = float(np.degrees(np.arctan(np.hypot(coef[0], coef[1]))))
    return FloorPlane(float(coef[0]), float(coef[1]), float(coef[2]), tilt, float(np.sqrt(np.mean(resid**2))),
                      int(inliers.sum()))


def session_quality(session: PoseSession) -> dict:
    """Per-keypoint validity, gap filling, reprojection error and cameras; and the floor fit.

    Returns a JSON-ready dict: {"n_frames", "duration_s", "frame_rate_hz", "dropped_frame_fraction",
    "keypoints": {name: {...}}, "floor": {...} | None}.
    """
    kp = session.keypoints_mm
    valid = np.all(np.isfinite(kp), axis=2)  # (T, K)
    out: dict = {
        "n_frames": session.n_frames,
        "duration_s": session.duration_s,
        "frame_rate_hz": 1.0 / session.frame_period_s if session.n_frames > 1 else float("nan"),
    }
    if session.n_frames > 2:
        period = session.frame_period_s
        gaps = np.diff(session.times_s) / period
        # a gap of 2 periods is one missing frame
        missing = np.sum(np.clip(np.round(gaps) - 1, 0, None))
        out["dropped_frame_fraction"] = float(missing / (session.n_frames + missing))
    else:
        out["dropped_frame_fraction"] = 0.0
    per: dict = {}
    for k, name in enumerate(session.keypoint_names):
        entry = {"valid_fraction": float(valid[:, k].mean()) if session.n_frames else 0.0}
        if session.filled is not None:
            filled = session.filled[:, k] & valid[:, k]
            entry["filled_fraction"] = float(filled.mean()) if session.n_frames else 0.0
            entry["triangulated_fraction"] = float((valid[:, k] & ~session.filled[:, k]).mean())
        if session.error_px is not None:
            e = session.error_px[:, k]
            e = e[np.isfinite(e)]
            entry["reprojection_error_px_median"] = float(np.median(e)) if e.size else None
            entry["reprojection_error_px_p95"] = float(np.percentile(e, 95)) if e.size else None
        if session.ncams is not None:
            c = session.ncams[:, k]
            c = c[np.isfinite(c)] if np.issubdtype(np.asarray(c).dtype, np.floating) else c
            entry["ncams_mean"] = float(np.mean(c)) if np.size(c) else None
        per[name] = entry
    out["keypoints"] = per
    paws = [p for p in PAWS if session.has(p)]
    out["paw_valid_fraction"] = {p: per[p]["valid_fraction"] for p in paws}
    plane = fit_floor_plane(kp[:, [session.index(p) for p in paws], :]) if paws else None
    out["floor"] = None if plane is None else {
        "slope_x": plane.slope_x, "slope_y": plane.slope_y, "offset_mm": plane.offset_mm,
        "tilt_deg": plane.tilt_deg, "rms_mm": plane.rms_mm, "n_points": plane.n_points,
    }
    return out


def floor_from_quality(quality: dict) -> FloorPlane | None:
    f = quality.get("floor")
    if not f:
        return None
    return FloorPlane(f["slope_x"], f["slope_y"], f["offset_mm"], f["tilt_deg"], f["rms_mm"], f["n_points"])


def live_event_agreement(session: PoseSession, touchdown_s: dict[str, np.ndarray], tolerance_frames: float = 2.0) -> dict | None:
    """How well the live paw events agreed with the offline contacts, per paw.

    Args:
        session: with `live_touchdowns` (None: returns None).
        touchdown_s: paw -> (M,) offline touchdown times.
        tolerance_frames: a live touchdown within this many frame periods of an offline one matches it.

    Returns:
        paw -> {"n_live", "n_offline", "matched_fraction" (of offline touchdowns), "median_offset_ms"
        (live minus offline, of the matched ones: the live detector's delay)}.
    """
    if session.live_touchdowns is None:
        return None
    tol = tolerance_frames * session.frame_period_s
    out = {}
    for paw, offline in touchdown_s.items():
        live = np.asarray(session.live_touchdowns.get(paw, np.zeros(0)), dtype=float)
        entry = {"n_live": int(live.size), "n_offline": int(offline.size), "matched_fraction": None,
                 "median_offset_ms": None}
        if live.size and offline.size:
            j = np.clip(np.searchsorted(live, offline), 1, max(live.size - 1, 1)) if live.size > 1 else np.zeros(offline.size, int)
            if live.size > 1:
                j = np.where(np.abs(live[j - 1] - offline) <= np.abs(live[j] - offline), j - 1, j)
            d = live[j] - offline
            ok = np.abs(d) <= tol
            entry["matched_fraction"] = float(ok.mean())
            entry["median_offset_ms"] = float(np.median(d[ok]) * 1000.0) if ok.any() else None
        out[paw] = entry
    return out
