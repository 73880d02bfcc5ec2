"""Online paw placement detection: touchdown and lift-off of each paw from the filtered 3D stream.

A paw is on the floor when it is low *and* still. Each frame set, per paw:

    contact  = z < touchdown_height_mm and speed < touchdown_speed_mm_s
    airborne = z > liftoff_height_mm  or  (speed > liftoff_speed_mm_s  and, for a paw in stance,
               moved more than liftoff_distance_mm from where it stands)
               or, for a paw in stance, it now stands more than step_distance_mm from where it stood

The two conditions leave a band between them (hysteresis): a paw in the band keeps its state, so
noise around one threshold does not make it flicker. A change of state must also hold for
`min_duration_ms` of consecutive frames before it is reported (debounce); one frame that breaks such
a run is forgiven (a single wild detection does not restart it). Speed is the distance the
paw moved over the last `speed_window_ms` (at least one frame) divided by the elapsed time, so it
works at any frame rate; a paw that moved slower than `last_frame_fraction` x touchdown speed since
the previous frame counts as that slow (the window would see the swing's end for one more frame).

Timing. An event is decided at the frame set that completes the minimum duration; its
`capture_ns` is that frame set's capture time (the moment the decision could first be made, which
is what hardware triggered by it can rely on). The estimated onset is reported as
``extra["onset_ns"]``: the new state began after the last frame of the old state and by the first
frame of the new one, so the onset is the middle of that interval (with min_duration 0 the first
frame of the new state is the decided frame itself). `events.accuracy` scores that onset against the
true contact times and reports the decision delay (capture_ns - true time) separately.

Touchdown onsets are not refined backwards: walking back over earlier frames that were already near
the rest position moved the onset 1-2 frames too early on the synthetic rig (a decelerating paw is
within triangulation noise of where it lands for the last ~30 ms of its swing), at 30 and 60 fps.
Lift-offs are: the speed and height tests fire a frame or two into the swing (onsets 60 ms late
on the synthetic rig), so the onset is walked back to the last frame at which the paw still stood
(low and within `liftoff_distance_mm` of where it stood): 43 ms late, lift-offs within 100 ms of
the truth 0.87-0.91 -> 0.95.

Unreliable frames are skipped like unseen ones rather than allowed to toggle the state: a position
more than `floor_tolerance_mm` under the floor (physically impossible: on the real pipeline these are
hidden paws that the 2D model guessed confidently in both of only two views), a filter output with no
measurement behind it (fusion's n_cameras = 0: the Kalman filter coasted), and optionally a two-view
triangulation whose reprojection error exceeds `max_two_view_error_px`. On the recorded synthetic
demo (real 2D model) the floor check raised touchdown precision from 0.64 to 0.81 but cost recall
(0.84 -> 0.74): 78 % of paw measurements there come from two views and 41 % of those are > 20 mm off,
most within the floor's tolerance, so the detector is limited by the 2D model, not by its thresholds.

Slow steps. When a rat stops or turns, a paw can be moved in a slow, low shuffle (a 250 ms swing
of 10-60 mm that clears the floor by a few mm) that neither the height nor the speed test sees;
at the corridor's ends those paws are often seen by one camera only, whose floor points carry no
height at all. `step_distance_mm` catches them by where the paw ends up: a planted paw that now
stands that far from where it stood has stepped. On the synthetic rig (4 walks, 3,340 touchdowns,
`bench/accuracy_offline.py --events step_distance_mm=inf`) it raises touchdown recall from 0.950
to 0.972 for a precision of 0.969 instead of 0.977 (events/README.md has the table).

NaN positions (keypoint not triangulated) are skipped, and so are positions outside the floor area
(the detector's optional `floor_area_mm`: the arena plus a margin; e.g. the floor point of a front
paw held up in a rear at the corridor's end lands beyond the end wall and stands still there); a
paw unseen for longer than `max_gap_ms` returns to the unknown state. From the unknown state the
first confirmed state is adopted silently: a paw that is already down when tracking starts did not
just touch down.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

from ratrig.clock import now_ns
from ratrig.messages import EventPacket
from ratrig.skeleton import PAWS

TOUCHDOWN = "touchdown"
LIFTOFF = "liftoff"

#: Paw state codes (also used in `PawPlacementDetector.states`).
UNKNOWN = 0
SWING = 1
STANCE = 2

#: Nose-to-tail-base length of an adult rat (250-350 g), mm; the scale of the default thresholds.
DEFAULT_RAT_LENGTH_MM = 230.0


@dataclass(frozen=True, slots=True)
class PawThresholds:
    """Detection thresholds of one paw. Heights are z above the floor (world frame), mm.

    Attributes:
        touchdown_height_mm: the paw keypoint must be below this to be on the floor.
        liftoff_height_mm: above this the paw is off the floor (>= touchdown_height_mm).
        touchdown_speed_mm_s: the paw must be slower than this to be on the floor.
        liftoff_speed_mm_s: faster than this the paw is off the floor (>= touchdown_speed_mm_s).
        min_duration_ms: a new state must hold this long (from its first frame to the deciding
            frame) to be reported; 0 reports on the first frame.
        speed_window_ms: speed is measured over this span (at least one frame).
        last_frame_fraction: a paw that moved slower than this fraction of touchdown_speed_mm_s
            since the previous frame alone counts as that slow, although the window still sees
            the swing (one frame less latency at 30 fps; 0 switches it off).
        liftoff_distance_mm: below the lift-off height, a paw in stance lifts off only when it is
            also this far (horizontally) from where it stands (the median of its stance so far),
            so a noise spike in the speed is not a lift-off.
        max_gap_ms: a paw unseen (NaN) for longer returns to the unknown state.
        floor_tolerance_mm: a paw position more than this below the floor (z < -tolerance) is
            physically impossible, so it is a triangulation error (typically a hidden paw that the
            2D model guessed in both of only two views) and the frame is treated as unseen.
        max_two_view_error_px: a paw triangulated from only two views with a mean reprojection
            error above this is treated as unseen (needs the per-keypoint n_cameras / error that
            fusion puts in Pose3DPacket; see `PawPlacementDetector.feed`); inf switches it off.
        single_view_min_duration_ms: a new state (touchdown or lift-off) seen on a paw position
            that fusion could only place on the floor from one camera (n_cameras = 1,
            `Pose3DPacket.floor_mm`) must hold this long: such a point cannot show motion along that
            camera's ray, so a paw landing towards the camera looks still a frame or two early, and
            its noise (a few mm) must not lift a planted paw. The onset is still the first frame of
            the new state; only the decision waits. 40 ms: on the synthetic rig (30 fps) precision
            0.88 -> 0.97 for a recall of 0.97 -> 0.95 on one-camera paws.
        step_distance_mm: a paw in stance whose position is this far (horizontally) from where it
            stands (the median of its stance positions of the same kind: one-camera floor points
            or triangulations) has stepped, whatever its speed and height (slow shuffles, steps
            seen from one camera). Must exceed the noise of a planted paw's position; inf = off.
    """

    touchdown_height_mm: float
    liftoff_height_mm: float
    touchdown_speed_mm_s: float
    liftoff_speed_mm_s: float
    min_duration_ms: float = 0.0
    liftoff_distance_mm: float = 8.0
    speed_window_ms: float = 70.0
    last_frame_fraction: float = 0.8
    max_gap_ms: float = 250.0
    floor_tolerance_mm: float = 8.0
    max_two_view_error_px: float = math.inf
    single_view_min_duration_ms: float = 40.0
    step_distance_mm: float = math.inf

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("max_two_view_error_px", "step_distance_mm") and v == math.inf:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{f.name}: expected a finite number >= 0, got {v!r}")
        if self.liftoff_height_mm < self.touchdown_height_mm:
            raise ValueError(
                f"liftoff_height_mm ({self.liftoff_height_mm}) must be >= touchdown_height_mm "
                f"({self.touchdown_height_mm}): the band between them is the hysteresis"
            )
        if self.liftoff_speed_mm_s < self.touchdown_speed_mm_s:
            raise ValueError(
                f"liftoff_speed_mm_s ({self.liftoff_speed_mm_s}) must be >= touchdown_speed_mm_s "
                f"({self.touchdown_speed_mm_s})"
            )


def default_thresholds(rat_length_mm: float = DEFAULT_RAT_LENGTH_MM) -> PawThresholds:
    """Thresholds scaled to the rat: nose-to-tail-base length, mm -> PawThresholds.

    For a 230 mm rat: on the floor below 13.8 mm and 253 mm/s, off above 18.4 mm or 299 mm/s, and a
    planted paw must also move 8 mm to lift off; one that moved 20.7 mm has stepped. Why these
    fractions: a paw keypoint sits about 0.02 L above the floor in stance and a rat's swing clears
    the floor by a few mm up to about 0.08 L, so height alone misses short steps; a swinging paw
    moves at one to several body lengths per second while a planted one is still, so about 1.1-1.3
    L/s over the 70 ms speed window sits above the jitter of a Kalman-filtered stationary paw with
    2-4 mm triangulation noise and below most of the swing. A planted paw that ends up 0.09 L (21
    mm) from where it stood has stepped even if it never looked fast or high (one-camera floor
    points at the corridor ends scatter by 10-15 mm; 16 mm cost precision there, 25 mm recall). No
    debounce by default (min_duration_ms = 0): the 70 ms speed window already spans two frames at 30
    fps, and on the synthetic rig a 30 ms debounce cost a frame of latency without raising
    precision. A 50 ms speed window (one frame at 30 fps) gets the onset about 10 ms closer for fast
    walkers but lowers precision to 0.93-0.97.

    Tuned on the synthetic rig (tests/test_events_paw.py; 30 fps, 2-4 mm jitter), not on real
    rats: check them on your own recordings and override them in [events] / [events.paws.<paw>].
    """
    if not (math.isfinite(rat_length_mm) and rat_length_mm > 0):
        raise ValueError(f"rat_length_mm: expected a positive number, got {rat_length_mm!r}")
    L = float(rat_length_mm)
    return PawThresholds(
        touchdown_height_mm=round(0.06 * L, 1),
        liftoff_height_mm=round(0.08 * L, 1),
        touchdown_speed_mm_s=round(1.1 * L, 0),
        liftoff_speed_mm_s=round(1.3 * L, 0),
        liftoff_distance_mm=round(0.035 * L, 1),
        step_distance_mm=round(0.09 * L, 1),
    )


def thresholds_from_config(
    rat_length_mm: float,
    common: Mapping[str, Any],
    per_paw: Mapping[str, Mapping[str, Any]],
    paws: Sequence[str] = PAWS,
    where: str = "events",
) -> dict[str, PawThresholds]:
    """Defaults from the rat's size, then `common` overrides, then each paw's own overrides.

    `common` / `per_paw[paw]` map PawThresholds field names to numbers (None = keep the default).
    Raises ValueError naming the key (`where.paws.<paw>.<key>`) on unknown keys or bad values.
    """
    names = {f.name for f in fields(PawThresholds)}
    base = default_thresholds(rat_length_mm)
    common_set = {k: float(v) for k, v in common.items() if v is not None}
    for k in common_set:
        if k not in names:
            raise ValueError(f"{where}.{k}: unknown threshold; expected one of {sorted(names)}")
    try:
        base = replace(base, **common_set)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    unknown = [p for p in per_paw if p not in paws]
    if unknown:
        raise ValueError(f"{where}.paws.{unknown[0]}: unknown paw; expected one of {list(paws)}")
    out = {}
    for paw in paws:
        over = dict(per_paw.get(paw, {}))
        for k, v in over.items():
            if k not in names:
                raise ValueError(f"{where}.paws.{paw}.{k}: unknown threshold; expected one of {sorted(names)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{where}.paws.{paw}.{k}: expected a number, got {v!r}")
        try:
            out[paw] = replace(base, **{k: float(v) for k, v in over.items()})
        except ValueError as e:
            raise ValueError(f"{where}.paws.{paw}: {e}") from None
    return out


def check_floor_area(area: Sequence[float], where: str = "floor_area_mm") -> tuple[float, float, float, float]:
    """[x_min, y_min, x_max, y_max] world mm -> the same as a tuple; ValueError naming `where` if malformed."""
    try:
        a = tuple(float(v) for v in area)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected [x_min, y_min, x_max, y_max] in mm, got {area!r}") from None
    if len(a) != 4 or not all(math.isfinite(v) for v in a) or not (a[0] < a[2] and a[1] < a[3]):
        raise ValueError(f"{where}: expected [x_min, y_min, x_max, y_max] in mm with min < max, got {list(area)!r}")
    return a  # type: ignore[return-value]


def _median_xy(points: Iterable[np.ndarray]) -> np.ndarray:
    """Median of a few (2,) points per coordinate, as np.median(axis=0) (which costs ~50 us a call:
    this runs for every paw of every frame set)."""
    pts = list(points)
    xs = sorted(float(q[0]) for q in pts)
    ys = sorted(float(q[1]) for q in pts)
    m = len(xs) // 2
    if len(xs) % 2:
        return np.array([xs[m], ys[m]])
    return np.array([(xs[m - 1] + xs[m]) / 2, (ys[m - 1] + ys[m]) / 2])


class _RunFrame(NamedTuple):
    """A frame of a candidate run towards a new state."""

    t_ns: int
    position: np.ndarray  # (3,) mm
    single_view: bool  # a one-camera floor point


class _PawTrack:
    """Mutable per-paw state of the detector (not shared)."""

    __slots__ = ("state", "history", "run", "last_seen_ns", "event_onset_ns", "stance", "run_glitch")

    def __init__(self) -> None:
        self.state = UNKNOWN
        # recent (capture_ns, frame_set_index, position (3,)) of valid frames, oldest first
        self.history: deque[tuple[int, int, np.ndarray]] = deque(maxlen=64)
        # frames of the candidate run towards the other state
        self.run: list[_RunFrame] = []
        self.run_glitch = False  # the run has already forgiven one frame that broke it
        self.last_seen_ns: int | None = None
        self.event_onset_ns: int | None = None  # onset of the current state (for durations)
        # (horizontal position (2,), one-camera floor point?) of the current stance's frames; their
        # median is where the paw stands
        self.stance: deque[tuple[np.ndarray, bool]] = deque(maxlen=15)


class PawPlacementDetector:
    """Online touchdown / lift-off detector for a fixed list of paws. Not thread-safe.

    Example:
        det = PawPlacementDetector({paw: default_thresholds() for paw in PAWS})
        for capture_ns, paws_mm in stream:          # paws_mm: (4, 3) filtered world mm, NaN = unseen
            for event in det.feed(capture_ns, paws_mm):
                ...                                  # EventPacket, name "touchdown" / "liftoff"

    Frame sets must arrive in capture order; an older or repeated capture time is ignored.
    """

    def __init__(
        self,
        thresholds: Mapping[str, PawThresholds],
        paws: Sequence[str] = PAWS,
        clock: Callable[[], int] = now_ns,
        floor_area_mm: Sequence[float] | None = None,
    ) -> None:
        missing = [p for p in paws if p not in thresholds]
        if missing:
            raise ValueError(f"thresholds: no thresholds for paw(s) {missing}")
        self.paws = tuple(paws)
        self.thresholds = {p: thresholds[p] for p in self.paws}
        self._clock = clock
        self.floor_area_mm = None if floor_area_mm is None else check_floor_area(floor_area_mm)
        self._tracks = [_PawTrack() for _ in self.paws]
        self._last_capture_ns: int | None = None
        self.frames_fed = 0
        self.frames_ignored = 0

    @property
    def states(self) -> dict[str, int]:
        """Paw -> UNKNOWN / SWING / STANCE."""
        return {p: t.state for p, t in zip(self.paws, self._tracks)}

    def reset(self) -> None:
        """Forget every paw's state (e.g. after the stream was interrupted)."""
        self._tracks = [_PawTrack() for _ in self.paws]
        self._last_capture_ns = None

    def feed(
        self,
        capture_ns: int,
        positions_mm: np.ndarray,
        frame_set_index: int = -1,
        n_cameras: np.ndarray | None = None,
        error_px: np.ndarray | None = None,
    ) -> list[EventPacket]:
        """One frame set: (P, 3) filtered paw positions, world mm, NaN = unseen -> events decided now.

        Args:
            capture_ns: capture time of the frame set (monotonic ns).
            positions_mm: (P, 3), P = len(self.paws), in the order of `self.paws`.
            frame_set_index: copied into the events.
            n_cameras: optional (P,) views each paw was triangulated from in this frame set (fusion's
                Pose3DPacket.n_cameras). 0 = no measurement (the filter coasted: the position is a
                prediction), so the frame is treated as unseen for that paw; 1 = a floor point from
                one camera (Pose3DPacket.floor_mm, see `single_view_min_duration_ms`).
            error_px: optional (P,) mean reprojection error of those triangulations; with
                `n_cameras`, a two-view paw above `max_two_view_error_px` is treated as unseen.

        Returns:
            EventPackets named "touchdown" / "liftoff", subject = paw, in paw order.
        """
        pos = np.asarray(positions_mm, dtype=np.float64)
        if pos.shape != (len(self.paws), 3):
            raise ValueError(f"positions_mm: expected shape ({len(self.paws)}, 3), got {pos.shape}")
        capture_ns = int(capture_ns)
        if self._last_capture_ns is not None and capture_ns <= self._last_capture_ns:
            self.frames_ignored += 1
            return []
        self._last_capture_ns = capture_ns
        self.frames_fed += 1
        n_cam = None if n_cameras is None else np.asarray(n_cameras).reshape(-1)
        err = None if error_px is None else np.asarray(error_px, np.float64).reshape(-1)
        for name, a in (("n_cameras", n_cam), ("error_px", err)):
            if a is not None and a.shape != (len(self.paws),):
                raise ValueError(f"{name}: expected shape ({len(self.paws)},), got {a.shape}")
        events: list[EventPacket] = []
        for i, (paw, track) in enumerate(zip(self.paws, self._tracks)):
            p = pos[i]
            th = self.thresholds[paw]
            n_i = None if n_cam is None else int(n_cam[i])
            if not self._reliable(th, p, n_i, None if err is None else float(err[i]), self.floor_area_mm):
                if track.last_seen_ns is not None and capture_ns - track.last_seen_ns > th.max_gap_ms * 1e6:
                    self._forget(track)
                continue
            single = n_i == 1
            events += self._step(i, paw, track, capture_ns, p.copy(), int(frame_set_index), single)
        return events

    @staticmethod
    def _reliable(th: PawThresholds, p: np.ndarray, n_cam: int | None, err: float | None,
                  area: tuple[float, float, float, float] | None = None) -> bool:
        """Whether one paw position may update its state: seen, above the floor (within tolerance),
        over the floor area, measured this frame (not coasted) and, from two views only, consistent
        between them."""
        if not np.all(np.isfinite(p)) or p[2] < -th.floor_tolerance_mm:
            return False
        if area is not None and not (area[0] <= p[0] <= area[2] and area[1] <= p[1] <= area[3]):
            return False
        if n_cam is None:
            return True
        if n_cam <= 0:
            return False
        # two views always intersect somewhere; only their epipolar mismatch can expose a guessed view
        return not (n_cam == 2 and err is not None and not err <= th.max_two_view_error_px)

    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _forget(track: _PawTrack) -> None:
        track.state = UNKNOWN
        track.history.clear()
        track.run = []
        track.last_seen_ns = None
        track.event_onset_ns = None
        track.stance.clear()
        track.run_glitch = False

    def _speed(self, track: _PawTrack, th: PawThresholds, t_ns: int, p: np.ndarray) -> float:
        """Speed over the last `speed_window_ms` (at least one frame), mm/s; NaN without history."""
        if not track.history:
            return math.nan
        window_ns = th.speed_window_ms * 1e6
        ref_t, _, ref_p = track.history[-1]
        for t_old, _, p_old in reversed(track.history):
            if t_ns - t_old > window_ns:
                break
            ref_t, ref_p = t_old, p_old
        dt_s = (t_ns - ref_t) * 1e-9
        if dt_s <= 0:
            return math.nan
        return float(np.linalg.norm(p - ref_p)) / dt_s

    def _step(self, i: int, paw: str, track: _PawTrack, t_ns: int, p: np.ndarray, index: int,
              single_view: bool = False) -> list[EventPacket]:
        th = self.thresholds[paw]
        if track.last_seen_ns is not None and t_ns - track.last_seen_ns > th.max_gap_ms * 1e6:
            self._forget(track)
        speed = self._speed(track, th, t_ns, p)
        settled = speed  # the speed a touchdown is judged by
        if track.history and th.last_frame_fraction > 0:
            # The window still sees the end of the swing for a frame after the paw stopped; a paw
            # that barely moved since the previous frame is still already. (Touchdowns only: it
            # would delay lift-offs.)
            t1, _, p1 = track.history[-1]
            last_frame_speed = float(np.linalg.norm(p - p1)) / max((t_ns - t1) * 1e-9, 1e-9)
            if last_frame_speed < th.last_frame_fraction * th.touchdown_speed_mm_s:
                settled = min(speed, last_frame_speed)
        track.history.append((t_ns, index, p))
        track.last_seen_ns = t_ns
        z = p[2]
        contact = z < th.touchdown_height_mm and settled < th.touchdown_speed_mm_s  # NaN speed: False
        airborne = z > th.liftoff_height_mm or speed > th.liftoff_speed_mm_s
        if track.state == STANCE:
            if track.stance:
                # A planted paw cannot leave without moving away from where it stands: a speed
                # spike made of triangulation noise alone is not a lift-off ...
                if z <= th.liftoff_height_mm:
                    rest_xy = _median_xy(xy for xy, _ in track.stance)
                    airborne = airborne and float(np.hypot(*(p[:2] - rest_xy))) > th.liftoff_distance_mm
                # ... and a paw that now stands step_distance_mm from where it stood has stepped,
                # however slowly and low (a shuffle while turning, a step seen from one camera).
                # Measured against the stance positions from the same kind of measurement, because
                # a floor point and a triangulation of the same planted paw differ by their errors.
                airborne = airborne or self._moved(track, p, single_view) > th.step_distance_mm
            if not airborne:
                track.stance.append((p[:2], single_view))
            target = SWING if airborne else None
        elif track.state == SWING:
            target = STANCE if contact else None
        else:
            target = STANCE if contact else SWING if airborne else None
        if target is None:
            if track.run and not track.run_glitch:
                # One frame that breaks a run is forgiven (not counted, the run goes on): a single
                # wild 2D detection must not restart a touchdown that the frames around it show.
                track.run_glitch = True
                return []
            track.run = []
            track.run_glitch = False
            return []
        track.run.append(_RunFrame(t_ns, p, single_view))
        if not self._held(track, th, t_ns):
            return []
        return self._decide(i, paw, track, th, t_ns, index, target)

    @staticmethod
    def _held(track: _PawTrack, th: PawThresholds, t_ns: int) -> bool:
        """Whether the run towards a new state has lasted its minimum duration by t_ns (longer if a
        frame of it is a one-camera floor point)."""
        min_ms = th.min_duration_ms
        if any(f.single_view for f in track.run):
            min_ms = max(min_ms, th.single_view_min_duration_ms)
        return t_ns - track.run[0].t_ns >= min_ms * 1e6

    def _decide(self, i: int, paw: str, track: _PawTrack, th: PawThresholds, t_ns: int, index: int,
                target: int) -> list[EventPacket]:
        """The run held: switch the paw to `target`; the event, unless the paw's state was unknown."""
        previous = track.state
        run = track.run
        track.run = []
        track.run_glitch = False
        track.state = target
        onset_ns = self._onset(track, run)
        if target == SWING and previous == STANCE and track.stance:
            onset_ns = self._liftoff_onset(track, th, run, _median_xy(xy for xy, _ in track.stance), onset_ns)
        track.stance.clear()
        if target == STANCE:
            track.stance.extend((f.position[:2], f.single_view) for f in run)
            rest = np.median(np.stack([f.position for f in run]), axis=0)
        else:
            rest = self._last_rest_position(track, run)
        since = track.event_onset_ns
        track.event_onset_ns = onset_ns
        if previous == UNKNOWN:
            return []  # first state of a track: not an event (the paw may have been down all along)
        name = TOUCHDOWN if target == STANCE else LIFTOFF
        extra: dict[str, Any] = {
            "onset_ns": int(onset_ns),
            "paw_index": i,
            "decision_delay_ms": round((t_ns - onset_ns) * 1e-6, 3),
        }
        if since is not None:
            # touchdown: how long the paw was in the air; liftoff: how long it stood
            extra["swing_ms" if target == STANCE else "stance_ms"] = round((onset_ns - since) * 1e-6, 3)
        return [EventPacket(
            name=name,
            subject=paw,
            frame_set_index=index,
            capture_ns=t_ns,
            emitted_ns=int(self._clock()),
            position_mm=(float(rest[0]), float(rest[1]), float(rest[2])),
            extra=extra,
        )]

    @staticmethod
    def _onset(track: _PawTrack, run: list[_RunFrame]) -> int:
        """When the new state began: between the last frame before the run and the run's first
        frame (the state changed somewhere in that interval), so the middle of it; the run's first
        frame when there is no earlier one."""
        first = run[0].t_ns
        for t_old, _, _ in reversed(track.history):
            if t_old < first:
                return (t_old + first) // 2
        return first

    @staticmethod
    def _moved(track: _PawTrack, p: np.ndarray, single_view: bool) -> float:
        """Horizontal distance, mm, from where the paw stands (median of its stance positions of the
        same kind as p: one-camera floor points or triangulations) to p; 0 with fewer than two."""
        same = [xy for xy, sv in track.stance if sv == single_view]
        if len(same) < 2:
            return 0.0
        return float(np.hypot(*(p[:2] - _median_xy(same))))

    @staticmethod
    def _liftoff_onset(track: _PawTrack, th: PawThresholds, run: list[_RunFrame],
                       rest_xy: np.ndarray, default_ns: int) -> int:
        """When a paw lifted: the speed and height tests see it a frame or two after it left, so walk
        back from the run to the last frame still at rest (low, within liftoff_distance_mm of where
        it stood; not before the stance began) and take the middle between that frame and the next.
        `default_ns` when no such frame is in the history."""
        first = run[0].t_ns
        later = first
        for t_old, _, p_old in reversed(track.history):
            if t_old >= first:
                continue
            if track.event_onset_ns is not None and t_old < track.event_onset_ns:
                break
            at_rest = (p_old[2] < th.touchdown_height_mm
                       and float(np.hypot(*(p_old[:2] - rest_xy))) <= th.liftoff_distance_mm)
            if at_rest:
                return (t_old + later) // 2
            later = t_old
        return default_ns

    @staticmethod
    def _last_rest_position(track: _PawTrack, run: list[_RunFrame]) -> np.ndarray:
        """Where the paw stood before lifting: the last history frame before the run began."""
        start = run[0].t_ns
        for t_old, _, p_old in reversed(track.history):
            if t_old < start:
                return p_old
        return run[0].position
