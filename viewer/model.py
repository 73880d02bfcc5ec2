"""What the viewer shows, as plain data: no Qt here, so every rule can be tested without a display.

`ViewState` takes decoded packets (live or replayed) and keeps the newest pose, a short ring of recent
frames and 2D keypoints per camera, short paw trails, scrolling paw-height and speed traces, paw
placements and the newest stats of every process. The Qt window (`viewer.window`) only draws what it
holds.

Consistent overlays: frames come straight from the cameras, 2D keypoints and poses only after
inference and fusion, so the newest frame is always newer than the newest pose. A camera panel
therefore shows, from the ring, the frame the overlaid pose / keypoints were computed from
(`ViewState.panel_content`), never the newest frame under an older pose.

Time: every buffer is keyed by the packets' `capture_ns` (the rig's monotonic clock), never by the
viewer's own clock, so a viewer on another machine and a replay behave the same.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ratrig.camera import Calibration
from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Packet, Pose3DPacket, StatsPacket
from ratrig.skeleton import KEYPOINTS, PAWS, SKELETON

#: Keypoint colours, RGB 0-255, by position in `ratrig.skeleton.KEYPOINTS` (unknown names cycle on).
#: Saturated and far from grey so they stand out on camera images and on the grey floor.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 40, 40),  # nose: red
    (40, 230, 40),  # left_ear: green
    (60, 120, 255),  # right_ear: blue
    (255, 230, 0),  # tail_base: yellow
    (255, 0, 255),  # front_left_paw: magenta
    (0, 240, 240),  # front_right_paw: cyan
    (255, 140, 0),  # hind_left_paw: orange
    (170, 90, 255),  # hind_right_paw: violet
)

#: Below this score a keypoint is drawn faded (the filter is coasting or the views disagree).
LOW_CONFIDENCE = 0.5
FADED_ALPHA = 0.25
TRACE_WINDOW_S = 5.0


def keypoint_colors(names: Sequence[str]) -> np.ndarray:
    """K keypoint names -> (K, 3) uint8 RGB; the same name always gets the same colour."""
    out = np.zeros((len(names), 3), np.uint8)
    for i, name in enumerate(names):
        j = KEYPOINTS.index(name) if name in KEYPOINTS else len(KEYPOINTS) + i
        out[i] = PALETTE[j % len(PALETTE)]
    return out


def confidence_alpha(score: np.ndarray, threshold: float = LOW_CONFIDENCE) -> np.ndarray:
    """(K,) score (NaN = unknown) -> (K,) alpha in [FADED_ALPHA, 1]: faded below `threshold`."""
    s = np.asarray(score, np.float64)
    return np.where(np.isfinite(s) & (s >= threshold), 1.0, FADED_ALPHA)


def skeleton_index_pairs(names: Sequence[str], skeleton: Iterable[tuple[str, str]] = SKELETON) -> np.ndarray:
    """Keypoint names -> (E, 2) int indices of the skeleton segments whose both ends are present."""
    pos = {n: i for i, n in enumerate(names)}
    pairs = [(pos[a], pos[b]) for a, b in skeleton if a in pos and b in pos]
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def segment_vertices(points: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(K, D) points, (E, 2) pairs -> (2E', D) vertices of the segments with both ends finite.

    Laid out as consecutive start/end pairs (what line-segment renderers take).
    """
    pts = np.asarray(points, np.float64)
    if len(pairs) == 0:
        return np.zeros((0, pts.shape[1]))
    ends = pts[pairs]  # (E, 2, D)
    ok = np.all(np.isfinite(ends), axis=(1, 2))
    return ends[ok].reshape(-1, pts.shape[1])


