"""Offline reprocessing of a recorded session: new 2D inference, Anipose-grade filtering and triangulation.

    ratrig reprocess SESSION [--model PATH] [--calibration PATH] [--skip-inference]
                     [--filter none|median|viterbi] [--triangulation dlt|ransac|optim]
                     [--constraints nose-left_ear,nose-right_ear,left_ear-right_ear]

Steps:
1. 2D: run the model (DeepLabCut-Live through inference.engines, one DLCLive per camera) on every
   recorded frame, or with --skip-inference reuse the live 2D keypoints.
2. Frame sets: frames of all cameras grouped by capture time (recorder.align).
3. 2D filters (recorder.filters: Anipose's median and Viterbi filters, re-implemented).
4. Triangulation with aniposelib 0.8.0's CameraGroup: `triangulate` (DLT), `triangulate_ransac`,
   or `triangulate_optim` (spatio-temporal optimisation with limb-length constraints).

Results go to SESSION/reprocessed/<UTC stamp>/ (pose2d/<camera>.csv, pose2d-filtered/<camera>.csv,
pose3d.csv with Anipose's columns, result.json); the live files are never touched.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.config import InferenceConfig, load_config
from ratrig.tomlio import atomic_write_text
from recorder.align import align_frame_sets, take_rows
from recorder.filters import median_filter, viterbi_filter
from recorder.session import Session, open_session
from recorder.tables import AppendTable, pose2d_columns, pose3d_columns
from recorder.writer import model_identity, sha256_file

log = logging.getLogger("reprocess")

DEFAULT_CONSTRAINTS = (("nose", "left_ear"), ("nose", "right_ear"), ("left_ear", "right_ear"))


class ReprocessError(RuntimeError):
    """Reprocessing cannot run; the message says which input is wrong."""


# ---------------------------------------------------------------------------------------------------
# 2D


def infer_2d(session: Session, model: str, keypoints: Sequence[str], inference: InferenceConfig,
             progress: bool = True, cameras: Sequence[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Run the model on every recorded frame of `cameras` (default: all).

    Returns camera -> (frame_index (N,), capture_ns (N,), (N, K, 3)). Each camera has its own
    DLCLive, so a camera's keypoints do not depend on which other cameras are run with it.
    """
    import dataclasses

    from tqdm import tqdm

    try:
        from inference.engines import ModelError, build_estimator, check_model, to_pipeline
    except ImportError as e:  # the inference stage is the one place that knows dlclive
        raise ReprocessError(f"inference.engines is not importable ({e}); cannot run the model") from None
    cfg = dataclasses.replace(inference, model=model, dynamic=False)
    try:
        info = check_model(cfg, keypoints)
        cams = list(session.cameras if cameras is None else cameras)
        est = build_estimator(info, cfg, cams, batch=False)
    except ModelError as e:
        raise ReprocessError(str(e)) from None
    total = sum(len(session.frames(c)) for c in cams)
    out = {}
    bar = tqdm(total=total, desc="2D inference", unit="frame", disable=not progress)
    try:
        for cam in cams:
            fi, cap, pts = [], [], []
            for row, img in session.iter_frames(cam):
                pose = est.infer([cam], [img])[0]
                pts.append(to_pipeline(pose, info).astype(np.float64))
                fi.append(int(row["frame_index"]))
                cap.append(int(row["capture_ns"]))
                bar.update(1)
            out[cam] = (np.asarray(fi, np.int64), np.asarray(cap, np.int64),
                        np.asarray(pts, np.float64).reshape(len(fi), len(keypoints), 3))
    finally:
        bar.close()
        est.close()
    return out


def model_and_inference(session: Session, model: str | None) -> tuple[str, InferenceConfig]:
    """The model to run (`model`, else the recorded one) and the session rig's [inference] settings."""
    model_path = model or session.model.get("path") or ""
    if not model_path:
        raise ReprocessError(f"{session.path}: no model recorded; pass --model PATH or --skip-inference")
    rig = load_config(session.config_path) if session.config_path.is_file() else None
    return model_path, (rig.inference if rig is not None else InferenceConfig())


