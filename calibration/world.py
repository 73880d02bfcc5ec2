"""World frame of a calibration: put it on the floor, and compare calibrations that live in different frames.

A calibration straight out of the bundle adjustment lives in the first camera's frame. ratrig's world
frame is millimetres with x along the corridor, y across it and z up, the floor at z = 0. The user
defines it by one frame set in which the board lies face up on the floor: board origin = world origin,
board x-axis = corridor axis (see `calibration.board` for the board frame).

All functions are pure: they return new `Calibration` objects.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from calibration.board import BoardSpec
from ratrig.camera import Calibration, Camera

# Board frame -> world frame for a board lying face up: the board's z points into the floor.
FLOOR_FLIP = np.diag([1.0, -1.0, -1.0])


class WorldFrameError(ValueError):
    """The floor frame cannot define a world frame (board not seen, not flat...)."""


def transform_calibration(
    calib: Calibration, rotation: np.ndarray, translation_mm: np.ndarray, scale: float = 1.0
) -> Calibration:
    """Re-express `calib` in a new world frame related to the old one by X_old = scale * R @ X_new + t.

    Images do not change: every camera projects each physical point to the same pixel as before.

    Args:
        rotation: (3, 3) rotation R.
        translation_mm: (3,) t.
        scale: s > 0; 1 for a rigid change of frame.
    """
    import cv2

    r = np.asarray(rotation, np.float64)
    t = np.asarray(translation_mm, np.float64).reshape(3)
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise ValueError("rotation must be a proper rotation matrix (orthonormal, det +1)")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    cams = []
    for c in calib.cameras:
        rc = c.rotation_matrix
        # X_cam = Rc X_old + tc = Rc (s R X_new + t) + tc, and a camera frame may be scaled freely.
        r_new = rc @ r
        t_new = (rc @ t + c.tvec) / scale
        cams.append(
            Camera(c.name, c.size, c.matrix.copy(), c.dist.copy(), cv2.Rodrigues(r_new)[0].ravel(), t_new)
        )
    return Calibration(tuple(cams), dict(calib.metadata))


def board_pose_in_camera(
    camera: Camera, spec: BoardSpec, ids: np.ndarray, corners_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Board pose from one view: (R, t) with X_cam = R @ X_board + t (mm), and the RMS residual in px.

    Args:
        ids: (K,) corner ids; corners_px: (K, 2) detected corners.
    """
    import cv2

    obj = spec.object_points_mm()[np.asarray(ids).ravel()]
    img = np.asarray(corners_px, np.float64).reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(obj, img, camera.matrix, camera.dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise WorldFrameError(f"camera {camera.name!r}: cannot estimate the board pose")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, camera.matrix, camera.dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, camera.matrix, camera.dist)
    rms = float(np.sqrt(np.mean(np.sum((proj - img) ** 2, axis=2))))
    return cv2.Rodrigues(rvec)[0], tvec.ravel(), rms


def mean_rotation(rotations: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(N, 3, 3) rotations -> (3, 3) their chordal L2 mean (projection of the weighted sum onto SO(3))."""
    rs = np.asarray(rotations, np.float64)
    w = np.ones(len(rs)) if weights is None else np.asarray(weights, np.float64)
    m = np.einsum("n,nij->ij", w, rs)
    u, _, vt = np.linalg.svd(m)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ d @ vt


def board_pose_in_world(
    calib: Calibration,
    spec: BoardSpec,
    views: Mapping[str, tuple[np.ndarray, np.ndarray]],
    min_corners: int = 12,
) -> tuple[np.ndarray, np.ndarray]:
    """Board pose in the calibration's current world frame from one frame set: X_world = R @ X_board + t.

    Every camera that saw at least `min_corners` corners gives an estimate; they are averaged with
    their corner counts as weights (rotation: chordal mean; translation: weighted mean).

    Args:
        views: camera name -> (ids (K,), corners (K, 2) px) of the board in that camera.
    """
    rots, trans, weights = [], [], []
    for name, (ids, corners) in views.items():
        ids = np.asarray(ids).ravel()
        if len(ids) < min_corners:
            continue
        cam = calib.camera(name)
        r_cb, t_cb, _ = board_pose_in_camera(cam, spec, ids, corners)
        rc = cam.rotation_matrix
        # X_world = Rc^T (X_cam - tc) = Rc^T (R_cb X_board + t_cb - tc)
        rots.append(rc.T @ r_cb)
        trans.append(rc.T @ (t_cb - cam.tvec))
        weights.append(len(ids))
    if not rots:
        raise WorldFrameError(
            f"no camera saw at least {min_corners} board corners in the floor frame; "
            "pick a frame where the board lies flat and fully visible to at least one camera"
        )
    w = np.asarray(weights, np.float64)
    return mean_rotation(np.array(rots), w), np.average(np.array(trans), axis=0, weights=w)


def set_floor(
    calib: Calibration,
    spec: BoardSpec,
    views: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> Calibration:
    """New calibration whose world frame is the board lying on the floor in `views`.

    World origin = board origin, x = board x-axis (corridor axis), z up (out of the printed side),
    millimetres. So after this, z is height above the floor.
    """
    r_bw, t_bw = board_pose_in_world(calib, spec, views)
    # X_old = R_bw X_board and X_board = FLOOR_FLIP X_new (FLOOR_FLIP is its own inverse).
    return transform_calibration(calib, r_bw @ FLOOR_FLIP, t_bw)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(N, 3) src, (N, 3) dst -> (s, R, t) minimising |dst - (s R src + t)|^2 (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    var_s = np.mean(np.sum(xs**2, axis=1))
    s = float(np.trace(np.diag(sig) @ d) / var_s)
    t = mu_d - s * r @ mu_s
    return s, r, t


def align_to(calib: Calibration, reference: Calibration, with_scale: bool = True) -> Calibration:
    """`calib` moved into `reference`'s world frame by the similarity that best overlays the cameras.

    Each camera contributes its centre and points along its three axes (a quarter of the rig's size
    long, measured in each calibration's own units so a scale difference stays a pure similarity),
    so orientations count too and two cameras suffice. Cameras are matched by name.
    """

    def frame_points(c: Calibration, names: Sequence[str]) -> np.ndarray:
        centres = np.array([c.camera(n).center_mm for n in names])
        size = float(np.mean(np.linalg.norm(centres - centres.mean(0), axis=1))) or 100.0
        pts = []
        for n in names:
            cam = c.camera(n)
            pts.append(cam.center_mm)
            pts.extend(cam.center_mm + 0.25 * size * cam.rotation_matrix[k] for k in range(3))
        return np.array(pts)

    names = calib.names
    s, r, t = similarity_transform(frame_points(reference, names), frame_points(calib, names))
    if not with_scale:
        s = 1.0
    # X_calib = s R X_ref + t: exactly transform_calibration's convention with X_old = X_calib.
    return transform_calibration(calib, r, t, s)


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Angle of the rotation between two (3, 3) rotations, degrees."""
    c = (np.trace(np.asarray(r_a) @ np.asarray(r_b).T) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def relative_pose(cam_a: Camera, cam_b: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Pose of camera b relative to a: X_b = R @ X_a + t (mm), as a stereo calibration states it."""
    ra, rb = cam_a.rotation_matrix, cam_b.rotation_matrix
    r = rb @ ra.T
    return r, cam_b.tvec - r @ cam_a.tvec
