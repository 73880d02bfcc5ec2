"""Writes one session folder: per-camera segmented video and frame tables, 2D/3D poses, events.

`SessionWriter` is fed packets by one receiving thread (the recorder process) and owns one writer
thread per camera with a bounded queue, so a slow disk on one camera never stalls the others or
the receipt of poses. Nothing is dropped silently: a frame that finds its camera's queue full is
counted (``dropped_queue_full``) and logged as an error, and gaps in each camera's frame_index are
counted (``missing_upstream``: lost before reaching the recorder). See FORMAT.md for the layout.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import ratrig
from ratrig.clock import TimebaseMapping, now_ns
from ratrig.config import RigConfig
from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket, StatsPacket
from ratrig.tomlio import atomic_write_text
from recorder.tables import (
    FRAME_COLUMNS,
    SEGMENT_COLUMNS,
    AppendTable,
    JsonlLog,
    pose2d_columns,
    pose3d_columns,
)
from recorder.video import CodecSpec, SegmentWriter, count_readable_frames, encoder_settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SESSION_FILE = "session.json"


class SessionError(RuntimeError):
    """The session folder cannot be created or written."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def model_identity(path: str) -> dict[str, Any]:
    """Path and content hash of a model file or export folder (sha256 over sorted relative names + contents)."""
    if not path:
        return {"path": "", "sha256": None, "files": []}
    p = Path(path)
    if p.is_file():
        return {"path": str(p.resolve()), "sha256": sha256_file(p), "files": [{"name": p.name, "bytes": p.stat().st_size}]}
    if p.is_dir():
        h = hashlib.sha256()
        files = []
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            rel = f.relative_to(p).as_posix()
            digest = sha256_file(f)
            h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
            files.append({"name": rel, "bytes": f.stat().st_size, "sha256": digest})
        return {"path": str(p.resolve()), "sha256": h.hexdigest(), "files": files}
    return {"path": str(p), "sha256": None, "files": [], "error": "not found when the session was recorded"}


@dataclass
class CameraCounters:
    received: int = 0
    written: int = 0
    missing_upstream: int = 0  # frame_index gaps: frames that never reached the recorder
    dropped_queue_full: int = 0  # frames the disk could not keep up with (recorder's own loss)
    out_of_order: int = 0  # frame_index not increasing (camera restarted or reordered)
    invalid: int = 0  # wrong shape / dtype for this camera's video
    segments: int = 0
    bytes_written: int = 0
    first_frame_index: int | None = None
    last_frame_index: int | None = None
    gaps: list[list[int]] = field(default_factory=list)  # [first missing, count], first 1000 gaps

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: below this much free space a closed segment is decoded to check it holds every frame it was given
NEAR_FULL_BYTES = 64 * 1024**2


class CameraWriter(threading.Thread):
    """Encodes one camera's frames into segments closed every `flush_interval_s` of wall time.

    A frame's row goes into frames.csv only once its segment is closed and fsynced, so every row in
    the frame table points at a frame that reads back.
    """

    def __init__(self, name: str, folder: Path, codec: CodecSpec, fps: float, quality: int,
                 flush_interval_s: float, queue_frames: int, mapping: TimebaseMapping,
                 counters: CameraCounters, on_settings: Any):
        super().__init__(name=f"recorder-{name}", daemon=True)
        self.camera = name
        self.folder = folder
        self.queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self.flush_interval_ns = int(flush_interval_s * 1e9)
        self.mapping = mapping
        self.counters = counters
        self.segments = SegmentWriter(folder, codec, fps, quality)
        self.frames = AppendTable(folder / "frames.csv", FRAME_COLUMNS)
        self.segtable = AppendTable(folder / "segments.csv", SEGMENT_COLUMNS)
        self._rows: list[tuple] = []
        self._opened_ns = 0
        self._on_settings = on_settings
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                try:
                    item = self.queue.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if item is not None and item[0] is None:
                    break
                if self.segments.is_open and now_ns() - self._opened_ns >= self.flush_interval_ns:
                    self._close_segment()
                if item is not None:
                    self._write(*item)
            if self.segments.is_open:
                self._close_segment()
        except BaseException as e:  # report to the process instead of dying silently
            self.error = e
            log.exception("camera %s: video writer failed", self.camera)
        finally:
            self.frames.close()
            self.segtable.close()

    def _write(self, packet: FramePacket, recv_ns: int) -> None:
        img = packet.image
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
            self.counters.invalid += 1
            log.error("camera %s frame %d: image %s %s is not uint8 (H,W,3) or (H,W); not recorded",
                      self.camera, packet.frame_index, img.dtype, img.shape)
            return
        if self.segments.is_open and (img.shape[1], img.shape[0]) != self.segments.size:
            self._close_segment()  # a size change starts a new segment; recorded in segments.csv
        if not self.segments.is_open:
            self.segments.open(img, packet.frame_index)
            self._opened_ns = now_ns()
            if self.segments.segment == 0:
                self._on_settings(self.camera, self.segments)
        pos = self.segments.write(img)
        self._rows.append((packet.frame_index, packet.capture_ns, self.mapping.to_wall_ns(packet.capture_ns),
                           recv_ns, self.segments.segment, pos))

    def _close_segment(self) -> None:
        seg, fname, first, n = self.segments.close()
        if shutil.disk_usage(self.folder).free < NEAR_FULL_BYTES:
            # OpenCV's writer drops frames silently when the disk fills: near full, list only the
            # frames that decode (the rest are counted lost), so every listed row still decodes
            readable = count_readable_frames(self.folder / fname)
            if readable < len(self._rows):
                self.counters.dropped_queue_full += len(self._rows) - readable
                log.error("camera %s: segment %s holds %d of its %d frames (disk full?)", self.camera, fname,
                          readable, len(self._rows))
                del self._rows[readable:]
                n = readable
        for row in self._rows:
            self.frames.append(row)
        self.frames.sync()
        self.segtable.append((seg, fname, first, n, now_ns()))
        self.segtable.sync()
        self.counters.written += len(self._rows)
        self.counters.segments += 1
        self.counters.bytes_written += (self.folder / fname).stat().st_size
        self._rows.clear()


