"""Hostile messages: every one is rejected with a MessageError before anything is allocated, and a
real subscriber process counts each one and goes on (the long run is `bench/fuzz.py`)."""
from __future__ import annotations

import subprocess
import time
import tracemalloc

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from ratrig.config import Endpoints, load_config
from ratrig.messages import MAX_BUFFER_BYTES, SCHEMA_VERSION, FramePacket, MessageError, decode
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

from tests.helpers import PYTHON, REPO, video_rig_toml
from tests.hostile import MUTATORS, hostile_message, valid_packet

KINDS = ("frame", "pose2d", "pose3d", "event")


@settings(max_examples=600, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(KINDS), category=st.sampled_from(sorted(MUTATORS)))
def test_every_hostile_message_is_rejected_with_a_message_error(seed, kind, category):
    _, frames = hostile_message(np.random.default_rng(seed), kind, category=category)
    with pytest.raises(MessageError):
        decode(frames)


@settings(max_examples=200, deadline=None)
@given(header=st.dictionaries(st.sampled_from(["v", "type", "buffers", "camera", "frame_index", "capture_ns",
                                               "stamps_ns", "keypoint_names", "image", "extra"]),
                              st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8)
                                           | st.binary(max_size=8),
                                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                                           max_leaves=12)),
       topic=st.sampled_from([b"frame/a", b"pose2d/a", b"pose3d", b"event/x"]),
       bufs=st.lists(st.binary(max_size=64), max_size=3))
def test_arbitrary_headers_raise_only_message_error(header, topic, bufs):
    """Any msgpack map at all: a packet comes back or a MessageError, never anything else."""
    try:
        decode([topic, msgpack.packb(header), *bufs])
    except MessageError:
        pass


@pytest.mark.parametrize("shape", [[2**40, 2**40, 3], [2**32, 2**32], [0, 2**62, 2**62], [2**63, 2**63, 2]])
def test_huge_declared_shapes_allocate_nothing(shape):
    """The header declares exabytes; the check happens before numpy is asked for memory."""
    header = {"v": SCHEMA_VERSION, "type": "frame", "camera": "a", "frame_index": 0, "capture_ns": 1,
              "stamps_ns": {}, "buffers": [{"name": "image", "dtype": "|u1", "shape": shape}]}
    for body in (b"", bytes(12)):
        tracemalloc.start()
        try:
            with pytest.raises(MessageError, match="expected sizes|declares"):
                decode([b"frame/a", msgpack.packb(header), body])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1024**2  # declared: terabytes and more


def test_the_declared_size_limit_is_enforced_exactly():
    ok = {"v": SCHEMA_VERSION, "type": "frame", "camera": "a", "frame_index": 0, "capture_ns": 1, "stamps_ns": {},
          "buffers": [{"name": "image", "dtype": "|u1", "shape": [MAX_BUFFER_BYTES // 3 + 1, 1, 3]}]}
    with pytest.raises(MessageError, match="more than the"):
        decode([b"frame/a", msgpack.packb(ok), b""])


def test_valid_packets_still_decode():
    for kind in KINDS:
        p = valid_packet(kind)
        from ratrig.messages import encode
        q = decode([bytes(f) for f in encode(p)])
        assert type(q) is type(p) and q.topic == p.topic


def test_a_real_subscriber_counts_every_hostile_message_and_keeps_working(tmp_path):
    """3,000 hostile messages of every category through a real socket into the probe process: it
    counts exactly that many as malformed, stays up, and still takes the valid frames sent after."""
    rig_path = video_rig_toml(tmp_path, 1)
    eps = Endpoints(load_config(rig_path))
    ctx = zmq.Context()
    pub = make_pub(ctx, eps.bind("camera/cam0"), sndhwm=0)  # unlimited: nothing dropped on our side
    stats_sub = make_sub(ctx, [eps.connect("inference/0")], [b"stats/"])
    proc = subprocess.Popen([PYTHON, "-m", "acquisition.probe", "--config", str(rig_path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counters = ReceiveCounters()
    latest: dict = {}

    def wait_for(cond, timeout_s):
        nonlocal latest
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if stats_sub.poll(100):
                pkt = recv_packet(stats_sub, counters)
                if pkt is not None:
                    latest = dict(pkt.stats)
                    if cond(latest):
                        return True
        return False

    try:
        # until the probe is subscribed, messages are dropped by the PUB socket: sync on one
        assert wait_for(lambda s: True, 30), "the probe published no stats"
        rng = np.random.default_rng(5)
        sync = 0
        while latest.get("malformed", 0) == 0:
            pub.send_multipart([b"frame/cam0", b"\xc1"])
            sync += 1
            wait_for(lambda s: s["malformed"] > 0, 0.3)
        assert wait_for(lambda s: s["malformed"] == sync, 5)
        n = 3000
        categories = sorted(MUTATORS)
        for i in range(n):
            _, frames = hostile_message(rng, "frame", "cam0", categories[i % len(categories)])
            pub.send_multipart(frames)
        for i in range(20):
            send_packet(pub, FramePacket("cam0", i, time.monotonic_ns(), np.zeros((48, 64, 3), np.uint8)))
        assert wait_for(lambda s: s["malformed"] >= sync + n and s["cameras"]["cam0"]["received"] >= 20, 60), latest
        assert proc.poll() is None, "the subscriber died on hostile input"
        assert latest["malformed"] == sync + n
        assert latest["cameras"]["cam0"]["received"] == 20
    finally:
        proc.terminate()
        rc = proc.wait(10)
        pub.close(0)
        stats_sub.close(0)
        ctx.term()
    assert rc == 0
