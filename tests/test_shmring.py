"""Shared-memory frame rings: ownership, lapping, and no torn frame across real processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from ratrig.messages import FrameRefPacket, decode, encode
from ratrig.shmring import FrameRingReader, FrameRingWriter, Lapped, RingError

SHAPE = (48, 64, 3)


def unique(tag: str) -> str:
    return f"rrtest{os.getpid()}_{tag}_{time.monotonic_ns() % 10**9}"


def frame_of(sequence: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A frame whose every byte tells which frame it is (a torn frame mixes two values)."""
    return np.full(shape, sequence % 251, np.uint8)


@settings(max_examples=60, deadline=None)
@given(slots=st.integers(2, 6), ops=st.lists(st.tuples(st.booleans(), st.integers(0, 40)), min_size=1, max_size=60))
def test_reads_match_a_model_of_the_ring(slots, ops):
    """Random writes and reads of any frame announced so far: a read succeeds exactly when fewer than
    `slots` frames were written after it, and returns that frame; otherwise the reader is told."""
    with FrameRingWriter(unique("model"), slots, SHAPE) as w, FrameRingReader(w.name) as r:
        announced: list[tuple[int, int]] = []
        lapped = 0
        for is_write, k in ops:
            if is_write or not announced:
                announced.append(w.write(frame_of(w.written)))
                continue
            slot, seq = announced[k % len(announced)]
            if seq >= w.written - slots:
                np.testing.assert_array_equal(r.read(slot, seq), frame_of(seq))
                v = r.view(slot, seq)
                assert v.intact() and v.image[0, 0, 0] == seq % 251
            else:
                with pytest.raises(Lapped):
                    r.read(slot, seq)
                lapped += 1
        assert r.lapped == lapped


def test_a_view_is_told_when_the_writer_laps_it():
    with FrameRingWriter(unique("view"), 2, SHAPE) as w, FrameRingReader(w.name) as r:
        slot, seq = w.write(frame_of(0))
        v = r.view(slot, seq)
        assert v.intact()
        w.write(frame_of(1))
        assert v.intact()  # the other slot
        w.write(frame_of(2))  # slot 0 again
        assert not v.intact()
        with pytest.raises(Lapped):
            r.view(slot, seq)
        with pytest.raises(RingError, match="cannot be in slot"):
            r.view(1, 2)


def test_errors_name_the_ring():
    name = unique("err")
    with pytest.raises(RingError, match=f"ring {name}: no such shared-memory block"):
        FrameRingReader(name)
    with FrameRingWriter(name, 3, SHAPE) as w:
        with pytest.raises(RingError, match="exists"):
            FrameRingWriter(name, 3, SHAPE)
        with pytest.raises(RingError, match=r"frame \(10, 10, 3\) uint8, expected \(48, 64, 3\)"):
            w.write(np.zeros((10, 10, 3), np.uint8))
    for bad in ("../etc/passwd", "", "x" * 300):
        with pytest.raises(RingError, match="expected a name of 1-200 letters"):
            FrameRingReader(bad)
    with pytest.raises(RingError, match="at least 2 slots"):
        FrameRingWriter(unique("one"), 1, SHAPE)
    with pytest.raises(RingError, match="expected uint8 or uint16"):
        FrameRingWriter(unique("f32"), 3, SHAPE, np.float32)


def _attach_and_exit(name: str, slot: int, seq: int, q) -> None:  # runs in a child process
    r = FrameRingReader(name)
    q.put(int(r.read(slot, seq)[0, 0, 0]))
    r.close()


def test_a_reader_process_exiting_leaves_the_ring_to_its_writer():
    """Readers attach and close; only the writer unlinks (Python < 3.13's resource tracker would
    otherwise unlink the block when the reader process exits)."""
    ctx = mp.get_context("spawn")
    name = unique("own")
    w = FrameRingWriter(name, 4, SHAPE)
    try:
        slot, seq = w.write(frame_of(7))
        q = ctx.Queue()
        p = ctx.Process(target=_attach_and_exit, args=(name, slot, seq, q))
        p.start()
        assert q.get(timeout=60) == 7
        p.join(60)
        assert p.exitcode == 0
        time.sleep(0.2)  # the child's resource tracker has run by now
        with FrameRingReader(name) as r:  # still there
            np.testing.assert_array_equal(r.read(slot, seq), frame_of(7))
    finally:
        w.close()
    assert not os.path.exists(f"/dev/shm/{name}")
    with pytest.raises(RingError, match="no such"):
        FrameRingReader(name)


def _writer(name: str, endpoint: str, n: int, slots: int, ready) -> None:  # runs in a child process
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    with FrameRingWriter(name, slots, SHAPE) as w:
        ready.set()
        for i in range(n):
            slot, seq = w.write(frame_of(i))
            push.send_multipart(encode(FrameRefPacket("cam", i, time.monotonic_ns(), name, slot, seq, *SHAPE)))
            if i % 64 == 0:
                time.sleep(0.001)
        push.send_multipart([b"end"])
        time.sleep(0.5)  # let the reader finish its last reads before the block goes
    push.close(1000)
    ctx.term()


@pytest.mark.slow
def test_a_slow_reader_process_is_lapped_but_never_handed_a_torn_frame():
    """A writer process fills a 3-slot ring as fast as it can and tells a reader (this process) each
    frame over ZeroMQ; the reader falls behind on purpose. Every frame it gets is whole and the one
    it was told about; every other one is counted as lapped."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    mpctx = mp.get_context("spawn")
    ready = mpctx.Event()
    name, n = unique("race"), 4000
    p = mpctx.Process(target=_writer, args=(name, f"tcp://127.0.0.1:{port}", n, 3, ready))
    p.start()
    try:
        assert ready.wait(60)
        r = FrameRingReader(name)
        got = lapped = torn_views = 0
        while True:
            assert pull.poll(30_000), "writer went silent"
            frames = pull.recv_multipart()
            if frames[0] == b"end":
                break
            ref = decode(frames)
            assert isinstance(ref, FrameRefPacket)
            try:
                if ref.sequence % 2:
                    img = r.read(ref.slot, ref.sequence)
                else:  # in place: use the pixels, then ask whether they were overwritten meanwhile
                    v = r.view(ref.slot, ref.sequence)
                    img = v.image.copy()
                    if not v.intact():
                        torn_views += 1
                        continue
            except Lapped:
                lapped += 1
                continue
            assert (img == ref.sequence % 251).all(), f"torn frame {ref.sequence}"
            got += 1
        r.close()
    finally:
        p.join(60)
        pull.close(0)
        ctx.term()
    assert p.exitcode == 0
    assert got + lapped + torn_views == n
    assert got > 0 and lapped > 0, (got, lapped, torn_views)
