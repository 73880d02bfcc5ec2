"""Export a recorded session to the tools the field already uses.

    ratrig export SESSION --to anipose OUT   # an Anipose project the `anipose` tool can continue from
    ratrig export SESSION --to dlc OUT       # DeepLabCut 2D output: one .h5 per camera
    ratrig export SESSION --to nwb OUT.nwb   # NWB with ndx-pose (PoseEstimation, Skeleton)
    ratrig export SESSION --to keypoint-moseq OUT   # 3D CSVs keypoint-MoSeq loads (recorder.export_kpms)

`--result NAME` exports a reprocessed result (reprocessed/NAME) instead of the live poses.

Anipose layout written (nesting = 1; see anipose's docs, "Setting up a project")::

    OUT/config.toml
    OUT/<session>/calibration/calibration.toml
    OUT/<session>/videos-raw/<trial>--<camera>.avi      (FFV1, frame sets aligned across cameras)
    OUT/<session>/pose-2d/<trial>--<camera>.h5          (DeepLabCut format)
    OUT/<session>/pose-3d/<trial>.csv                   (Anipose's pose-3d columns)

Anipose finds the camera in a file name with ``cam_regex = '--(.+)$'`` and calls a trial by the
name left after removing it, so all cameras of one trial share `<trial>`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ratrig.skeleton import SKELETON
from ratrig.tomlio import write_toml
from recorder.align import align_frame_sets, take_rows
from recorder.session import Session, open_session
from recorder.video import CODECS, open_writer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Pure table builders


def dlc_dataframe(points: np.ndarray, keypoints: Sequence[str], scorer: str) -> pd.DataFrame:
    """(N, K, 3) x px, y px, likelihood -> DeepLabCut's 2D output table.

    Columns: MultiIndex (scorer, bodyparts, coords) with coords x, y, likelihood, the layout of
    DeepLabCut's `*.h5` (key 'df_with_missing'). Missing points are NaN with likelihood 0.
    """
    pts = np.asarray(points, np.float64).reshape(len(points), len(keypoints), 3).copy()
    lik = pts[:, :, 2]
    lik[~np.isfinite(lik)] = 0.0
    cols = pd.MultiIndex.from_product([[scorer], list(keypoints), ["x", "y", "likelihood"]],
                                      names=["scorer", "bodyparts", "coords"])
    return pd.DataFrame(pts.reshape(len(pts), -1), columns=cols)


def write_dlc_h5(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_hdf(path, key="df_with_missing", format="table", mode="w")


def anipose_pose3d_table(p3d: np.ndarray, error: np.ndarray, ncams: np.ndarray, score: np.ndarray,
                         keypoints: Sequence[str], fnum: np.ndarray | None = None) -> pd.DataFrame:
    """(N, K, 3) mm, (N, K) error px, ncams, score -> Anipose's pose-3d CSV table.

    Columns as anipose's triangulate writes them: `{kp}_x, _y, _z, _error, _ncams, _score` per
    keypoint, then the alignment matrix `M_00..M_22` and `center_0..2` (identity / zero: ratrig's
    world frame is already the arena frame) and `fnum`.
    """
    n = len(p3d)
    out: dict[str, np.ndarray] = {}
    for k, kp in enumerate(keypoints):
        out[f"{kp}_x"], out[f"{kp}_y"], out[f"{kp}_z"] = p3d[:, k, 0], p3d[:, k, 1], p3d[:, k, 2]
        out[f"{kp}_error"] = error[:, k]
        out[f"{kp}_ncams"] = np.nan_to_num(ncams[:, k]).astype(np.int64)
        out[f"{kp}_score"] = score[:, k]
    eye = np.eye(3)
    for i in range(3):
        for j in range(3):
            out[f"M_{i}{j}"] = np.full(n, eye[i, j])
    for i in range(3):
        out[f"center_{i}"] = np.zeros(n)
    out["fnum"] = np.arange(n) if fnum is None else np.asarray(fnum)
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------------
# Session helpers


def frame_sets(session: Session) -> tuple[np.ndarray, np.ndarray, list[pd.DataFrame]]:
    """(S,) capture ns, (C, S) row into each camera's frame table (-1 none), the frame tables.

    A camera without recorded video (a session recorded without frames, e.g. poses only) is
    timed by its 2D keypoint table instead.
    """
    tables = []
    for c in session.cameras:
        t = session.frames(c)
        if len(t) == 0:
            p = session.pose2d(c)
            t = pd.DataFrame({"frame_index": p.frame_index, "capture_ns": p.capture_ns})
        tables.append(t)
    fps = max(session.fps(c) for c in session.cameras)
    sets, rows = align_frame_sets([t["capture_ns"].to_numpy() for t in tables], int(0.5e9 / fps))
    return sets, rows, tables


def pose2d_by_frame(session: Session, camera: str, frame_index: np.ndarray, result: str | None) -> np.ndarray:
    """(N,) frame indices -> (N, K, 3) 2D keypoints of those frames (NaN where none)."""
    p = session.pose2d(camera, result)
    lookup = {int(f): i for i, f in enumerate(p.frame_index)}
    rows = np.array([lookup.get(int(f), -1) for f in frame_index], np.int64)
    return take_rows(p.points, rows)


def scorer_name(session: Session, result: str | None) -> str:
    if result is not None:
        info = json.loads((session.path / "reprocessed" / result / "result.json").read_text())
        name = Path(info.get("model", {}).get("path") or "model").name
        return f"DLC_ratrig_{name}_reprocessed"
    name = Path(session.model.get("path") or "live").name
    return f"DLC_ratrig_{name}"


# ---------------------------------------------------------------------------------------------------
# Exporters


def export_dlc(session: Session, out: Path, result: str | None = None) -> list[Path]:
    """One DeepLabCut .h5 per camera; row i = the camera's i-th recorded video frame (or 2D row, without video)."""
    out.mkdir(parents=True, exist_ok=True)
    scorer = scorer_name(session, result)
    paths = []
    for cam in session.cameras:
        frames = session.frames(cam)
        if len(frames) == 0:  # no video (a session from `ratrig triangulate`): the 2D table's frames
            p = session.pose2d(cam, result)
            frames = pd.DataFrame({"frame_index": p.frame_index, "capture_ns": p.capture_ns})
        pts = pose2d_by_frame(session, cam, frames["frame_index"].to_numpy(), result)
        path = out / f"{cam}{scorer}.h5"
        write_dlc_h5(dlc_dataframe(pts, session.keypoints, scorer), path)
        frames.to_csv(out / f"{cam}_frames.csv", index=False)  # row -> frame_index, capture time
        paths.append(path)
    return paths


