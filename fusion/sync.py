"""Frame-set synchronisation: group the 2D results of all cameras that belong to one moment.

Pure logic, no sockets and no clock of its own: the caller feeds every 2D result as
``add(camera, capture_ns, payload, arrival_ns)`` and calls ``poll(now_ns)`` when idle; both return
the frame sets that are complete or whose deadline has passed, oldest first.

Rules:
- Capture times are first corrected by each camera's clock offset (configured, or estimated: see
  `ClockOffsetEstimator`). Results whose corrected capture times lie within `tolerance_ns` of a
  pending frame set's reference time join that set.
- A frame set is emitted as soon as every camera has either delivered its view or delivered a
  *later* frame (per camera, results arrive in capture order, so the missing view was dropped), or
  when `max_wait_ns` has passed since its first view arrived (a slow or dead camera never holds the
  pipeline up for longer than that). A camera silent for `dead_after_ns` is not waited for at all
  until it delivers again, so a dead camera costs latency only for that long.
- Frame sets are emitted in capture-time order. A result for a moment at or before the last emitted
  frame set is *late*: it is counted and dropped, never merged into a newer moment.
- A frame set with fewer than `min_views` views is counted (`too_few_views`) and not emitted.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class SyncOptions:
    """Settings of `FrameSynchronizer`.

    Attributes:
        frame_period_ns: nominal time between frames of one camera.
        tolerance_ns: max distance of a view's corrected capture time from the frame set's
            reference; None: a quarter of the frame period (must stay below half a period, or
            neighbouring moments could merge).
        max_wait_ns: how long a frame set waits for missing cameras after its first view arrived;
            None: two frame periods.
        min_views: frame sets with fewer views are not emitted.
        clock_offsets_ns: camera -> fixed offset of its clock; corrected = capture_ns - offset.
        estimate_offsets: estimate offsets (on top of the configured ones) from arrival times.
        estimate_window: results per camera the estimator looks back over.
        dead_after_ns: a camera that delivered nothing for this long is not waited for any more
            (frame sets go out as soon as the live cameras are in); None: ten frame periods.
    """

    frame_period_ns: int
    tolerance_ns: int | None = None
    max_wait_ns: int | None = None
    min_views: int = 2
    clock_offsets_ns: Mapping[str, int] = field(default_factory=dict)
    estimate_offsets: bool = False
    estimate_window: int = 60
    dead_after_ns: int | None = None

    def __post_init__(self) -> None:
        if self.frame_period_ns <= 0:
            raise ValueError(f"SyncOptions.frame_period_ns: expected > 0, got {self.frame_period_ns}")
        tol = self.tolerance
        if not 0 < tol < self.frame_period_ns / 2:
            raise ValueError(
                f"SyncOptions.tolerance_ns: expected 0 < tolerance < half the frame period "
                f"({self.frame_period_ns // 2} ns), got {tol}"
            )
        if self.wait <= 0:
            raise ValueError(f"SyncOptions.max_wait_ns: expected > 0, got {self.wait}")
        if self.min_views < 1:
            raise ValueError(f"SyncOptions.min_views: expected >= 1, got {self.min_views}")

    @property
    def tolerance(self) -> int:
        return int(self.tolerance_ns) if self.tolerance_ns is not None else self.frame_period_ns // 4

    @property
    def dead_after(self) -> int:
        return int(self.dead_after_ns) if self.dead_after_ns is not None else 10 * self.frame_period_ns

    @property
    def wait(self) -> int:
        return int(self.max_wait_ns) if self.max_wait_ns is not None else 2 * self.frame_period_ns


class View(NamedTuple):
    """One camera's contribution to a frame set (an immutable tuple: made for every result, so cheap)."""

    camera: str
    capture_ns: int  # as the camera stamped it (uncorrected)
    arrival_ns: int
    payload: Any


class FrameSet(NamedTuple):
    """The views of one moment. `capture_ns` is the median corrected capture time of its views.

    Attributes:
        index: running number of emitted frame sets.
        capture_ns: reference capture time (corrected to the common clock).
        views: camera -> View, only cameras that delivered in time.
        missing: cameras without a view.
        first_arrival_ns, emitted_ns: when its first view arrived and when it was emitted.
        timed_out: emitted because max_wait passed (a camera was late or dead).
    """

    index: int
    capture_ns: int
    views: Mapping[str, View]
    missing: tuple[str, ...]
    first_arrival_ns: int
    emitted_ns: int
    timed_out: bool


