"""What a standby recorder keeps, and what it writes when it takes over from a recorder that died.

A recorder killed mid-session leaves its part readable up to its last flush: frames of the video
segment it had open, and table lines not yet written, are gone from that part (FORMAT.md, "Crash
safety"). The standby (`python -m recorder.process ... --standby`, see `ratrig.standby`) receives
every stream alongside it and keeps the last few seconds (`RecentPackets`). When it takes over it
reads how far the dead part got (`recorded_up_to`, from the files on disk) and writes into the next
part everything it holds that is newer, then records on. Nothing is written into the dead part.

Memory: the window holds every frame of every camera received in the last `window_s` seconds,
e.g. 4 cameras x 640x480x3 at 15 fps for 2 s: 120 frames, 110 MB.
"""
from __future__ import annotations

import csv
import io
import json
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket

log = logging.getLogger("recorder")

#: bytes read from the end of a table to find its last complete rows
TAIL_BYTES = 256 * 1024


class RecentPackets:
    """Every frame, 2D pose, 3D pose and event received in the last `window_ns`, in arrival order.

    Stats are not kept (they carry no capture time to tell what the dead part already holds).
    """

    def __init__(self, window_s: float) -> None:
        self.window_ns = int(window_s * 1e9)
        self._items: deque[tuple[int, Any]] = deque()  # (recv ns, packet)
        self.frame_bytes = 0
        self.max_frame_bytes = 0

    def add(self, packet: Any, recv_ns: int) -> None:
        if not isinstance(packet, (FramePacket, Keypoints2DPacket, Pose3DPacket, EventPacket)):
            return
        self._items.append((recv_ns, packet))
        if isinstance(packet, FramePacket):
            self.frame_bytes += packet.image.nbytes
            self.max_frame_bytes = max(self.max_frame_bytes, self.frame_bytes)
        cut = recv_ns - self.window_ns
        while self._items and self._items[0][0] < cut:
            _, old = self._items.popleft()
            if isinstance(old, FramePacket):
                self.frame_bytes -= old.image.nbytes

    def clear(self) -> None:
        """Let go of everything held (after the takeover the memory goes back)."""
        self._items.clear()
        self.frame_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def oldest_frame_index(self, camera: str) -> int | None:
        return next((int(p.frame_index) for _, p in self._items
                     if isinstance(p, FramePacket) and p.camera == camera), None)

    def newer_than(self, done: RecordedUpTo) -> Iterator[tuple[int, Any]]:
        """(recv ns, packet) of what `done` does not hold, in arrival order."""
        for recv_ns, p in self._items:
            if isinstance(p, FramePacket):
                last = done.frame_capture_ns.get(p.camera)
            elif isinstance(p, Keypoints2DPacket):
                last = done.pose2d_capture_ns.get(p.camera)
            elif isinstance(p, Pose3DPacket):
                last = done.pose3d_capture_ns
            else:  # EventPacket: events of one capture can come out of capture order; emission is ordered
                if done.event_emitted_ns is None or p.emitted_ns > done.event_emitted_ns:
                    yield recv_ns, p
                continue
            if last is None or p.capture_ns > last:
                yield recv_ns, p


@dataclass(frozen=True)
class RecordedUpTo:
    """How far a session part got on disk: the newest capture time (ns) per stream, None where empty."""

    frame_capture_ns: dict[str, int] = field(default_factory=dict)
    frame_index: dict[str, int] = field(default_factory=dict)
    pose2d_capture_ns: dict[str, int] = field(default_factory=dict)
    pose3d_capture_ns: int | None = None
    event_emitted_ns: int | None = None


def _tail_lines(path: Path, nbytes: int = TAIL_BYTES) -> tuple[str | None, list[str]]:
    """(header line, the complete lines at the end of the file) of an append-only table; a torn
    last line is left out. (None, []) for a missing or empty file."""
    try:
        with open(path, "rb") as f:
            header = f.readline()
            if not header.endswith(b"\n"):
                return None, []
            f.seek(0, io.SEEK_END)
            size = f.tell()
            start = max(len(header), size - nbytes)
            f.seek(start)
            data = f.read()
    except OSError:
        return None, []
    end = data.rfind(b"\n")
    data = data[: end + 1] if end >= 0 else b""
    lines = data.decode(errors="replace").splitlines()
    if start > len(header) and lines:
        lines = lines[1:]  # the first one may start mid-line
    return header.decode(errors="replace").strip(), [ln for ln in lines if ln.strip()]


def _last_rows(path: Path, wanted: Sequence[str]) -> list[dict[str, str]]:
    """The last complete rows of a CSV table as {column: text}, oldest first (only `wanted` columns)."""
    header, lines = _tail_lines(path)
    if header is None or not lines:
        return []
    cols = next(csv.reader([header]))
    idx = {c: cols.index(c) for c in wanted if c in cols}
    if len(idx) != len(wanted):
        return []
    rows = []
    for values in csv.reader(lines):
        if len(values) == len(cols):
            rows.append({c: values[i] for c, i in idx.items()})
    return rows


def _int(text: str) -> int | None:
    try:
        return int(float(text)) if text != "" else None
    except ValueError:
        return None


def recorded_up_to(part: str | Path, cameras: Sequence[str]) -> RecordedUpTo:
    """What `part` (a session folder written by a recorder that died) holds, read from its files.

    A frame counts only when its segment is listed in segments.csv (closed, so it decodes); table
    rows only when complete. Reads the last TAIL_BYTES of each table, not the whole file.
    """
    part = Path(part)
    frame_ns: dict[str, int] = {}
    frame_idx: dict[str, int] = {}
    pose2d: dict[str, int] = {}
    for cam in cameras:
        d = part / "cameras" / cam
        segs = _last_rows(d / "segments.csv", ["segment"])
        if segs and (last_seg := _int(segs[-1]["segment"])) is not None:
            for row in reversed(_last_rows(d / "frames.csv", ["frame_index", "capture_ns", "segment"])):
                seg = _int(row["segment"])
                if seg is not None and seg <= last_seg:
                    frame_ns[cam] = _int(row["capture_ns"]) or 0
                    frame_idx[cam] = _int(row["frame_index"]) or 0
                    break
        rows = _last_rows(part / "pose2d" / f"{cam}.csv", ["capture_ns"])
        if rows and (v := _int(rows[-1]["capture_ns"])) is not None:
            pose2d[cam] = v
    rows = _last_rows(part / "pose3d.csv", ["capture_ns"])
    pose3d = _int(rows[-1]["capture_ns"]) if rows else None
    return RecordedUpTo(frame_ns, frame_idx, pose2d, pose3d, _last_emitted_ns(part / "events.jsonl"))


def _last_emitted_ns(path: Path) -> int | None:
    """emitted_ns of the last complete line of events.jsonl (no header), None if there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, io.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            data = f.read()
    except OSError:
        return None
    for line in reversed(data[: data.rfind(b"\n") + 1].decode(errors="replace").splitlines()):
        try:
            return int(json.loads(line)["emitted_ns"])
        except (ValueError, KeyError, TypeError):
            continue  # the first line of the tail may start mid-line
    return None


def last_part(out: Path) -> Path | None:
    """The newest part of the session OUT (OUT, OUT.part2, ...) holding a session.json, or None."""
    found = out if (out / "session.json").is_file() else None
    n = 2
    while True:
        part = out.with_name(f"{out.name}.part{n}")
        if not part.exists():
            return found
        if (part / "session.json").is_file():
            found = part
        n += 1
