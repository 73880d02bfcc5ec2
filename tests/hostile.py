"""Hostile wire messages for fuzzing the subscriber stages (tests and `bench/fuzz.py`).

Every message made here is malformed by construction: `ratrig.messages.decode` must reject it with
a MessageError, and a stage must count it and go on. Each starts from a valid message of the kind a
stage subscribes to and breaks one thing (a category below), so it still passes the stage's topic
filter and reaches the decoder.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket, encode

KEYPOINTS = ("nose", "left_ear", "right_ear", "tail_base", "front_left_paw", "front_right_paw",
             "hind_left_paw", "hind_right_paw")


def valid_packet(kind: str, camera: str = "cam0", rng: np.random.Generator | None = None) -> Any:
    """A small valid packet of `kind` ("frame", "pose2d", "pose3d", "event")."""
    rng = rng or np.random.default_rng(0)
    k = len(KEYPOINTS)
    if kind == "frame":
        return FramePacket(camera, 1, 1_000, rng.integers(0, 255, (4, 6, 3), dtype=np.uint8), {"capture": 1_000})
    if kind == "pose2d":
        return Keypoints2DPacket(camera, 1, 1_000, KEYPOINTS, rng.random((k, 3)).astype(np.float32), {"inferred": 2})
    if kind == "pose3d":
        p = rng.normal(size=(k, 3))
        return Pose3DPacket(1, 1_000, KEYPOINTS, (camera,), p, p.copy(), np.zeros(k), np.full(k, 2, np.int8),
                            np.ones(k), {"fused": 3})
    if kind == "event":
        return EventPacket("touchdown", "hind_left_paw", 1, 1_000, 2_000, (1.0, 2.0, 3.0))
    raise ValueError(f"kind {kind!r}: expected frame, pose2d, pose3d or event")


def _parts(packet: Any) -> tuple[bytes, dict[str, Any], list[bytes]]:
    frames = encode(packet)
    return bytes(frames[0]), msgpack.unpackb(frames[1], raw=False), [bytes(b) for b in frames[2:]]


def _pack(topic: bytes, header: Any, bufs: list[bytes]) -> list[bytes]:
    return [topic, msgpack.packb(header, use_bin_type=True), *bufs]


def _first_buffer(header: dict[str, Any]) -> dict[str, Any] | None:
    return header["buffers"][0] if header.get("buffers") else None


# Each mutator: (rng, topic, header, buffers) -> multipart frames. The header is a fresh copy.
def _part_count(rng, topic, header, bufs):
    choice = rng.integers(4)
    if choice == 0:
        return [topic]
    if choice == 1:
        return [topic, msgpack.packb(header)] if bufs else [topic, msgpack.packb(header), b"extra"]
    if choice == 2:
        return _pack(topic, header, bufs + [b"x" * int(rng.integers(0, 64))])
    return _pack(topic, header, bufs + [b""] * int(rng.integers(17, 40)))


def _truncated_msgpack(rng, topic, header, bufs):
    raw = msgpack.packb(header, use_bin_type=True)
    return [topic, raw[: int(rng.integers(0, len(raw)))], *bufs]


def _garbage_header(rng, topic, header, bufs):
    raw = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    # 0xc1 is never valid msgpack; a leading fixarray/int keeps a few of them parseable but not a map
    return [topic, (b"\xc1" if rng.random() < 0.5 else b"\x93\x01\x02\x03") + raw, *bufs]


def _not_a_map(rng, topic, header, bufs):
    other = [[1, 2, 3], 7, "frame", None, 1.5, b"bytes", True][int(rng.integers(7))]
    return _pack(topic, other, bufs)


def _schema_version(rng, topic, header, bufs):
    header["v"] = [0, 2, 99, -1, "1", None, 1.0, True, [1], 2**64 - 1][int(rng.integers(10))]
    return _pack(topic, header, bufs)


def _unknown_type(rng, topic, header, bufs):
    header["type"] = ["video", "", None, 3, ["frame"], "FRAME", "stats2"][int(rng.integers(7))]
    return _pack(topic, header, bufs)


_HUGE_SHAPES = [[2**40, 2**40, 3], [10**9, 10**9], [2**32, 2**32], [2**63, 2**63, 2], [2**64 - 1],
                [-1, -1], [-5, 3], [0, 2**62, 2**62], [1, 1, 1, 1, 1, 1, 1, 1], [3.5, 2], ["10", "10"],
                [None], "12", 12, [[4], [6]], [2**31, 2**31, 3]]


def _huge_shape(rng, topic, header, bufs):
    spec = _first_buffer(header)
    if spec is None:  # events carry no buffer: declare one
        header["buffers"] = [{"name": "position_mm", "dtype": "<f8", "shape": [2**40, 2**40]}]
        return _pack(topic, header, [b""])
    spec["shape"] = _HUGE_SHAPES[int(rng.integers(len(_HUGE_SHAPES)))]
    return _pack(topic, header, bufs)


_BAD_DTYPES = ["|O", "O", "<U8", "|S3", "|V8", "<M8[ns]", "<m8", "<c16", "zz", "", "f" * 100, "(2,)i4",
               "[('a', '<i4')]", 5, None, [1], ">f8", ">u2", "<f2x"]


def _wrong_dtype(rng, topic, header, bufs):
    spec = _first_buffer(header)
    if spec is None:
        header["buffers"] = [{"name": "position_mm", "dtype": "<f8", "shape": [3]}]
        return _pack(topic, header, [bytes(24)])
    dtypes = list(_BAD_DTYPES)
    # right size, wrong kind for this array: a float image, integer keypoints
    dtypes += {"image": ["<f8", "<i1", "|b1"], "keypoints": ["<i4", "|u1"], "raw_mm": ["<i8"],
               "n_cameras": ["<f4"]}.get(spec["name"], [])
    spec["dtype"] = dtypes[int(rng.integers(len(dtypes)))]
    return _pack(topic, header, bufs)


def _size_mismatch(rng, topic, header, bufs):
    if not bufs:
        return _pack(topic, header, [b"\x00" * 8])
    i = int(rng.integers(len(bufs)))
    n = len(bufs[i])
    new = n + int(rng.choice([-1, 1, -n, 7, 1024])) if n else 1
    bufs = list(bufs)
    bufs[i] = bytes(max(new, 0)) if max(new, 0) != n else bytes(n + 1)
    return _pack(topic, header, bufs)


def _wrong_field_type(rng, topic, header, bufs):
    fields = [k for k in header if k not in ("v", "type", "buffers")]
    key = fields[int(rng.integers(len(fields)))]
    current = header[key]
    if isinstance(current, str):
        bad = [7, None, ["a"], {"x": 1}, b"bytes", 1.5]
    elif isinstance(current, bool):
        bad = ["yes", [1]]
    elif isinstance(current, int):
        bad = ["12", None, 1.5, [1], {"a": 1}, True]
    elif isinstance(current, float):
        bad = ["fast", None, [1.0], True]
    elif isinstance(current, dict):
        bad = [[1, 2], "map", 5, {"k": "not an int"} if key in ("stamps_ns", "frame_indices") else {3: [1]}]
    elif isinstance(current, list):
        bad = [5, "abc", [1, 2, 3], None] if key != "position_mm" else [[1.0, 2.0], ["a", "b", "c"], 5]
    else:
        bad = [object.__name__]
    header[key] = bad[int(rng.integers(len(bad)))]
    return _pack(topic, header, bufs)


def _missing_field(rng, topic, header, bufs):
    required = [k for k in ("camera", "frame_index", "capture_ns", "keypoint_names", "frame_set_index", "name",
                            "subject", "emitted_ns", "cameras") if k in header]
    del header[required[int(rng.integers(len(required)))]]
    return _pack(topic, header, bufs)


def _buffer_names(rng, topic, header, bufs):
    spec = _first_buffer(header)
    if spec is None:
        header["buffers"] = [{"name": "camera", "dtype": "<f8", "shape": [1]}]
        return _pack(topic, header, [bytes(8)])
    choice = rng.integers(4)
    if choice == 0:
        spec["name"] = ["camera", "stamps_ns", "nope", "", None, 3, "__class__"][int(rng.integers(7))]
    elif choice == 1:  # the same array twice
        header["buffers"] = [dict(spec), dict(spec)]
        bufs = [bufs[0], bufs[0]]
    elif choice == 2:  # a required array missing
        header["buffers"] = header["buffers"][1:]
        bufs = bufs[1:]
    else:  # the array's data put in the header instead
        header[spec["name"]] = [1, 2, 3]
    return _pack(topic, header, bufs)


def _keypoint_count(rng, topic, header, bufs):
    if "keypoint_names" not in header:
        return _size_mismatch(rng, topic, header, bufs)
    names = header["keypoint_names"]
    header["keypoint_names"] = names[:-1] if rng.random() < 0.5 else names + ["extra"]
    return _pack(topic, header, bufs)


def _topic_mismatch(rng, topic, header, bufs):
    # keeps the subscribed prefix, so the stage's SUB filter still lets it through
    return _pack(topic + [b"_other", b"x", b"\xff"][int(rng.integers(3))], header, bufs)


MUTATORS: dict[str, Callable[..., list[bytes]]] = {
    "part_count": _part_count, "truncated_msgpack": _truncated_msgpack, "garbage_header": _garbage_header,
    "not_a_map": _not_a_map, "schema_version": _schema_version, "unknown_type": _unknown_type,
    "huge_shape": _huge_shape, "wrong_dtype": _wrong_dtype, "size_mismatch": _size_mismatch,
    "wrong_field_type": _wrong_field_type, "missing_field": _missing_field, "buffer_names": _buffer_names,
    "keypoint_count": _keypoint_count, "topic_mismatch": _topic_mismatch,
}


def hostile_message(rng: np.random.Generator, kind: str, camera: str = "cam0",
                    category: str | None = None) -> tuple[str, list[bytes]]:
    """(category, multipart frames) of one malformed message based on a valid `kind` packet.

    `category` picks a mutator from MUTATORS (default: one at random).
    """
    if category is None:
        category = list(MUTATORS)[int(rng.integers(len(MUTATORS)))]
    topic, header, bufs = _parts(valid_packet(kind, camera, rng))
    if category == "topic_mismatch" and kind == "pose3d":
        return category, _pack(b"pose3d_", header, bufs)  # pose3d's topic has no camera part
    return category, MUTATORS[category](rng, topic, header, bufs)
