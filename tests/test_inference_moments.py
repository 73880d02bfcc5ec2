"""Moment selection of a worker serving several cameras: newest complete moment, dead cameras, skips."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.moments import MomentSelector, PendingFrame, newest_complete_moment

MS = 1_000_000
PERIOD = 33 * MS


@dataclass(frozen=True)
class Pkt:
    camera: str
    frame_index: int
    capture_ns: int


def frame(cam: str, k: int, received_ns: int, jitter_ns: int = 0) -> PendingFrame:
    return PendingFrame(Pkt(cam, k, k * PERIOD + jitter_ns), received_ns)


def test_newest_complete_moment_prefers_newest_with_all_cameras():
    times = {"a": [0, PERIOD, 2 * PERIOD], "b": [0, PERIOD + MS], "c": [PERIOD - MS, 2 * PERIOD]}
    chosen = newest_complete_moment(times, ["a", "b", "c"], PERIOD // 2)
    # 2*PERIOD lacks b, so the newest complete moment is PERIOD.
    assert chosen == {"a": 1, "b": 1, "c": 0}


def test_newest_complete_moment_none_when_a_camera_has_nothing_close():
    times = {"a": [0], "b": [PERIOD]}
    assert newest_complete_moment(times, ["a", "b"], PERIOD // 2) is None
    assert newest_complete_moment({"a": [0], "b": []}, ["a", "b"], PERIOD // 2) is None


def selector(cams=("a", "b", "c")) -> MomentSelector:
    return MomentSelector(list(cams), PERIOD // 2, PERIOD, 500 * MS, start_ns=0)


def test_waits_for_the_laggard_then_runs_the_complete_moment():
    s = selector()
    now = 10 * PERIOD
    s.add("a", frame("a", 9, now))
    s.add("b", frame("b", 9, now))
    s.add("c", frame("c", 8, now))  # c's frame 9 is still on its way
    assert s.take(now + MS) is None  # waits (less than max_wait)
    s.add("c", frame("c", 9, now + 2 * MS))
    m = s.take(now + 3 * MS)
    assert {c: f.packet.frame_index for c, f in m.items()} == {"a": 9, "b": 9, "c": 9}
    assert s.skipped == {"a": 0, "b": 0, "c": 1}  # c's frame 8 was never run
    assert all(s.pending_count(c) == 0 for c in "abc")


def test_takes_newest_complete_moment_and_skips_older_frames():
    s = selector(("a", "b"))
    t = 0
    for k in range(3):
        s.add("a", frame("a", k, t))
        s.add("b", frame("b", k, t))
    m = s.take(t)
    assert {c: f.packet.frame_index for c, f in m.items()} == {"a": 2, "b": 2}
    assert s.skipped == {"a": 2, "b": 2}


def test_dead_camera_stops_holding_the_others_back():
    s = selector(("a", "b"))
    s.add("a", frame("a", 1, 10 * MS))
    s.add("b", frame("b", 1, 10 * MS))
    assert s.take(11 * MS) is not None
    # b dies: only a keeps sending.
    for k, t in ((18, 540 * MS), (19, 570 * MS), (20, 600 * MS)):
        s.add("a", frame("a", k, t))
    assert s.alive(600 * MS) == ["a"]
    m = s.take(600 * MS + MS)
    assert list(m) == ["a"] and m["a"].packet.frame_index == 20
    assert s.partial_moments == 0  # a complete moment of the live cameras, not a partial one


def test_a_pause_of_every_camera_declares_none_dead():
    s = selector(("a", "b"))
    s.add("a", frame("a", 1, 10 * MS))
    s.add("b", frame("b", 1, 10 * MS))
    assert s.take(11 * MS) is not None
    # Both silent for 2 s (e.g. the source paused); then a's frame arrives a little before b's.
    s.add("a", frame("a", 60, 2000 * MS))
    assert s.alive(2000 * MS) == ["a", "b"]
    assert s.take(2000 * MS + MS) is None  # waits for b instead of running a alone
    s.add("b", frame("b", 60, 2000 * MS + 2 * MS))
    m = s.take(2000 * MS + 3 * MS)
    assert sorted(m) == ["a", "b"] and s.partial_moments == 0


def test_lost_frame_gives_a_partial_moment_after_max_wait():
    s = selector(("a", "b"))
    s.add("a", frame("a", 5, 100 * MS))
    s.add("b", frame("b", 4, 70 * MS))  # b's frame 5 was lost upstream
    assert s.take(100 * MS + PERIOD // 2) is None
    m = s.take(100 * MS + PERIOD + MS)
    assert list(m) == ["a"] and m["a"].packet.frame_index == 5
    assert s.partial_moments == 1
    assert s.skipped["b"] == 1 and s.pending_count("b") == 0  # b's older frame cannot join a newer moment


def test_keeps_at_most_a_few_frames_per_camera():
    s = MomentSelector(["a", "b"], PERIOD // 2, PERIOD, 500 * MS, start_ns=0, keep=3)
    for k in range(10):
        s.add("a", frame("a", k, k * MS))
    assert s.pending_count("a") == 3 and s.skipped["a"] == 7


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(-2, 2)), min_size=1, max_size=60))
def test_every_frame_is_run_skipped_or_pending(events):
    """Conservation: received = run + skipped + pending, whatever the arrival pattern."""
    cams = ["a", "b", "c"]
    s = selector(cams)
    received = {c: 0 for c in cams}
    run = {c: 0 for c in cams}
    last_k = {c: -1 for c in cams}
    now = 0
    for cam_i, k, jit in events:
        cam = cams[cam_i]
        now += 5 * MS
        if k <= last_k[cam]:
            continue  # per camera frames arrive in capture order
        last_k[cam] = k
        s.add(cam, frame(cam, k, now, jit * MS))
        received[cam] += 1
        m = s.take(now)
        if m:
            times = [f.capture_ns for f in m.values()]
            assert max(times) - min(times) <= PERIOD  # one moment, within tolerance of its reference
            for c in m:
                run[c] += 1
    for c in cams:
        assert received[c] == run[c] + s.skipped[c] + s.pending_count(c)
    assert np.all([s.pending_count(c) <= 4 for c in cams])
