"""Multi-camera calibration from board detections: aniposelib's bundle adjustment, made repeatable and checked.

What this adds around `aniposelib.CameraGroup.calibrate_rows`:

- Determinism: aniposelib draws random subsets (point resampling, the camera used to start each board
  pose). Python's and NumPy's global generators are seeded right before each attempt, so the same
  detections and seed give the same calibration, bit for bit.
- Intrinsic start: each camera's focal length, principal point and k1 are first estimated alone
  (`cv2.calibrateCamera` on its board views, fixed aspect ratio, k1 only - the model aniposelib
  refines), instead of aniposelib's principal-point-at-centre guess.
- Degeneracy checks: non-finite parameters, absurd focal lengths or distortion, cameras collapsed onto
  each other, a bundle-adjusted focal length far from the single-camera estimate, or a median
  reprojection error above the threshold. A failing attempt is retried with the next seed; if every
  attempt fails the calibration is refused (CalibrationFailed) and nothing is written.
- Opposed cameras: extrinsics start from aniposelib's camera graph, which chains camera pairs through
  cameras that saw the board together; two cameras that never shared a view are calibrated through
  the others. Only a camera graph that falls apart is an error.
"""
from __future__ import annotations

import contextlib
import copy
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import numpy as np

from calibration.board import BoardSpec
from calibration.detect import CameraDetections
from ratrig.camera import Calibration, Camera


class CalibrationFailed(RuntimeError):
    """The recordings cannot give a trustworthy calibration. `problems` holds one sentence per cause + advice."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("calibration failed:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class SolveOptions:
    """Knobs of `calibrate_detections`.

    Attributes:
        seed: seed of the first attempt; attempt k uses seed + k.
        retries: further attempts after a degenerate result.
        max_error_px: a median reprojection error above this makes an attempt degenerate.
        min_board_frames: a camera must see the board in at least this many frames.
        min_shared_frames: frames two cameras must share for the pair to count as linked.
        max_frame_sets: at most this many frame sets go into the bundle adjustment (evenly spaced).
        fix_principal_point: keep the principal point at the image centre.
        aniposelib_bundle_adjust: also run aniposelib's own bundle adjustment (f and k1 only, minutes on
            a loaded 2-core machine) between its camera-graph start and the final joint refinement.
    """

    seed: int = 0
    retries: int = 3
    max_error_px: float = 1.0
    min_board_frames: int = 10
    min_shared_frames: int = 3
    max_frame_sets: int = 150
    fix_principal_point: bool = False
    aniposelib_bundle_adjust: bool = False


@dataclass(frozen=True)
class SolveResult:
    """A calibration that passed the checks, with what it took to get it.

    Attributes:
        calibration: cameras in the order of the detections, world frame = first camera (until moved).
        seed: the seed of the accepted attempt.
        rejected: one line per rejected attempt, saying why.
        frames_used: frame indices that went into the bundle adjustment.
        initial_focal_px: single-camera focal estimates, by camera name.
        rows: per camera, the detection rows of `frames_used` as solved (checkerboard orders harmonised).
    """

    calibration: Calibration
    seed: int
    rejected: tuple[str, ...] = ()
    frames_used: tuple[int, ...] = ()
    initial_focal_px: dict[str, float] = field(default_factory=dict)
    rows: tuple[list[dict[str, Any]], ...] = ()  # per camera, the rows used (checkerboards: re-ordered)


# -- preflight ----------------------------------------------------------------------------------------


def shared_frames(detections: Sequence[CameraDetections]) -> dict[tuple[str, str], int]:
    """Frames in which both cameras of each pair saw the board, keyed by (name_a, name_b) in input order."""
    frames = {d.name: {r["framenum"] for r in d.rows} for d in detections}
    return {(a.name, b.name): len(frames[a.name] & frames[b.name]) for a, b in combinations(detections, 2)}


def connected_groups(names: Sequence[str], linked: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Camera names grouped into connected components of the `linked` pairs."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for a, b in linked:
        parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(root(n), []).append(n)
    return list(groups.values())


def board_mismatch_problems(detections: Sequence[CameraDetections], spec: BoardSpec) -> list[str]:
    """One sentence per camera that keeps seeing ArUco ids the board file's board does not have."""
    problems = []
    for d in detections:
        ids = d.foreign_marker_ids
        if ids:
            problems.append(
                f"camera {d.name!r} ({d.path}) sees ArUco markers with ids {ids[:8]}{'...' if len(ids) > 8 else ''}, "
                f"but the board file describes {spec.describe()} with marker ids 0-{spec.n_markers - 1}: "
                "the board file does not match the printed board (check board_size and the dictionary)."
            )
    return problems