@dataclass
class SyncCounters:
    """Running counts; `as_dict()` goes into the stats message."""

    received: int = 0
    frame_sets: int = 0
    complete: int = 0
    partial: int = 0
    timed_out: int = 0
    too_few_views: int = 0
    late: int = 0
    duplicates: int = 0
    unknown_camera: int = 0
    late_by_camera: dict[str, int] = field(default_factory=dict)
    missing_by_camera: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received, "frame_sets": self.frame_sets, "complete": self.complete,
            "partial": self.partial, "timed_out": self.timed_out, "too_few_views": self.too_few_views,
            "late": self.late, "duplicates": self.duplicates, "unknown_camera": self.unknown_camera,
            "late_by_camera": dict(self.late_by_camera), "missing_by_camera": dict(self.missing_by_camera),
        }


class ClockOffsetEstimator:
    """Estimates each camera's fixed clock offset relative to the first camera.

    ``capture_ns - arrival_ns`` is the camera's clock offset minus the pipeline delay. Its maximum
    over a window belongs to the result that travelled fastest; the fastest delay is about the same
    for every camera (same network, same inference), so differences of these maxima between cameras
    estimate the clock offsets up to the spread of minimum delays (typically well under a frame period).
    """

    def __init__(self, cameras: Iterable[str], window: int) -> None:
        self.cameras = tuple(cameras)
        self._window = {c: deque(maxlen=window) for c in self.cameras}

    def add(self, camera: str, capture_ns: int, arrival_ns: int) -> None:
        self._window[camera].append(int(capture_ns) - int(arrival_ns))

    def offsets_ns(self) -> dict[str, int]:
        """camera -> offset (ns) relative to the first camera that has data; cameras without data: 0."""
        best = {c: max(w) for c, w in self._window.items() if w}
        if not best:
            return {c: 0 for c in self.cameras}
        ref = next(c for c in self.cameras if c in best)
        return {c: best[c] - best[ref] if c in best else 0 for c in self.cameras}


_NEVER = -(1 << 62)  # the newest capture time of a camera that has delivered nothing


def _median_ns(values: Iterable[int]) -> int:
    """Median of integer times, ns (the mean of the middle two for an even count, truncated)."""
    s = sorted(values)
    h = len(s) // 2
    return s[h] if len(s) % 2 else int((s[h - 1] + s[h]) / 2)  # as np.median, then int()


@dataclass
class _Pending:
    capture_ns: int  # reference (corrected) capture time
    first_arrival_ns: int
    views: dict[str, View]
    corrected: dict[str, int]


