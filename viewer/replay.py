"""Playing a recorded session in the viewer (`ratrig view --replay SESSION_DIR`). No Qt here.

Reads the session folder through `recorder.session.open_session` (read-only: a viewer never repairs
or writes a recording) and feeds `ViewState` the packets a live session would have sent up to a
time cursor: every 3D pose and event, the newest 2D keypoints and the newest frame of each camera.
The cursor moves with the wall clock times a speed factor, or jumps when the slider is moved.
"""
from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.config import ConfigError, RigConfig, load_config
from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket, StatsPacket
from ratrig.tomlio import TOMLDecodeError, read_toml
from viewer.model import ViewState

log = logging.getLogger(__name__)

#: A forward step longer than this is treated as a jump (history rebuilt instead of streamed).
MAX_STREAM_STEP_S = 2.0


class ReplayError(ValueError):
    """A session folder the viewer cannot play; the message names the folder or file."""


class FrameCursor:
    """Random access to one camera's recorded frames, decoding forward when it can, seeking when not."""

    def __init__(self, session: Any, camera: str) -> None:
        self.camera = camera
        self.mono = bool(session.is_mono(camera))
        frames = session.frames(camera).sort_values("capture_ns").reset_index(drop=True)
        self.capture_ns = frames["capture_ns"].to_numpy(np.int64)
        self.frame_index = frames["frame_index"].to_numpy(np.int64)
        self.segment = frames["segment"].to_numpy(np.int64)
        self.segment_frame = frames["segment_frame"].to_numpy(np.int64)
        segs = session.segments(camera)
        folder = session.camera_dir(camera)
        self.files = {int(s): folder / str(f) for s, f in zip(segs["segment"], segs["file"])}
        self._cap: Any = None
        self._cap_segment = -1
        self._next = 0  # segment_frame the next read returns
        self.shown_row = -1

    def row_at(self, t_ns: int) -> int:
        """Index of the newest frame captured at or before `t_ns` (-1 if none)."""
        return bisect.bisect_right(self.capture_ns, t_ns) - 1

    def read(self, row: int) -> np.ndarray | None:
        """The decoded image of frame-table row `row` (None if the video does not decode there)."""
        import cv2

        seg, sf = int(self.segment[row]), int(self.segment_frame[row])
        if self._cap is None or seg != self._cap_segment or sf < self._next or sf - self._next > 30:
            if self._cap is not None:
                self._cap.release()
            path = self.files.get(seg)
            if path is None:
                return None
            self._cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
            self._cap_segment = seg
            self._next = 0
            if sf > 0:
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, sf)
                self._next = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
        while self._next < sf:
            if not self._cap.grab():
                return None
            self._next += 1
        ok, img = self._cap.read()
        self._next += 1
        if not ok:
            return None
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if self.mono and img.ndim == 3 else img

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


@dataclass
class _Pose2DTrack:
    keypoints: tuple[str, ...]
    frame_index: np.ndarray
    capture_ns: np.ndarray
    points: np.ndarray


