"""Frame-set synchronisation: grouping by capture time, dropped frames, late and dead cameras, clock offsets."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.sync import FrameSynchronizer, SyncOptions

CAMS = ("cam_a", "cam_b", "cam_c", "cam_d")
PERIOD = 33_333_333  # 30 fps


def simulate(
    n_frames: int = 200,
    seed: int = 0,
    drop_prob: float = 0.0,
    offsets_ns: dict[str, int] | None = None,
    dead_after_frame: dict[str, int] | None = None,
    delay_ns: tuple[int, int] = (8_000_000, 20_000_000),
    jitter_ns: int = 1_000_000,
):
    """Events (arrival_ns, camera, capture_ns_on_camera_clock, frame_index) sorted by arrival."""
    rng = np.random.default_rng(seed)
    offsets_ns = offsets_ns or {}
    dead_after_frame = dead_after_frame or {}
    events = []
    t0 = 10_000_000_000
    for i in range(n_frames):
        true_capture = t0 + i * PERIOD
        for cam in CAMS:
            if i >= dead_after_frame.get(cam, n_frames + 1):
                continue
            if rng.random() < drop_prob:
                continue
            capture = true_capture + int(rng.integers(-jitter_ns, jitter_ns + 1))
            arrival = capture + int(rng.integers(*delay_ns))
            events.append((arrival, cam, capture + offsets_ns.get(cam, 0), i))
    events.sort()
    return events


def run(sync: FrameSynchronizer, events, poll_step_ns: int = 5_000_000):
    """Feed events in arrival order, polling in between like the process does; returns frame sets."""
    out = []
    last = events[0][0]
    for arrival, cam, capture, idx in events:
        for t in range(last + poll_step_ns, arrival, poll_step_ns):
            out += sync.poll(t)
        out += sync.add(cam, capture, idx, arrival)
        last = arrival
    out += sync.poll(last + 10 * PERIOD)
    return out


def frame_indices(fs):
    return {v.payload for v in fs.views.values()}


def test_all_cameras_deliver_every_moment_forms_one_complete_set():
    events = simulate()
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD))
    sets = run(sync, events)
    assert len(sets) == 200
    assert all(len(fs.views) == 4 and not fs.missing for fs in sets)
    assert [frame_indices(fs) for fs in sets] == [{i} for i in range(200)]
    assert sync.counters.complete == 200 and sync.counters.late == 0 and sync.counters.timed_out == 0
    # emitted in capture order with running indices
    assert all(b.capture_ns > a.capture_ns for a, b in zip(sets, sets[1:]))
    assert [fs.index for fs in sets] == list(range(200))
    # a complete set goes out when its last view arrives, not after a timeout
    assert all(fs.emitted_ns == max(v.arrival_ns for v in fs.views.values()) for fs in sets)


def test_dropped_frames_give_partial_sets_without_mixing_moments():
    events = simulate(drop_prob=0.15, seed=1)
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD))
    sets = run(sync, events)
    delivered = {}
    for _, cam, _, idx in events:
        delivered.setdefault(idx, set()).add(cam)
    expected = sorted(i for i, cams in delivered.items() if len(cams) >= 2)
    assert [frame_indices(fs) for fs in sets] == [{i} for i in expected]
    for fs in sets:
        assert set(fs.views) == delivered[next(iter(frame_indices(fs)))]
    assert sync.counters.partial > 0
    assert sync.counters.too_few_views == sum(1 for c in delivered.values() if len(c) < 2)
    assert sync.counters.late == 0


def test_dead_camera_does_not_hold_frame_sets_back():
    events = simulate(n_frames=120, dead_after_frame={"cam_d": 40})
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD))
    sets = run(sync, events)
    assert len(sets) == 120
    assert all(set(fs.views) == set(CAMS) - {"cam_d"} for fs in sets[40:])
    # while cam_d is presumed alive, sets wait at most max_wait; once it is known dead, not at all
    wait = sync.options.wait
    assert all(fs.emitted_ns - fs.first_arrival_ns <= wait + 5_000_000 for fs in sets)
    after_dead = [fs for fs in sets if next(iter(frame_indices(fs))) >= 40 + 12]
    assert after_dead and all(fs.emitted_ns == max(v.arrival_ns for v in fs.views.values()) for fs in after_dead)


def test_late_view_is_counted_not_merged_into_the_next_moment():
    events = simulate(n_frames=60, seed=2)
    # cam_b's frame 30 arrives 5 frame periods late
    events = [
        (a + 5 * PERIOD, c, cap, i) if (c == "cam_b" and i == 30) else (a, c, cap, i) for a, c, cap, i in events
    ]
    events.sort()
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD))
    sets = run(sync, events)
    assert sync.counters.late == 1 and sync.counters.late_by_camera == {"cam_b": 1}
    assert [frame_indices(fs) for fs in sets] == [{i} for i in range(60)]
    by_idx = {next(iter(frame_indices(fs))): fs for fs in sets}
    assert by_idx[30].missing == ("cam_b",)
    assert all(not by_idx[i].missing for i in range(60) if i != 30)


def test_configured_clock_offsets_align_cameras():
    offsets = {"cam_b": 5_300_000_000, "cam_c": -2_100_000_000, "cam_d": 17 * PERIOD + 4_000_000}
    events = simulate(offsets_ns=offsets)
    plain = run(FrameSynchronizer(CAMS, SyncOptions(PERIOD)), events)
    assert not any(len(fs.views) == 4 for fs in plain)  # without the offsets nothing lines up
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD, clock_offsets_ns=offsets))
    sets = run(sync, events)
    assert [frame_indices(fs) for fs in sets] == [{i} for i in range(200)]
    assert sync.counters.complete == 200


def test_estimated_clock_offsets_align_cameras_after_warm_up():
    offsets = {"cam_b": 5_300_000_000, "cam_c": -2_100_000_000, "cam_d": 17 * PERIOD + 4_000_000}
    events = simulate(n_frames=300, offsets_ns=offsets, seed=3)
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD, estimate_offsets=True, estimate_window=60))
    sets = run(sync, events)
    est = sync.offsets_ns()
    for cam, true in offsets.items():
        assert abs(est[cam] - true) < 4_000_000, (cam, est[cam], true)
    settled = [fs for fs in sets if min(frame_indices(fs)) >= 60]
    assert len(settled) >= 235
    assert all(len(frame_indices(fs)) == 1 for fs in settled)
    assert sum(len(fs.views) == 4 for fs in settled) >= 0.95 * len(settled)


def test_duplicates_and_unknown_cameras_are_counted():
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD))
    t = 1_000_000_000
    assert sync.add("cam_a", t, 0, t + 1) == []
    assert sync.add("cam_a", t + 100, 0, t + 2) == []
    assert sync.add("cam_x", t, 0, t + 3) == []
    assert sync.counters.duplicates == 1 and sync.counters.unknown_camera == 1
    sets = sync.add("cam_b", t, 0, t + 4) + sync.add("cam_c", t, 0, t + 5) + sync.add("cam_d", t, 0, t + 6)
    assert len(sets) == 1 and len(sets[0].views) == 4


def test_frame_set_waits_no_longer_than_max_wait():
    sync = FrameSynchronizer(CAMS, SyncOptions(PERIOD, max_wait_ns=50_000_000))
    t = 1_000_000_000
    sync.add("cam_a", t, "a", t + 10)
    sync.add("cam_b", t, "b", t + 20)
    assert sync.poll(t + 10 + 49_000_000) == []
    sets = sync.poll(t + 10 + 50_000_000)
    assert len(sets) == 1 and sets[0].timed_out and set(sets[0].missing) == {"cam_c", "cam_d"}
    assert sync.add("cam_c", t + 1000, "c", t + 60_000_000) == []
    assert sync.counters.late == 1


def test_options_are_validated():
    with pytest.raises(ValueError, match="tolerance"):
        SyncOptions(PERIOD, tolerance_ns=PERIOD)
    with pytest.raises(ValueError, match="frame_period_ns"):
        SyncOptions(0)
    with pytest.raises(ValueError, match="unknown cameras"):
        FrameSynchronizer(CAMS, SyncOptions(PERIOD, clock_offsets_ns={"nope": 1}))