class SessionWriter:
    """Creates and fills one session folder.

    Args:
        out: the session folder; must not exist or be empty.
        rig: the rig config (its file is copied as rig.toml; without a file the config is dumped).
        calibration_path: Anipose calibration.toml used live (copied), or "" if none.
        model_path: the DLC model used live ("" if none): path and hash are recorded.
        codec: the CodecSpec from `recorder.video.check_codec`.
    """

    def __init__(self, out: str | os.PathLike[str], rig: RigConfig, codec: CodecSpec,
                 calibration_path: str = "", model_path: str = "", connect: Mapping[str, str] | None = None):
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()):
            raise SessionError(f"{self.out}: session folder exists and is not empty; choose a new folder")
        self.out.mkdir(parents=True, exist_ok=True)
        self.rig = rig
        self.cfg = rig.recorder
        self.codec = codec
        self.keypoints = list(rig.keypoints)
        self.cameras = list(rig.camera_names)
        self.mapping = TimebaseMapping.now()
        self.started_ns = now_ns()
        self._lock = threading.Lock()
        self.counters = {c: CameraCounters() for c in self.cameras}
        self._last_index: dict[str, int] = {}
        self.encoder: dict[str, dict] = {}
        self.unknown_cameras: dict[str, int] = {}
        self.malformed = 0
        self.pose2d_rows = {c: 0 for c in self.cameras}
        self.status = "recording"
        self.warnings: list[str] = []

        self._copy_inputs(calibration_path, model_path)
        self.meta: dict[str, Any] = {
            "format": "ratrig-session",
            "format_version": FORMAT_VERSION,
            "ratrig_version": ratrig.__version__,
            "rig_name": rig.name,
            "cameras": self.cameras,
            "camera_fps": {c.name: c.fps for c in rig.cameras},
            "keypoints": self.keypoints,
            "started_wall_ns": self.mapping.wall_ns,
            "timebase": {"monotonic_ns": self.mapping.monotonic_ns, "wall_ns": self.mapping.wall_ns},
            "recorder": {"codec": codec.name, "quality": self.cfg.quality,
                         "flush_interval_s": self.cfg.flush_interval_s, "queue_frames": self.cfg.queue_frames,
                         "rcvhwm": self.cfg.rcvhwm, "pid": os.getpid(), "connect": dict(connect or {})},
            "files": {
                "rig_config": "rig.toml",
                "calibration": "calibration.toml" if (self.out / "calibration.toml").exists() else None,
                "model": "model.json",
                "pose3d": "pose3d.csv",
                "events": "events.jsonl",
                "stats": "stats.jsonl",
                "cameras": {c: f"cameras/{c}" for c in self.cameras},
                "pose2d": {c: f"pose2d/{c}.csv" for c in self.cameras},
            },
        }
        self.write_meta()

        self.pose2d = {c: AppendTable(self.out / "pose2d" / f"{c}.csv", pose2d_columns(self.keypoints)) for c in self.cameras}
        self.pose3d = AppendTable(self.out / "pose3d.csv", pose3d_columns(self.keypoints, self.cameras))
        self.events = JsonlLog(self.out / "events.jsonl")
        self.stats = JsonlLog(self.out / "stats.jsonl")
        fps = {c.name: c.fps for c in rig.cameras}
        self.writers = {
            c: CameraWriter(c, self.out / "cameras" / c, codec, fps[c], self.cfg.quality, self.cfg.flush_interval_s,
                            self.cfg.queue_frames, self.mapping, self.counters[c], self._record_settings)
            for c in self.cameras
        }
        for w in self.writers.values():
            w.start()
        self._last_sync_ns = now_ns()
        self._last_drop_log_ns: dict[str, int] = {}

    # -- inputs ---------------------------------------------------------------------------------
    def _copy_inputs(self, calibration_path: str, model_path: str) -> None:
        if self.rig.path and Path(self.rig.path).is_file():
            shutil.copyfile(self.rig.path, self.out / "rig.toml")
        else:
            import dataclasses

            import tomli_w

            d = {k: v for k, v in dataclasses.asdict(self.rig).items() if k != "path" and v is not None}
            atomic_write_text(self.out / "rig.toml", tomli_w.dumps(_drop_none(d)))
        if calibration_path:
            if not Path(calibration_path).is_file():
                raise SessionError(f"calibration file {calibration_path} not found")
            shutil.copyfile(calibration_path, self.out / "calibration.toml")
        ident = model_identity(model_path)
        ident["inference_config"] = {"engine": self.rig.inference.engine, "resize": self.rig.inference.resize,
                                     "keypoint_map": dict(self.rig.inference.keypoint_map)}
        atomic_write_text(self.out / "model.json", json.dumps(ident, indent=2))

    def _record_settings(self, camera: str, seg: SegmentWriter) -> None:
        with self._lock:
            self.encoder[camera] = encoder_settings(self.codec, seg.fps, seg.size, seg.is_color, seg.quality)

    # -- packets (called from one receiving thread) ---------------------------------------------
    def submit_frame(self, packet: FramePacket, recv_ns: int | None = None, wait_s: float = 0.0) -> bool:
        """Queue a frame for its camera's writer. False if it was lost (queue full or unknown camera).

        `wait_s`: how long to wait for room in a full queue (0: count the frame lost at once)."""
        recv_ns = now_ns() if recv_ns is None else recv_ns
        cam = packet.camera
        c = self.counters.get(cam)
        if c is None:
            self.unknown_cameras[cam] = self.unknown_cameras.get(cam, 0) + 1
            if self.unknown_cameras[cam] == 1:
                log.error("frames from camera %r which is not in the rig config %s: not recorded", cam, self.cameras)
            return False
        c.received += 1
        idx = int(packet.frame_index)
        last = self._last_index.get(cam)
        if last is not None:
            if idx > last + 1:
                c.missing_upstream += idx - last - 1
                if len(c.gaps) < 1000:
                    c.gaps.append([last + 1, idx - last - 1])
            elif idx <= last:
                c.out_of_order += 1
        if c.first_frame_index is None:
            c.first_frame_index = idx
        self._last_index[cam] = max(idx, last if last is not None else idx)
        c.last_frame_index = self._last_index[cam]
        try:
            if wait_s > 0:
                self.writers[cam].queue.put((packet, recv_ns), timeout=wait_s)
            else:
                self.writers[cam].queue.put_nowait((packet, recv_ns))
            return True
        except queue.Full:
            c.dropped_queue_full += 1
            t = now_ns()
            if t - self._last_drop_log_ns.get(cam, 0) > 1_000_000_000:
                self._last_drop_log_ns[cam] = t
                log.error("RECORDER CANNOT KEEP UP (video encoder or disk too slow): camera %s lost %d frame(s) so far "
                          "(writer queue of %d full); "
                          "frame %d not recorded", cam, c.dropped_queue_full, self.cfg.queue_frames, idx)
            return False

    def write_pose2d(self, p: Keypoints2DPacket, recv_ns: int | None = None) -> None:
        table = self.pose2d.get(p.camera)
        if table is None:
            self.unknown_cameras[p.camera] = self.unknown_cameras.get(p.camera, 0) + 1
            return
        kp = np.asarray(p.keypoints, np.float64).reshape(-1, 3)
        index = {n: i for i, n in enumerate(p.keypoint_names)}
        row: list[object] = [int(p.frame_index), int(p.capture_ns), now_ns() if recv_ns is None else recv_ns]
        for name in self.keypoints:
            i = index.get(name)
            row += [float(v) for v in kp[i]] if i is not None and i < len(kp) else [np.nan] * 3
        table.append(row)
        self.pose2d_rows[p.camera] += 1

    def write_pose3d(self, p: Pose3DPacket, recv_ns: int | None = None) -> None:
        index = {n: i for i, n in enumerate(p.keypoint_names)}
        raw = np.asarray(p.raw_mm, np.float64).reshape(-1, 3)
        filt = np.asarray(p.filtered_mm, np.float64).reshape(-1, 3)
        err = np.asarray(p.reprojection_error_px, np.float64).ravel()
        ncams = np.asarray(p.n_cameras).ravel()
        score = np.asarray(p.score, np.float64).ravel()
        row: list[object] = [int(p.frame_set_index), int(p.capture_ns), self.mapping.to_wall_ns(int(p.capture_ns)),
                             now_ns() if recv_ns is None else recv_ns]
        for name in self.keypoints:
            i = index.get(name)
            if i is None:
                row += [np.nan] * 3 + [np.nan, 0, np.nan] + [np.nan] * 3
            else:
                row += [raw[i, 0], raw[i, 1], raw[i, 2], err[i], int(ncams[i]), score[i], filt[i, 0], filt[i, 1], filt[i, 2]]
        row += [int(p.frame_indices.get(c, -1)) for c in self.cameras]
        self.pose3d.append(row)

    def write_event(self, e: EventPacket, recv_ns: int | None = None) -> None:
        d = e.fields()
        d["wall_ns"] = self.mapping.to_wall_ns(e.capture_ns)
        d["recv_ns"] = now_ns() if recv_ns is None else recv_ns
        d["stamps_ns"] = dict(e.stamps_ns)
        self.events.append(json.dumps(d, default=_json_default))

    def write_stats(self, s: StatsPacket) -> None:
        self.stats.append(json.dumps({"process": s.process, "sent_ns": s.sent_ns, "stats": dict(s.stats)},
                                     default=_json_default))

    def write(self, packet: Any, recv_ns: int | None = None, wait_s: float = 0.0) -> None:
        """Dispatch any packet to its table (`wait_s`: see submit_frame)."""
        if isinstance(packet, FramePacket):
            self.submit_frame(packet, recv_ns, wait_s)
        elif isinstance(packet, Keypoints2DPacket):
            self.write_pose2d(packet, recv_ns)
        elif isinstance(packet, Pose3DPacket):
            self.write_pose3d(packet, recv_ns)
        elif isinstance(packet, EventPacket):
            self.write_event(packet, recv_ns)
        elif isinstance(packet, StatsPacket):
            self.write_stats(packet)

    # -- durability ------------------------------------------------------------------------------
    def sync_tables(self) -> None:
        """fsync the pose/event tables (video segments are closed by their own threads)."""
        for t in self.pose2d.values():
            t.sync()
        self.pose3d.sync()
        self.events.sync()
        self.stats.sync()
        self._last_sync_ns = now_ns()

    def maybe_sync(self) -> bool:
        if now_ns() - self._last_sync_ns >= self.cfg.flush_interval_s * 1e9:
            self.sync_tables()
            self.write_meta()
            return True
        return False

    def writer_errors(self) -> dict[str, str]:
        return {c: repr(w.error) for c, w in self.writers.items() if w.error is not None}

    def summary(self) -> dict[str, Any]:
        cams = {c: self.counters[c].to_dict() | {"queue_depth": self.writers[c].queue.qsize() if hasattr(self, "writers") else 0}
                for c in self.cameras}
        return {
            "cameras": cams,
            "frames_lost_total": sum(x.missing_upstream + x.dropped_queue_full for x in self.counters.values()),
            "pose2d_rows": dict(self.pose2d_rows),
            "pose3d_rows": self.pose3d.rows if hasattr(self, "pose3d") else 0,
            "events": self.events.rows if hasattr(self, "events") else 0,
            "unknown_cameras": dict(self.unknown_cameras),
            "malformed_messages": self.malformed,
            "writer_errors": self.writer_errors() if hasattr(self, "writers") else {},
            "duration_s": (now_ns() - self.started_ns) / 1e9,
        }

    def write_meta(self) -> None:
        with self._lock:
            meta = dict(self.meta)
            meta["status"] = self.status
            meta["encoder"] = dict(self.encoder)
            meta["updated_wall_ns"] = time.time_ns()
            meta["counts"] = self.summary()
            meta["warnings"] = list(self.warnings[-50:])
        atomic_write_text(self.out / SESSION_FILE, json.dumps(meta, indent=2, default=_json_default))

    def close(self) -> dict[str, Any]:
        """Finish every segment and table and mark the session complete. Returns the summary."""
        for w in self.writers.values():
            # waits for room (every queued frame gets written) unless the writer died (e.g. disk full)
            while w.is_alive():
                try:
                    w.queue.put((None, 0), timeout=0.2)
                    break
                except queue.Full:
                    continue
        for w in self.writers.values():
            w.join()
        self.sync_tables()
        for t in self.pose2d.values():
            t.close()
        self.pose3d.close()
        self.events.close()
        self.stats.close()
        self.status = "complete" if not self.writer_errors() else "failed"
        self.meta["ended_wall_ns"] = time.time_ns()
        self.write_meta()
        return self.summary()


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_drop_none(v) for v in d if v is not None]
    return d


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (bytes, bytearray)):
        return o.decode(errors="replace")
    return str(o)
