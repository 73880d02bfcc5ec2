"""Cylinder, corridor and rotation scoring against synthetic scenarios with known events."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.corridor import score_retrievals
from analysis.cylinder import score_wall_contacts
from analysis.pipeline import analyse_session
from analysis.rotation import count_turns, rotation_summary
from analysis.session import Apparatus, PoseSession, SessionMeta
from synthetic.scenarios_corridor_pots import default_legs, simulate_corridor
from synthetic.scenarios_cylinder import default_plan, simulate_cylinder


def _noisy(times, kp, names, meta, apparatus, seed=0, noise_mm=1.0, drop=0.0) -> PoseSession:
    rng = np.random.default_rng(seed)
    kp = kp + rng.normal(0.0, noise_mm, kp.shape)
    if drop:
        kp[rng.random(kp.shape[:2]) < drop] = np.nan
    return PoseSession(times, kp, tuple(names), meta=meta, apparatus=apparatus)


def _cylinder_session(seed: int, p_left: float, lesion: str = "left", drop: float = 0.0):
    sc = simulate_cylinder(default_plan(seed, n_rears=20, p_left=p_left), fps=30.0, seed=seed)
    s = _noisy(sc.times_s, sc.keypoints_mm, sc.keypoint_names,
               SessionMeta(session_id=f"cyl{seed}", lesion_side=lesion, test_type="cylinder"),
               Apparatus(cylinder_center_mm=sc.center_mm, cylinder_radius_mm=sc.radius_mm), seed=seed, drop=drop)
    return sc, s


@pytest.mark.parametrize("seed,p_left", [(0, 0.5), (1, 0.2), (2, 0.8)])
def test_cylinder_paw_use_within_one_event(seed, p_left):
    sc, s = _cylinder_session(seed, p_left)
    events, summary = score_wall_contacts(s)
    truth = sc.counts()
    assert sum(truth.values()) >= 20
    for limb in ("left", "right", "both"):
        assert abs(summary[limb] - truth[limb]) <= 1, (limb, summary, truth)
    # left lesion: left = ipsi, right = contra
    assert summary["ipsi"] == summary["left"] and summary["contra"] == summary["right"]
    total = sum(truth.values())
    pct_truth = 100.0 * (truth["right"] + 0.5 * truth["both"]) / total
    assert abs(summary["contralateral_use_pct"] - pct_truth) <= 100.0 / total + 1e-9
    # events come at the truth times (within the paw's reach time)
    t_truth = np.array(sorted(t for t, _ in sc.placements))
    t_found = np.array([e.time_s for e in events])
    assert np.all(np.min(np.abs(t_found[:, None] - t_truth[None, :]), axis=1) < 0.3)
    # placements are scored at the wall, above the floor
    r = np.array([np.hypot(e.x_mm - sc.center_mm[0], e.y_mm - sc.center_mm[1]) for e in events])
    assert np.all(np.abs(r - sc.radius_mm) < 15.0)
    assert summary["n_rears"] == 20


def test_cylinder_sequential_paws_are_two_events_and_lesion_side_swaps():
    plan = [("explore", 1.0), ("rear", 0.0, "left_then_right", 1.2), ("rear", 0.3, "both", 1.0),
            ("rear", -0.3, "right", 1.0)]
    sc = simulate_cylinder(plan, fps=30.0, seed=3)
    s = _noisy(sc.times_s, sc.keypoints_mm, sc.keypoint_names,
               SessionMeta(lesion_side="right", test_type="cylinder"),
               Apparatus(cylinder_center_mm=sc.center_mm, cylinder_radius_mm=sc.radius_mm))
    events, summary = score_wall_contacts(s)
    assert [e.limb for e in events] == ["left", "right", "both", "right"]
    assert [e.laterality for e in events] == ["contra", "ipsi", "both", "ipsi"]
    assert summary["contralateral_use_pct"] == pytest.approx(100.0 * (1 + 0.5) / 4)


def test_cylinder_tolerates_missing_frames():
    sc, s = _cylinder_session(4, 0.5, drop=0.03)
    _, summary = score_wall_contacts(s)
    truth = sc.counts()
    for limb in ("left", "right", "both"):
        assert abs(summary[limb] - truth[limb]) <= 1, (limb, summary, truth)


@pytest.mark.parametrize("seed,p_left", [(0, 0.5), (1, 0.2)])
def test_corridor_retrievals_within_one_event(seed, p_left):
    sc = simulate_corridor(default_legs(seed, n_legs=4, p_left=p_left), fps=30.0, seed=seed)
    app = Apparatus(pots_mm=tuple(map(tuple, sc.pots_mm)), pot_zone_radius_mm=sc.pot_zone_radius_mm)
    s = _noisy(sc.times_s, sc.keypoints_mm, sc.keypoint_names,
               SessionMeta(lesion_side="right", test_type="corridor"), app, seed=seed)
    events, summary = score_retrievals(s)
    truth = sc.counts()
    assert sum(truth.values()) == 20 and sc.n_sniffs == 4  # sniffs must not count
    assert abs(summary["left"] - truth["left"]) <= 1 and abs(summary["right"] - truth["right"]) <= 1
    # right lesion: the rat's right is ipsilateral
    assert summary["ipsi"] == summary["right"] and summary["contra"] == summary["left"]
    bias_truth = (truth["right"] - truth["left"]) / 20
    assert abs(summary["side_bias_index"] - bias_truth) <= 2 / 19
    first_truth = min(t for t, _, _ in sc.retrievals)
    assert abs(summary["latency_first_s"] - first_truth) < 0.3
    # every retrieval is matched to the right pot and side
    for (t, pot, side), e in zip(sorted(sc.retrievals), events):
        assert e.pot == pot and e.side == side and abs(e.time_s - t) < 0.3


def test_corridor_same_wall_is_left_one_way_and_right_the_other():
    # pot 3 (+y wall) retrieved walking towards +x (the rat's left) and walking back (its right)
    sc = simulate_corridor([[(3, "retrieve")], [(3, "retrieve")]], fps=30.0, seed=5)
    app = Apparatus(pots_mm=tuple(map(tuple, sc.pots_mm)))
    s = _noisy(sc.times_s, sc.keypoints_mm, sc.keypoint_names, SessionMeta(test_type="corridor"), app)
    events, summary = score_retrievals(s)
    assert [(e.pot, e.side) for e in events] == [(3, "left"), (3, "right")]
    assert "ipsi" not in summary and summary["side_bias_index_right"] == 0.0


def test_corridor_without_pots_is_a_clear_error():
    sc = simulate_corridor([[(3, "retrieve")]], fps=30.0, seed=5)
    s = PoseSession(sc.times_s, sc.keypoints_mm, sc.keypoint_names, meta=SessionMeta(session_id="c", test_type="corridor"))
    with pytest.raises(ValueError, match="pots_mm"):
        score_retrievals(s)
    result = analyse_session(s)
    assert "pot" in result.summary["corridor"]["skipped"]


def test_rotation_counts_planned_turns():
    plan = [("explore", 1.0), ("turn", 2), ("rear", 0.2, "left", 0.8), ("turn", -1), ("turn", 3), ("explore", 1.0)]
    sc = simulate_cylinder(plan, fps=30.0, seed=7)
    s = _noisy(sc.times_s, sc.keypoints_mm, sc.keypoint_names, SessionMeta(lesion_side="left"), Apparatus(), seed=7)
    rot = rotation_summary(s)
    assert (rot["left_turns"], rot["right_turns"]) == (sc.left_turns, sc.right_turns) == (5, 1)
    assert rot["ipsi_turns"] == 5 and rot["contra_turns"] == 1 and rot["net_ipsi_turns"] == 4
    assert rot["turns_per_min"] == pytest.approx(6 / (s.duration_s / 60.0))


def test_count_turns_rule():
    t = np.linspace(0, 1, 2001)
    # swinging +-170 degrees never makes a turn
    left, right, _ = count_turns(np.angle(np.exp(1j * np.radians(170) * np.sin(2 * np.pi * 5 * t))))
    assert (left, right) == (0, 0)
    # three turns left, then one back right: 3 + 1, not a net 2
    theta = np.r_[np.linspace(0, 3.05 * 2 * np.pi, 1000), np.linspace(3.05 * 2 * np.pi, 1.9 * 2 * np.pi, 600)]
    left, right, marks = count_turns(np.angle(np.exp(1j * theta)))
    assert (left, right) == (3, 1)
    assert marks[:, 1].tolist() == [1, 1, 1, -1]
    # unseen frames are skipped
    h = np.angle(np.exp(1j * np.linspace(0, 2.2 * 2 * np.pi, 500)))
    h[100:120] = np.nan
    assert count_turns(h)[:2] == (2, 0)
