"""Reading a recorded session folder (the layout of FORMAT.md) and repairing a torn one.

    s = open_session("sessions/rat07")
    s.cameras                      # ("cam_ne", ...)
    s.frames("cam_ne")             # DataFrame: frame_index, capture_ns, wall_ns, recv_ns, segment, segment_frame
    for row, image in s.iter_frames("cam_ne"): ...
    s.frame("cam_ne", 1234)        # one image by frame_index
    s.pose2d("cam_ne").points      # (N, K, 3) x px, y px, likelihood
    p = s.pose3d(); p.raw_mm, p.filtered_mm   # (N, K, 3) world mm, NaN = none
    s.events()                     # list of dicts
    s.results()                    # reprocessed/<stamp> folders; s.pose3d(result="...") reads one

A session whose recorder was killed has status "recording" and a dead recorder pid: opening it
repairs it in place (`repair_session`): torn last lines are cut, the video segment that was being
written is moved to torn/ and only frames of closed segments stay in the frame tables.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ratrig.tomlio import atomic_write_text
from recorder.tables import (
    FRAME_COLUMNS,
    SEGMENT_COLUMNS,
    read_jsonl,
    read_table,
    repair_table,
)
from recorder.video import iter_segment_frames

SESSION_FILE = "session.json"


class SessionFormatError(ValueError):
    """A folder that is not a readable ratrig session; the message names the file."""


@dataclass(frozen=True)
class Pose2D:
    """2D keypoints of one camera. `points` (N, K, 3): x px, y px, likelihood; NaN = none."""

    camera: str
    keypoints: tuple[str, ...]
    frame_index: np.ndarray  # (N,) int64
    capture_ns: np.ndarray  # (N,) int64
    points: np.ndarray  # (N, K, 3) float64


@dataclass(frozen=True)
class Pose3D:
    """3D poses, one row per frame set. Arrays (N, K, 3) world mm / (N, K); NaN = not triangulated."""

    keypoints: tuple[str, ...]
    fnum: np.ndarray  # (N,) frame-set index
    capture_ns: np.ndarray  # (N,)
    raw_mm: np.ndarray  # (N, K, 3)
    filtered_mm: np.ndarray  # (N, K, 3); NaN where the source has no filtered pose
    error_px: np.ndarray  # (N, K) reprojection error
    ncams: np.ndarray  # (N, K)
    score: np.ndarray  # (N, K)
    frame_indices: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (N,) frame_index, -1 none


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    try:  # a pid can be reused: only a python process counts as the recorder
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"python" in cmd or b"ratrig" in cmd or b"recorder" in cmd
    except OSError:
        return True


def pose3d_from_table(df: pd.DataFrame, keypoints: tuple[str, ...], cameras: tuple[str, ...]) -> Pose3D:
    """pose3d.csv (live or reprocessed; Anipose column names) -> Pose3D."""
    n = len(df)

    def col(name: str, default: float = np.nan) -> np.ndarray:
        return df[name].to_numpy(np.float64) if name in df.columns else np.full(n, default)

    raw = np.stack([np.stack([col(f"{k}_x"), col(f"{k}_y"), col(f"{k}_z")], -1) for k in keypoints], 1) if keypoints else np.zeros((n, 0, 3))
    filt = np.stack([np.stack([col(f"{k}_fx"), col(f"{k}_fy"), col(f"{k}_fz")], -1) for k in keypoints], 1) if keypoints else np.zeros((n, 0, 3))
    err = np.stack([col(f"{k}_error") for k in keypoints], 1) if keypoints else np.zeros((n, 0))
    ncams = np.stack([col(f"{k}_ncams", 0) for k in keypoints], 1) if keypoints else np.zeros((n, 0))
    score = np.stack([col(f"{k}_score") for k in keypoints], 1) if keypoints else np.zeros((n, 0))
    fnum = df["fnum"].to_numpy(np.int64) if "fnum" in df.columns else np.arange(n)
    cap = df["capture_ns"].to_numpy(np.int64) if "capture_ns" in df.columns else np.zeros(n, np.int64)
    fi = {c: df[f"frame_index_{c}"].to_numpy(np.int64) for c in cameras if f"frame_index_{c}" in df.columns}
    return Pose3D(keypoints, fnum, cap, raw.reshape(n, len(keypoints), 3), filt.reshape(n, len(keypoints), 3),
                  err, np.nan_to_num(ncams).astype(np.int64), score, fi)


class Session:
    """A recorded session folder (read-only view). Build with `open_session`."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        self.meta = meta

    # -- metadata --------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown"))

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.meta["cameras"])

    @property
    def keypoints(self) -> tuple[str, ...]:
        return tuple(self.meta["keypoints"])

    @property
    def ratrig_version(self) -> str:
        return str(self.meta.get("ratrig_version"))

    def fps(self, camera: str) -> float:
        return float(self.meta.get("camera_fps", {}).get(camera, 30.0))

    @property
    def config_path(self) -> Path:
        return self.path / "rig.toml"

    @property
    def calibration_path(self) -> Path | None:
        p = self.path / "calibration.toml"
        return p if p.is_file() else None

    @property
    def model(self) -> dict[str, Any]:
        p = self.path / "model.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def encoder(self, camera: str) -> dict[str, Any]:
        return dict(self.meta.get("encoder", {}).get(camera, {}))

    # -- video and frame tables -------------------------------------------------------------------
    def camera_dir(self, camera: str) -> Path:
        if camera not in self.cameras:
            raise KeyError(f"{self.path}: no camera {camera!r} (has {list(self.cameras)})")
        return self.path / "cameras" / camera

    def segments(self, camera: str) -> pd.DataFrame:
        """Closed segments of a camera: segment, file, first_frame_index, n_frames, closed_ns."""
        return read_table(self.camera_dir(camera) / "segments.csv", SEGMENT_COLUMNS)

    def frames(self, camera: str) -> pd.DataFrame:
        """Frame table of a camera, only rows whose video segment was closed (readable)."""
        df = read_table(self.camera_dir(camera) / "frames.csv", FRAME_COLUMNS)
        closed = set(self.segments(camera)["segment"].astype(int))
        df = df[df["segment"].isin(closed)].reset_index(drop=True)
        return df.astype({c: np.int64 for c in FRAME_COLUMNS})

    def video_paths(self, camera: str) -> list[Path]:
        """The camera's closed segment files in recording order."""
        d = self.camera_dir(camera)
        return [d / f for f in self.segments(camera).sort_values("segment")["file"]]

    def is_mono(self, camera: str) -> bool:
        return self.encoder(camera).get("is_color") is False

    def iter_frames(self, camera: str) -> Iterator[tuple[pd.Series, np.ndarray]]:
        """(frame-table row, image) for every recorded frame of a camera, in order."""
        frames = self.frames(camera)
        mono = self.is_mono(camera)
        d = self.camera_dir(camera)
        for seg, rows in frames.groupby("segment", sort=True):
            seg_rows = self.segments(camera)
            fname = seg_rows.loc[seg_rows["segment"] == seg, "file"].iloc[0]
            images = iter_segment_frames(d / fname, mono)
            pos = 0
            for _, row in rows.sort_values("segment_frame").iterrows():
                img = None
                while pos <= int(row["segment_frame"]):
                    img = next(images, None)
                    pos += 1
                    if img is None:
                        raise SessionFormatError(f"{d / fname}: frame {int(row['segment_frame'])} listed in frames.csv does not decode")
                yield row, img

    def frame(self, camera: str, frame_index: int) -> np.ndarray:
        """One recorded image by its camera frame_index (seeks inside its segment).

        Raises:
            KeyError: the frame was not recorded (lost, or after the last closed segment).
        """
        frames = self.frames(camera)
        rows = frames[frames["frame_index"] == int(frame_index)]
        if rows.empty:
            raise KeyError(f"{self.path}: camera {camera} has no recorded frame {frame_index}")
        row = rows.iloc[0]
        segs = self.segments(camera)
        fname = segs.loc[segs["segment"] == row["segment"], "file"].iloc[0]
        import cv2

        cap = cv2.VideoCapture(str(self.camera_dir(camera) / fname), cv2.CAP_FFMPEG)
        try:
            # both codecs are intra-only, so seeking to a frame number is exact
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(row["segment_frame"]))
            ok, img = cap.read()
        finally:
            cap.release()
        if not ok:
            raise SessionFormatError(f"{fname}: frame {int(row['segment_frame'])} does not decode")
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if self.is_mono(camera) and img.ndim == 3 else img

    # -- poses and events --------------------------------------------------------------------------
    def _pose_root(self, result: str | None) -> Path:
        if result is None:
            return self.path
        p = self.path / "reprocessed" / result
        if not p.is_dir():
            raise KeyError(f"{self.path}: no reprocessed result {result!r} (has {self.results()})")
        return p

    def results(self) -> list[str]:
        """Names of reprocessed/<stamp> results, oldest first."""
        d = self.path / "reprocessed"
        # hidden folders are results still being written (renamed into place when complete)
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                      and (p / "result.json").exists()) if d.is_dir() else []

    def pose2d(self, camera: str, result: str | None = None) -> Pose2D:
        self.camera_dir(camera)
        df = read_table(self._pose_root(result) / "pose2d" / f"{camera}.csv")
        n, kps = len(df), self.keypoints
        pts = np.full((n, len(kps), 3), np.nan)
        for k, name in enumerate(kps):
            for j, s in enumerate(("x", "y", "likelihood")):
                c = f"{name}_{s}"
                if c in df.columns:
                    pts[:, k, j] = df[c].to_numpy(np.float64)
        fi = df["frame_index"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        cap = df["capture_ns"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        return Pose2D(camera, kps, fi, cap, pts)

    def pose3d(self, result: str | None = None) -> Pose3D:
        df = read_table(self._pose_root(result) / "pose3d.csv")
        return pose3d_from_table(df, self.keypoints, self.cameras)

    def pose3d_table(self, result: str | None = None) -> pd.DataFrame:
        return read_table(self._pose_root(result) / "pose3d.csv")

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "events.jsonl")

    def stats(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "stats.jsonl")

    def counts(self) -> dict[str, Any]:
        return dict(self.meta.get("counts", {}))


def _read_meta(path: Path) -> dict[str, Any]:
    f = path / SESSION_FILE
    if not f.is_file():
        raise SessionFormatError(f"{f}: not found; is {path} a ratrig session folder?")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise SessionFormatError(f"{f}: not valid JSON ({e})") from None
    if meta.get("format") != "ratrig-session":
        raise SessionFormatError(f"{f}: 'format' is {meta.get('format')!r}, expected 'ratrig-session'")
    for key in ("cameras", "keypoints"):
        if not isinstance(meta.get(key), list):
            raise SessionFormatError(f"{f}: '{key}' missing or not a list")
    return meta


def repair_session(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Make a killed session consistent on disk. Returns what was cut.

    Torn last lines of every table are truncated; frame rows of segments that were never closed are
    removed; segment files that were never closed are moved to torn/<camera>/ (kept, not deleted).
    The session.json status becomes "recovered".
    """
    path = Path(path)
    meta = _read_meta(path)
    report: dict[str, Any] = {"truncated_bytes": {}, "torn_segments": {}, "dropped_frame_rows": {}}
    tables = [path / "pose3d.csv", path / "events.jsonl", path / "stats.jsonl"]
    tables += [path / "pose2d" / f"{c}.csv" for c in meta["cameras"]]
    for cam in meta["cameras"]:
        d = path / "cameras" / cam
        tables += [d / "frames.csv", d / "segments.csv"]
    for t in tables:
        cut = repair_table(t)
        if cut:
            report["truncated_bytes"][str(t.relative_to(path))] = cut
    for cam in meta["cameras"]:
        d = path / "cameras" / cam
        if not d.is_dir():
            continue
        segs = read_table(d / "segments.csv", SEGMENT_COLUMNS)
        closed = set(segs["file"])
        torn = [p for p in sorted(d.iterdir()) if p.name.startswith("seg_") and p.name not in closed]
        for p in torn:
            dest = path / "torn" / cam
            dest.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), dest / p.name)
        if torn:
            report["torn_segments"][cam] = [p.name for p in torn]
        frames = read_table(d / "frames.csv", FRAME_COLUMNS)
        keep = frames["segment"].isin(set(segs["segment"].astype(int)))
        if (~keep).any():
            report["dropped_frame_rows"][cam] = int((~keep).sum())
            atomic_write_text(d / "frames.csv", frames[keep].to_csv(index=False))
    meta["status"] = "recovered"
    meta["repair"] = report
    atomic_write_text(path / SESSION_FILE, json.dumps(meta, indent=2))
    return report


def open_session(path: str | os.PathLike[str], repair: bool | None = None) -> Session:
    """Open a session folder.

    Args:
        path: the session folder (the one holding session.json).
        repair: True: repair a torn session on disk; False: never write (torn parts are ignored in
            memory); None (default): repair only when the recorder is no longer running.

    Raises:
        SessionFormatError: naming the file that is missing or malformed.
    """
    path = Path(path)
    meta = _read_meta(path)
    if meta.get("status") == "recording":
        alive = _pid_alive(meta.get("recorder", {}).get("pid"))
        if repair or (repair is None and not alive):
            repair_session(path)
            meta = _read_meta(path)
    return Session(path, meta)