class FrameSynchronizer:
    """Groups per-camera results into frame sets; see the module docstring for the rules."""

    def __init__(self, cameras: Iterable[str], options: SyncOptions) -> None:
        self.cameras = tuple(cameras)
        if len(set(self.cameras)) != len(self.cameras) or not self.cameras:
            raise ValueError(f"cameras: expected unique camera names, got {self.cameras}")
        unknown = set(options.clock_offsets_ns) - set(self.cameras)
        if unknown:
            raise ValueError(f"clock_offsets_ns: unknown cameras {sorted(unknown)}; cameras are {list(self.cameras)}")
        self.options = options
        self.counters = SyncCounters()
        self._pending: list[_Pending] = []  # sorted by capture_ns
        self._last_emitted_ns: int | None = None
        self._latest_ns: dict[str, int] = {}  # per camera, newest corrected capture time seen
        self._last_arrival_ns: dict[str, int] = {}  # per camera, arrival of its newest result
        self._start_ns: int | None = None
        self._alive_until = _NEVER  # see _update_alive_until
        self._index = 0
        # the options are frozen: their derived settings once, not per result
        self._tol = options.tolerance
        self._wait = options.wait
        self._dead_after = options.dead_after
        self._min_views = options.min_views
        self._offsets = {c: int(options.clock_offsets_ns.get(c, 0)) for c in self.cameras}  # configured, ns
        self._estimator = ClockOffsetEstimator(self.cameras, options.estimate_window) if options.estimate_offsets else None

    def offsets_ns(self) -> dict[str, int]:
        """The clock offsets in use now: configured plus estimated."""
        est = self._estimator.offsets_ns() if self._estimator else {}
        return {c: int(self.options.clock_offsets_ns.get(c, 0)) + est.get(c, 0) for c in self.cameras}

    def add(self, camera: str, capture_ns: int, payload: Any, arrival_ns: int) -> list[FrameSet]:
        """Feed one camera result; returns the frame sets this completes (and older ones), oldest first."""
        self.counters.received += 1
        if camera not in self._offsets:
            self.counters.unknown_camera += 1
            return self.poll(arrival_ns)
        arrival_ns = int(arrival_ns)
        capture_ns = int(capture_ns)
        self._last_arrival_ns[camera] = arrival_ns
        if self._start_ns is None:
            self._start_ns = arrival_ns
        offset = self._offsets[camera]
        if self._estimator is not None:
            self._estimator.add(camera, capture_ns, arrival_ns)
            offset += self._estimator.offsets_ns()[camera]
        corrected = capture_ns - offset
        tol = self._tol
        if self._last_emitted_ns is not None and corrected <= self._last_emitted_ns + tol:
            self._count_late(camera)
            return self.poll(arrival_ns)
        prev = self._latest_ns.get(camera)
        if prev is None or corrected > prev:
            self._latest_ns[camera] = corrected
        view = View(camera, capture_ns, arrival_ns, payload)
        target = None
        for p in self._pending:
            if abs(p.capture_ns - corrected) <= tol:
                target = p
                break
        if target is None:
            target = _Pending(corrected, arrival_ns, {}, {})
            pending = self._pending
            pending.append(target)
            if len(pending) > 1 and pending[-2].capture_ns > corrected:
                pending.sort(key=lambda p: p.capture_ns)
        if camera in target.views:
            self.counters.duplicates += 1
            return self.poll(arrival_ns)
        views = target.views
        views[camera] = view
        target.corrected[camera] = corrected
        if len(self._pending) == 1:
            # the common cases, decided without `poll`'s walk (same outcome): the only pending set is
            # now complete, or it is incomplete, within its wait, and every camera was heard from
            # recently (no camera can have delivered a later frame: that would be a second set)
            if len(views) == len(self.cameras):
                self._pending = []
                fs = self._emit(target, arrival_ns, self._wait)
                return [] if fs is None else [fs]
            if arrival_ns - target.first_arrival_ns < self._wait and (
                    arrival_ns < self._alive_until or arrival_ns < self._update_alive_until()):
                return []
        return self.poll(arrival_ns)

    def _update_alive_until(self) -> int:
        """Recompute the time until which no camera counts as dead (a camera never heard from counts
        from the first result of any camera). Arrivals only grow, so the stored value is a safe
        lower bound between updates."""
        last = self._last_arrival_ns
        oldest = min(last.values()) if len(last) == len(self.cameras) else self._start_ns
        self._alive_until = oldest + self._dead_after
        return self._alive_until

    def poll(self, now_ns: int) -> list[FrameSet]:
        """Frame sets that are ready at `now_ns` (complete, superseded or past their deadline)."""
        out: list[FrameSet] = []
        if not self._pending:
            return out
        wait = self._wait
        tol = self._tol
        # the newest ready set decides: everything older goes out with it, in order
        ready_upto = -1
        n_cams = len(self.cameras)
        latest = self._latest_ns
        last = self._last_arrival_ns
        dead_after = self._dead_after
        # a camera never heard from counts as alive for dead_after from the first result of any camera
        start = self._start_ns if self._start_ns is not None else now_ns
        for i, p in enumerate(self._pending):
            views = p.views
            if len(views) == n_cams or now_ns - p.first_arrival_ns >= wait:
                ready_upto = i
                continue
            ref = p.capture_ns + tol
            for c in self.cameras:
                # accounted for: delivered, delivered a later frame (this one was dropped), or dead
                if c in views or latest.get(c, _NEVER) > ref or now_ns - last.get(c, start) >= dead_after:
                    continue
                break
            else:
                ready_upto = i
        if ready_upto < 0:
            return out
        ready, self._pending = self._pending[: ready_upto + 1], self._pending[ready_upto + 1 :]
        for p in ready:
            fs = self._emit(p, now_ns, wait)
            if fs is not None:
                out.append(fs)
        return out

    def flush(self, now_ns: int) -> list[FrameSet]:
        """Emit everything pending (end of a recording)."""
        ready, self._pending = self._pending, []
        return [fs for p in ready if (fs := self._emit(p, now_ns, self.options.wait)) is not None]

    def _emit(self, p: _Pending, now_ns: int, wait: int) -> FrameSet | None:
        capture = _median_ns(p.corrected.values())
        self._last_emitted_ns = capture if self._last_emitted_ns is None else max(self._last_emitted_ns, capture)
        missing = () if len(p.views) == len(self.cameras) else tuple(c for c in self.cameras if c not in p.views)
        for c in missing:
            self.counters.missing_by_camera[c] = self.counters.missing_by_camera.get(c, 0) + 1
        if len(p.views) < self._min_views:
            self.counters.too_few_views += 1
            return None
        counters = self.counters
        counters.frame_sets += 1
        if missing:
            counters.partial += 1
            timed_out = now_ns - p.first_arrival_ns >= wait
            if timed_out:
                counters.timed_out += 1
        else:
            counters.complete += 1
            timed_out = False
        # p is dropped after this: its views dict becomes the frame set's
        fs = FrameSet(self._index, capture, p.views, missing, p.first_arrival_ns, int(now_ns), timed_out)
        self._index += 1
        return fs

    def _count_late(self, camera: str) -> None:
        self.counters.late += 1
        self.counters.late_by_camera[camera] = self.counters.late_by_camera.get(camera, 0) + 1

    @property
    def pending(self) -> int:
        return len(self._pending)
