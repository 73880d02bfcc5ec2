"""Append-only CSV tables that survive a kill, and the column layouts of a session folder.

Every table of a session is a CSV file written only by appending whole lines, flushed and fsynced
at bounded intervals. A kill can leave at most one torn (partial) last line; `read_table` drops it
and `repair_table` truncates the file to its last complete line.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: Per-camera frame table: one row per frame written to the camera's video.
FRAME_COLUMNS: tuple[str, ...] = (
    "frame_index",  # the camera's own running frame number (gaps = frames lost before the recorder)
    "capture_ns",  # capture time, ratrig monotonic clock (ratrig.clock.now_ns), ns
    "wall_ns",  # the same moment on the wall clock (Unix epoch), ns
    "recv_ns",  # when the recorder received the frame, monotonic ns
    "segment",  # number of the video segment holding the frame
    "segment_frame",  # position of the frame inside that segment (0-based)
)

#: Per-camera segment table: one row per video segment, appended when the segment is closed.
SEGMENT_COLUMNS: tuple[str, ...] = ("segment", "file", "first_frame_index", "n_frames", "closed_ns")


def pose2d_columns(keypoints: Sequence[str]) -> list[str]:
    """Columns of pose2d/<camera>.csv: frame_index, capture_ns, recv_ns, then x, y, likelihood per keypoint."""
    cols = ["frame_index", "capture_ns", "recv_ns"]
    for kp in keypoints:
        cols += [f"{kp}_x", f"{kp}_y", f"{kp}_likelihood"]
    return cols


def pose3d_columns(keypoints: Sequence[str], cameras: Sequence[str]) -> list[str]:
    """Columns of pose3d.csv: Anipose's pose-3d names per keypoint plus filtered `_fx, _fy, _fz`.

    fnum (the frame-set index), capture_ns, wall_ns, recv_ns, then per keypoint
    `{kp}_x, {kp}_y, {kp}_z, {kp}_error, {kp}_ncams, {kp}_score, {kp}_fx, {kp}_fy, {kp}_fz`, then
    `frame_index_{camera}` per camera (-1 where that camera had no frame in the set).
    """
    cols = ["fnum", "capture_ns", "wall_ns", "recv_ns"]
    for kp in keypoints:
        cols += [f"{kp}_{s}" for s in ("x", "y", "z", "error", "ncams", "score", "fx", "fy", "fz")]
    cols += [f"frame_index_{c}" for c in cameras]
    return cols


def format_row(values: Sequence[object]) -> str:
    """One CSV line. Floats use repr precision; NaN is written as an empty field."""
    out = []
    for v in values:
        if isinstance(v, (float, np.floating)):
            out.append("" if not np.isfinite(v) else repr(float(v)))
        else:
            out.append(str(v))
    return ",".join(out) + "\n"


class AppendTable:
    """A CSV file that grows by whole lines; `sync()` makes everything appended so far durable.

    Lines are buffered in memory between syncs, so a kill loses at most what was appended since the
    last `sync()` (the caller syncs every flush interval). Not thread-safe: one writer per table.
    """

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "ab", buffering=0)
        self._pending: list[str] = []
        self.rows = 0
        if new:
            self._pending.append(",".join(self.columns) + "\n")
            self.sync()

    def append(self, values: Sequence[object]) -> None:
        if len(values) != len(self.columns):
            raise ValueError(f"{self.path}: row has {len(values)} values, expected {len(self.columns)}")
        self._pending.append(format_row(values))
        self.rows += 1

    def sync(self) -> None:
        """Write pending lines in one call, flush and fsync."""
        if self._pending:
            self._f.write("".join(self._pending).encode())
            self._pending.clear()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


class JsonlLog:
    """An append-only JSON-lines file with the same sync discipline as `AppendTable`."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab", buffering=0)
        self._pending: list[str] = []
        self.rows = 0

    def append(self, line_json: str) -> None:
        if "\n" in line_json:
            raise ValueError("a JSON line must not contain a newline")
        self._pending.append(line_json + "\n")
        self.rows += 1

    def sync(self) -> None:
        if self._pending:
            self._f.write("".join(self._pending).encode())
            self._pending.clear()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


def complete_bytes(data: bytes) -> bytes:
    """The prefix of `data` that ends with its last newline (a torn last line removed)."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""


def read_table(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read an append-only CSV, ignoring a torn last line. Empty fields read as NaN.

    Raises:
        ValueError: naming the file when the header does not match `columns`.
    """
    path = Path(path)
    data = complete_bytes(path.read_bytes()) if path.exists() else b""
    if not data:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in (columns or [])})
    df = pd.read_csv(io.BytesIO(data))
    if columns is not None and list(df.columns) != list(columns):
        missing = [c for c in columns if c not in df.columns]
        raise ValueError(f"{path}: columns do not match the expected layout (missing {missing[:5]})")
    return df


def read_jsonl(path: str | os.PathLike[str]) -> list[dict]:
    """Read a JSON-lines file, ignoring a torn last line."""
    import json

    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(complete_bytes(path.read_bytes()).decode().splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON: {e}") from None
    return out


def repair_table(path: str | os.PathLike[str]) -> int:
    """Truncate a file to its last complete line. Returns the number of bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    keep = len(complete_bytes(path.read_bytes()))
    if keep < size:
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    return size - keep