def export_anipose(session: Session, out: Path, result: str | None = None, trial: str = "trial",
                   write_videos: bool = True) -> Path:
    """An Anipose project (nesting 1) holding this session. Returns the session folder inside it."""
    if "--" in trial:
        raise ValueError(f"trial name {trial!r} must not contain '--' (the camera separator)")
    sess_dir = out / session.path.name
    for sub in ("calibration", "videos-raw", "pose-2d", "pose-3d"):
        (sess_dir / sub).mkdir(parents=True, exist_ok=True)
    calib = session.calibration_path
    if calib is not None:
        shutil.copyfile(calib, sess_dir / "calibration" / "calibration.toml")
    else:
        log.warning("%s has no calibration.toml: the Anipose project cannot be triangulated", session.path)
    sets, rows, tables = frame_sets(session)
    scorer = scorer_name(session, result)
    for c, cam in enumerate(session.cameras):
        fi = take_rows(tables[c]["frame_index"].to_numpy(), rows[c], fill=-1).astype(np.int64)
        pts = pose2d_by_frame(session, cam, fi, result)
        pts[fi < 0] = np.nan
        write_dlc_h5(dlc_dataframe(pts, session.keypoints, scorer), sess_dir / "pose-2d" / f"{trial}--{cam}.h5")
        if write_videos and len(session.frames(cam)):
            _write_aligned_video(session, cam, rows[c], sess_dir / "videos-raw" / f"{trial}--{cam}.avi")
    p = session.pose3d(result)
    # Anipose's rows are video frame numbers: put each 3D pose on its frame set.
    p3d = np.full((len(sets), len(session.keypoints), 3), np.nan)
    err = np.full((len(sets), len(session.keypoints)), np.nan)
    ncams = np.zeros_like(err)
    score = np.full_like(err, np.nan)
    set_of = {int(t): i for i, t in enumerate(sets)}
    fi0 = {}
    c0 = 0
    if p.frame_indices:
        c0 = next(i for i, c in enumerate(session.cameras) if c in p.frame_indices)
        fi0 = {int(f): s for s, f in enumerate(take_rows(tables[c0]["frame_index"].to_numpy(), rows[c0], -1).astype(np.int64)) if f >= 0}
    for r in range(len(p.fnum)):
        s = None
        if fi0:
            s = fi0.get(int(p.frame_indices[session.cameras[c0]][r]))
        if s is None:
            s = set_of.get(int(p.capture_ns[r]))
        if s is None and len(sets):
            k = int(np.argmin(np.abs(sets - p.capture_ns[r])))
            s = k if abs(int(sets[k]) - int(p.capture_ns[r])) < 0.5e9 / max(session.fps(c) for c in session.cameras) else None
        if s is not None:
            p3d[s], err[s], ncams[s], score[s] = p.raw_mm[r], p.error_px[r], p.ncams[r], p.score[r]
    anipose_pose3d_table(p3d, err, ncams, score, session.keypoints).to_csv(sess_dir / "pose-3d" / f"{trial}.csv", index=False)
    pd.DataFrame({"fnum": np.arange(len(sets)), "capture_ns": sets,
                  **{f"frame_index_{cam}": take_rows(tables[c]["frame_index"].to_numpy(), rows[c], -1).astype(np.int64)
                     for c, cam in enumerate(session.cameras)}}).to_csv(sess_dir / f"{trial}_frame_sets.csv", index=False)
    write_toml(out / "config.toml", anipose_config(session))
    return sess_dir


