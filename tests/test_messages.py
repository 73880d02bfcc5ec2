"""Wire messages: round trips, and malformed messages that are counted and dropped, never fatal."""
from __future__ import annotations

import subprocess
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from ratrig.config import Endpoints, load_config
from ratrig.messages import (SCHEMA_VERSION, EventPacket, FramePacket, Keypoints2DPacket, MessageError,
                             Pose3DPacket, StatsPacket, decode, encode, with_stamp)
from ratrig.transport import ReceiveCounters, drain_newest, make_pub, make_sub, recv_packet, send_packet

from tests.helpers import PYTHON, REPO, video_rig_toml


def wire(packet):
    return [bytes(f) for f in encode(packet)]


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), idx=st.integers(0, 2**40), ns=st.integers(0, 2**62),
       name=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
def test_frame_round_trip(h, w, idx, ns, name):
    img = np.random.default_rng(idx % 1000).integers(0, 255, (h, w, 3), dtype=np.uint8)
    p = FramePacket(name, idx, ns, img, {"capture": ns, "publish": ns + 5})
    q = decode(wire(p))
    assert (q.camera, q.frame_index, q.capture_ns, dict(q.stamps_ns)) == (name, idx, ns, {"capture": ns, "publish": ns + 5})
    assert q.image.dtype == np.uint8 and np.array_equal(q.image, img)


def test_pose_packets_round_trip():
    k = np.arange(24, dtype=np.float32).reshape(8, 3)
    p2 = Keypoints2DPacket("c", 3, 99, tuple("abcdefgh"), k, {"inferred": 120}, skipped_frames=2)
    q2 = decode(wire(p2))
    assert q2.keypoint_names == tuple("abcdefgh") and np.array_equal(q2.keypoints, k) and q2.skipped_frames == 2
    raw = np.random.default_rng(0).normal(size=(8, 3))
    raw[2] = np.nan
    p3 = Pose3DPacket(7, 100, tuple("abcdefgh"), ("c1", "c2"), raw, raw * 2, np.ones(8), np.full(8, 2, np.int8),
                      np.full(8, 0.9), {"fused": 5}, 12.5, {"c1": 4})
    q3 = decode(wire(p3))
    assert np.array_equal(q3.raw_mm, raw, equal_nan=True) and q3.n_cameras.dtype == np.int8
    assert q3.cameras == ("c1", "c2") and q3.predicted_ahead_ms == 12.5 and q3.frame_indices == {"c1": 4}
    e = EventPacket("touchdown", "hind_left_paw", 7, 100, 130, (1.0, 2.0, 0.5), extra={"onset_ns": 90})
    assert decode(wire(e)) == e
    s = StatsPacket("camera/a", 5, {"captured": 3, "nested": {"x": [1, 2]}})
    assert decode(wire(s)).stats == {"captured": 3, "nested": {"x": [1, 2]}}
    assert with_stamp(e, "sent", 140).stamps_ns == {"sent": 140}


def _header(**over):
    h = {"v": SCHEMA_VERSION, "type": "frame", "camera": "a", "frame_index": 0, "capture_ns": 1, "stamps_ns": {},
         "buffers": [{"name": "image", "dtype": "|u1", "shape": [2, 2, 3]}]}
    h.update(over)
    return msgpack.packb(h)


@pytest.mark.parametrize(
    "frames, expected",
    [
        ([b"frame/a"], "expected [topic, header, buffers...], got 1 frame(s)"),
        ([b"frame/a", b"\xc1\xc1", bytes(12)], "header is not valid msgpack"),
        ([b"frame/a", _header(v=99), bytes(12)], "schema version 99, expected 1"),
        ([b"frame/a", _header(type="video"), bytes(12)], "unknown message type 'video'"),
        ([b"frame/a", _header(), bytes(11)], "frame.image: buffer has 11 bytes"),
        ([b"frame/a", _header(), bytes(12), bytes(3)], "header describes 1 buffers, got 2"),
        ([b"frame/b", _header(), bytes(12)], "does not match frame message topic"),
        ([b"frame/a", msgpack.packb([1, 2]), bytes(12)], "header is a list, expected a map"),
        ([b"frame/a", _header(buffers=[{"name": "image", "dtype": "|O", "shape": [1]}]), bytes(8)],
         "object dtype not allowed"),
    ],
)
def test_malformed_messages_raise_message_error(frames, expected):
    with pytest.raises(MessageError, match=None) as e:
        decode(frames)
    assert expected in str(e.value)


def test_drain_newest_keeps_newest_per_topic():
    ctx = zmq.Context()
    pub = make_pub(ctx, "inproc://t")
    sub = make_sub(ctx, ["inproc://t"])
    time.sleep(0.05)
    for i in range(5):
        for cam in ("a", "b"):
            send_packet(pub, FramePacket(cam, i, i, np.zeros((2, 2, 3), np.uint8)))
    pub.send_multipart([b"frame/a", b"junk"])
    time.sleep(0.1)
    counters = ReceiveCounters()
    newest = drain_newest(sub, counters)
    assert {t: p.frame_index for t, p in newest.items()} == {b"frame/a": 4, b"frame/b": 4}
    assert counters.skipped == 8 and counters.malformed == 1 and counters.received == 10
    pub.close()
    sub.close()
    ctx.term()


def test_a_receiving_process_counts_malformed_messages_and_goes_on(tmp_path):
    """Garbage on a camera topic reaches a real consumer process: counted, logged, not fatal."""
    rig_path = video_rig_toml(tmp_path, 1)
    rig = load_config(rig_path)
    eps = Endpoints(rig)
    ctx = zmq.Context()
    pub = make_pub(ctx, eps.bind("camera/cam0"))
    stats_sub = make_sub(ctx, [eps.connect("inference/0")], [b"stats/"])
    proc = subprocess.Popen([PYTHON, "-m", "acquisition.probe", "--config", str(rig_path)], cwd=REPO)
    try:
        counters = ReceiveCounters()
        deadline = time.monotonic() + 30
        latest = {}
        sent_good = 0
        while time.monotonic() < deadline:
            pub.send_multipart([b"frame/cam0", b"\x00garbage"])
            pub.send_multipart([b"frame/cam0", _header(v=2), bytes(12)])
            send_packet(pub, FramePacket("cam0", sent_good, time.monotonic_ns(), np.zeros((48, 64, 3), np.uint8)))
            sent_good += 1
            if stats_sub.poll(50):
                latest = recv_packet(stats_sub, counters).stats
                if latest["malformed"] >= 20 and latest["cameras"]["cam0"]["received"] >= 10:
                    break
        assert proc.poll() is None, "the consumer died on malformed input"
        assert latest["malformed"] >= 20
        assert latest["cameras"]["cam0"]["received"] >= 10
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        pub.close()
        stats_sub.close()
        ctx.term()
