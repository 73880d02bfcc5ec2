"""Typed wire messages, one class per topic, and their ZeroMQ multipart form.

Wire form: ``[topic, msgpack header, raw buffer...]``. The header carries the schema version, the
message type, the message's scalar fields, per-stage monotonic timestamps in ns (``stamps_ns``) and,
for each raw buffer, its dtype and shape. Arrays travel as raw bytes (zero-copy on send and receive),
never pickled.

Topics (prefix matching is how subscribers filter):
    ``frame/<camera>``   FramePacket        acquisition -> inference, recorder, viewer
    ``frameref/<camera>`` FrameRefPacket    acquisition -> inference on the same host (shared-memory ring)
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
class FrameRefPacket:
    """Where a camera frame lies in its shared-memory ring (`ratrig.shmring`); no pixels travel.

    `ring` is the block's name, `slot` and `sequence` (the ring writer's frame number) locate the
    frame and let the reader tell whether it was overwritten; `height`, `width`, `channels` let it
    check it attached the right ring. Only for stages on the camera's host.
    """

    TYPE: ClassVar[str] = "frameref"
    camera: str
    frame_index: int
    capture_ns: int
    ring: str
    slot: int
    sequence: int
    height: int
    width: int
    channels: int
    stamps_ns: Mapping[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> bytes:
        return b"frameref/" + self.camera.encode()

    def fields(self) -> dict[str, Any]:
        return {"camera": self.camera, "frame_index": int(self.frame_index), "capture_ns": int(self.capture_ns),
                "ring": self.ring, "slot": int(self.slot), "sequence": int(self.sequence),
                "height": int(self.height), "width": int(self.width), "channels": int(self.channels)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


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


Packet = Union[FramePacket, FrameRefPacket, Keypoints2DPacket, Pose3DPacket, EventPacket, StatsPacket, BehaviourPacket]
PACKET_TYPES: Mapping[str, type] = {
    cls.TYPE: cls for cls in (FramePacket, FrameRefPacket, Keypoints2DPacket, Pose3DPacket, EventPacket, StatsPacket,
                              BehaviourPacket)
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


#: Largest array one message may declare (a 4K colour frame is 25 MB). Checked before anything is
#: allocated; libzmq's own limit on a received message is set by `ratrig.transport.make_sub`.
MAX_BUFFER_BYTES = 256 * 1024**2
MAX_BUFFER_DIMS = 4
MAX_BUFFERS = 16

#: Per message type and array: (allowed dtype kinds, allowed itemsizes or None, allowed ndims,
#: shape rule). Shape rules: "image" (H, W) or (H, W, 1..4); "K3" (K, 3) and "K" (K,) with K the
#: number of keypoint names. Types and arrays not listed get the generic checks only. (An image
#: with an odd channel count is well-formed on the wire; the model stage reports what it cannot take.)
_ARRAY_RULES: Mapping[str, Mapping[str, tuple[str, tuple[int, ...] | None, tuple[int, ...], str]]] = {
    "frame": {"image": ("u", (1,), (2, 3), "image")},
    "pose2d": {"keypoints": ("f", None, (2,), "K3")},
    "pose3d": {"raw_mm": ("f", None, (2,), "K3"), "filtered_mm": ("f", None, (2,), "K3"),
               "floor_mm": ("f", None, (2,), "K3"), "reprojection_error_px": ("f", None, (1,), "K"),
               "score": ("f", None, (1,), "K"), "n_cameras": ("iu", None, (1,), "K")},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: What a header value must be, by the field's annotation (annotations are strings here). A field
#: whose annotation is not listed is passed through unchecked.
_FIELD_CHECKS: Mapping[str, tuple[str, Any]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", _is_int),
    "float": ("a number", _is_number),
    "tuple[str, ...]": ("a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)),
    "tuple[float, float, float]": ("a list of 3 numbers",
                                   lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) for x in v)),
    "Mapping[str, int]": ("a map of string to integer",
                          lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and _is_int(x) for k, x in v.items())),
    "Mapping[str, Any]": ("a map with string keys", lambda v: isinstance(v, Mapping) and all(isinstance(k, str) for k in v)),
}
_ARRAY_ANNOTATIONS = ("np.ndarray", "np.ndarray | None")


def _buffer_spec(kind: str, spec: Any, array_fields: set[str]) -> tuple[str, np.dtype, tuple[int, ...], int]:
    """One header buffer description -> (name, dtype, shape, bytes); MessageError before any allocation."""
    if not isinstance(spec, Mapping):
        raise MessageError(f"{kind}: bad buffer description {spec!r}: expected a map")
    name, dtype_str, shape_raw = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or name not in array_fields:
        raise MessageError(f"{kind}: buffer name {name!r}, expected one of {sorted(array_fields)}")
    if not isinstance(dtype_str, str) or len(dtype_str) > 8:
        raise MessageError(f"{kind}.{name}: dtype {dtype_str!r}, expected a numpy dtype string such as '<f4'")
    try:
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError, SyntaxError) as e:
        raise MessageError(f"{kind}.{name}: dtype {dtype_str!r}: {e}") from None
    if dtype.hasobject:
        raise MessageError(f"{kind}.{name}: object dtype not allowed on the wire")
    if dtype.kind not in "biuf" or not dtype.isnative or dtype.itemsize == 0:
        raise MessageError(f"{kind}.{name}: dtype {dtype_str!r} not allowed on the wire "
                           f"(expected a native bool, integer or float dtype)")
    if not isinstance(shape_raw, (list, tuple)) or len(shape_raw) > MAX_BUFFER_DIMS:
        raise MessageError(f"{kind}.{name}: shape {shape_raw!r}, expected a list of at most {MAX_BUFFER_DIMS} sizes")
    if not all(_is_int(d) and 0 <= d <= MAX_BUFFER_BYTES for d in shape_raw):
        raise MessageError(f"{kind}.{name}: shape {shape_raw!r}, expected sizes in 0..{MAX_BUFFER_BYTES}")
    shape = tuple(shape_raw)
    nbytes = dtype.itemsize
    for d in shape:  # Python ints: no overflow, unlike np.prod
        nbytes *= d
    if nbytes > MAX_BUFFER_BYTES:
        raise MessageError(f"{kind}.{name}: dtype {dtype} shape {shape} declares {nbytes} bytes, "
                           f"more than the {MAX_BUFFER_BYTES} allowed")
    rule = _ARRAY_RULES.get(kind, {}).get(name)
    if rule is not None:
        kinds, sizes, ndims, _ = rule
        if dtype.kind not in kinds or (sizes is not None and dtype.itemsize not in sizes) or len(shape) not in ndims:
            raise MessageError(f"{kind}.{name}: dtype {dtype} with {len(shape)} dimension(s) does not fit this "
                               f"array (expected kind {kinds!r}, {' or '.join(map(str, ndims))} dimension(s))")
    return name, dtype, shape, nbytes


def _check_shapes(kind: str, shapes: Mapping[str, tuple[int, ...]], n_keypoints: int | None) -> None:
    """Shape rules between arrays and the keypoint names, per `_ARRAY_RULES`."""
    for name, shape in shapes.items():
        rule = _ARRAY_RULES.get(kind, {}).get(name)
        if rule is None:
            continue
        form = rule[3]
        if form == "image" and len(shape) == 3 and not 1 <= shape[2] <= 4:
            raise MessageError(f"{kind}.{name}: shape {shape}, expected (H, W) or (H, W, C) with 1 to 4 channels")
        if form in ("K3", "K") and n_keypoints is not None:
            want = (n_keypoints, 3) if form == "K3" else (n_keypoints,)
            if shape != want:
                raise MessageError(f"{kind}.{name}: shape {shape}, expected {want} for {n_keypoints} keypoint names")


def from_header(header: Mapping[str, Any], buffers: Sequence[Any]) -> Packet:
    """Header dict + raw buffers -> packet. Raises MessageError on anything unexpected.

    Everything the header declares (buffer count, names, dtypes, shapes, sizes, field types) is
    checked before any array is made, so a hostile header cannot make the receiver allocate: arrays
    are views of the received buffers.
    """
    if not isinstance(header, Mapping):
        raise MessageError(f"header is a {type(header).__name__}, expected a map")
    version = header.get("v")
    if version != SCHEMA_VERSION or not _is_int(version):
        raise MessageError(f"schema version {version!r}, expected {SCHEMA_VERSION}")
    kind = header.get("type")
    cls = PACKET_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {kind!r}, expected one of {sorted(PACKET_TYPES)}")
    specs = header.get("buffers", [])
    if not isinstance(specs, list) or len(specs) != len(buffers) or len(specs) > MAX_BUFFERS:
        raise MessageError(f"{kind}: header describes {len(specs) if isinstance(specs, list) else '?'} buffers, got {len(buffers)}")
    annotations = {f.name: f.type for f in dataclasses.fields(cls)}
    array_fields = {n for n, a in annotations.items() if a in _ARRAY_ANNOTATIONS}
    kwargs: dict[str, Any] = {}
    for key, value in header.items():
        if key in ("v", "type", "buffers"):
            continue
        if key not in annotations:
            continue  # newer minor fields from a newer sender are ignored
        if key in array_fields:
            raise MessageError(f"{kind}.{key}: an array field sent in the header, expected a buffer")
        check = _FIELD_CHECKS.get(str(annotations[key]))
        if check is not None and not check[1](value):
            raise MessageError(f"{kind}.{key}: expected {check[0]}, got {type(value).__name__} {str(value)[:40]!r}")
        kwargs[key] = tuple(value) if key in _TUPLE_FIELDS else value
    described = [_buffer_spec(str(kind), spec, array_fields) for spec in specs]
    if len({d[0] for d in described}) != len(described):
        raise MessageError(f"{kind}: buffer names {[d[0] for d in described]} repeat")
    names = kwargs.get("keypoint_names")
    _check_shapes(str(kind), {d[0]: d[2] for d in described}, None if names is None else len(names))
    for (name, dtype, shape, expected), buf in zip(described, buffers):
        try:
            raw = memoryview(buf)
        except TypeError:
            raise MessageError(f"{kind}.{name}: buffer is a {type(buf).__name__}, expected bytes") from None
        if raw.nbytes != expected:
            raise MessageError(f"{kind}.{name}: buffer has {raw.nbytes} bytes, dtype {dtype} shape {shape} needs {expected}")
        kwargs[name] = np.frombuffer(raw, dtype=dtype).reshape(shape) if expected else np.zeros(shape, dtype)
    if "position_mm" in kwargs:
        kwargs["position_mm"] = tuple(float(v) for v in kwargs["position_mm"])
    try:
        packet = cls(**kwargs)
    except TypeError as e:
        raise MessageError(f"{kind}: {e}") from None
    return packet


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
