"""Paw placement detector: accuracy against the synthetic rat's exact contacts, and its contract."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from events.accuracy import degrade, match_times, score_touchdowns
from events.paw import (
    LIFTOFF, STANCE, SWING, TOUCHDOWN, UNKNOWN, PawPlacementDetector, PawThresholds, default_thresholds,
    thresholds_from_config,
)
from ratrig.skeleton import KEYPOINTS, PAWS
from synthetic.rat import simulate

FPS = 30.0
T0_NS = 5_000_000_000_000
PAW_IDX = [KEYPOINTS.index(p) for p in PAWS]


@pytest.fixture(scope="module")
def walk():
    return simulate(60.0, FPS, seed=3)


def run_detector(times_s, paws_mm, thresholds=None):
    th = thresholds or default_thresholds()
    det = PawPlacementDetector({p: th for p in PAWS}, clock=lambda: 0)
    events = []
    for k, t in enumerate(times_s):
        events += det.feed(T0_NS + int(round(t * 1e9)), paws_mm[k], k)
    return det, events


@pytest.mark.parametrize("noise_mm", [0.0, 2.0, 3.0, 4.0])
def test_touchdowns_match_exact_contacts(walk, noise_mm):
    exact = walk.keypoints_mm[:, PAW_IDX]
    stream = exact if noise_mm == 0 else degrade(exact, FPS, noise_mm, seed=7)
    _, events = run_detector(walk.times_s, stream)
    end = walk.times_s[-1] - 0.3
    score = score_touchdowns(events, walk.contacts, T0_NS, window_s=0.1, skip_s=0.5, end_s=end)
    assert score.n_true > 250
    assert score.precision >= 0.95, score
    assert score.recall >= 0.95, score
    assert score.timing_error_ms_median <= 1000.0 / FPS, score
    # the decision is causal: never before the contact, and a few frames after it at most (median)
    decided = score_touchdowns(events, walk.contacts, T0_NS, window_s=0.2, skip_s=0.5, end_s=end, time="decided")
    assert decided.signed_error_ms_median > 0
    assert score.decision_delay_ms_median < 5 * 1000.0 / FPS


def test_event_fields_and_liftoffs(walk):
    stream = degrade(walk.keypoints_mm[:, PAW_IDX], FPS, 3.0, seed=1)
    det, events = run_detector(walk.times_s, stream)
    names = {e.name for e in events}
    assert names == {TOUCHDOWN, LIFTOFF}
    for e in events:
        assert e.subject in PAWS
        assert e.extra["onset_ns"] <= e.capture_ns
        assert e.extra["paw_index"] == PAWS.index(e.subject)
        assert (e.capture_ns - T0_NS) % 1 == 0
        k = e.frame_set_index
        assert e.capture_ns == T0_NS + int(round(walk.times_s[k] * 1e9))  # decided frame's own time
        if e.name == TOUCHDOWN:
            assert e.position_mm[2] < 15.0  # placed on the floor
    # per paw, touchdowns and lift-offs alternate
    for paw in PAWS:
        seq = [e.name for e in events if e.subject == paw]
        assert all(a != b for a, b in zip(seq, seq[1:])), paw
    # touchdown position is where the paw really stood (within noise)
    td = [e for e in events if e.name == TOUCHDOWN]
    errs = []
    for e in td:
        k = e.frame_set_index
        truth = walk.keypoints_mm[k, KEYPOINTS.index(e.subject)]
        errs.append(np.linalg.norm(np.array(e.position_mm[:2]) - truth[:2]))
    assert np.median(errs) < 6.0  # one filtered frame with 3 mm jitter; steps are ~100 mm


def test_no_event_for_a_paw_already_down_and_debounce():
    th = dataclasses.replace(default_thresholds(), min_duration_ms=60.0)
    det = PawPlacementDetector({p: th for p in PAWS}, clock=lambda: 42)
    still = np.tile([[0.0, 0.0, 4.0]], (4, 1))
    dt = int(1e9 / 30)
    events = []
    for k in range(10):
        events += det.feed(k * dt, still, k)
    assert events == []  # already standing: no touchdown
    assert set(det.states.values()) == {STANCE}
    # one frame spike of one paw to 40 mm: shorter than min_duration, no lift-off
    spike = still.copy()
    spike[0] = [0.0, 0.0, 40.0]
    assert det.feed(10 * dt, spike, 10) == []
    for k in range(11, 20):
        events += det.feed(k * dt, still, k)
    assert events == []
    # a real lift: 3 frames high -> one lift-off, decided on the frame that completes 60 ms
    lifted = []
    for k in range(20, 24):
        lifted += det.feed(k * dt, spike, k)
    assert [(e.name, e.subject) for e in lifted] == [(LIFTOFF, "front_left_paw")]
    # onset: between the last frame on the floor (19) and the first one up (20)
    assert lifted[0].frame_set_index == 22 and lifted[0].extra["onset_ns"] == (19 * dt + 20 * dt) // 2
    assert lifted[0].emitted_ns == 42
    assert det.states["front_left_paw"] == SWING


def test_nan_gap_resets_to_unknown_and_old_frames_are_ignored():
    det = PawPlacementDetector({p: default_thresholds() for p in PAWS})
    still = np.tile([[0.0, 0.0, 4.0]], (4, 1))
    for k in range(5):
        det.feed(k * 33_000_000, still)
    assert det.states["hind_left_paw"] == STANCE
    gone = np.full((4, 3), np.nan)
    for k in range(5, 20):  # 500 ms unseen
        det.feed(k * 33_000_000, gone)
    assert set(det.states.values()) == {UNKNOWN}
    assert det.feed(0, still) == [] and det.frames_ignored == 1
    with pytest.raises(ValueError, match=r"expected shape \(4, 3\)"):
        det.feed(10**12, np.zeros((3, 3)))


def test_thresholds_scale_with_rat_and_validate():
    small, big = default_thresholds(150.0), default_thresholds(300.0)
    assert big.touchdown_height_mm == pytest.approx(2 * small.touchdown_height_mm, rel=0.02)
    assert big.touchdown_speed_mm_s > small.touchdown_speed_mm_s
    with pytest.raises(ValueError, match="liftoff_height_mm"):
        PawThresholds(20.0, 10.0, 100.0, 200.0)
    th = thresholds_from_config(230.0, {"touchdown_height_mm": 11.0, "liftoff_speed_mm_s": None},
                                {"hind_left_paw": {"touchdown_height_mm": 9.0}})
    assert th["front_left_paw"].touchdown_height_mm == 11.0
    assert th["hind_left_paw"].touchdown_height_mm == 9.0
    assert th["hind_left_paw"].liftoff_speed_mm_s == default_thresholds().liftoff_speed_mm_s
    with pytest.raises(ValueError, match=r"events\.paws\.hind_left_paw\.touchdown_hieght_mm: unknown"):
        thresholds_from_config(230.0, {}, {"hind_left_paw": {"touchdown_hieght_mm": 9.0}})
    with pytest.raises(ValueError, match=r"events\.paws\.tail: unknown paw"):
        thresholds_from_config(230.0, {}, {"tail": {}})
    with pytest.raises(ValueError, match=r"events\.paws\.hind_left_paw: liftoff_height_mm"):
        thresholds_from_config(230.0, {}, {"hind_left_paw": {"touchdown_height_mm": 50.0}})


def test_matching_is_one_to_one_and_windowed():
    pairs = match_times(np.array([1.0, 1.01, 2.5]), np.array([1.005, 2.0]), window_s=0.1)
    assert sorted(pairs) == [(0, 0)] or sorted(pairs) == [(1, 0)]
    assert len(pairs) == 1  # 2.5 is 0.5 s from 2.0: no match


def _dense_match(d, t, window_s):
    """The plain D x T matrix matcher `match_times` replaced (the reference it must agree with)."""
    diff = np.abs(d[:, None] - t[None, :])
    cand = np.argwhere(diff <= window_s)
    order = np.argsort(diff[cand[:, 0], cand[:, 1]], kind="stable")
    used_d, used_t, pairs = set(), set(), []
    for di, ti in cand[order]:
        if di in used_d or ti in used_t:
            continue
        used_d.add(int(di))
        used_t.add(int(ti))
        pairs.append((int(di), int(ti)))
    return pairs


@pytest.mark.parametrize("seed", range(40))
def test_banded_matching_equals_the_dense_matrix_walk(seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 20, rng.integers(0, 60)))
    found = t[rng.random(t.size) < 0.8]
    d = np.r_[found + rng.normal(0, 0.04, found.size), rng.uniform(0, 20, rng.integers(0, 8))]
    if seed % 4 == 0 and t.size:  # exact ties and unsorted detections
        d = np.r_[d, t[:3] + 0.05, t[:3] - 0.05, t[:2]]
        rng.shuffle(d)
    window = [0.1, 0.05, 0.3][seed % 3]
    assert sorted(match_times(d, t, window)) == sorted(_dense_match(d, t, window))
    assert len(match_times(d, t, window)) == len(_dense_match(d, t, window))


def test_speed_noise_on_a_planted_paw_is_not_a_liftoff():
    th = PawThresholds(touchdown_height_mm=14, liftoff_height_mm=18, touchdown_speed_mm_s=100,
                       liftoff_speed_mm_s=150, speed_window_ms=30, liftoff_distance_mm=8)
    det = PawPlacementDetector({"hind_left_paw": th}, paws=("hind_left_paw",))
    dt = int(1e9 / 30)
    events = []
    for k in range(10):
        events += det.feed(k * dt, np.array([[0.0, 0.0, 4.0]]), k)
    assert det.states["hind_left_paw"] == STANCE
    for k in range(10, 40):  # +-3 mm jitter every frame: 180 mm/s, but the paw stays where it is
        events += det.feed(k * dt, np.array([[6.0 * (k % 2), 0.0, 4.0]]), k)
    assert events == []
    for k in range(40, 50):  # sliding away at 300 mm/s, low: a lift-off once it is 8 mm away
        events += det.feed(k * dt, np.array([[10.0 * (k - 39), 0.0, 4.0]]), k)
    assert [e.name for e in events] == [LIFTOFF]
    # frame 40 (x 10) is only 4 mm from frame 39 (x 6): 120 mm/s; frame 41 is fast and 17 mm away
    assert events[0].frame_set_index == 41


def test_unreliable_paw_frames_do_not_toggle_state():
    """Below-floor positions, coasted filter output (n_cameras 0) and doubtful two-view
    triangulations are treated as unseen: a standing paw does not lift off on them."""
    th = dataclasses.replace(default_thresholds(), max_two_view_error_px=3.0)
    det = PawPlacementDetector({p: th for p in PAWS}, clock=lambda: 0)
    still = np.tile([[0.0, 0.0, 4.0]], (4, 1))
    dt = int(1e9 / 30)
    n_cam, err = np.full(4, 3), np.full(4, 1.0)
    events = []
    for k in range(10):
        events += det.feed(k * dt, still, k, n_cam, err)
    assert events == [] and det.states["front_left_paw"] == STANCE
    high = still.copy()
    high[0] = [60.0, 0.0, 40.0]
    below = still.copy()
    below[0] = [60.0, 0.0, -30.0]  # 30 mm under the floor: a triangulation error
    coasted, doubtful = n_cam.copy(), err.copy()
    coasted[0] = 0
    two_views = n_cam.copy()
    two_views[0] = 2
    doubtful[0] = 9.0
    k = 10
    for pos, n, e in [(below, n_cam, err), (high, coasted, err), (high, two_views, doubtful)]:
        events += det.feed(k * dt, pos, k, n, e)
        k += 1
    assert events == [] and det.states["front_left_paw"] == STANCE
    # the same frames without the quality arrays: the position alone still rules out the floor case...
    assert det.feed(k * dt, below) == []
    # ...and a consistent two-view lift is a lift-off
    lifted = det.feed((k + 1) * dt, high, k + 1, two_views, err)
    assert [(e.name, e.subject) for e in lifted] == [(LIFTOFF, "front_left_paw")]
    with pytest.raises(ValueError, match=r"n_cameras: expected shape \(4,\)"):
        det.feed((k + 2) * dt, still, k + 2, np.zeros(3), err)


def test_below_floor_outliers_are_not_steps(walk):
    """A hidden paw guessed by the 2D model in both of its only two views triangulates far off,
    often under the floor; those frames must not make touchdowns (precision), and the floor
    tolerance must not cost touchdowns of a clean walk."""
    exact = walk.keypoints_mm[:, PAW_IDX]
    stream = degrade(exact, FPS, 3.0, seed=5)
    rng = np.random.default_rng(11)
    bad = rng.random(stream.shape[:2]) < 0.15
    stream = stream.copy()
    stream[bad] += rng.normal(0.0, 40.0, (int(bad.sum()), 3))
    stream[bad, 2] = rng.uniform(-40.0, -10.0, int(bad.sum()))
    end = walk.times_s[-1] - 0.3
    off = dataclasses.replace(default_thresholds(), floor_tolerance_mm=1e6)
    _, ev_off = run_detector(walk.times_s, stream, off)
    _, ev_on = run_detector(walk.times_s, stream)
    s_off = score_touchdowns(ev_off, walk.contacts, T0_NS, skip_s=0.5, end_s=end)
    s_on = score_touchdowns(ev_on, walk.contacts, T0_NS, skip_s=0.5, end_s=end)
    assert s_off.precision < 0.8, s_off  # the outliers do break the detector without the gate
    assert s_on.precision >= 0.95 and s_on.recall >= 0.9, s_on


DT = int(round(1e9 / FPS))
ONE_CAMERA = np.ones(1, np.int64)  # n_cameras of a floor point (fusion.floor)
TRIANGULATED = np.full(1, 3, np.int64)


def feed_one(det, k, xyz, n_cam=ONE_CAMERA):
    return det.feed(k * DT, np.array([xyz], float), k, n_cam)


def one_paw(**changes):
    th = dataclasses.replace(default_thresholds(), **changes)
    return PawPlacementDetector({"hind_left_paw": th}, paws=("hind_left_paw",), clock=lambda: 0)


def test_slow_low_shuffle_seen_by_one_camera_is_a_step():
    """A 30 mm shuffle over 250 ms (peak 225 mm/s, no height: floor points) is slower than the
    touchdown speed and never high, so only step_distance_mm sees it; the paw's 3 mm scatter
    while planted must not."""
    rng = np.random.default_rng(0)
    noise = lambda: np.r_[rng.uniform(-3, 3, 2), 0.0]  # noqa: E731
    track = [np.array([0.0, 0.0, 4.0]) + noise() for _ in range(30)]  # frames 0-29 planted
    u = np.arange(1, 8) / 8.0  # frames 30-36 move on a minimum-jerk path
    track += [np.array([30.0 * (u_ ** 3 * (10 - 15 * u_ + 6 * u_ ** 2)), 0.0, 4.0]) for u_ in u]
    track += [np.array([30.0, 0.0, 4.0]) + noise() for _ in range(20)]  # lands on frame 37
    found = {}
    for name, th in (("default", {}), ("off", {"step_distance_mm": np.inf})):
        det = one_paw(**th)
        found[name] = [e for k, xyz in enumerate(track) for e in feed_one(det, k, xyz)]
    assert found["off"] == []
    assert [e.name for e in found["default"]] == [LIFTOFF, TOUCHDOWN]
    lift, touch = found["default"]
    assert abs(touch.extra["onset_ns"] - 37 * DT) <= DT  # within a frame of the landing
    assert touch.position_mm[0] == pytest.approx(30.0, abs=3.0)
    assert lift.extra["onset_ns"] < 34 * DT and lift.capture_ns < touch.capture_ns


def test_a_planted_paw_switching_between_floor_points_and_triangulations_stays_planted():
    """Floor points and triangulations of one planted paw differ by their errors (here 25 mm,
    more than step_distance_mm); a switch between them is not a step."""
    det = one_paw()
    events = []
    for k in range(60):
        floor = (k // 5) % 2 == 1
        xyz = [25.0, 0.0, 4.0] if floor else [0.0, 0.0, 4.0]
        events += feed_one(det, k, xyz, ONE_CAMERA if floor else TRIANGULATED)
    assert events == [] and det.states["hind_left_paw"] == STANCE


def test_positions_outside_the_floor_area_are_ignored():
    """A front paw held up in a rear at the corridor's end: one camera sees it, so its floor point
    lands beyond the end wall and stands still there. It is no touchdown when the detector knows
    the floor area."""
    th = default_thresholds()
    events = {}
    for area in (None, (-760.0, -45.0, 760.0, 45.0)):
        det = PawPlacementDetector({"front_left_paw": th}, paws=("front_left_paw",), clock=lambda: 0,
                                   floor_area_mm=area)
        got = []
        for k in range(10):
            got += feed_one(det, k, [650.0, 20.0, 4.0], TRIANGULATED)
        for k, z in zip(range(10, 14), (20.0, 45.0, 70.0, 90.0)):  # lifted: triangulated
            got += feed_one(det, k, [655.0, 20.0, z], TRIANGULATED)
        for k in range(14, 40):  # now one camera: its ray meets the floor 160 mm further on
            got += feed_one(det, k, [812.0 + (k % 2), -30.0, 4.0], ONE_CAMERA)
        events[area is None] = [e.name for e in got]
    assert events[True] == [LIFTOFF, TOUCHDOWN]  # without the area: a touchdown in mid-air
    assert events[False] == [LIFTOFF]
    with pytest.raises(ValueError, match=r"floor_area_mm: expected \[x_min, y_min, x_max, y_max\]"):
        PawPlacementDetector({"front_left_paw": th}, paws=("front_left_paw",), floor_area_mm=(0, 0, 1))


def test_one_wild_frame_does_not_restart_a_touchdown():
    """A landing seen by one camera (decisions hold 40 ms = 3 frames; the paw lands on frame 12
    and looks still from frame 13): a single wild detection on frame 14 is forgiven, so the
    touchdown keeps its onset and is decided on time; two wild frames in a row restart it."""
    def landing(wild_frames):
        det = one_paw()
        out = []
        for k in range(6):
            out += feed_one(det, k, [0.0, 0.0, 4.0])
        for k in range(6, 12):  # a fast swing, 40 mm per frame
            out += feed_one(det, k, [40.0 * (k - 5), 0.0, 4.0])
        for k in range(12, 25):  # landed at x = 280 on frame 12; wild frames 45 mm off, each its own way
            wild = [45.0 * (k % 2), 45.0 * (1 - k % 2)] if k in wild_frames else [0.0, 0.0]
            out += feed_one(det, k, [280.0 + wild[0], wild[1], 4.0])
        return [e for e in out if e.name == TOUCHDOWN]

    clean, one, two = landing(()), landing((14,)), landing((14, 15))
    assert len(clean) == len(one) == len(two) == 1
    assert clean[0].extra["onset_ns"] == (12 * DT + 13 * DT) // 2 and clean[0].frame_set_index == 15
    assert one[0].extra["onset_ns"] == clean[0].extra["onset_ns"]
    assert one[0].frame_set_index == 15
    assert two[0].extra["onset_ns"] > clean[0].extra["onset_ns"] + DT


def test_liftoff_onset_is_the_last_frame_at_rest():
    """The speed and height tests see a lift-off two frames late; its onset is walked back to the
    last frame where the paw still stood."""
    det = one_paw()
    xs = [0.0] * 10 + [3.0, 9.0, 18.0, 30.0, 45.0, 60.0]
    zs = [4.0] * 10 + [6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
    events = []
    for k, (x, z) in enumerate(zip(xs, zs)):
        events += feed_one(det, k, [x, 0.0, z], TRIANGULATED)
    assert [e.name for e in events] == [LIFTOFF]
    # frame 10 (x = 3) is still within liftoff_distance_mm of the rest spot, frame 11 (x = 9) is not
    assert events[0].extra["onset_ns"] == (10 * DT + 11 * DT) // 2
    assert events[0].frame_set_index == 13  # decided when the speed test fired
