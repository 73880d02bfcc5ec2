"""Which frames a worker runs next: the newest complete moment of its cameras.

A worker that serves several cameras must hand fusion synchronised views, so it runs the frames that
belong to one capture moment (capture_ns within a tolerance, half a frame period by default) and takes
the newest moment for which every live camera has a frame. A camera that sent nothing for
`dead_after_ns` no longer holds the others back; when no complete moment appears within `max_wait_ns`
of the newest frame's arrival (a frame lost on the way), the newest frames that are there are run.

Everything older than the moment that is run is dropped and counted as skipped: a live worker never
works through a backlog.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PendingFrame:
    """A received frame waiting to be run."""

    packet: Any  # ratrig.messages.FramePacket
    received_ns: int

    @property
    def capture_ns(self) -> int:
        return int(self.packet.capture_ns)


def newest_complete_moment(capture_ns: Mapping[str, Sequence[int]], cameras: Sequence[str],
                           tolerance_ns: int) -> dict[str, int] | None:
    """The newest moment every camera in `cameras` has a frame of.

    Args:
        capture_ns: per camera, the capture times of its waiting frames (any order).
        cameras: the cameras that must all be present.
        tolerance_ns: frames within this of the moment's reference time belong to it.

    Returns:
        {camera: index into capture_ns[camera]} of the chosen frames, or None if no moment is complete.
        The reference time is each candidate frame's capture time, newest first; per camera the frame
        nearest the reference is taken.
    """
    if not cameras or any(not capture_ns.get(c) for c in cameras):
        return None
    candidates = sorted({t for c in cameras for t in capture_ns[c]}, reverse=True)
    for ref in candidates:
        chosen: dict[str, int] = {}
        for c in cameras:
            times = capture_ns[c]
            best = min(range(len(times)), key=lambda i: abs(times[i] - ref))
            if abs(times[best] - ref) > tolerance_ns:
                break
            chosen[c] = best
        else:
            return chosen
    return None


class MomentSelector:
    """Holds the newest few frames per camera and hands out moments to run.

    Counters per camera: `skipped` (frames dropped without being run). The caller adds frames as they
    arrive (already drained to the newest per socket) and calls `take` whenever it is ready to run.
    """

    def __init__(self, cameras: Sequence[str], tolerance_ns: int, max_wait_ns: int, dead_after_ns: int,
                 start_ns: int, keep: int = 4, dead_after_frames: int = 3) -> None:
        self.cameras = list(cameras)
        self.tolerance_ns = int(tolerance_ns)
        self.max_wait_ns = int(max_wait_ns)
        self.dead_after_ns = int(dead_after_ns)
        self._pending: dict[str, deque[PendingFrame]] = {c: deque() for c in cameras}
        self._last_seen_ns: dict[str, int] = {c: int(start_ns) for c in cameras}
        self._keep = keep
        self.dead_after_frames = int(dead_after_frames)
        self._added: dict[str, int] = {c: 0 for c in cameras}
        self._others_at_last: dict[str, dict[str, int]] = {c: {o: 0 for o in cameras} for c in cameras}
        self.skipped: dict[str, int] = {c: 0 for c in cameras}
        self.partial_moments = 0

    def add(self, camera: str, frame: PendingFrame) -> None:
        q = self._pending[camera]
        q.append(frame)
        self._last_seen_ns[camera] = frame.received_ns
        self._added[camera] += 1
        self._others_at_last[camera] = dict(self._added)
        while len(q) > self._keep:
            q.popleft()
            self.skipped[camera] += 1

    def alive(self, now_ns: int) -> list[str]:
        """Cameras not declared dead.

        A camera is dead when it has been silent for dead_after_ns (since its last frame, or since
        the start) while another camera delivered at least `dead_after_frames` frames meanwhile. So
        a pause of every camera declares none dead, and the first moment after it is still waited for.
        """
        out = []
        for c in self.cameras:
            silent = now_ns - self._last_seen_ns[c] > self.dead_after_ns
            others = max((self._added[o] - self._others_at_last[c][o] for o in self.cameras if o != c), default=0)
            if not (silent and others >= self.dead_after_frames):
                out.append(c)
        return out

    def pending_count(self, camera: str) -> int:
        return len(self._pending[camera])

    def take(self, now_ns: int) -> dict[str, PendingFrame] | None:
        """The moment to run now ({camera: frame}), or None to wait for more frames."""
        alive = self.alive(now_ns)
        waiting = [c for c in self.cameras if self._pending[c]]
        if not waiting:
            return None
        # A camera with frames waiting counts as present even if it is about to be declared dead.
        needed = sorted(set(alive) | set(waiting), key=self.cameras.index)
        times = {c: [f.capture_ns for f in self._pending[c]] for c in needed}
        chosen = newest_complete_moment(times, needed, self.tolerance_ns)
        if chosen is None:
            newest = max((self._pending[c][-1] for c in waiting), key=lambda f: f.capture_ns)
            if now_ns - newest.received_ns < self.max_wait_ns:
                return None
            # Partial moment: the cameras whose newest frame belongs to the newest capture time.
            chosen = {}
            for c in waiting:
                q = self._pending[c]
                best = min(range(len(q)), key=lambda i: abs(q[i].capture_ns - newest.capture_ns))
                if abs(q[best].capture_ns - newest.capture_ns) <= self.tolerance_ns:
                    chosen[c] = best
            self.partial_moments += 1
        ref_ns = max(self._pending[c][i].capture_ns for c, i in chosen.items())
        moment: dict[str, PendingFrame] = {}
        for c in self.cameras:
            q = self._pending[c]
            if c in chosen:
                moment[c] = q[chosen[c]]
                drop_until = chosen[c] + 1
            else:
                # Frames of a camera missing from this moment that are older than it can never join a
                # newer moment: drop them.
                drop_until = sum(1 for f in q if f.capture_ns <= ref_ns + self.tolerance_ns)
            for _ in range(drop_until):
                f = q.popleft()
                if c not in chosen or f is not moment[c]:
                    self.skipped[c] += 1
        return moment