def segment_vertex_colors(colors_rgba: np.ndarray, pairs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(K, 4) colours, (E, 2) pairs, (K, D) points -> (2E', 4) colours matching `segment_vertices`."""
    if len(pairs) == 0:
        return np.zeros((0, 4))
    ok = np.all(np.isfinite(np.asarray(points, np.float64)[pairs]), axis=(1, 2))
    return np.asarray(colors_rgba, np.float64)[pairs[ok]].reshape(-1, 4)


def corridor_geometry(length_mm: float, width_mm: float, wall_height_mm: float) -> dict[str, np.ndarray]:
    """Corridor centred on the origin (x along, y across, z up, floor z = 0), for drawing.

    Returns:
        "floor": (4, 3) corners, mm; "walls": (2, 4, 3) corners of the y = -w/2 and y = +w/2 walls;
        "edges": (2E, 3) line-segment vertices outlining floor and walls.
    """
    hx, hy, h = length_mm / 2.0, width_mm / 2.0, wall_height_mm
    floor = np.array([[-hx, -hy, 0], [hx, -hy, 0], [hx, hy, 0], [-hx, hy, 0]], np.float64)
    walls = np.array(
        [[[-hx, y, 0], [hx, y, 0], [hx, y, h], [-hx, y, h]] for y in (-hy, hy)], np.float64
    )
    edges = []
    for wall in walls:
        for i in range(4):
            edges += [wall[i], wall[(i + 1) % 4]]
    for x in (-hx, hx):  # the open ends of the floor
        edges += [[x, -hy, 0], [x, hy, 0]]
    return {"floor": floor, "walls": walls, "edges": np.asarray(edges, np.float64)}


def quad_mesh(quads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, 4, 3) quads -> vertices (4Q, 3), faces (2Q, 3) int (two triangles each)."""
    q = np.asarray(quads, np.float64).reshape(-1, 4, 3)
    verts = q.reshape(-1, 3)
    base = np.arange(len(q))[:, None] * 4
    faces = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=0)
    return verts, faces.astype(np.int32)


def fit_image(image: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
    """(H, W[, 3|1]) uint8 BGR or mono -> (h, w, 4) uint8 B, G, R, 255 at most `size_px` (w, h), aspect kept.

    Area-averaged (cv2.INTER_AREA: no aliasing of the fine texture of fur and bedding) to the size
    the panel shows on screen, once per frame, so the GUI never scales a full frame at paint time.
    B, G, R, 255 bytes are Qt's native 32-bit pixel (QImage.Format_RGB32 on little-endian
    machines): painting them is a plain copy, with no conversion either.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    scale = min(1.0, size_px[0] / w, size_px[1] / h)
    tw, th = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    if img.ndim == 3 and img.shape[2] > 3:
        img = img[:, :, :3]
    if (tw, th) != (w, h):
        img = cv2.resize(np.ascontiguousarray(img), (tw, th), interpolation=cv2.INTER_AREA)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(th, tw), cv2.COLOR_GRAY2BGRA)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2BGRA)


# --------------------------------------------------------------------------------------------------
# Status: tolerant reading of StatsPacket contents.