def preflight(detections: Sequence[CameraDetections], spec: BoardSpec, options: SolveOptions) -> None:
    """Refuse recordings that cannot calibrate, with advice. Raises CalibrationFailed."""
    problems = board_mismatch_problems(detections, spec)
    for d in detections:
        if d.n_board_frames < options.min_board_frames:
            problems.append(
                f"camera {d.name!r} saw the board in only {d.n_board_frames} of {d.n_frames} frames "
                f"({d.path}); need at least {options.min_board_frames}. Record again and move the board "
                "slowly through this camera's whole view, tilting it, close and far."
            )
    if problems:
        raise CalibrationFailed(problems)
    pairs = shared_frames(detections)
    linked = [p for p, n in pairs.items() if n >= options.min_shared_frames]
    groups = connected_groups([d.name for d in detections], linked)
    if len(groups) > 1:
        raise CalibrationFailed(
            [
                "the cameras fall into groups that never saw the board at the same time: "
                + " | ".join(", ".join(g) for g in groups)
                + f" (pairs need at least {options.min_shared_frames} shared frames; shared frames per pair: "
                + ", ".join(f"{a}-{b}: {n}" for (a, b), n in pairs.items())
                + "). Record again holding the board where cameras of different groups both see it "
                "(e.g. flat, low in the corridor, between them)."
            ]
        )


# -- intrinsics ---------------------------------------------------------------------------------------