def anipose_config(session: Session) -> dict:
    """Anipose's config.toml for a project holding exported ratrig sessions."""
    kps = set(session.keypoints)
    scheme = [[a, b] for a, b in SKELETON if a in kps and b in kps]
    return {
        "project": "ratrig-export",
        "model_folder": str(session.model.get("path") or ""),
        "nesting": 1,
        "video_extension": "avi",
        "calibration": {"board_type": "charuco", "board_size": [10, 7], "board_marker_bits": 4,
                        "board_marker_dict_number": 50, "animal_calibration": False, "fisheye": False},
        "labeling": {"scheme": scheme},
        "filter": {"enabled": False},
        "triangulation": {"triangulate": True, "cam_regex": "--(.+)$", "optim": False,
                          "ransac": False, "score_threshold": 0.5},
    }


def _write_aligned_video(session: Session, camera: str, rows: np.ndarray, path: Path) -> None:
    """Re-encode the camera's frames on the common frame-set timeline (black where it has none)."""
    writer = None
    frames = session.iter_frames(camera)
    pos = -1
    img = None
    enc = session.encoder(camera)
    size = (int(enc.get("width", 640)), int(enc.get("height", 480)))
    blank = None
    for r in rows:
        if r >= 0:
            while pos < r:
                _, img = next(frames)
                pos += 1
            frame = img
        else:
            if blank is None:
                blank = np.zeros((size[1], size[0], 3), np.uint8)
            frame = blank
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if writer is None:
            size = (frame.shape[1], frame.shape[0])
            writer = open_writer(path, CODECS["ffv1"], session.fps(camera), size, True, 100)
        writer.write(frame)
    if writer is not None:
        writer.release()


