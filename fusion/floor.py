"""Floor points: where a keypoint seen by ONE camera would be if it stood on the floor.

A paw that only one camera sees cannot be triangulated, but the question the events stage asks of a
paw is whether it stands on the floor -- and a planted paw's height is known (the paw keypoint's
height above the floor in stance, a few mm). Under that hypothesis one view suffices: the camera
ray through the 2D point meets the plane z = height at one point. The hypothesis is tested over
time, not assumed: a planted paw's floor point stands still, a swinging paw's races along the
floor (see `events.paw`, which only uses these points through its speed test and holds their
decisions longer, because motion along the camera's own ray does not show).

On the synthetic rig's four corner cameras a paw is seen by two cameras only about half of the
time (the body hides the far side, the corridor ends are in one camera's view only), but by at
least one camera in every stance; floor points are what lets the events stage see those steps.
"""
from __future__ import annotations

import numpy as np

from fusion.triangulate import RigGeometry, undistort


def floor_points(
    rig: RigGeometry,
    points_px: np.ndarray,
    usable: np.ndarray,
    height_mm: float,
) -> np.ndarray:
    """(C, N, 2) image points, px + (C, N) usable views -> (N, 3) floor points, mm.

    Row n is where camera c's ray through points_px[c, n] meets the plane z = height_mm, for the
    keypoints with exactly one usable view c; NaN for every other keypoint and where the ray does
    not reach that plane in front of the camera (a camera looking up, or a point above the horizon).
    """
    pts = np.asarray(points_px, np.float64)
    use = np.asarray(usable, bool)
    if pts.ndim != 3 or pts.shape[2] != 2 or use.shape != pts.shape[:2]:
        raise ValueError(f"points_px (C, N, 2) and usable (C, N): expected matching shapes, got {pts.shape} and {use.shape}")
    use = use & np.isfinite(pts).all(axis=-1)
    out = np.full((pts.shape[1], 3), np.nan)
    single = use.sum(axis=0) == 1
    if not single.any():
        return out
    normalised = undistort(rig, np.where(use[..., None], pts, np.nan))  # (C, N, 2)
    for n in np.flatnonzero(single):
        c = int(np.flatnonzero(use[:, n])[0])
        rot, t = rig.extrinsic[c, :, :3], rig.extrinsic[c, :, 3]
        centre = -rot.T @ t
        ray = rot.T @ np.array([normalised[c, n, 0], normalised[c, n, 1], 1.0])
        if abs(ray[2]) < 1e-12:
            continue
        s = (float(height_mm) - centre[2]) / ray[2]
        if s > 0:
            out[n] = centre + s * ray
    return out