def flatten_stats(stats: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested stats map -> flat {"a.b": scalar}. Lists become their length; other objects their str."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_stats(value, name + "."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value
        elif isinstance(value, (list, tuple)):
            out[name] = f"[{len(value)}]"
        else:
            out[name] = str(value)
    return out


def format_value(value: Any) -> str:
    """A stats value, short: floats to 3 significant figures, long strings cut."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Substrings of stats keys shown first (lower-case): what a researcher checks during a test.
PRIORITY_KEYS: tuple[str, ...] = ("record", "state", "fps", "drop", "latency", "lost", "skipped", "error")


def summarise_process(stats: Mapping[str, Any], max_items: int = 6) -> str:
    """One process's stats -> 'key=value ...', the keys a researcher checks first, then the rest."""
    flat = flatten_stats(stats)

    def rank(key: str) -> tuple[int, str]:
        low = key.lower()
        for i, p in enumerate(PRIORITY_KEYS):
            if p in low:
                return (i, key)
        return (len(PRIORITY_KEYS), key)

    keys = sorted(flat, key=rank)[:max_items]
    return " ".join(f"{k}={format_value(flat[k])}" for k in keys)


def recording_state(stats_by_process: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Recording state from whatever the recorder reports; None when no process says anything."""
    for process in sorted(stats_by_process, key=lambda p: (not p.startswith("recorder"), p)):
        flat = flatten_stats(stats_by_process[process])
        for key, value in flat.items():
            low = key.lower()
            if low in ("recording", "is_recording") or low.endswith(".recording"):
                return "REC" if value else "not recording"
        for key, value in flat.items():
            if key.lower() in ("state", "status") and process.startswith("recorder"):
                return str(value)
    return None


# --------------------------------------------------------------------------------------------------
# Rates measured by the viewer itself from the packets' own indices and capture times.


@dataclass
class RateMeter:
    """Rate of a sequence from (index, capture_ns) samples: robust to the viewer skipping packets."""

    window_s: float = 2.0
    samples: deque = field(default_factory=lambda: deque(maxlen=512))

    def add(self, index: int, capture_ns: int) -> None:
        if self.samples and capture_ns <= self.samples[-1][1]:
            if capture_ns < self.samples[-1][1] - 1_000_000_000:  # source restarted: start again
                self.samples.clear()
            else:
                return
        self.samples.append((int(index), int(capture_ns)))
        while len(self.samples) > 2 and capture_ns - self.samples[0][1] > self.window_s * 1e9:
            self.samples.popleft()

    def rate_hz(self) -> float:
        """Items per second over the window (NaN until two samples)."""
        if len(self.samples) < 2:
            return float("nan")
        (i0, t0), (i1, t1) = self.samples[0], self.samples[-1]
        return (i1 - i0) / ((t1 - t0) / 1e9) if t1 > t0 else float("nan")


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PawMark:
    """A touchdown or lift-off drawn on the floor and on the traces."""

    kind: str  # event name, e.g. "touchdown"
    paw: str
    capture_ns: int
    position_mm: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class PanelContent:
    """What one camera panel shows: an image and the overlays that belong to it.

    Attributes:
        frame: the image (None: no frame received, e.g. a pose-only viewer).
        keypoints: 2D detections to draw on it (None: none for this frame).
        pose: 3D pose to reproject onto it (None: none for this frame).
        matched: False when a pose is shown elsewhere but no frame of its moment is at hand for
            this camera (dropped, or older than the ring): the newest frame is shown without it.
    """

    frame: FramePacket | None
    keypoints: Keypoints2DPacket | None
    pose: Pose3DPacket | None
    matched: bool = True


BODY_KEYPOINTS = ("left_ear", "right_ear", "tail_base")


def body_speed_mm_s(before: np.ndarray, after: np.ndarray, dt_s: float) -> float:
    """(B, 3) body keypoints at two times, mm -> horizontal body speed, mm/s (NaN if none is seen twice).

    The mean over the keypoints seen in both frame sets of each one's own horizontal speed: a centre
    of whichever keypoints happen to be seen would jump by tens of mm when one of them drops out
    (read as a 1-2 m/s spike of a rat walking at 0.2 m/s).
    """
    both = np.isfinite(before).all(axis=1) & np.isfinite(after).all(axis=1)
    if not both.any() or not dt_s > 0:
        return float("nan")
    return float(np.mean(np.linalg.norm((after[both] - before[both])[:, :2], axis=1)) / dt_s)


class ViewState:
    """Everything the window draws; fed with packets, read by the window at redraw time.

    Args:
        keypoint_names: the rig's keypoints (packets carry their own names; these are the defaults).
        calibration: for reprojecting the 3D pose into the camera panels; None = no reprojection.
        trail_s: length of the paw trails, seconds.
        trace_s: span of the scrolling traces, seconds.
        max_marks: paw placements kept on the floor.
        ring_s: recent frames and 2D keypoints kept per camera, seconds of capture time (the pose
            is shown on the frame it came from as long as the pipeline lags less than this).
    """

    def __init__(
        self,
        keypoint_names: Sequence[str] = KEYPOINTS,
        calibration: Calibration | None = None,
        trail_s: float = 1.0,
        trace_s: float = TRACE_WINDOW_S,
        max_marks: int = 400,
        ring_s: float = 1.0,
    ) -> None:
        self.keypoint_names = tuple(keypoint_names)
        self.calibration = calibration
        self.trail_s = float(trail_s)
        self.trace_s = float(trace_s)
        self.pose: Pose3DPacket | None = None
        self.ring_s = float(ring_s)
        self.frames: dict[str, FramePacket] = {}  # newest per camera
        self.keypoints2d: dict[str, Keypoints2DPacket] = {}  # newest per camera
        self._frame_ring: dict[str, deque[FramePacket]] = {}  # oldest first, by capture_ns
        self._kp_ring: dict[str, deque[Keypoints2DPacket]] = {}
        self.stats: dict[str, Mapping[str, Any]] = {}
        self.stats_received_ns: dict[str, int] = {}
        self.marks: deque[PawMark] = deque(maxlen=max_marks)
        self.camera_rates: dict[str, RateMeter] = {}
        self.pose_rate = RateMeter()
        # (capture_ns, (P,) paw heights mm, body speed mm/s), oldest first
        self._trace: deque[tuple[int, np.ndarray, float]] = deque()
        self._trail: deque[tuple[int, np.ndarray]] = deque()  # (capture_ns, (P, 3) paw positions)
        self._prev_body: tuple[int, np.ndarray] | None = None
        self.poses_seen = 0
        self.frames_seen = 0
        self._reproj_pose: Pose3DPacket | None = None
        self._reproj: dict[str, np.ndarray] = {}
        self.version = 0  # bumped on every change, so the window can skip redrawing an unchanged state
        self.trace_version = 0  # bumped when the traces or marks change (poses, events; not frames)

    # -- feeding -----------------------------------------------------------------------------------

    def reset_history(self) -> None:
        """Forget trails, traces and marks (a replay jumped in time)."""
        self._trace.clear()
        self._trail.clear()
        self.marks.clear()
        self._prev_body = None
        self.version += 1
        self.trace_version += 1

    def add(self, packet: Packet, received_ns: int = 0) -> None:
        """Take one packet of any kind (unknown kinds are ignored)."""
        if isinstance(packet, Pose3DPacket):
            self._add_pose(packet)
        elif isinstance(packet, FramePacket):
            self.frames[packet.camera] = packet
            self.frames_seen += 1
            self.camera_rates.setdefault(packet.camera, RateMeter()).add(packet.frame_index, packet.capture_ns)
            self._push(self._frame_ring.setdefault(packet.camera, deque()), packet)
        elif isinstance(packet, Keypoints2DPacket):
            self.keypoints2d[packet.camera] = packet
            self._push(self._kp_ring.setdefault(packet.camera, deque()), packet)
        elif isinstance(packet, EventPacket):
            self.marks.append(PawMark(packet.name, packet.subject, int(packet.capture_ns), tuple(packet.position_mm)))
            self.trace_version += 1
        elif isinstance(packet, StatsPacket):
            self.stats[packet.process] = dict(packet.stats)
            self.stats_received_ns[packet.process] = int(received_ns)
        else:
            return
        self.version += 1

    def _push(self, ring: deque, packet: FramePacket | Keypoints2DPacket) -> None:
        """Append to a per-camera ring (oldest first), keeping `ring_s` seconds of capture time."""
        t = int(packet.capture_ns)
        if ring and t < int(ring[-1].capture_ns):
            if t < int(ring[-1].capture_ns) - 1_000_000_000:
                ring.clear()  # the source restarted or a replay jumped back: the ring is of another time
            else:  # out of order (another connection's queue): keep the ring sorted
                items = sorted([*ring, packet], key=lambda p: int(p.capture_ns))
                ring.clear()
                ring.extend(items)
                return
        ring.append(packet)
        while len(ring) > 1 and t - int(ring[0].capture_ns) > self.ring_s * 1e9:
            ring.popleft()

    def _trim_rings(self, before_ns: int) -> None:
        """Forget frames and keypoints captured before `before_ns`: poses only move forward, so no
        later pose can need them (keeps the ring, and the image buffers it pins, small)."""
        for rings in (self._frame_ring, self._kp_ring):
            for ring in rings.values():
                while len(ring) > 1 and int(ring[0].capture_ns) < before_ns:
                    ring.popleft()

    def _add_pose(self, pose: Pose3DPacket) -> None:
        if self.pose is not None and pose.capture_ns <= self.pose.capture_ns:
            if pose.capture_ns >= self.pose.capture_ns - 1_000_000_000:
                return  # a late or repeated pose: the display only moves forward
            self.reset_history()  # far older: the source restarted (or a replay jumped back)
        self.pose = pose
        self.poses_seen += 1
        self.trace_version += 1
        self._trim_rings(int(pose.capture_ns) - 200_000_000)
        self.pose_rate.add(pose.frame_set_index, pose.capture_ns)
        names = tuple(pose.keypoint_names)
        pts = np.asarray(pose.filtered_mm, np.float64).reshape(-1, 3)
        paw_idx = [names.index(p) if p in names else -1 for p in PAWS]
        paws = np.array([pts[i] if i >= 0 else (np.nan, np.nan, np.nan) for i in paw_idx])
        t = int(pose.capture_ns)
        self._trail.append((t, paws))
        while self._trail and t - self._trail[0][0] > self.trail_s * 1e9:
            self._trail.popleft()
        body = self._body_points(names, pts)
        speed = float("nan")
        if self._prev_body is not None and t > self._prev_body[0]:
            speed = body_speed_mm_s(self._prev_body[1], body, (t - self._prev_body[0]) / 1e9)
        if np.isfinite(body).all(axis=1).any():
            self._prev_body = (t, body)
        self._trace.append((t, paws[:, 2].copy(), speed))
        while self._trace and t - self._trace[0][0] > self.trace_s * 1e9:
            self._trace.popleft()

    @staticmethod
    def _body_points(names: Sequence[str], pts: np.ndarray) -> np.ndarray:
        """(B, 3) the keypoints the body speed is measured on: ears and tail base (NaN = unseen)."""
        return np.stack([pts[names.index(n)] if n in names else np.full(3, np.nan) for n in BODY_KEYPOINTS])

    # -- reading -----------------------------------------------------------------------------------

    def paw_trails(self) -> dict[str, np.ndarray]:
        """Paw name -> (T, 3) positions of the last `trail_s` seconds, oldest first, NaN rows removed."""
        if not self._trail:
            return {p: np.zeros((0, 3)) for p in PAWS}
        stack = np.stack([paws for _, paws in self._trail])  # (T, P, 3)
        out = {}
        for j, paw in enumerate(PAWS):
            track = stack[:, j]
            out[paw] = track[np.all(np.isfinite(track), axis=1)]
        return out

    def traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> t_s (T,) seconds relative to the newest pose (<= 0), heights (T, P) mm, speed (T,) mm/s."""
        if not self._trace:
            return np.zeros(0), np.zeros((0, len(PAWS))), np.zeros(0)
        t_now = self._trace[-1][0]
        t = np.array([(ti - t_now) / 1e9 for ti, _, _ in self._trace])
        heights = np.stack([h for _, h, _ in self._trace])
        speed = np.array([s for _, _, s in self._trace])
        return t, heights, speed

    def trace_marks(self) -> list[tuple[float, float, PawMark]]:
        """Marks inside the trace window -> (t_s relative to the newest pose, height mm, mark)."""
        if self.pose is None:
            return []
        t_now = int(self.pose.capture_ns)
        out = []
        for m in self.marks:
            dt = (m.capture_ns - t_now) / 1e9
            if -self.trace_s <= dt <= 0.5:
                out.append((dt, float(m.position_mm[2]), m))
        return out

    def frame_period_ns(self, camera: str) -> int:
        """The camera's measured frame period, ns (33.3 ms until measured)."""
        meter = self.camera_rates.get(camera)
        rate = meter.rate_hz() if meter is not None else float("nan")
        return int(1e9 / rate) if math.isfinite(rate) and rate > 0 else 33_333_333

    def _frame_at(self, camera: str, frame_index: int | None, capture_ns: int | None) -> FramePacket | None:
        """The ring's frame with this index, else (index None) the one nearest `capture_ns` within
        half a frame period; None if not in the ring."""
        ring = self._frame_ring.get(camera)
        if not ring:
            return None
        if frame_index is not None:
            for f in reversed(ring):
                if f.frame_index == frame_index:
                    return f
            return None
        best = min(ring, key=lambda f: abs(int(f.capture_ns) - capture_ns))
        return best if abs(int(best.capture_ns) - capture_ns) <= self.frame_period_ns(camera) // 2 else None

    def _keypoints_of(self, frame: FramePacket) -> Keypoints2DPacket | None:
        for kp in reversed(self._kp_ring.get(frame.camera, ())):
            if kp.frame_index == frame.frame_index:
                return kp
        return None

    def _pose_on(self, frame: FramePacket) -> Pose3DPacket | None:
        """The newest pose if it is of `frame`'s moment (same frame index, or capture time within
        half a frame period when the pose names no frame indices)."""
        pose = self.pose
        if pose is None:
            return None
        idx = pose.frame_indices.get(frame.camera) if pose.frame_indices else None
        if idx is not None:
            return pose if idx == frame.frame_index else None
        close = abs(int(pose.capture_ns) - int(frame.capture_ns)) <= self.frame_period_ns(frame.camera) // 2
        return pose if close else None

    def panel_content(self, camera: str) -> PanelContent:
        """What `camera`'s panel shows: a frame and the overlays computed from that very frame.

        In order of preference: the frame of the newest pose (with its 2D keypoints, when they
        arrived), the frame of the newest 2D keypoints, the newest frame (with whatever overlays
        belong to it). Without any frame (a pose-only viewer) the newest overlays are returned.
        """
        pose = self.pose
        if pose is not None:
            idx = pose.frame_indices.get(camera) if pose.frame_indices else None
            frame = self._frame_at(camera, idx, int(pose.capture_ns))
            if frame is not None:
                return PanelContent(frame, self._keypoints_of(frame), pose)
        kp_ring = self._kp_ring.get(camera)
        newest_kp = kp_ring[-1] if kp_ring else None
        ring = self._frame_ring.get(camera)
        if not ring:
            return PanelContent(None, newest_kp, pose)
        if newest_kp is not None and (pose is None or newest_kp.capture_ns > pose.capture_ns):
            frame = self._frame_at(camera, newest_kp.frame_index, None)
            if frame is not None:
                return PanelContent(frame, newest_kp, self._pose_on(frame), pose is None)
        frame = ring[-1]
        return PanelContent(frame, self._keypoints_of(frame), self._pose_on(frame), pose is None)

    def reprojection(self, camera: str, pose: Pose3DPacket | None = None) -> np.ndarray | None:
        """`pose` (default: the newest) filtered 3D keypoints projected into `camera` -> (K, 2) px,
        or None if unknown.

        When fusion predicts ahead (`predicted_ahead_ms` > 0) the filtered pose is of a later moment
        than the frames it came from; the panels show those frames, so the raw triangulation (of
        their moment) is projected instead, the filtered one only where raw is missing.
        """
        pose = self.pose if pose is None else pose
        if pose is None or self.calibration is None or camera not in self.calibration.names:
            return None
        if self._reproj_pose is not pose:
            self._reproj_pose, self._reproj = pose, {}
        if camera in self._reproj:
            return self._reproj[camera]
        pts = np.asarray(pose.filtered_mm, np.float64).reshape(-1, 3)
        if pose.predicted_ahead_ms > 0:
            raw = np.asarray(pose.raw_mm, np.float64).reshape(-1, 3)
            pts = np.where(np.all(np.isfinite(raw), axis=1, keepdims=True), raw, pts)
        cam = self.calibration.camera(camera)
        uv = cam.project(pts)
        uv[cam.depth_mm(pts) <= 0] = np.nan  # behind the camera: no meaningful projection
        self._reproj[camera] = uv
        return uv

    def pipeline_latency_ms(self) -> float:
        """Capture to the last stage that stamped the newest pose, ms (NaN if unknown).

        Uses only the rig's own stamps, so it is meaningful on a viewer on another machine.
        """
        if self.pose is None or not self.pose.stamps_ns:
            return float("nan")
        return (max(int(v) for v in self.pose.stamps_ns.values()) - int(self.pose.capture_ns)) / 1e6

    def status_fields(self, local_now_ns: int | None = None, shown_ns: int | None = None) -> list[tuple[str, str]]:
        """(label, text) pairs for the status bar: cameras, rates, latency, recording, per process stats.

        `shown_ns`: capture time of what the window displays (default: the newest pose's). Shown as
        its lag behind the newest frame received (any machine) and, with `local_now_ns` (the
        viewer's monotonic clock when it runs on the rig's machine), as its age on the screen.
        """
        out: list[tuple[str, str]] = []
        if self.camera_rates:
            parts = []
            for cam in sorted(self.camera_rates):
                r = self.camera_rates[cam].rate_hz()
                parts.append(f"{cam} {r:.1f}" if math.isfinite(r) else f"{cam} -")
            out.append(("fps", ", ".join(parts)))
        drops = self._sum_keys("drop")
        if drops is not None:
            out.append(("dropped", str(drops)))
        if shown_ns is None and self.pose is not None:
            shown_ns = int(self.pose.capture_ns)
        if self.pose is not None:
            used = ",".join(self.pose.cameras) if self.pose.cameras else "none"
            out.append(("cameras in use", used))
            rate = self.pose_rate.rate_hz()
            out.append(("pose Hz", f"{rate:.1f}" if math.isfinite(rate) else "-"))
            lat = self.pipeline_latency_ms()
            if math.isfinite(lat):
                out.append(("capture->fusion", f"{lat:.1f} ms"))
        if shown_ns is not None:
            if local_now_ns is not None:
                out.append(("display age", f"{(local_now_ns - shown_ns) / 1e6:.1f} ms"))
            if self.frames:
                newest = max(int(f.capture_ns) for f in self.frames.values())
                out.append(("behind camera", f"{max(0, newest - shown_ns) / 1e6:.1f} ms"))
        rec = recording_state(self.stats)
        if rec is not None:
            out.append(("recording", rec))
        return out

    def _sum_keys(self, needle: str) -> int | None:
        """Sum of integer stats whose key contains `needle`, over all processes (None if none)."""
        total, found = 0, False
        for stats in self.stats.values():
            for key, value in flatten_stats(stats).items():
                if needle in key.lower() and isinstance(value, (int, float)) and not isinstance(value, bool):
                    if math.isfinite(value):
                        total += int(value)
                        found = True
        return total if found else None

    def process_lines(self) -> list[str]:
        """'process: key=value ...' for every process that sent stats, sorted by name."""
        return [f"{p}: {summarise_process(self.stats[p])}" for p in sorted(self.stats)]