def _planar_views(
    rows: Sequence[dict[str, Any]], spec: BoardSpec, max_views: int = 40
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Board views usable for single-camera calibration: >= 9 corners spanning >= 2 rows and columns."""
    objp_all = spec.object_points_mm().astype(np.float32)
    nx, _ = spec.corners_xy
    obj, img = [], []
    for r in rows:
        ids = r["ids"].ravel()
        if len(ids) < 9 or len(np.unique(ids % nx)) < 2 or len(np.unique(ids // nx)) < 2:
            continue
        obj.append(objp_all[ids])
        img.append(r["corners"].reshape(-1, 1, 2).astype(np.float32))
    if len(obj) > max_views:
        keep = np.linspace(0, len(obj) - 1, max_views).round().astype(int)
        obj, img = [obj[i] for i in keep], [img[i] for i in keep]
    return obj, img


def initial_intrinsics(
    rows: Sequence[dict[str, Any]], size: tuple[int, int], spec: BoardSpec, fix_principal_point: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One camera's board views -> (K (3, 3), dist (5,)): fx = fy, principal point, k1, k2, p1, p2.

    Falls back to OpenCV's closed-form guess (centre principal point, no distortion) when the
    single-camera fit is implausible.
    """
    import cv2

    obj, img = _planar_views(rows, spec)
    w, h = size
    if len(obj) < 3:
        raise CalibrationFailed(
            [f"only {len(obj)} board views with enough corners to estimate a camera's focal length; need 3"]
        )
    k0 = cv2.initCameraMatrix2D(obj, img, (w, h), aspectRatio=1.0)
    k0[0, 2], k0[1, 2] = (w - 1) / 2.0, (h - 1) / 2.0
    flags = cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K3
    if fix_principal_point:
        flags |= cv2.CALIB_FIX_PRINCIPAL_POINT
    try:
        _, k, dist, _, _ = cv2.calibrateCamera(obj, img, (w, h), k0.copy(), np.zeros(5), flags=flags)
    except cv2.error:
        return k0, np.zeros(5)
    dist = np.asarray(dist, np.float64).ravel()[:5]
    plausible = (
        np.all(np.isfinite(k))
        and 0.2 * w < k[0, 0] < 20 * w
        and abs(k[0, 2] - w / 2) < 0.2 * w
        and abs(k[1, 2] - h / 2) < 0.2 * h
        and abs(dist[0]) < 1.5
        and abs(dist[1]) < 5.0
        and np.all(np.abs(dist[2:4]) < 0.05)
    )
    if not plausible:
        return k0, np.zeros(5)
    return np.asarray(k, np.float64), np.array([dist[0], dist[1], dist[2], dist[3], 0.0], np.float64)


# -- robust extrinsic start ---------------------------------------------------------------------------


def _board_poses_per_camera(
    detections: Sequence[CameraDetections],
    frames: set[int],
    intrinsics: dict[str, tuple[np.ndarray, np.ndarray]],
    spec: BoardSpec,
) -> list[dict[int, np.ndarray]]:
    """Per camera: frame -> (4, 4) board -> camera transform (IPPE + refinement, full lens model)."""
    import cv2

    objp = spec.object_points_mm()
    out = []
    for d in detections:
        k, dist = intrinsics[d.name]
        poses = {}
        for r in d.rows:
            if r["framenum"] not in frames or r["ids"].size < 8:
                continue
            obj = objp[r["ids"].ravel()]
            img = r["corners"].reshape(-1, 1, 2).astype(np.float64)
            ok, rvec, tvec = cv2.solvePnP(obj, img, k, dist, flags=cv2.SOLVEPNP_IPPE)
            if not ok:
                continue
            rvec, tvec = cv2.solvePnPRefineLM(obj, img, k, dist, rvec, tvec)
            m = np.eye(4)
            m[:3, :3] = cv2.Rodrigues(rvec)[0]
            m[:3, 3] = tvec.ravel()
            poses[int(r["framenum"])] = m
        out.append(poses)
    return out


def _consensus_transform(transforms: Sequence[np.ndarray], angle_deg: float = 3.0, rel_dist: float = 0.05) -> tuple[np.ndarray, int]:
    """(N, 4, 4) estimates of one rigid transform -> (their consensus (4, 4), number of inliers).

    Single-view board poses are sometimes flipped (the planar pose ambiguity); taking the estimate
    that most others agree with, then averaging its inliers, ignores those instead of averaging them in.
    """
    from calibration.world import mean_rotation, rotation_angle_deg

    ts = np.asarray(transforms)
    best, best_in = 0, np.zeros(len(ts), bool)
    for i, a in enumerate(ts):
        scale = max(np.linalg.norm(a[:3, 3]), 1.0)
        inl = np.array(
            [
                rotation_angle_deg(a[:3, :3], b[:3, :3]) < angle_deg
                and np.linalg.norm(a[:3, 3] - b[:3, 3]) < rel_dist * scale
                for b in ts
            ]
        )
        if inl.sum() > best_in.sum():
            best, best_in = i, inl
    m = np.eye(4)
    m[:3, :3] = mean_rotation(ts[best_in, :3, :3])
    m[:3, 3] = ts[best_in, :3, 3].mean(axis=0)
    return m, int(best_in.sum())


def consensus_extrinsics(
    detections: Sequence[CameraDetections],
    frames: set[int],
    intrinsics: dict[str, tuple[np.ndarray, np.ndarray]],
    spec: BoardSpec,
) -> list[np.ndarray]:
    """(4, 4) world -> camera transform of each camera, world = camera 0, from shared board views.

    Like aniposelib's camera graph (a maximum spanning tree over camera pairs weighted by shared
    views, chained from camera 0), so cameras that never shared a view are linked through others;
    but each pair's transform is the consensus of its views rather than a mean of all of them.
    """
    poses = _board_poses_per_camera(detections, frames, intrinsics, spec)
    n = len(detections)
    pair: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
    for i, j in combinations(range(n), 2):
        common = sorted(set(poses[i]) & set(poses[j]))
        if not common:
            continue
        # camera i -> camera j through the board: T_j_b @ inv(T_i_b)
        ts = [poses[j][f] @ np.linalg.inv(poses[i][f]) for f in common]
        pair[(i, j)] = _consensus_transform(ts)
    known = {0: np.eye(4)}
    while len(known) < n:
        best = None
        for (i, j), (t, w) in pair.items():
            if (i in known) != (j in known) and (best is None or w > best[2]):
                best = (i, j, w, t)
        if best is None:
            missing = [detections[k].name for k in range(n) if k not in known]
            raise CalibrationFailed([f"cameras {missing} share no board view with the others (directly or via others)"])
        i, j, _, t = best
        if i in known:
            known[j] = t @ known[i]
        else:
            known[i] = np.linalg.inv(t) @ known[j]
    return [known[k] for k in range(n)]


def harmonise_checkerboard_rows(
    rows_per_camera: Sequence[Sequence[dict[str, Any]]],
    extrinsics: Sequence[np.ndarray],
    intrinsics: Sequence[tuple[np.ndarray, np.ndarray]],
    spec: BoardSpec,
) -> list[list[dict[str, Any]]]:
    """Checkerboard rows with the corner order of each frame made the same in every camera.

    A checkerboard turned by 180 degrees looks the same, so a camera may number its corners from
    the other end (no image rule fixes it for a board seen sideways). Within each frame, the view
    with most corners is the reference: its board pose, moved into each other camera with the start
    extrinsics, predicts that camera's corners; a view whose reversed order fits the prediction
    better is reversed. ChArUco rows are returned unchanged.
    """
    import cv2

    out = [[dict(r) for r in rows] for rows in rows_per_camera]
    if spec.board_type != "checkerboard":
        return out
    objp = spec.object_points_mm()
    by_frame: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for c, rows in enumerate(out):
        for r in rows:
            by_frame.setdefault(int(r["framenum"]), []).append((c, r))
    for views in by_frame.values():
        if len(views) < 2:
            continue
        c0, r0 = views[0]
        k0, d0 = intrinsics[c0]
        ok, rvec, tvec = cv2.solvePnP(objp, r0["corners"].reshape(-1, 1, 2).astype(np.float64), k0, d0)
        if not ok:
            continue
        m_b0 = np.eye(4)
        m_b0[:3, :3], m_b0[:3, 3] = cv2.Rodrigues(rvec)[0], tvec.ravel()
        for c, r in views[1:]:
            m = extrinsics[c] @ np.linalg.inv(extrinsics[c0]) @ m_b0  # board -> camera c
            k, d = intrinsics[c]
            pred, _ = cv2.projectPoints(objp, cv2.Rodrigues(m[:3, :3])[0], m[:3, 3], k, d)
            pred = pred.reshape(-1, 2)
            seen = r["corners"].reshape(-1, 2)
            if np.linalg.norm(seen[::-1] - pred, axis=1).mean() < np.linalg.norm(seen - pred, axis=1).mean():
                r["corners"] = np.ascontiguousarray(r["corners"][::-1])
                r["filled"] = np.ascontiguousarray(r["filled"][::-1])
    return out


# -- the solve ----------------------------------------------------------------------------------------


def select_frames(detections: Sequence[CameraDetections], max_frame_sets: int) -> list[int]:
    """Frame indices to use: all frames where any camera saw the board, thinned evenly to `max_frame_sets`.

    Frames seen by two or more cameras are kept first: only they tie the cameras together.
    """
    counts: dict[int, int] = {}
    for d in detections:
        for r in d.rows:
            counts[r["framenum"]] = counts.get(r["framenum"], 0) + 1
    multi = sorted(f for f, n in counts.items() if n >= 2)
    single = sorted(f for f, n in counts.items() if n < 2)

    def thin(frames: list[int], n: int) -> list[int]:
        if len(frames) <= n:
            return frames
        return [frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]

    chosen = thin(multi, max_frame_sets)
    chosen += thin(single, max(0, max_frame_sets - len(chosen)) // 2)
    return sorted(set(chosen))


def reprojection_errors(cgroup: Any, rows_per_camera: Sequence[Sequence[dict[str, Any]]], board: Any) -> np.ndarray:
    """(C, P) reprojection error in px of every corner seen by >= 2 cameras; NaN where a camera did not see it.

    Points are triangulated from all cameras that saw them with the given calibration.
    """
    from aniposelib.boards import extract_points, merge_rows

    rows = [[dict(r, rvec=np.zeros(3), tvec=np.zeros(3)) for r in cam_rows] for cam_rows in rows_per_camera]
    merged = merge_rows(rows, cam_names=list(range(len(rows))))
    imgp, _ = extract_points(merged, board, cam_names=list(range(len(rows))), min_cameras=2)
    if imgp.shape[1] == 0:
        return np.full((len(rows), 0), np.nan)
    with contextlib.redirect_stdout(io.StringIO()):
        p3ds = cgroup.triangulate(imgp)
    err = cgroup.reprojection_error(p3ds, imgp, mean=False)
    return np.linalg.norm(err, axis=2)


def to_calibration(cgroup: Any, metadata: dict[str, Any] | None = None) -> Calibration:
    """aniposelib CameraGroup -> ratrig Calibration."""
    cams = []
    for c in cgroup.cameras:
        dist = np.zeros(5)
        d = np.asarray(c.get_distortions(), np.float64).ravel()
        dist[: min(5, d.size)] = d[:5]
        cams.append(
            Camera(
                name=c.get_name(),
                size=(int(c.get_size()[0]), int(c.get_size()[1])),
                matrix=np.asarray(c.get_camera_matrix(), np.float64).copy(),
                dist=dist,
                rvec=np.asarray(c.get_rotation(), np.float64).ravel().copy(),
                tvec=np.asarray(c.get_translation(), np.float64).ravel().copy(),
            )
        )
    return Calibration(tuple(cams), dict(metadata or {}))


def to_camera_group(calib: Calibration) -> Any:
    """ratrig Calibration -> aniposelib CameraGroup (for its triangulation and error functions)."""
    from aniposelib.cameras import CameraGroup

    return CameraGroup.from_dicts([c.to_dict() for c in calib.cameras])


def degeneracy_problems(
    calib: Calibration,
    errors_px: np.ndarray,
    initial_focal_px: dict[str, float],
    spec: BoardSpec,
    max_error_px: float,
) -> list[str]:
    """Why a calibration result cannot be trusted (empty list = it passes).

    Args:
        errors_px: (C, P) reprojection errors from `reprojection_errors`.
    """
    problems = []
    for cam in calib.cameras:
        params = np.concatenate([cam.matrix.ravel(), cam.dist, cam.rvec, cam.tvec])
        if not np.all(np.isfinite(params)):
            problems.append(f"camera {cam.name!r} has non-finite parameters")
            continue
        w = cam.size[0]
        f = float(cam.matrix[0, 0])
        if not 0.2 * w < f < 20 * w:
            problems.append(f"camera {cam.name!r} focal length {f:.1f} px is absurd for a {w} px wide image")
        f0 = initial_focal_px.get(cam.name)
        if f0 and abs(f / f0 - 1) > 0.25:
            problems.append(
                f"camera {cam.name!r} focal length moved from {f0:.1f} px (single-camera fit) to {f:.1f} px "
                "in the bundle adjustment"
            )
        if abs(cam.dist[0]) > 2.0:
            problems.append(f"camera {cam.name!r} radial distortion k1 = {cam.dist[0]:.2f} is absurd")
    centres = np.array([c.center_mm for c in calib.cameras])
    if np.all(np.isfinite(centres)):
        for (i, a), (j, b) in combinations(enumerate(calib.cameras), 2):
            d = float(np.linalg.norm(centres[i] - centres[j]))
            if d < spec.square_mm:
                problems.append(
                    f"cameras {a.name!r} and {b.name!r} collapsed onto each other ({d:.1f} mm apart)"
                )
    finite = errors_px[np.isfinite(errors_px)]
    if finite.size == 0:
        problems.append("no board corner was seen by two cameras; nothing constrains the camera poses")
    else:
        med = float(np.median(finite))
        if not np.isfinite(med) or med > max_error_px:
            problems.append(f"median reprojection error {med:.2f} px is above the {max_error_px:g} px threshold")
    return problems


# -- final refinement ---------------------------------------------------------------------------------

N_CAM_PARAMS = 13  # rvec 3, tvec 3, f, cx, cy, k1, k2, p1, p2


def rodrigues_batch(rvecs: np.ndarray) -> np.ndarray:
    """(N, 3) rotation vectors -> (N, 3, 3) rotation matrices."""
    rvecs = np.asarray(rvecs, np.float64).reshape(-1, 3)
    theta = np.linalg.norm(rvecs, axis=1)
    small = theta < 1e-12
    axis = rvecs / np.where(small, 1.0, theta)[:, None]
    k = np.zeros((len(rvecs), 3, 3))
    k[:, 0, 1], k[:, 0, 2] = -axis[:, 2], axis[:, 1]
    k[:, 1, 0], k[:, 1, 2] = axis[:, 2], -axis[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -axis[:, 1], axis[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


@dataclass(frozen=True)
class Observations:
    """Board corners seen, flattened over cameras and frames: M observations."""

    camera: np.ndarray  # (M,) camera index
    frame: np.ndarray  # (M,) index into `frame_ids`
    corner: np.ndarray  # (M,) board corner id
    uv_px: np.ndarray  # (M, 2)
    frame_ids: np.ndarray  # (F,) frame numbers of the recordings


def gather_observations(rows_per_camera: Sequence[Sequence[dict[str, Any]]], frames: set[int]) -> Observations:
    """Detection rows of C cameras -> flat observations of the frames in `frames`."""
    frame_ids = np.array(sorted({int(r["framenum"]) for rows in rows_per_camera for r in rows if r["framenum"] in frames}))
    index = {f: i for i, f in enumerate(frame_ids.tolist())}
    cam, fr, cor, uv = [], [], [], []
    for c, rows in enumerate(rows_per_camera):
        for r in rows:
            if r["framenum"] not in frames:
                continue
            ids = r["ids"].ravel()
            cam.append(np.full(len(ids), c))
            fr.append(np.full(len(ids), index[int(r["framenum"])]))
            cor.append(ids)
            uv.append(r["corners"].reshape(-1, 2))
    return Observations(
        np.concatenate(cam).astype(np.int64),
        np.concatenate(fr).astype(np.int64),
        np.concatenate(cor).astype(np.int64),
        np.concatenate(uv).astype(np.float64),
        frame_ids,
    )


def _camera_params(cam: Camera) -> np.ndarray:
    k, d = cam.matrix, cam.dist
    f = (k[0, 0] + k[1, 1]) / 2
    return np.concatenate([cam.rvec, cam.tvec, [f, k[0, 2], k[1, 2], d[0], d[1], d[2], d[3]]])


def _camera_from_params(name: str, size: tuple[int, int], p: np.ndarray) -> Camera:
    k = np.array([[p[6], 0, p[7]], [0, p[6], p[8]], [0, 0, 1.0]])
    return Camera(name, size, k, np.array([p[9], p[10], p[11], p[12], 0.0]), p[0:3].copy(), p[3:6].copy())


def _initial_board_poses(calib: Calibration, obs: Observations, objp: np.ndarray) -> np.ndarray:
    """(F, 6) board -> world rvec, tvec per frame, from the camera that saw most corners of it."""
    import cv2

    poses = np.zeros((len(obs.frame_ids), 6))
    for f in range(len(obs.frame_ids)):
        sel_f = obs.frame == f
        cams, counts = np.unique(obs.camera[sel_f], return_counts=True)
        c = int(cams[np.argmax(counts)])
        sel = sel_f & (obs.camera == c)
        cam = calib.cameras[c]
        _, rvec, tvec = cv2.solvePnP(objp[obs.corner[sel]], obs.uv_px[sel].reshape(-1, 1, 2), cam.matrix, cam.dist)
        r_cb = cv2.Rodrigues(rvec)[0]
        rc = cam.rotation_matrix
        poses[f, :3] = cv2.Rodrigues(rc.T @ r_cb)[0].ravel()
        poses[f, 3:] = rc.T @ (tvec.ravel() - cam.tvec)
    return poses


def refine_calibration(
    calib: Calibration,
    obs: Observations,
    spec: BoardSpec,
    fix_principal_point: bool = False,
    outlier_px: float = 3.0,
) -> tuple[Calibration, np.ndarray, np.ndarray]:
    """Joint refinement of all cameras (f, cx, cy, k1, k2, p1, p2, pose) and every board pose.

    aniposelib's bundle adjustment fits one focal length and k1 per camera with the principal point
    fixed, against triangulated points loosely tied to the board; real lenses (and the synthetic rig)
    also have k2 and tangential terms. This step minimises the reprojection error of the known board
    corners directly, with a robust loss, then drops observations off by more than `outlier_px` (and
    5 times the median) and solves again. Camera 0 is held fixed to pin the world frame.

    Returns:
        (calibration, (F, 6) board -> world poses, (M,) residual norm per observation in px, NaN = dropped).
    """
    from scipy.optimize import least_squares
    from scipy.sparse import coo_matrix

    import cv2

    objp = spec.object_points_mm()
    n_cams = len(calib.cameras)
    cam_p = np.stack([_camera_params(c) for c in calib.cameras])
    board_p = _initial_board_poses(calib, obs, objp)
    n_frames = len(board_p)
    free = np.ones((n_cams, N_CAM_PARAMS), bool)
    free[0, :6] = False  # camera 0 defines the world frame
    if fix_principal_point:
        free[:, 7:9] = False
    by_cam = [np.flatnonzero(obs.camera == c) for c in range(n_cams)]

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cp = cam_p.copy()
        cp[free] = x[: free.sum()]
        return cp, x[free.sum():].reshape(n_frames, 6)

    def residuals(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        cp, bp = unpack(x)
        rf = rodrigues_batch(bp[:, :3])
        xw = np.einsum("mij,mj->mi", rf[obs.frame], objp[obs.corner]) + bp[obs.frame, 3:]
        out = np.empty((len(obs.camera), 2))
        for c, sel in enumerate(by_cam):
            p = cp[c]
            k = np.array([[p[6], 0, p[7]], [0, p[6], p[8]], [0, 0, 1.0]])
            proj, _ = cv2.projectPoints(xw[sel], p[0:3], p[3:6], k, np.array([p[9], p[10], p[11], p[12], 0.0]))
            out[sel] = proj.reshape(-1, 2) - obs.uv_px[sel]
        return out[keep].ravel()

    # Jacobian sparsity: a residual depends on its camera's free parameters and its frame's pose.
    col_of = -np.ones((n_cams, N_CAM_PARAMS), np.int64)
    col_of[free] = np.arange(free.sum())
    n_params = free.sum() + 6 * n_frames

    def sparsity(keep: np.ndarray) -> Any:
        idx = np.flatnonzero(keep)
        cols = np.hstack([col_of[obs.camera[idx]], free.sum() + 6 * obs.frame[idx, None] + np.arange(6)])
        rows = np.repeat(np.arange(len(idx)), cols.shape[1]).reshape(cols.shape)
        ok = cols >= 0
        r, c = rows[ok], cols[ok]
        data = np.ones(2 * len(r), np.int8)
        return coo_matrix((data, (np.concatenate([2 * r, 2 * r + 1]), np.concatenate([c, c]))),
                          shape=(2 * len(idx), n_params)).tocsr()

    x0 = np.concatenate([cam_p[free], board_p.ravel()])
    keep = np.ones(len(obs.camera), bool)
    for _ in range(2):
        sol = least_squares(
            residuals, x0, jac_sparsity=sparsity(keep), loss="soft_l1", f_scale=1.0,
            x_scale="jac", method="trf", tr_solver="lsmr", ftol=1e-10, xtol=1e-10, max_nfev=200, args=(keep,),
        )
        x0 = sol.x
        err = np.linalg.norm(residuals(x0, np.ones(len(obs.camera), bool)).reshape(-1, 2), axis=1)
        new_keep = err < max(outlier_px, 5 * float(np.median(err)))
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    cp, bp = unpack(x0)
    cams = tuple(_camera_from_params(c.name, c.size, cp[i]) for i, c in enumerate(calib.cameras))
    err = np.where(keep, err, np.nan)
    return Calibration(cams, dict(calib.metadata)), bp, err


def _attempt(
    detections: Sequence[CameraDetections],
    spec: BoardSpec,
    frames: set[int],
    intrinsics: dict[str, tuple[np.ndarray, np.ndarray]],
    seed: int,
    aniposelib_bundle_adjust: bool,
) -> tuple[Any, list[list[dict[str, Any]]]]:
    """aniposelib's extrinsic start: per-view board poses, the camera graph, and optionally its bundle adjustment."""
    from aniposelib.boards import extract_rtvecs, merge_rows
    from aniposelib.cameras import CameraGroup
    from aniposelib.utils import get_initial_extrinsics

    board = spec.to_aniposelib()
    rows = [copy.deepcopy([r for r in d.rows if r["framenum"] in frames]) for d in detections]
    cgroup = CameraGroup.from_names([d.name for d in detections])
    for cam, d in zip(cgroup.cameras, detections):
        cam.set_size(tuple(d.size))
        k, dist = intrinsics[d.name]
        cam.set_camera_matrix(k.copy())
        cam.set_distortions(np.array([dist[0], 0, 0, 0, 0]))  # aniposelib's model: k1 only
    # aniposelib draws from the global generators (resample_points, np.random.choice of start camera).
    random.seed(seed)
    np.random.seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        if aniposelib_bundle_adjust:
            cgroup.calibrate_rows(
                copy.deepcopy(rows), board, init_intrinsics=False, init_extrinsics=True, verbose=False
            )
        else:
            # What calibrate_rows does before its bundle adjustment (which refines only f and k1,
            # slowly; refine_calibration replaces it).
            posed = [board.estimate_pose_rows(cam, copy.deepcopy(r)) for cam, r in zip(cgroup.cameras, rows)]
            merged = merge_rows([[r for r in rs if r["ids"].size >= 8] for rs in posed])
            rvecs, tvecs = get_initial_extrinsics(extract_rtvecs(merged), cgroup.get_names())
            cgroup.set_rotations(rvecs)
            cgroup.set_translations(tvecs)
    return cgroup, rows


def calibrate_detections(
    detections: Sequence[CameraDetections], spec: BoardSpec, options: SolveOptions = SolveOptions()
) -> SolveResult:
    """Board detections of C cameras -> a checked calibration (world frame = the first camera).

    Raises:
        CalibrationFailed: too few views, a camera graph that falls apart, or every attempt degenerate.
    """
    preflight(detections, spec, options)
    frames = set(select_frames(detections, options.max_frame_sets))
    intrinsics = {}
    for d in detections:
        try:
            intrinsics[d.name] = initial_intrinsics(d.rows, d.size, spec, options.fix_principal_point)
        except CalibrationFailed as e:
            raise CalibrationFailed([f"camera {d.name!r}: {p}" for p in e.problems]) from None
    initial_focal = {n: float(k[0, 0]) for n, (k, _) in intrinsics.items()}
    board = spec.to_aniposelib()
    rejected: list[str] = []
    rows = [[r for r in d.rows if r["framenum"] in frames] for d in detections]
    consensus = consensus_extrinsics(detections, frames, intrinsics, spec)
    if spec.board_type == "checkerboard":
        rows = harmonise_checkerboard_rows(rows, consensus, [intrinsics[d.name] for d in detections], spec)
        detections = [replace(d, rows=r) for d, r in zip(detections, rows)]
        consensus = consensus_extrinsics(detections, frames, intrinsics, spec)
    # Attempt 0 starts from the consensus of shared views; later attempts from aniposelib's camera
    # graph (and its bundle adjustment if asked), each with the next seed for its random draws.
    for attempt in range(options.retries + 1):
        seed = options.seed + attempt
        if attempt == 0:
            import cv2

            start_poses = [(cv2.Rodrigues(m[:3, :3])[0].ravel(), m[:3, 3]) for m in consensus]
            how = "consensus start"
        else:
            try:
                cgroup, _ = _attempt(detections, spec, frames, intrinsics, seed, options.aniposelib_bundle_adjust)
            except ValueError as e:  # aniposelib: "Could not build calibration graph"
                rejected.append(f"seed {seed}: aniposelib could not link the cameras: {str(e).strip()}")
                continue
            start_poses = [(c.get_rotation(), c.get_translation()) for c in cgroup.cameras]
            how = "aniposelib start"
        # Start the joint refinement from these poses and the full single-camera lens models.
        start = Calibration(
            tuple(
                Camera(d.name, tuple(d.size), intrinsics[d.name][0].copy(), intrinsics[d.name][1].copy(),
                       np.asarray(rv, np.float64).ravel(), np.asarray(tv, np.float64).ravel())
                for d, (rv, tv) in zip(detections, start_poses)
            )
        )
        obs = gather_observations(rows, frames)
        try:
            calib, _, _ = refine_calibration(start, obs, spec, options.fix_principal_point)
        except (ValueError, np.linalg.LinAlgError) as e:
            rejected.append(f"seed {seed} ({how}): refinement failed ({e})")
            continue
        errors = reprojection_errors(to_camera_group(calib), rows, board)
        problems = degeneracy_problems(calib, errors, initial_focal, spec, options.max_error_px)
        if not problems:
            return SolveResult(calib, seed, tuple(rejected), tuple(sorted(frames)), initial_focal, tuple(rows))
        rejected.append(f"seed {seed} ({how}): " + "; ".join(problems))
    raise CalibrationFailed(
        [f"every attempt gave a degenerate calibration ({options.retries + 1} seeds):"]
        + rejected
        + [
            "Check that the board file matches the printed board (square size!), that the board is flat, "
            "and that the recordings are synchronised; then record the board in more, more varied poses."
        ]
    )
