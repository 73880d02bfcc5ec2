"""Typed wire messages, one class per topic, and their ZeroMQ multipart form.

Wire form: ``[topic, msgpack header, raw buffer...]``. The header carries the schema version, the
message type, the message's scalar fields, per-stage monotonic timestamps in ns (``stamps_ns``) and,
for each raw buffer, its dtype and shape. Arrays travel as raw bytes (zero-copy on send and receive),
never pickled.

Topics (prefix matching is how subscribers filter):
    ``frame/<camera>``   FramePacket        acquisition -> inference, recorder, viewer
    ``pose2d/<camera>``  Keypoints2DPacket  inference   -> fusion, recorder, viewer
    ``pose3d``           Pose3DPacket       fusion      -> events, recorder, viewer
    ``event/<name>``     EventPacket        events      -> outputs, recorder, viewer
    ``stats/<process>``  StatsPacket        every stage -> supervisor, viewer
    ``behaviour/<name>`` BehaviourPacket    behaviour   -> recorder, viewer, lab scripts
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import msgpack
import numpy as np

SCHEMA_VERSION = 1


class MessageError(ValueError):
    """A message that cannot be decoded: wrong framing, version, type or buffer."""


def _stamps(stamps: Mapping[str, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in stamps.items()}


@dataclass(frozen=True, slots=True)
class FramePacket:
    """One camera image. `image` is (H, W, 3) uint8 BGR or (H, W) uint8 mono."""

    TYPE: ClassVar[str] = "frame"
    camera: str
    frame_index: int
    capture_ns: int
    image: np.ndarray
    stamps_ns: Mapping[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> bytes:
        return b"frame/" + self.camera.encode()

    def fields(self) -> dict[str, Any]:
        return {"camera": self.camera, "frame_index": int(self.frame_index), "capture_ns": int(self.capture_ns)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"image": self.image}


@dataclass(frozen=True, slots=True)
class Keypoints2DPacket:
    """2D keypoints of one camera frame. `keypoints` is (K, 3) float32: x px, y px, likelihood.

    x and y are in full-frame pixels of the camera image (NaN where the model returned nothing).
    """

    TYPE: ClassVar[str] = "pose2d"
    camera: str
    frame_index: int
    capture_ns: int
    keypoint_names: tuple[str, ...]
    keypoints: np.ndarray
    stamps_ns: Mapping[str, int] = field(default_factory=dict)
    skipped_frames: int = 0

    @property
    def topic(self) -> bytes:
        return b"pose2d/" + self.camera.encode()

    def fields(self) -> dict[str, Any]:
        return {
            "camera": self.camera,
            "frame_index": int(self.frame_index),
            "capture_ns": int(self.capture_ns),
            "keypoint_names": list(self.keypoint_names),
            "skipped_frames": int(self.skipped_frames),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"keypoints": self.keypoints}


@dataclass(frozen=True, slots=True)
class Pose3DPacket:
    """The fused 3D pose of one frame set (one moment seen by several cameras).

    Arrays, K keypoints: `raw_mm` and `filtered_mm` (K, 3) float64 world mm (NaN = not
    triangulated / filter gave up), `reprojection_error_px` (K,) float64, `n_cameras` (K,) int8,
    `score` (K,) float64 (smallest likelihood of the views used, as Anipose). `filtered_mm` is
    predicted `predicted_ahead_ms` beyond `capture_ns` when that is > 0. Optional `floor_mm` (K, 3):
    for keypoints seen by one camera only, where that camera's ray meets the floor at a planted
    paw's height (`fusion.floor`; NaN elsewhere; None when fusion computes none).
    """

    TYPE: ClassVar[str] = "pose3d"
    frame_set_index: int
    capture_ns: int
    keypoint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    raw_mm: np.ndarray
    filtered_mm: np.ndarray
    reprojection_error_px: np.ndarray
    n_cameras: np.ndarray
    score: np.ndarray
    stamps_ns: Mapping[str, int] = field(default_factory=dict)
    predicted_ahead_ms: float = 0.0
    frame_indices: Mapping[str, int] = field(default_factory=dict)
    floor_mm: np.ndarray | None = None

    @property
    def topic(self) -> bytes:
        return b"pose3d"

    def fields(self) -> dict[str, Any]:
        return {
            "frame_set_index": int(self.frame_set_index),
            "capture_ns": int(self.capture_ns),
            "keypoint_names": list(self.keypoint_names),
            "cameras": list(self.cameras),
            "predicted_ahead_ms": float(self.predicted_ahead_ms),
            "frame_indices": {str(k): int(v) for k, v in self.frame_indices.items()},
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "raw_mm": self.raw_mm,
            "filtered_mm": self.filtered_mm,
            "reprojection_error_px": self.reprojection_error_px,
            "n_cameras": self.n_cameras,
            "score": self.score,
        } | ({} if self.floor_mm is None else {"floor_mm": self.floor_mm})


@dataclass(frozen=True, slots=True)
class EventPacket:
    """A behavioural event, e.g. a paw touchdown. `position_mm` is (3,) world mm.

    `name` is the kind of event ("touchdown", "liftoff" or a rule's name); `subject` is what it
    happened to (a paw or keypoint name). `capture_ns` is the capture time of the frame set that
    decided it; `emitted_ns` when the detector emitted it.
    """

    TYPE: ClassVar[str] = "event"
    name: str
    subject: str
    frame_set_index: int
    capture_ns: int
    emitted_ns: int
    position_mm: tuple[float, float, float]
    stamps_ns: Mapping[str, int] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> bytes:
        return b"event/" + self.name.encode()

    def fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.subject,
            "frame_set_index": int(self.frame_set_index),
            "capture_ns": int(self.capture_ns),
            "emitted_ns": int(self.emitted_ns),
            "position_mm": [float(v) for v in self.position_mm],
            "extra": dict(self.extra),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


@dataclass(frozen=True, slots=True)
class StatsPacket:
    """Periodic counters of one process (msgpack-able dict), for the supervisor and the viewer."""

    TYPE: ClassVar[str] = "stats"
    process: str
    sent_ns: int
    stats: Mapping[str, Any]
    stamps_ns: Mapping[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> bytes:
        return b"stats/" + self.process.encode()

    def fields(self) -> dict[str, Any]:
        return {"process": self.process, "sent_ns": int(self.sent_ns), "stats": dict(self.stats)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


@dataclass(frozen=True, slots=True)
class BehaviourPacket:
    """Behaviour features and segmentation of one frame set (`analysis.behaviour`).

    `features` (F,) float64 are window features ending at this frame set, named by `feature_names`
    (NaN = not computable, e.g. a keypoint unseen); `state` is the segmentation state (-1 before the
    segmenter has a model) and `state_probs` (S,) float64 its filtered (causal) posterior, empty
    without a model. `emitted_ns` is when the stage published it: `emitted_ns - capture_ns` is the
    capture -> behaviour latency.
    """

    TYPE: ClassVar[str] = "behaviour"
    name: str
    frame_set_index: int
    capture_ns: int
    emitted_ns: int
    state: int
    feature_names: tuple[str, ...]
    features: np.ndarray
    state_probs: np.ndarray
    stamps_ns: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(str(n) for n in self.feature_names))

    @property
    def topic(self) -> bytes:
        return b"behaviour/" + self.name.encode()

    def fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "frame_set_index": int(self.frame_set_index),
            "capture_ns": int(self.capture_ns),
            "emitted_ns": int(self.emitted_ns),
            "state": int(self.state),
            "feature_names": list(self.feature_names),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "state_probs": self.state_probs}


Packet = Union[FramePacket, Keypoints2DPacket, Pose3DPacket, EventPacket, StatsPacket, BehaviourPacket]
PACKET_TYPES: Mapping[str, type] = {
    cls.TYPE: cls for cls in (FramePacket, Keypoints2DPacket, Pose3DPacket, EventPacket, StatsPacket, BehaviourPacket)
}
_TUPLE_FIELDS = {"keypoint_names", "cameras"}


def with_stamp(packet: Packet, stage: str, ns: int) -> Packet:
    """A copy of `packet` with one more per-stage timestamp."""
    stamps = dict(packet.stamps_ns)
    stamps[stage] = int(ns)
    return dataclasses.replace(packet, stamps_ns=stamps)


def to_header(packet: Packet) -> dict[str, Any]:
    arrays = packet.arrays()
    header = {"v": SCHEMA_VERSION, "type": packet.TYPE, "stamps_ns": _stamps(packet.stamps_ns)}
    header.update(packet.fields())
    header["buffers"] = [
        {"name": name, "dtype": np.asarray(a).dtype.str, "shape": list(np.shape(a))} for name, a in arrays.items()
    ]
    return header


def encode(packet: Packet) -> list[Any]:
    """Packet -> multipart frames [topic, header, buffers...]. Arrays are sent without copying.

    The caller must not modify the arrays until the send completed (see dependency facts: reusing a
    buffer after a copy=False send corrupts frames); stages build a fresh array per message.
    """
    header = msgpack.packb(to_header(packet), use_bin_type=True)
    bufs = [np.ascontiguousarray(a) for a in packet.arrays().values()]
    return [packet.topic, header, *[memoryview(b).cast("B") if b.size else b"" for b in bufs]]


def from_header(header: Mapping[str, Any], buffers: Sequence[Any]) -> Packet:
    """Header dict + raw buffers -> packet. Raises MessageError on anything unexpected."""
    if not isinstance(header, Mapping):
        raise MessageError(f"header is a {type(header).__name__}, expected a map")
    version = header.get("v")
    if version != SCHEMA_VERSION:
        raise MessageError(f"schema version {version!r}, expected {SCHEMA_VERSION}")
    kind = header.get("type")
    cls = PACKET_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}, expected one of {sorted(PACKET_TYPES)}")
    specs = header.get("buffers", [])
    if not isinstance(specs, list) or len(specs) != len(buffers):
        raise MessageError(f"{kind}: header describes {len(specs) if isinstance(specs, list) else '?'} buffers, got {len(buffers)}")
    kwargs: dict[str, Any] = {}
    for spec, buf in zip(specs, buffers):
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(s) for s in spec["shape"])
            name = str(spec["name"])
        except (KeyError, TypeError, ValueError) as e:
            raise MessageError(f"{kind}: bad buffer description {spec!r}: {e}") from None
        if dtype.hasobject:
            raise MessageError(f"{kind}: object dtype not allowed on the wire")
        raw = memoryview(buf)
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if raw.nbytes != expected:
            raise MessageError(f"{kind}.{name}: buffer has {raw.nbytes} bytes, dtype {dtype} shape {shape} needs {expected}")
        kwargs[name] = np.frombuffer(raw, dtype=dtype).reshape(shape) if expected else np.zeros(shape, dtype)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in header.items():
        if key in ("v", "type", "buffers"):
            continue
        if key not in names:
            continue  # newer minor fields from a newer sender are ignored
        kwargs[key] = tuple(value) if key in _TUPLE_FIELDS else value
    if "position_mm" in kwargs:
        kwargs["position_mm"] = tuple(float(v) for v in kwargs["position_mm"])
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise MessageError(f"{kind}: {e}") from None


def decode(frames: Sequence[Any]) -> Packet:
    """Multipart frames (bytes or zmq.Frame) -> packet. Raises MessageError."""
    if len(frames) < 2:
        raise MessageError(f"expected [topic, header, buffers...], got {len(frames)} frame(s)")
    parts = [f.buffer if hasattr(f, "buffer") else f for f in frames]
    try:
        header = msgpack.unpackb(parts[1], raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types
        raise MessageError(f"header is not valid msgpack: {e}") from None
    packet = from_header(header, parts[2:])
    topic = bytes(parts[0])
    if topic != packet.topic:
        raise MessageError(f"topic {topic!r} does not match {packet.TYPE} message topic {packet.topic!r}")
    return packet