def recorded_2d(session: Session, result: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The live 2D keypoints (result None) or those of an earlier reprocessed result."""
    out = {}
    for cam in session.cameras:
        p = session.pose2d(cam, result)
        out[cam] = (p.frame_index, p.capture_ns, p.points)
    return out


def stack_frame_sets(per_cam: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], cameras: Sequence[str],
                     tolerance_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-camera 2D -> (S,) capture ns, (C, S) frame_index (-1 none), (C, S, K, 3) points (NaN none)."""
    sets, rows = align_frame_sets([per_cam[c][1] for c in cameras], tolerance_ns)
    fi = np.stack([take_rows(per_cam[c][0], rows[i], -1) for i, c in enumerate(cameras)]).astype(np.int64)
    pts = np.stack([take_rows(per_cam[c][2], rows[i]) for i, c in enumerate(cameras)])
    return sets, fi, pts


# ---------------------------------------------------------------------------------------------------
# 3D


def load_camera_group(path: Path, cameras: Sequence[str]):  # -> aniposelib.cameras.CameraGroup
    from aniposelib.cameras import CameraGroup

    from ratrig.camera import CalibrationError, load_calibration

    try:
        load_calibration(path, cameras)  # validates with clear messages before aniposelib sees it
    except CalibrationError as e:
        raise ReprocessError(str(e)) from None
    cg = CameraGroup.load(str(path))
    return cg.subset_cameras_names(list(cameras))


def triangulate_sets(cg: Any, pts: np.ndarray, method: str, score_threshold: float,
                     constraints: Sequence[tuple[int, int]] = (), progress: bool = False,
                     optim_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """(C, S, K, 3) 2D points -> 3D with aniposelib.

    Returns dict: p3d (S, K, 3) mm, error (S, K) mean reprojection error px, ncams (S, K), score (S, K).
    """
    with warnings.catch_warnings():
        # aniposelib's @jit(forceobj=True) kernels print pages of numba fallback warnings on first use
        try:
            from numba.core.errors import NumbaWarning

            warnings.simplefilter("ignore", NumbaWarning)
        except ImportError:
            pass
        warnings.filterwarnings("ignore", message="Mean of empty slice")
        return _triangulate_sets(cg, pts, method, score_threshold, constraints, progress, optim_kwargs)


def _triangulate_sets(cg: Any, pts: np.ndarray, method: str, score_threshold: float,
                      constraints: Sequence[tuple[int, int]], progress: bool, optim_kwargs: dict | None) -> dict[str, np.ndarray]:
    c, s, k, _ = pts.shape
    xy = pts[..., :2].copy()
    sc = np.nan_to_num(pts[..., 2])
    xy[sc < score_threshold] = np.nan
    flat = xy.reshape(c, s * k, 2)
    if method == "dlt":
        p3d = cg.triangulate(flat, progress=progress)
        used = np.isfinite(flat[..., 0])
    elif method == "ransac":
        # aniposelib 0.8.0's triangulate_possible crashes on a point seen by no camera (it builds an
        # empty CameraGroup): give it only points with two views or more.
        two = np.isfinite(flat[..., 0]).sum(axis=0) >= 2
        p3d = np.full((s * k, 3), np.nan)
        used = np.zeros((c, s * k), bool)
        if two.any():
            p3d_two, _, p2ds, _ = cg.triangulate_ransac(flat[:, two], progress=progress)
            p3d[two] = p3d_two
            used[:, two] = np.isfinite(np.asarray(p2ds)[..., 0])
    elif method == "optim":
        # Anipose's defaults except scale_smooth 2 (Anipose: 4): at 4 the fast swing phase of the paws was
        # over-smoothed on the synthetic rat (paw median error 3.1 mm at 4, 1.6-1.9 mm at 2; head 0.9 both).
        kw = dict(constraints=[list(x) for x in constraints], scale_smooth=2, scale_length=2,
                  reproj_error_threshold=15, reproj_loss="soft_l1", n_deriv_smooth=1, verbose=False)
        kw.update(optim_kwargs or {})
        init_ransac = bool(kw.pop("init_ransac", False))
        if init_ransac:
            # aniposelib's own init_ransac path crashes on points seen by < 2 cameras (see "ransac"
            # above) and drops the views RANSAC rejected: do the same here safely.
            two = np.isfinite(flat[..., 0]).sum(axis=0) >= 2
            kept = np.full_like(flat, np.nan)
            if two.any():
                _, _, p2ds, _ = cg.triangulate_ransac(flat[:, two], progress=progress)
                kept[:, two] = np.asarray(p2ds)
            xy = kept.reshape(c, s, k, 2)
            flat = kept
        # unseen views are NaN in `points`; aniposelib leaves them out of the residuals
        p3d = cg.triangulate_optim(xy, init_ransac=False, init_progress=progress, **kw).reshape(s * k, 3)
        used = np.isfinite(flat[..., 0])
    else:
        raise ValueError(f"unknown triangulation {method!r}; expected dlt, ransac or optim")
    p3d = np.asarray(p3d, np.float64).reshape(s * k, 3)
    ncams = used.sum(axis=0)
    p3d[ncams < 2] = np.nan  # one view cannot place a point (optim's smoothing would invent it)
    err = np.full(s * k, np.nan)
    ok = np.isfinite(p3d[:, 0])
    if ok.any():
        e = cg.reprojection_error(p3d[ok], np.where(used[:, ok, None], flat[:, ok], np.nan), mean=False)
        err[ok] = np.nanmean(np.linalg.norm(e, axis=-1), axis=0)
    score = np.where(used, sc.reshape(c, s * k), np.nan)
    n_used = np.isfinite(score).sum(axis=0)
    mscore = np.where(n_used > 0, np.nansum(score, axis=0) / np.maximum(n_used, 1), np.nan)
    return {"p3d": p3d.reshape(s, k, 3), "error": err.reshape(s, k), "ncams": ncams.reshape(s, k),
            "score": mscore.reshape(s, k)}


# ---------------------------------------------------------------------------------------------------
# The command


def reprocess(session: Session, model: str | None = None, calibration: str | None = None, skip_inference: bool = False,
              filter_name: str = "median", triangulation: str = "optim",
              constraints: Sequence[tuple[str, str]] = DEFAULT_CONSTRAINTS, score_threshold: float = 0.5,
              progress: bool = True, name: str | None = None, optim_kwargs: dict | None = None,
              reuse_2d: str | None = None, init_ransac: bool = True, out: str | Path | None = None,
              inferred_2d: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> Path:
    """Reprocess `session`; returns the result folder SESSION/reprocessed/<name> (or `out`).

    The result is written into a hidden temporary folder beside it and renamed into place at the
    end, so a process killed mid-way never leaves a partial result under the final name.

    `reuse_2d` names an earlier result whose 2D keypoints are used instead of running the model
    again (e.g. to try another calibration or triangulation); `init_ransac` (default) starts the
    optimiser from aniposelib's RANSAC triangulation, dropping the views RANSAC rejects; on the
    synthetic demo session it lowered the median 3D error from 15.7 to 11.4 mm. `inferred_2d`
    (camera -> `infer_2d` output for every camera) is the model's 2D already computed, e.g. one
    camera per process by `ratrig batch`; the model is then identified but not run.
    """
    t_start = time.monotonic()
    kps = session.keypoints
    cams = session.cameras
    calib_path = Path(calibration) if calibration else session.calibration_path
    if calib_path is None or not calib_path.is_file():
        raise ReprocessError(f"{session.path}: no calibration.toml recorded; pass --calibration PATH")
    cg = load_camera_group(calib_path, cams)
    if reuse_2d is not None:
        per_cam = recorded_2d(session, reuse_2d)
        prev = json.loads((session.path / "reprocessed" / reuse_2d / "result.json").read_text())
        model_info: dict[str, Any] = dict(prev.get("model", {}), source=f"2D keypoints of result {reuse_2d}")
    elif skip_inference:
        per_cam = recorded_2d(session)
        model_info = dict(session.model, source="live 2D keypoints (not rerun)")
    else:
        model_path, inf = model_and_inference(session, model)
        if inferred_2d is not None:
            if sorted(inferred_2d) != sorted(cams):
                raise ReprocessError(f"{session.path}: 2D given for cameras {sorted(inferred_2d)}, expected {sorted(cams)}")
            per_cam = dict(inferred_2d)
        else:
            per_cam = infer_2d(session, model_path, kps, inf, progress)
        model_info = model_identity(model_path)
    fps = max(session.fps(c) for c in cams)
    sets, fi, pts = stack_frame_sets(per_cam, cams, int(0.5e9 / fps))
    if len(sets) == 0:
        raise ReprocessError(f"{session.path}: no 2D keypoints to reprocess")
    if filter_name == "median":
        filt = np.stack([median_filter(p) for p in pts])
    elif filter_name == "viterbi":
        filt = np.stack([viterbi_filter(p) for p in pts])
    elif filter_name == "none":
        filt = pts
    else:
        raise ValueError(f"unknown filter {filter_name!r}; expected none, median or viterbi")
    cidx = []
    for a, b in constraints:
        if a not in kps or b not in kps:
            raise ReprocessError(f"constraint {a}-{b}: keypoints must be among {list(kps)}")
        cidx.append((kps.index(a), kps.index(b)))
    log.info("triangulating %d frame sets x %d keypoints (%s, filter %s)", len(sets), len(kps), triangulation, filter_name)
    tri = triangulate_sets(cg, filt, triangulation, score_threshold, cidx, progress,
                           dict(optim_kwargs or {}, init_ransac=True) if init_ransac else optim_kwargs)

    name = name or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    final = Path(out) if out is not None else session.path / "reprocessed" / name
    if final.exists():
        raise ReprocessError(f"{final} exists; results are never overwritten")
    final.parent.mkdir(parents=True, exist_ok=True)
    out = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # hidden: never listed
    out.mkdir()
    tb = session.meta.get("timebase", {})
    to_wall = lambda ns: int(ns) - int(tb.get("monotonic_ns", 0)) + int(tb.get("wall_ns", 0))  # noqa: E731
    for folder, data in (("pose2d", {c: per_cam[c] for c in cams}),
                         ("pose2d-filtered", {c: (fi[i], sets, filt[i]) for i, c in enumerate(cams)})):
        for cam, (f_idx, cap, p) in data.items():
            t = AppendTable(out / folder / f"{cam}.csv", pose2d_columns(kps))
            for r in range(len(f_idx)):
                if f_idx[r] >= 0:
                    t.append([int(f_idx[r]), int(cap[r]), 0] + [float(v) for v in p[r].ravel()])
            t.close()
    t3 = AppendTable(out / "pose3d.csv", pose3d_columns(kps, cams))
    for r in range(len(sets)):
        row: list[object] = [r, int(sets[r]), to_wall(sets[r]), 0]
        for k in range(len(kps)):
            x, y, z = tri["p3d"][r, k]
            row += [x, y, z, tri["error"][r, k], int(tri["ncams"][r, k]), tri["score"][r, k], np.nan, np.nan, np.nan]
        row += [int(fi[i, r]) for i in range(len(cams))]
        t3.append(row)
    t3.close()
    info = {
        "created_wall_ns": time.time_ns(),
        "source_session": str(session.path),
        "model": model_info,
        "calibration": {"path": str(calib_path.resolve()), "sha256": sha256_file(calib_path)},
        "inference": (f"reused from {reuse_2d}" if reuse_2d else "live (skipped)" if skip_inference
                      else "rerun (DLCLive per camera, dynamic cropping off)"),
        "filter": filter_name,
        "triangulation": triangulation,
        "constraints": [list(c) for c in constraints] if triangulation == "optim" else [],
        "score_threshold": score_threshold,
        "optim_overrides": dict(optim_kwargs or {}),
        "init_ransac": bool(init_ransac),
        "frame_sets": int(len(sets)),
        "elapsed_s": time.monotonic() - t_start,
    }
    atomic_write_text(out / "result.json", json.dumps(info, indent=2))
    try:
        os.rename(out, final)  # atomic; fails rather than merge if `final` appeared meanwhile
    except OSError as e:
        shutil.rmtree(out, ignore_errors=True)
        raise ReprocessError(f"{final}: cannot move the result into place ({e})") from None
    return final


def _parse_constraints(text: str) -> list[tuple[str, str]]:
    if not text:
        return []
    out = []
    for item in text.split(","):
        a, sep, b = item.strip().partition("-")
        if not sep or not a or not b:
            raise ValueError(f"--constraints: expected 'a-b,c-d' keypoint pairs, got {item!r}")
        out.append((a, b))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig reprocess", description="Reprocess a recorded session offline.")
    p.add_argument("session")
    add_reprocess_options(p)
    p.add_argument("--name", default=None, help="result folder name (default: UTC time stamp)")
    p.add_argument("--no-progress", action="store_true")
    return p


def add_reprocess_options(p: argparse.ArgumentParser) -> None:
    """The options that decide what a result contains (shared with `ratrig batch reprocess`)."""
    p.add_argument("--model", default=None, help="DLC model (default: the one recorded in model.json)")
    p.add_argument("--calibration", default=None, help="calibration.toml (default: the recorded one)")
    p.add_argument("--skip-inference", action="store_true", help="reuse the live 2D keypoints")
    p.add_argument("--reuse-2d", default=None, metavar="RESULT", help="reuse the 2D keypoints of an earlier result")
    p.add_argument("--no-init-ransac", dest="init_ransac", action="store_false",
                   help="optim: start from plain DLT instead of RANSAC (which drops outlier views)")
    p.add_argument("--filter", default="median", choices=["none", "median", "viterbi"])
    p.add_argument("--triangulation", default="optim", choices=["dlt", "ransac", "optim"])
    p.add_argument("--constraints", default=",".join(f"{a}-{b}" for a, b in DEFAULT_CONSTRAINTS),
                   help="limb-length constraints for optim, 'a-b,c-d' (empty: none)")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--scale-smooth", type=float, default=2.0, help="optim: temporal smoothness weight (Anipose default 4)")
    p.add_argument("--scale-length", type=float, default=2.0, help="optim: limb-length constraint weight")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Parsed options -> keyword arguments of `reprocess` (JSON-able: they are also recorded)."""
    return {"model": args.model, "calibration": args.calibration, "skip_inference": args.skip_inference,
            "filter_name": args.filter, "triangulation": args.triangulation,
            "constraints": _parse_constraints(args.constraints), "score_threshold": args.score_threshold,
            "optim_kwargs": {"scale_smooth": args.scale_smooth, "scale_length": args.scale_length},
            "reuse_2d": args.reuse_2d, "init_ransac": args.init_ransac}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reprocess %(levelname)s %(message)s")
    try:
        session = open_session(args.session)
        out = reprocess(session, progress=not args.no_progress, name=args.name, **options_from_args(args))
    except (ReprocessError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
