"""`ratrig triangulate`: 3D poses from 2D tracks a lab already has (DeepLabCut, SLEAP) and an Anipose calibration.

    ratrig triangulate --calibration calibration.toml \\
        --pose cam_ne=videos/cam_neDLC_resnet50.h5 --pose cam_nw=... -o sessions/rat07_tri
    ratrig triangulate --calibration calibration.toml --pose pose-2d/ -o OUT   # files matched to cameras
    ratrig triangulate ... --config rig.toml --individual rat1 --timestamps cam_ne=cam_ne_frames.csv ...

No cameras, no model: the same fusion as the live pipeline (`fusion.process.FusionPipeline`) runs
offline on the files -- undistortion, likelihood-weighted DLT and the outlier subset search
(`fusion.triangulate.triangulate`, batched over all frame sets: a raw point depends on its own
frame set only), then, frame set by frame set in capture order, the Kalman filter
(`fusion.kalman.KalmanFilter3D`) fed exactly as `FusionPipeline._fuse` feeds it (the tracker's
prediction decides between equally good camera subsets; moments seen by one camera alone, which the
live synchroniser never emits, get no filter step). Optionally the 2D filters of `ratrig reprocess`
(recorder.filters: median, Viterbi) run on each camera's track first.
tests/test_triangulate_cli.py checks that the output equals what FusionPipeline gives for the same 2D.

Frames: rows of the files are matched by their frame number (a DeepLabCut table's row index, a SLEAP
file's frame), or by capture time when every camera has a timestamp file (`--timestamps`,
grouped within half a frame period like `ratrig reprocess`). Files of different lengths, gaps in the
frame numbers and keypoints that one file lacks become NaN views and are reported in the summary;
rows are never shifted.

Keypoints: the rig's names come from `--config rig.toml` (its `keypoints`), `--keypoints a,b,c`, or,
without either, the files' own names. `--keypoint-map map.toml` renames file names to rig names
(`[keypoints] snout = "nose"`; an empty string drops a body part). A file name the rig lacks is an
error naming the file and the name, as is a camera the calibration lacks.

Output folder OUT (a ratrig session folder, recorder/FORMAT.md, so `ratrig view --replay OUT`,
`ratrig analyze OUT` and `ratrig export OUT ...` open it):

    OUT/session.json          cameras, keypoints, camera_fps, status "complete", source files
    OUT/calibration.toml      copy of the calibration used
    OUT/rig.toml              copy of --config (when given)
    OUT/pose2d/<camera>.csv   the 2D input, mapped to the rig's keypoints (after --filter)
    OUT/pose3d.csv            raw x/y/z/error/ncams/score + Kalman fx/fy/fz, frame_index_<camera>
    OUT/pose-3d.csv           Anipose's pose-3d table (recorder.export.anipose_pose3d_table)
    OUT/pose3d_dlc.h5         DeepLabCut-style 3D table (scorer/bodyparts/coords x, y, z)
    OUT/pose3d.nwb            NWB + ndx-pose (with --nwb; recorder.export.export_nwb)
    OUT/summary.json          frames, coverage per keypoint, reprojection error p50/p95, timing

Everything is written into a temporary folder beside OUT and renamed to OUT at the end: a failed run
leaves nothing under the final name.

Python API (stable; `ratrig batch triangulate` calls it)::

    from recorder.triangulate import TriangulateOptions, triangulate_files, TriangulateError
    summary = triangulate_files(Path("calibration.toml"), {"cam_ne": Path("ne.h5"), ...},
                                Path("OUT"), TriangulateOptions(fps=100.0))

`triangulate_files(calibration, poses, out, options) -> dict` returns the summary (also written to
OUT/summary.json) and raises `TriangulateError` (a ValueError) naming the file and what was
expected; an OSError while writing propagates, with nothing left at OUT. `poses` may also be a
single folder path (matched to the calibration's cameras). `TriangulateOptions` (frozen dataclass,
every field defaulted) carries the command-line options; `add_triangulate_options(parser)` adds the
flags other than the inputs and output, `options_from_args(namespace)` turns them into
TriangulateOptions (both shared with `ratrig batch triangulate`); `load_keypoint_map(path)` reads a
`--keypoint-map` file. Summary keys: frames, cameras.<cam>.{file, format, individual, rows,
first_frame, last_frame, missing_frames, frame_sets_without_this_camera, keypoints_absent},
keypoints, fps, matched_by, coverage.<kp>, coverage_filtered.<kp>, reprojection_error_px.{p50,p95},
ncams_mean, time_per_frame_ms, frames_per_s, read_s, fuse_s, elapsed_s, options, inputs,
cameras_without_file, warnings, outputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.kalman import KalmanFilter3D, KalmanOptions
from fusion.triangulate import RigGeometry, TriangulationOptions, TriangulationResult, triangulate
from ratrig.camera import Calibration, CalibrationError, load_calibration
from recorder.posefiles import PoseFileError, PoseTrack, match_pose_folder, read_pose_file, read_timestamps

log = logging.getLogger("triangulate")

#: frame sets per call of the batched triangulation kernel (bounds memory; progress granularity)
CHUNK_FRAMES = 2048


class TriangulateError(ValueError):
    """Inputs that cannot be triangulated; the message names the file and what was expected."""


@dataclass(frozen=True, slots=True)
class TriangulateOptions:
    """What `triangulate_files` does besides the files.

    Attributes:
        keypoints: the rig's keypoints (output order); None: from `rig_config`, else the files' names.
        keypoint_map: file body-part name -> rig keypoint name ("" drops it).
        individual: the animal to take from multi-animal files.
        timestamps: camera -> timestamp file (all cameras or none); match frames by capture time.
        fps: frame rate of the videos (capture times without timestamp files; Kalman time step).
            None: the rig config's, else 30 (reported in the summary).
        rig_config: a ratrig rig TOML: keypoints, fps and [fusion] settings (triangulation, Kalman).
        triangulation: overrides the rig's / the default TriangulationOptions.
        kalman: run the Kalman filter (the live fusion's) after triangulation.
        kalman_options: overrides the rig's / the default KalmanOptions.
        keypoint_motion: keypoint -> (accel_noise_mm_s2, velocity_time_constant_s), as FusionOptions.
        filter_2d: "none", "median" or "viterbi" (recorder.filters, as `ratrig reprocess`).
        write_dlc_h5: write OUT/pose3d_dlc.h5.
        write_nwb: write OUT/pose3d.nwb.
        overwrite: replace an existing OUT (otherwise an existing OUT is an error).
        progress: tqdm progress bars on stderr.
    """

    keypoints: tuple[str, ...] | None = None
    keypoint_map: Mapping[str, str] = field(default_factory=dict)
    individual: str | None = None
    timestamps: Mapping[str, Path] = field(default_factory=dict)
    fps: float | None = None
    rig_config: Path | None = None
    triangulation: TriangulationOptions | None = None
    kalman: bool = True
    kalman_options: KalmanOptions | None = None
    keypoint_motion: Mapping[str, tuple[float, float]] | None = None
    filter_2d: str = "none"
    write_dlc_h5: bool = True
    write_nwb: bool = False
    overwrite: bool = False
    progress: bool = False


@dataclass(frozen=True, slots=True)
class FrameSets:
    """2D of C cameras on a common timeline of S frame sets, K rig keypoints.

    Attributes:
        capture_ns: (S,) capture time of each frame set, ns (frame number x period, or timestamps).
        frame_index: (C, S) int64 frame number of each camera in each set, -1 = none.
        points: (C, S, K, 3) x px, y px, likelihood; NaN = not seen.
    """

    capture_ns: np.ndarray
    frame_index: np.ndarray
    points: np.ndarray


@dataclass(frozen=True, slots=True)
class Poses3D:
    """The fusion's output for S frame sets x K keypoints.

    Attributes:
        raw_mm: (S, K, 3) triangulated, NaN = not triangulated.
        error_px: (S, K) mean reprojection error of the views used.
        ncams: (S, K) int views used (0 = none).
        score: (S, K) smallest likelihood of the views used.
        filtered_mm: (S, K, 3) Kalman estimate at capture time (NaN without the filter).
    """

    raw_mm: np.ndarray
    error_px: np.ndarray
    ncams: np.ndarray
    score: np.ndarray
    filtered_mm: np.ndarray


# ---------------------------------------------------------------------------------------------------
# inputs


def _resolve_poses(poses: Mapping[str, Path] | Path | str, calibration: Calibration, calib_path: Path) -> dict[str, Path]:
    if isinstance(poses, (str, os.PathLike)):
        return match_pose_folder(poses, calibration.names)
    out = {str(c): Path(p) for c, p in poses.items()}
    for cam, path in out.items():
        if cam not in calibration.names:
            raise TriangulateError(
                f"{path}: camera {cam!r} is not in the calibration {calib_path} (it has {list(calibration.names)})"
            )
    return out


def _map_keypoints(track: PoseTrack, keypoint_map: Mapping[str, str], rig_keypoints: Sequence[str] | None) -> tuple[list[int], list[str]]:
    """-> (columns of the track to keep, their rig names); unknown names raise naming the file."""
    src, names = [], []
    for i, kp in enumerate(track.keypoints):
        name = keypoint_map.get(kp, kp)
        if name == "":
            continue
        if rig_keypoints is not None and name not in rig_keypoints:
            via = f" (mapped from {kp!r})" if name != kp else ""
            raise TriangulateError(
                f"{track.path}: keypoint {name!r}{via} is not a rig keypoint; expected one of {list(rig_keypoints)} "
                "(rename it with --keypoint-map, or drop it by mapping it to \"\")"
            )
        if name in names:
            raise TriangulateError(f"{track.path}: two body parts map to the keypoint {name!r}")
        src.append(i)
        names.append(name)
    return src, names


def build_frame_sets(tracks: Mapping[str, PoseTrack], cameras: Sequence[str], keypoints: Sequence[str],
                     columns: Mapping[str, tuple[list[int], list[str]]], period_ns: int,
                     timestamps: Mapping[str, tuple[np.ndarray, np.ndarray | None]] | None = None) -> FrameSets:
    """Per-camera tracks -> FrameSets, by frame number, or by capture time when `timestamps` is given.

    `columns[cam]` = (track columns, rig names) from `_map_keypoints`; `timestamps[cam]` = (N_c,)
    capture ns and optional frame numbers (from `read_timestamps`); without frame numbers, line f of
    the timestamp file is the time of video frame f.
    """
    kidx = {k: i for i, k in enumerate(keypoints)}
    n_k = len(keypoints)
    if timestamps:
        from recorder.align import align_frame_sets

        times = []
        for cam in cameras:
            t = tracks[cam]
            ns, fr = timestamps[cam]
            if fr is not None:  # a frame table: look the pose rows up by frame number
                lookup = {int(f): i for i, f in enumerate(fr)}
                missing = [int(f) for f in t.frame_index if int(f) not in lookup]
                if missing:
                    raise TriangulateError(f"camera {cam}: frames {missing[:5]} of {t.path} have no row in its timestamp file")
                times.append(ns[[lookup[int(f)] for f in t.frame_index]])
            else:  # one line per video frame: the pose file's frame numbers index it
                if int(t.frame_index[-1]) >= len(ns):
                    raise TriangulateError(
                        f"camera {cam}: its timestamp file has {len(ns)} lines, but {t.path} goes up to frame "
                        f"{int(t.frame_index[-1])}; expected one timestamp per video frame"
                    )
                times.append(ns[t.frame_index])
        capture_ns, rows = align_frame_sets(times, max(1, period_ns // 2))
    else:
        union = np.unique(np.concatenate([tracks[c].frame_index for c in cameras]))
        capture_ns = union * int(period_ns)
        rows = np.stack([
            np.where(np.isin(union, tracks[c].frame_index), np.searchsorted(tracks[c].frame_index, union), -1)
            for c in cameras
        ]).astype(np.int64)
    n_s = len(capture_ns)
    points = np.full((len(cameras), n_s, n_k, 3), np.nan)
    frame_index = np.full((len(cameras), n_s), -1, np.int64)
    for c, cam in enumerate(cameras):
        t = tracks[cam]
        r = rows[c]
        ok = r >= 0
        frame_index[c, ok] = t.frame_index[r[ok]]
        src, names = columns[cam]
        dst = [kidx[n] for n in names]
        sub = t.points[r[ok]][:, src]  # (n_ok, k_c, 3)
        block = points[c, ok]
        block[:, dst] = sub
        points[c, ok] = block
    return FrameSets(np.asarray(capture_ns, np.int64), frame_index, points)


# ---------------------------------------------------------------------------------------------------
# fusion


def triangulate_frame_sets(rig: RigGeometry, points: np.ndarray, options: TriangulationOptions,
                           progress: bool = False) -> TriangulationResult:
    """(C, S, K, 3) 2D -> raw triangulation of every keypoint of every frame set, (S*K) points.

    The live fusion's kernel (`fusion.triangulate.triangulate`) called on chunks of frame sets: a
    raw point is a function of its own frame set only, so this equals triangulating set by set.
    """
    from tqdm import tqdm

    c, s, k, _ = points.shape
    xyz = np.full((s * k, 3), np.nan)
    err = np.full(s * k, np.nan)
    ncams = np.zeros(s * k, np.int64)
    score = np.full(s * k, np.nan)
    used = np.zeros((c, s * k), bool)
    with tqdm(total=s, desc="triangulate", unit="frame", disable=not progress, leave=False) as bar:
        for a in range(0, s, CHUNK_FRAMES):
            b = min(s, a + CHUNK_FRAMES)
            chunk = points[:, a:b].reshape(c, (b - a) * k, 3)
            res = triangulate(rig, chunk[..., :2], chunk[..., 2], options)
            sl = slice(a * k, b * k)
            xyz[sl], err[sl], ncams[sl], score[sl], used[:, sl] = (
                res.points_mm, res.reprojection_error_px, res.n_cameras, res.score, res.views_used)
            bar.update(b - a)
    return TriangulationResult(xyz, err, ncams, score, used)


def fuse(rig: RigGeometry, sets: FrameSets, triangulation: TriangulationOptions,
         kalman: KalmanOptions | None, motion: Sequence[tuple[float, float] | None] | None = None,
         progress: bool = False) -> Poses3D:
    """FrameSets -> Poses3D: what `FusionPipeline` publishes for these frame sets (predict-ahead 0).

    raw: `triangulate` without a prior (as `Pose3DPacket.raw_mm`). Kalman (when `kalman` is not
    None): per frame set in capture order, the measurement is the triangulation with the filter's
    prediction as prior, as `FusionPipeline._fuse` does; frame sets with fewer than 2 cameras
    (which the live synchroniser does not emit) get no filter step and NaN filtered positions. The prior only changes a keypoint whose
    outlier search found a smaller passing camera subset (3..exhaustive_max_views usable views, fewer
    used), so only those are triangulated again -- same kernel, same numbers, less work.
    """
    from tqdm import tqdm

    c, s, k, _ = sets.points.shape
    raw = triangulate_frame_sets(rig, sets.points, triangulation, progress)
    raw_mm = raw.points_mm.reshape(s, k, 3)
    err = raw.reprojection_error_px.reshape(s, k)
    ncams = raw.n_cameras.reshape(s, k)
    score = raw.score.reshape(s, k)
    filtered = np.full((s, k, 3), np.nan)
    if kalman is not None and s:
        like = sets.points[..., 2]
        usable = (np.isfinite(sets.points[..., 0]) & np.isfinite(sets.points[..., 1]) & np.isfinite(like)
                  & (like >= triangulation.min_likelihood)).sum(axis=0)  # (S, K)
        maybe_prior = (usable >= 3) & (usable <= triangulation.exhaustive_max_views) & (ncams < usable)
        # the live synchroniser emits no frame set with fewer than 2 views (SyncOptions.min_views):
        # the filter never sees those moments there, so it does not here either
        emitted = (sets.frame_index >= 0).sum(axis=0) >= 2
        kf = KalmanFilter3D(k, kalman, motion)
        ambiguity = triangulation.prior_ambiguity_mm
        with tqdm(total=s, desc="kalman", unit="frame", disable=not progress, leave=False) as bar:
            for i in range(s):
                if not emitted[i]:
                    continue
                t_ns = int(sets.capture_ns[i])
                m_xyz, m_err, m_n, m_sc = raw_mm[i], err[i], ncams[i], score[i]
                cand = maybe_prior[i]
                if cand.any():
                    prior = kf.predict_position(t_ns, ambiguity)
                    sel = np.flatnonzero(cand & np.isfinite(prior[:, 0]))
                    if sel.size:
                        p = sets.points[:, i, sel]
                        again = triangulate(rig, p[..., :2], p[..., 2], triangulation, prior[sel])
                        m_xyz, m_err, m_n, m_sc = m_xyz.copy(), m_err.copy(), m_n.copy(), m_sc.copy()
                        m_xyz[sel], m_err[sel], m_n[sel], m_sc[sel] = (
                            again.points_mm, again.reprojection_error_px, again.n_cameras, again.score)
                out = kf.step(t_ns, m_xyz, m_err, m_sc, 0.0, m_n)
                filtered[i] = out.filtered_mm
                if (i & 255) == 255:
                    bar.update(256)
            bar.update(s - bar.n)
    return Poses3D(raw_mm, err, ncams, score, filtered)


# ---------------------------------------------------------------------------------------------------
# outputs


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def write_csv(df: pd.DataFrame, path: Path, digits: int = 12) -> None:
    """A table as CSV, NaN as an empty field (as recorder.tables writes), floats to `digits` significant digits.

    About 3x faster than `DataFrame.to_csv` (one %-format per row instead of per value): writing is
    most of the command's time otherwise. 12 digits keep 1e-8 mm at a metre.
    """
    fmt = ",".join("%d" if pd.api.types.is_integer_dtype(t) else f"%.{digits}g" for t in df.dtypes)
    rows = df.to_numpy(object).tolist() if len(set(df.dtypes)) > 1 else df.to_numpy().tolist()
    lines = [",".join(map(str, df.columns))]
    lines += [(fmt % tuple(r)) for r in rows]
    text = "\n".join(lines) + "\n"
    path.write_text(text.replace(",nan", ",").replace("\nnan,", "\n,"))


def _pose2d_table(frame_index: np.ndarray, capture_ns: np.ndarray, points: np.ndarray, keypoints: Sequence[str]) -> pd.DataFrame:
    from recorder.tables import pose2d_columns

    ok = frame_index >= 0
    data = np.column_stack([frame_index[ok], capture_ns[ok], np.zeros(ok.sum(), np.int64)])
    df = pd.DataFrame(points[ok].reshape(int(ok.sum()), -1), columns=pose2d_columns(keypoints)[3:])
    df.insert(0, "recv_ns", data[:, 2])
    df.insert(0, "capture_ns", data[:, 1])
    df.insert(0, "frame_index", data[:, 0])
    return df


def _pose3d_table(sets: FrameSets, poses: Poses3D, keypoints: Sequence[str], cameras: Sequence[str]) -> pd.DataFrame:
    """pose3d.csv of recorder/FORMAT.md: the columns of `recorder.tables.pose3d_columns`."""
    from recorder.tables import pose3d_columns

    s = len(sets.capture_ns)
    cols: dict[str, np.ndarray] = {"fnum": np.arange(s), "capture_ns": sets.capture_ns,
                                   "wall_ns": sets.capture_ns, "recv_ns": np.zeros(s, np.int64)}
    for j, kp in enumerate(keypoints):
        for a, ax in enumerate("xyz"):
            cols[f"{kp}_{ax}"] = poses.raw_mm[:, j, a]
        cols[f"{kp}_error"] = poses.error_px[:, j]
        cols[f"{kp}_ncams"] = poses.ncams[:, j].astype(np.int64)
        cols[f"{kp}_score"] = poses.score[:, j]
        for a, ax in enumerate("xyz"):
            cols[f"{kp}_f{ax}"] = poses.filtered_mm[:, j, a]
    for c, cam in enumerate(cameras):
        cols[f"frame_index_{cam}"] = sets.frame_index[c]
    df = pd.DataFrame(cols)
    return df[pose3d_columns(keypoints, cameras)]


def _dlc_3d_table(poses: Poses3D, keypoints: Sequence[str], scorer: str) -> pd.DataFrame:
    """DeepLabCut's 3D table layout: (scorer, bodyparts, coords x/y/z), one row per frame set, mm."""
    cols = pd.MultiIndex.from_product([[scorer], list(keypoints), ["x", "y", "z"]], names=["scorer", "bodyparts", "coords"])
    return pd.DataFrame(poses.raw_mm.reshape(len(poses.raw_mm), -1), columns=cols)


def to_json(value: Any) -> str:
    """JSON text with non-finite floats as the strings "inf", "-inf", "nan" (strict JSON has none)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=2, allow_nan=False)


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if not v.size:
        return {"p50": None, "p95": None}
    return {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}


def write_output(out: Path, calibration_path: Path, rig_config: Path | None, cameras: Sequence[str],
                 keypoints: Sequence[str], sets: FrameSets, poses: Poses3D, fps: float, summary: dict[str, Any],
                 write_dlc_h5: bool, write_nwb: bool) -> list[str]:
    """Write the session folder `out` (which must be new and empty). Returns the files written."""
    from ratrig import __version__
    from recorder.export import anipose_pose3d_table

    files = {"calibration": "calibration.toml", "pose3d": "pose3d.csv", "anipose_pose3d": "pose-3d.csv",
             "summary": "summary.json"}
    shutil.copyfile(calibration_path, out / "calibration.toml")
    if rig_config is not None:
        shutil.copyfile(rig_config, out / "rig.toml")
        files["rig"] = "rig.toml"
    (out / "pose2d").mkdir()
    for c, cam in enumerate(cameras):
        write_csv(_pose2d_table(sets.frame_index[c], sets.capture_ns, sets.points[c], keypoints),
                  out / "pose2d" / f"{cam}.csv")
        files[f"pose2d/{cam}"] = f"pose2d/{cam}.csv"
    write_csv(_pose3d_table(sets, poses, keypoints, cameras), out / "pose3d.csv")
    write_csv(anipose_pose3d_table(poses.raw_mm, poses.error_px, poses.ncams, poses.score, keypoints),
              out / "pose-3d.csv")
    if write_dlc_h5:
        _dlc_3d_table(poses, keypoints, "ratrig_triangulate").to_hdf(out / "pose3d_dlc.h5", key="df_with_missing",
                                                                      format="table", mode="w")
        files["dlc_pose3d"] = "pose3d_dlc.h5"
    meta = {
        "format": "ratrig-session",
        "format_version": 1,
        "ratrig_version": __version__,
        "status": "complete",
        "rig_name": "triangulate",
        "cameras": list(cameras),
        "camera_fps": {c: float(fps) for c in cameras},
        "keypoints": list(keypoints),
        "started_wall_ns": 0,
        "ended_wall_ns": int(sets.capture_ns[-1]) if len(sets.capture_ns) else 0,
        "timebase": {"monotonic_ns": 0, "wall_ns": 0},
        "files": files,
        "counts": {"pose2d_rows": {c: int((sets.frame_index[i] >= 0).sum()) for i, c in enumerate(cameras)},
                   "pose3d_rows": int(len(sets.capture_ns)), "events": 0},
        "source": {"command": "ratrig triangulate", "inputs": summary["inputs"],
                   "clock": "capture_ns = frame number x frame period (or the timestamp files); wall clock unknown"},
        "warnings": list(summary["warnings"]),
    }
    (out / "session.json").write_text(json.dumps(meta, indent=2))
    if write_nwb:
        from recorder.export import export_nwb
        from recorder.session import open_session

        export_nwb(open_session(out, repair=False), out / "pose3d.nwb")
        files["nwb"] = "pose3d.nwb"
        (out / "session.json").write_text(json.dumps(meta, indent=2))
    summary["outputs"] = sorted(files.values())
    (out / "summary.json").write_text(to_json(summary))
    return sorted(files.values())


# ---------------------------------------------------------------------------------------------------
# the API


def load_keypoint_map(path: Path) -> dict[str, str]:
    """A keypoint map TOML (`[keypoints]` file_name = "rig_name", "" drops) -> dict; errors name the file."""
    from ratrig.tomlio import TOMLDecodeError, read_toml

    try:
        data = read_toml(path)
    except (OSError, TOMLDecodeError) as e:
        raise TriangulateError(f"{path}: not a readable keypoint map (TOML) ({e})") from None
    table = data.get("keypoints", data)
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise TriangulateError(f"{path}: expected [keypoints] file_name = \"rig_name\" entries (strings)")
    return {str(k): str(v) for k, v in table.items()}


def _rig_settings(options: TriangulateOptions) -> tuple[Any, TriangulationOptions, KalmanOptions, dict]:
    """(rig config or None, triangulation options, Kalman options, keypoint motion) after overrides."""
    tri, kal, motion, rig = TriangulationOptions(), KalmanOptions(), {}, None
    if options.rig_config is not None:
        from fusion.process import options_from_config
        from ratrig.config import ConfigError, load_config

        try:
            rig = load_config(options.rig_config)
            fo = options_from_config(rig)
        except (ConfigError, ValueError) as e:
            raise TriangulateError(str(e)) from None
        tri, kal, motion = fo.triangulation, fo.kalman, dict(fo.keypoint_motion)
    return (rig, options.triangulation or tri, options.kalman_options or kal,
            dict(options.keypoint_motion) if options.keypoint_motion is not None else motion)


def triangulate_files(calibration: Path, poses: Mapping[str, Path] | Path, out: Path,
                      options: TriangulateOptions = TriangulateOptions()) -> dict[str, Any]:
    """Triangulate per-camera 2D pose files into the session folder `out`; returns the summary.

    Args:
        calibration: Anipose calibration.toml (it may hold more cameras than there are files).
        poses: camera name -> DeepLabCut .h5/.csv or SLEAP analysis .h5; or one folder whose files
            are matched to the calibration's camera names by file name.
        out: the output folder (must not exist unless options.overwrite).
        options: see TriangulateOptions.

    Raises:
        TriangulateError: bad input, naming the file and what was expected; nothing is left at `out`.
    """
    t_start = time.perf_counter()
    calibration, out = Path(calibration), Path(out)
    if out.exists() and not options.overwrite:
        raise TriangulateError(f"{out}: exists; choose a new output folder (or overwrite)")
    try:
        calib = load_calibration(calibration)
    except CalibrationError as e:
        raise TriangulateError(str(e)) from None
    try:
        files = _resolve_poses(poses, calib, calibration)
    except PoseFileError as e:
        raise TriangulateError(str(e)) from None
    cameras = [c for c in calib.names if c in files]
    if len(cameras) < 2:
        raise TriangulateError(f"{calibration}: triangulation needs pose files of at least 2 of its cameras {list(calib.names)}, got {cameras}")
    rig, tri_opts, kal_opts, motion = _rig_settings(options)
    rig_keypoints = options.keypoints or (tuple(rig.keypoints) if rig is not None else None)
    if rig is not None:
        missing = [c for c in cameras if c not in rig.camera_names]
        if missing:
            raise TriangulateError(f"{options.rig_config}: cameras {missing} of the pose files are not rig cameras {list(rig.camera_names)}")
    fps = options.fps or (max(c.fps for c in rig.cameras) if rig is not None else None)
    warnings: list[str] = []
    if not fps:
        fps = 30.0
        warnings.append("frame rate unknown (no --fps, no rig config): assumed 30 fps for capture times and the Kalman filter")
    if not (math.isfinite(fps) and fps > 0):
        raise TriangulateError(f"fps: expected a positive number, got {fps!r}")
    if options.filter_2d not in ("none", "median", "viterbi"):
        raise TriangulateError(f"filter: expected none, median or viterbi, got {options.filter_2d!r}")
    if options.timestamps and set(options.timestamps) != set(cameras):
        raise TriangulateError(
            f"timestamps: expected a timestamp file for every camera {cameras} or none, got {sorted(options.timestamps)}")

    t_read = time.perf_counter()
    tracks: dict[str, PoseTrack] = {}
    for cam in cameras:
        try:
            tracks[cam] = read_pose_file(files[cam], options.individual)
        except PoseFileError as e:
            raise TriangulateError(str(e)) from None
        t = tracks[cam]
        if t.n_frames == 0:
            raise TriangulateError(f"{t.path}: no rows; expected 2D keypoints of camera {cam}'s video")
        if not np.isfinite(t.points[..., :2]).any():
            raise TriangulateError(f"{t.path}: every keypoint of every frame is NaN; expected 2D positions for camera {cam}")
    columns = {cam: _map_keypoints(tracks[cam], options.keypoint_map, rig_keypoints) for cam in cameras}
    if rig_keypoints is None:
        keypoints = list(dict.fromkeys(n for cam in cameras for n in columns[cam][1]))
    else:
        keypoints = list(rig_keypoints)
    if not keypoints:
        raise TriangulateError("no keypoints left after --keypoint-map")
    in_files = {kp for cam in cameras for kp in tracks[cam].keypoints}
    unused_map = sorted(set(options.keypoint_map) - in_files)
    if unused_map:
        warnings.append(f"keypoint map: {unused_map} are in none of the pose files")
    unseen = [k for k in keypoints if not any(k in columns[cam][1] for cam in cameras)]
    if unseen:
        warnings.append(f"rig keypoints {unseen} are in none of the pose files (NaN throughout)")
    stamps = None
    if options.timestamps:
        try:
            stamps = {cam: read_timestamps(options.timestamps[cam]) for cam in cameras}
        except PoseFileError as e:
            raise TriangulateError(str(e)) from None
    period_ns = int(round(1e9 / fps))
    if stamps:
        for cam in cameras:
            ns, fr = stamps[cam]
            n_video = len(ns) if fr is None else int(fr.max()) + 1
            last = int(tracks[cam].frame_index[-1])
            if last + 1 < n_video:
                warnings.append(f"{tracks[cam].path}: ends at frame {last}, its timestamp file "
                                f"{options.timestamps[cam]} goes on to frame {n_video - 1}")
    sets = build_frame_sets(tracks, cameras, keypoints, columns, period_ns, stamps)
    if options.filter_2d != "none":
        from recorder.filters import median_filter, viterbi_filter

        filt = median_filter if options.filter_2d == "median" else viterbi_filter
        sets = FrameSets(sets.capture_ns, sets.frame_index, np.stack([filt(p) for p in sets.points]))
    t_fuse = time.perf_counter()
    rig_geom = RigGeometry.from_calibration(calib.subset(cameras))
    motion_list = [motion.get(k) for k in keypoints] if motion else None
    poses3d = fuse(rig_geom, sets, tri_opts, kal_opts if options.kalman else None, motion_list, options.progress)
    t_done = time.perf_counter()

    s = len(sets.capture_ns)
    cam_report = {}
    for c, cam in enumerate(cameras):
        t = tracks[cam]
        gaps = int(t.frame_index[-1] - t.frame_index[0] + 1 - t.n_frames)
        absent = [k for k in keypoints if k not in columns[cam][1]]
        cam_report[cam] = {
            "file": str(t.path), "format": t.source_software, "individual": t.individual, "rows": t.n_frames,
            "first_frame": int(t.frame_index[0]), "last_frame": int(t.frame_index[-1]),
            "missing_frames": gaps, "frame_sets_without_this_camera": int((sets.frame_index[c] < 0).sum()),
            "keypoints_absent": absent,
        }
        if t.index_note:
            cam_report[cam]["index_note"] = t.index_note
            warnings.append(f"{t.path}: {t.index_note}")
        if gaps:
            warnings.append(f"{t.path}: {gaps} frame numbers missing between {int(t.frame_index[0])} and {int(t.frame_index[-1])} (no view of this camera there)")
        if absent:
            warnings.append(f"{t.path}: keypoints {absent} absent from this file (NaN views)")
    lengths = {cam: tracks[cam].n_frames for cam in cameras}
    if len(set(lengths.values())) > 1:
        warnings.append(f"cameras have different numbers of rows {lengths}: frames matched by "
                        f"{'capture time' if stamps else 'frame number'}, the shorter ones are NaN past their end")
    for w in warnings:
        log.warning("%s", w)
    fin = np.isfinite(poses3d.raw_mm[..., 0])
    finf = np.isfinite(poses3d.filtered_mm[..., 0])
    fuse_s = t_done - t_fuse
    summary: dict[str, Any] = {
        "frames": s,
        "cameras": cam_report,
        "keypoints": keypoints,
        "fps": float(fps),
        "matched_by": "timestamps" if stamps else "frame number",
        "coverage": {k: float(fin[:, j].mean()) if s else 0.0 for j, k in enumerate(keypoints)},
        "coverage_filtered": ({k: float(finf[:, j].mean()) if s else 0.0 for j, k in enumerate(keypoints)}
                              if options.kalman else None),
        "reprojection_error_px": _percentiles(poses3d.error_px),
        "ncams_mean": float(poses3d.ncams[fin].mean()) if fin.any() else None,
        "time_per_frame_ms": 1e3 * fuse_s / max(s, 1),
        "frames_per_s": s / fuse_s if fuse_s > 0 else None,
        "read_s": t_fuse - t_read,
        "fuse_s": fuse_s,
        "options": {
            "triangulation": asdict(tri_opts), "kalman": asdict(kal_opts) if options.kalman else None,
            "filter_2d": options.filter_2d, "individual": options.individual,
            "keypoint_map": dict(options.keypoint_map),
        },
        "cameras_without_file": [c for c in calib.names if c not in files],
        "inputs": {"calibration": str(calibration.resolve()), "poses": {c: str(files[c].resolve()) for c in cameras},
                   "timestamps": {c: str(Path(p).resolve()) for c, p in options.timestamps.items()},
                   "rig_config": str(options.rig_config) if options.rig_config else None},
        "warnings": warnings,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        write_output(tmp, calibration, options.rig_config, cameras, keypoints, sets, poses3d, fps, summary,
                     options.write_dlc_h5, options.write_nwb)
        summary["elapsed_s"] = time.perf_counter() - t_start
        (tmp / "summary.json").write_text(to_json(summary))
        _fsync_tree(tmp)
        if out.exists():  # overwrite: move the old one aside first, delete it only once the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


# ---------------------------------------------------------------------------------------------------
# the command


def _pairs(values: Sequence[str] | None, flag: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values or []:
        cam, sep, path = v.partition("=")
        if not sep or not cam or not path:
            raise TriangulateError(f"{flag}: expected CAMERA=FILE, got {v!r}")
        if cam in out:
            raise TriangulateError(f"{flag}: camera {cam!r} given twice")
        out[cam] = Path(path)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig triangulate",
                                description="Triangulate DeepLabCut/SLEAP 2D tracks with an Anipose calibration (no cameras).")
    p.add_argument("--calibration", required=True, type=Path, help="Anipose calibration.toml")
    p.add_argument("--pose", action="append", required=True, metavar="CAM=FILE|FOLDER",
                   help="a camera's 2D file (DeepLabCut .h5/.csv, SLEAP analysis .h5), repeatable; or one folder "
                        "whose files are matched to the calibration's camera names")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder (a ratrig session folder)")
    p.add_argument("--timestamps", action="append", default=None, metavar="CAM=FILE",
                   help="per-camera timestamp file (all cameras): match frames by capture time")
    add_triangulate_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--no-progress", action="store_true")
    return p


def add_triangulate_options(p: argparse.ArgumentParser) -> None:
    """The options that decide what the output holds, files aside (shared with `ratrig batch triangulate`)."""
    p.add_argument("--config", type=Path, default=None, help="rig TOML: keypoints, fps and [fusion] settings")
    p.add_argument("--keypoints", default=None, help="rig keypoints, comma-separated (default: the config's, else the files')")
    p.add_argument("--keypoint-map", type=Path, default=None, help="TOML [keypoints] file_name = \"rig_name\" (\"\" drops)")
    p.add_argument("--individual", default=None, help="the animal to take from multi-animal files")
    p.add_argument("--fps", type=float, default=None, help="video frame rate (default: the config's, else 30)")
    p.add_argument("--filter", default="none", choices=["none", "median", "viterbi"], help="2D filter of `ratrig reprocess`")
    p.add_argument("--min-likelihood", type=float, default=None, help="views below this likelihood are not used")
    p.add_argument("--outlier-threshold-px", type=float, default=None, help="outlier search threshold (inf: off)")
    p.add_argument("--no-kalman", action="store_true", help="raw triangulation only")
    p.add_argument("--nwb", action="store_true", help="also write OUT/pose3d.nwb (ndx-pose)")
    p.add_argument("--no-dlc-h5", action="store_true", help="do not write OUT/pose3d_dlc.h5")


def options_from_args(args: argparse.Namespace) -> TriangulateOptions:
    """Parsed options -> TriangulateOptions (absent --timestamps/--overwrite/--no-progress: their defaults).

    Raises:
        TriangulateError: a bad --timestamps pair or keypoint map, naming it.
    """
    tri = None
    if args.min_likelihood is not None or args.outlier_threshold_px is not None:
        base = _rig_settings(TriangulateOptions(rig_config=args.config))[1]
        tri = dataclasses.replace(
            base,
            **({"min_likelihood": args.min_likelihood} if args.min_likelihood is not None else {}),
            **({"outlier_threshold_px": args.outlier_threshold_px} if args.outlier_threshold_px is not None else {}),
        )
    return TriangulateOptions(
        keypoints=tuple(k.strip() for k in args.keypoints.split(",") if k.strip()) if args.keypoints else None,
        keypoint_map=load_keypoint_map(args.keypoint_map) if args.keypoint_map else {},
        individual=args.individual, timestamps=_pairs(getattr(args, "timestamps", None), "--timestamps"), fps=args.fps,
        rig_config=args.config, triangulation=tri, kalman=not args.no_kalman, filter_2d=args.filter,
        write_dlc_h5=not args.no_dlc_h5, write_nwb=args.nwb, overwrite=getattr(args, "overwrite", False),
        progress=not getattr(args, "no_progress", True),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done; 2 bad input (the message names the file and what was expected)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if len(args.pose) == 1 and "=" not in args.pose[0]:
            poses: Mapping[str, Path] | Path = Path(args.pose[0])
        else:
            poses = _pairs(args.pose, "--pose")
        summary = triangulate_files(args.calibration, poses, args.output, options_from_args(args))
    except TriangulateError as e:
        print(f"ratrig triangulate: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # reading or writing failed (disk full, permissions): nothing left under OUT
        print(f"ratrig triangulate: {e}", file=sys.stderr)
        return 1
    rep = summary["reprojection_error_px"]
    print(json.dumps({"output": str(args.output), "frames": summary["frames"], "coverage": summary["coverage"],
                      "reprojection_error_px": rep, "frames_per_s": summary["frames_per_s"]}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