def export_nwb(session: Session, out: Path, result: str | None = None) -> Path:
    """An NWB file with ndx-pose: a Skeleton, one 2D PoseEstimation per camera and one 3D."""
    from ndx_pose import PoseEstimation, PoseEstimationSeries, Skeleton, Skeletons
    from pynwb import NWBHDF5IO, NWBFile

    start_wall = int(session.meta.get("started_wall_ns") or 0)
    tb = session.meta.get("timebase", {})
    to_wall = lambda ns: np.asarray(ns, np.int64) - int(tb.get("monotonic_ns", 0)) + int(tb.get("wall_ns", 0))  # noqa: E731
    start = dt.datetime.fromtimestamp(start_wall / 1e9, tz=dt.timezone.utc)
    nwb = NWBFile(session_description=f"ratrig session {session.path.name} (rig {session.meta.get('rig_name')})",
                  identifier=f"ratrig-{session.path.name}-{start_wall}", session_start_time=start,
                  source_script="ratrig recorder.export", source_script_file_name="recorder/export.py")
    kps = list(session.keypoints)
    edges = np.array([[kps.index(a), kps.index(b)] for a, b in SKELETON if a in kps and b in kps], np.uint8).reshape(-1, 2)
    skeleton = Skeleton(name="rat", nodes=kps, edges=edges)
    behavior = nwb.create_processing_module("behavior", "ratrig 2D keypoints and 3D poses")
    behavior.add(Skeletons(skeletons=[skeleton]))
    devices = {cam: nwb.create_device(name=cam, description=f"camera {cam}", manufacturer="unknown") for cam in session.cameras}
    scorer = scorer_name(session, result)

    def seconds(ns: np.ndarray) -> np.ndarray:
        return (to_wall(ns) - start_wall) / 1e9

    for cam in session.cameras:
        p = session.pose2d(cam, result)
        if len(p.frame_index) == 0:
            continue
        t = seconds(p.capture_ns)
        series = [PoseEstimationSeries(name=kp, description=f"{kp} in {cam}", data=p.points[:, k, :2],
                                       unit="pixels", reference_frame="(0,0) is the top-left corner of the image",
                                       timestamps=t, confidence=np.nan_to_num(p.points[:, k, 2]),
                                       confidence_definition="DeepLabCut likelihood")
                  for k, kp in enumerate(kps)]
        behavior.add(PoseEstimation(name=f"PoseEstimation_{cam}", pose_estimation_series=series,
                                    description=f"2D keypoints of camera {cam}", original_videos=[str(v) for v in session.video_paths(cam)],
                                    dimensions=np.array([[int(session.encoder(cam).get("width", 640)), int(session.encoder(cam).get("height", 480))]], np.uint64),
                                    device=devices[cam], scorer=scorer, source_software="DeepLabCut-Live (ratrig)",
                                    skeleton=skeleton))
    p3 = session.pose3d(result)
    if len(p3.fnum):
        t = seconds(p3.capture_ns)
        use_filtered = np.isfinite(p3.filtered_mm).any()
        series = []
        for k, kp in enumerate(kps):
            series.append(PoseEstimationSeries(
                name=kp, description=f"{kp}, triangulated (raw) world position", data=p3.raw_mm[:, k] / 1000.0, unit="meters",
                reference_frame="ratrig world frame: x along the corridor, y across, z up, floor z = 0",
                timestamps=t, confidence=np.nan_to_num(p3.score[:, k]), confidence_definition="mean likelihood of the views used"))
        behavior.add(PoseEstimation(name="PoseEstimation3D", pose_estimation_series=series,
                                    description="3D poses (raw triangulation)",
                                    scorer=scorer, source_software="ratrig", skeleton=skeleton))
        if use_filtered:
            fser = [PoseEstimationSeries(
                name=kp, description=f"{kp}, filtered world position", data=p3.filtered_mm[:, k] / 1000.0, unit="meters",
                reference_frame="ratrig world frame: x along the corridor, y across, z up, floor z = 0",
                timestamps=t, confidence=np.nan_to_num(p3.score[:, k]), confidence_definition="mean likelihood of the views used")
                for k, kp in enumerate(kps)]
            behavior.add(PoseEstimation(name="PoseEstimation3DFiltered", pose_estimation_series=fser,
                                        description="3D poses (filtered)",
                                        scorer=scorer, source_software="ratrig", skeleton=skeleton))
    out.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(out), "w") as io:
        io.write(nwb)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig export", description="Export a recorded session.")
    p.add_argument("session")
    p.add_argument("--to", required=True, choices=["anipose", "dlc", "nwb", "keypoint-moseq"])
    p.add_argument("out", help="output folder (anipose, dlc, keypoint-moseq) or .nwb file")
    p.add_argument("--result", default=None, help="a reprocessed result name (reprocessed/NAME) instead of live poses")
    p.add_argument("--trial", default="trial", help="trial name in the Anipose project")
    p.add_argument("--no-videos", action="store_true", help="anipose: do not write videos-raw")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        session = open_session(args.session)
        out = Path(args.out)
        if args.to == "dlc":
            paths = export_dlc(session, out, args.result)
            print("\n".join(str(p) for p in paths))
        elif args.to == "anipose":
            print(export_anipose(session, out, args.result, args.trial, not args.no_videos))
        elif args.to == "keypoint-moseq":
            from recorder.export_kpms import export_keypoint_moseq

            print(export_keypoint_moseq(session, out, args.result))
        else:
            print(export_nwb(session, out, args.result))
    except (ValueError, KeyError, OSError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