class ReplaySource:
    """A recorded session as a stream with a time cursor.

    Args:
        path: the session folder (holding session.json).
        frames: decode camera video (off: poses only, much cheaper).

    Raises:
        ReplayError: the folder is not a readable session.
    """

    def __init__(self, path: str | Path, frames: bool = True) -> None:
        try:
            from recorder.session import SessionFormatError, open_session
        except ImportError as e:  # the recorder package is part of ratrig; this is an install problem
            raise ReplayError(f"--replay needs the ratrig recorder package ({e})") from None
        self.path = Path(path)
        try:
            self.session = open_session(self.path, repair=False)
            self.camera_names = tuple(self.session.cameras)
            self.keypoints = tuple(self.session.keypoints)
            pose = self.session.pose3d()
        except (SessionFormatError, KeyError, OSError, ValueError) as e:
            raise ReplayError(f"{self.path}: cannot replay: {e}") from None
        self.rig: RigConfig | None = None
        if self.session.config_path.is_file():
            try:
                self.rig = load_config(self.session.config_path)
            except ConfigError as e:
                log.warning("replay without the session's rig config: %s", e)
        self.calibration_dict: dict[str, Any] | None = None
        if self.session.calibration_path is not None:
            try:
                self.calibration_dict = read_toml(self.session.calibration_path)
            except (TOMLDecodeError, OSError) as e:
                log.warning("replay without reprojection: %s: %s", self.session.calibration_path, e)
        order = np.argsort(pose.capture_ns, kind="stable")
        self.pose_ns = pose.capture_ns[order]
        self.pose_fnum = pose.fnum[order]
        filt = pose.filtered_mm[order]
        # A session recorded without the filter has no filtered columns: show the raw triangulation.
        self.display_mm = pose.raw_mm[order] if np.isnan(filt).all() else filt
        self.raw_mm = pose.raw_mm[order]
        self.error_px = pose.error_px[order]
        self.ncams = pose.ncams[order]
        self.score = pose.score[order]
        self.pose2d: dict[str, _Pose2DTrack] = {}
        self.cursors: dict[str, FrameCursor] = {}
        for cam in self.camera_names:
            try:
                p2 = self.session.pose2d(cam)
                o = np.argsort(p2.capture_ns, kind="stable")
                self.pose2d[cam] = _Pose2DTrack(p2.keypoints, p2.frame_index[o], p2.capture_ns[o], p2.points[o])
            except (OSError, KeyError, ValueError) as e:
                log.info("%s: no 2D keypoints for %s (%s)", self.path, cam, e)
            if frames:
                try:
                    cursor = FrameCursor(self.session, cam)
                    if len(cursor.capture_ns):
                        self.cursors[cam] = cursor
                except (OSError, KeyError, ValueError) as e:
                    log.info("%s: no video for %s (%s)", self.path, cam, e)
        self.events = sorted(
            (e for e in self.session.events() if isinstance(e, dict) and "capture_ns" in e),
            key=lambda e: int(e["capture_ns"]),
        )
        self.event_ns = np.array([int(e["capture_ns"]) for e in self.events], np.int64)
        self.stats = sorted(
            (s for s in self.session.stats() if isinstance(s, dict) and "sent_ns" in s and "process" in s),
            key=lambda s: int(s["sent_ns"]),
        )
        self.stats_ns = np.array([int(s["sent_ns"]) for s in self.stats], np.int64)
        starts = [int(self.pose_ns[0])] if len(self.pose_ns) else []
        ends = [int(self.pose_ns[-1])] if len(self.pose_ns) else []
        for c in self.cursors.values():
            starts.append(int(c.capture_ns[0]))
            ends.append(int(c.capture_ns[-1]))
        if not starts:
            raise ReplayError(f"{self.path}: the session holds no 3D poses and no readable frames")
        self.start_ns, self.end_ns = min(starts), max(ends)
        self.t_ns = self.start_ns
        self._fed_ns: int | None = None
        self.playing = True
        self.speed = 1.0
        self._last_wall: float | None = None  # set by the first step: start-up time is not playback
        self._shown_pose2d: dict[str, int] = {}

    # -- time ----------------------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def set_playing(self, playing: bool) -> None:
        if playing and self.t_ns >= self.end_ns:
            self.seek(self.start_ns)  # play again from the start
        self.playing = playing
        self._last_wall = time.monotonic()

    def seek(self, t_ns: int) -> None:
        """Move the cursor; the next `step` rebuilds the trails and traces around the new time."""
        self.t_ns = int(min(max(t_ns, self.start_ns), self.end_ns))
        self._fed_ns = None

    def step(self, state: ViewState) -> None:
        """Advance the cursor by the wall time since the last call (when playing) and feed `state`."""
        now = time.monotonic()
        if self.playing and self._last_wall is not None:
            self.t_ns = int(min(self.end_ns, self.t_ns + (now - self._last_wall) * self.speed * 1e9))
            if self.t_ns >= self.end_ns:
                self.playing = False
        self._last_wall = now
        self.feed(state, self.t_ns)

    # -- feeding -------------------------------------------------------------------------------------

    def feed(self, state: ViewState, t_ns: int) -> None:
        """Give `state` what happened up to `t_ns` since the last feed (or rebuild after a jump)."""
        prev = self._fed_ns
        if prev is None or t_ns < prev or (t_ns - prev) / 1e9 > MAX_STREAM_STEP_S:
            state.reset_history()
            state.pose = None
            prev = t_ns - int(max(state.trace_s, state.trail_s) * 1e9)
            self._shown_pose2d.clear()
            for c in self.cursors.values():
                c.shown_row = -1
        if t_ns == self._fed_ns:
            return
        lo = bisect.bisect_right(self.pose_ns, prev)
        hi = bisect.bisect_right(self.pose_ns, t_ns)
        for i in range(lo, hi):
            state.add(self._pose_packet(i))
        lo = bisect.bisect_right(self.event_ns, prev)
        hi = bisect.bisect_right(self.event_ns, t_ns)
        for e in self.events[lo:hi]:
            packet = self._event_packet(e)
            if packet is not None:
                state.add(packet)
        hi = bisect.bisect_right(self.stats_ns, t_ns)
        seen: set[str] = set()
        for s in reversed(self.stats[max(0, hi - 64):hi]):  # newest stats of each process
            if s["process"] not in seen and isinstance(s.get("stats"), dict):
                seen.add(s["process"])
                state.add(StatsPacket(str(s["process"]), int(s["sent_ns"]), s["stats"]))
        for cam, track in self.pose2d.items():
            row = bisect.bisect_right(track.capture_ns, t_ns) - 1
            if row >= 0 and self._shown_pose2d.get(cam) != row:
                self._shown_pose2d[cam] = row
                state.add(Keypoints2DPacket(cam, int(track.frame_index[row]), int(track.capture_ns[row]),
                                            track.keypoints, track.points[row].astype(np.float32)))
        for cam, cursor in self.cursors.items():
            row = cursor.row_at(t_ns)
            if row >= 0 and row != cursor.shown_row:
                cursor.shown_row = row
                img = cursor.read(row)
                if img is not None:
                    state.add(FramePacket(cam, int(cursor.frame_index[row]), int(cursor.capture_ns[row]), img))
        self._fed_ns = t_ns

    def _pose_packet(self, i: int) -> Pose3DPacket:
        k = len(self.keypoints)
        return Pose3DPacket(
            int(self.pose_fnum[i]), int(self.pose_ns[i]), self.keypoints, self.camera_names,
            self.raw_mm[i], self.display_mm[i], self.error_px[i], self.ncams[i].astype(np.int8).reshape(k),
            self.score[i],
        )

    @staticmethod
    def _event_packet(e: dict[str, Any]) -> EventPacket | None:
        try:
            pos = tuple(float(v) for v in e.get("position_mm", (np.nan, np.nan, np.nan)))
            return EventPacket(str(e.get("name", "event")), str(e.get("subject", "")), int(e.get("frame_set_index", -1)),
                               int(e["capture_ns"]), int(e.get("emitted_ns", 0)), pos)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    def close(self) -> None:
        for c in self.cursors.values():
            c.close()
