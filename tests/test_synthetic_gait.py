"""Gait ground truth of the synthetic rat: stance is exact, the trot alternates, lesions shorten strides."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratrig.skeleton import KEYPOINTS, PAWS
from synthetic.rat import DUTY_FACTOR, EXTRA_NAMES, PAW_CONTACT_Z_MM, Lesion, simulate
from synthetic.rig import Corridor

FINE_HZ = 1000.0


@pytest.fixture(scope="module")
def healthy():
    return simulate(60.0, 30.0, seed=11)


@pytest.fixture(scope="module")
def fine(healthy):
    t = np.arange(0.0, healthy.times_s[-1], 1.0 / FINE_HZ)
    kp, ex = healthy.pose_at(t)
    return t, kp, ex, healthy.in_stance_at(t)


def _rear_mask(traj, t):
    m = np.zeros(len(t), bool)
    for a, b in traj.rears_s:
        m |= (t >= a) & (t <= b)
    return m


def test_shapes_names_and_units(healthy):
    T = len(healthy.times_s)
    assert T == 1800
    assert healthy.keypoints_mm.shape == (T, len(KEYPOINTS), 3)
    assert healthy.extra_mm.shape == (T, len(EXTRA_NAMES), 3)
    assert healthy.keypoint_names == KEYPOINTS and healthy.paw_names == PAWS
    assert healthy.in_stance.shape == (T, 4) and healthy.in_stance.dtype == bool
    np.testing.assert_allclose(np.diff(healthy.times_s), 1 / 30.0)
    # A rat of realistic size: nose to tail base about 23 cm, tail about 20 cm.
    kp, ex = healthy.keypoints_mm, healthy.extra_mm
    walking = healthy.body_speed_mm_s > 150
    body = np.linalg.norm(kp[walking, KEYPOINTS.index("nose")] - kp[walking, KEYPOINTS.index("tail_base")], axis=1)
    assert 200 < np.median(body) < 260
    tail = np.linalg.norm(ex[:, EXTRA_NAMES.index("tail_mid")] - kp[:, KEYPOINTS.index("tail_base")], axis=1) \
        + np.linalg.norm(ex[:, EXTRA_NAMES.index("tail_tip")] - ex[:, EXTRA_NAMES.index("tail_mid")], axis=1)
    assert 170 < np.median(tail) < 230


def test_rat_stays_in_the_corridor(healthy):
    c = Corridor()
    allpts = np.concatenate([healthy.keypoints_mm, healthy.extra_mm], axis=1)
    assert np.all(np.abs(allpts[..., 1]) <= c.width_mm / 2)
    assert np.all(np.abs(allpts[..., 0]) <= c.length_mm / 2)
    assert np.all(allpts[..., 2] >= 0) and np.all(allpts[..., 2] < c.wall_height_mm)


def test_behaviour_has_speed_changes_pauses_rears_and_turns(healthy):
    v = healthy.body_speed_mm_s
    assert v.max() > 300 and np.percentile(v[v > 50], 10) < 200
    assert len(healthy.pauses_s) >= 2
    assert len(healthy.rears_s) >= 1
    # Turning round: the nose heads both ways along the corridor.
    nose_x = healthy.keypoints_mm[:, 0, 0]
    heading = np.sign(np.diff(nose_x)[v[1:] > 100])
    assert (heading > 0).any() and (heading < 0).any()
    # Rearing lifts the nose well above walking height.
    assert healthy.keypoints_mm[:, 0, 2].max() > 120
    # Head turns: the head's direction leaves the body's by tens of degrees at times.
    kp, ex = healthy.keypoints_mm, healthy.extra_mm
    ears = (kp[:, KEYPOINTS.index("left_ear")] + kp[:, KEYPOINTS.index("right_ear")]) / 2
    head = kp[:, KEYPOINTS.index("nose"), :2] - ears[:, :2]
    body = ex[:, EXTRA_NAMES.index("spine_1"), :2] - ex[:, EXTRA_NAMES.index("spine_3"), :2]
    angle = np.degrees(np.abs(np.angle((head[:, 0] + 1j * head[:, 1]) / (body[:, 0] + 1j * body[:, 1]))))
    straight = (v > 150) & (np.abs(np.diff(ex[:, EXTRA_NAMES.index("spine_1"), 1], prepend=0)) < 1.0)
    assert np.percentile(angle, 99) > 25.0
    assert np.median(angle[straight]) < 15.0


def test_paws_fixed_on_the_floor_during_stance(healthy, fine):
    t, kp, _, st = fine
    for j, paw in enumerate(PAWS):
        k = KEYPOINTS.index(paw)
        assert np.all(kp[st[:, j], k, 2] == PAW_CONTACT_Z_MM), paw
        both = st[1:, j] & st[:-1, j]
        move = np.linalg.norm(np.diff(kp[:, k], axis=0), axis=1)[both]
        assert move.max() < 0.5, f"{paw} slid {move.max():.3f} mm between samples during stance"
        # Through a whole stance interval: the same spot.
        for a, b in healthy.contacts[paw][:20]:
            pa, _ = healthy.pose_at(np.array([a + 1e-6, (a + b) / 2, b - 1e-6]))
            spread = np.ptp(pa[:, k], axis=0)
            assert np.all(spread < 0.5), (paw, a, b, spread)


def test_paws_lifted_in_swing(healthy, fine):
    t, kp, _, st = fine
    for j, paw in enumerate(PAWS):
        k = KEYPOINTS.index(paw)
        z = kp[~st[:, j], k, 2]
        assert np.all(z > PAW_CONTACT_Z_MM - 1e-9)
        # Mid-swing heights of ordinary steps (not rears): about 1-2 cm.
        ph = healthy.motion.paw_phase(paw, t)
        frac = ph - np.floor(ph)
        mid = (np.abs(frac - (1 + DUTY_FACTOR) / 2) < 0.01) & ~_rear_mask(healthy, t) & (healthy.motion.in_stance(t)[:, j] == False)  # noqa: E712
        heights = kp[mid, k, 2] - PAW_CONTACT_Z_MM
        walking = heights[heights > 2.9]
        assert len(walking) > 50
        assert 8.0 < np.median(walking) < 20.0, (paw, np.median(walking))


def test_contacts_are_exact_event_times(healthy):
    eps = 1e-6
    end = healthy.times_s[-1]
    for j, paw in enumerate(PAWS):
        k = KEYPOINTS.index(paw)
        iv = healthy.contacts[paw]
        assert iv.ndim == 2 and iv.shape[1] == 2 and len(iv) > 40
        assert np.all(iv[:, 1] > iv[:, 0]) and np.all(iv[1:, 0] >= iv[:-1, 1])
        inner = iv[(iv[:, 0] > 0) & (iv[:, 1] < end)]
        td, lo = inner[:, 0], inner[:, 1]
        st_in = healthy.in_stance_at(np.concatenate([td + eps, lo - eps]))[:, j]
        st_out = healthy.in_stance_at(np.concatenate([td - eps, lo + eps]))[:, j]
        assert st_in.all() and not st_out.any(), paw
        # At touchdown the paw arrives at the floor; just before it is (barely) above it.
        kp_before, _ = healthy.pose_at(td - 1e-3)
        kp_at, _ = healthy.pose_at(td + 1e-9)
        assert np.all(kp_at[:, k, 2] == PAW_CONTACT_Z_MM)
        assert np.all(kp_before[:, k, 2] > PAW_CONTACT_Z_MM)
        assert np.all(kp_before[:, k, 2] < PAW_CONTACT_Z_MM + 3.0)
    # Per-frame booleans agree with the intervals.
    for j, paw in enumerate(PAWS):
        iv = healthy.contacts[paw]
        t = healthy.times_s
        from_iv = np.zeros(len(t), bool)
        for a, b in iv:
            from_iv |= (t >= a) & (t < b)
        interior = np.ones(len(t), bool)
        for a, b in iv:  # frames exactly on an event may go either way
            interior &= (np.abs(t - a) > 1e-9) & (np.abs(t - b) > 1e-9)
        assert np.array_equal(from_iv[interior], healthy.in_stance[interior, j]), paw


def test_diagonal_pairs_alternate(healthy, fine):
    t, _, _, st = fine
    walk = ~_rear_mask(healthy, t)
    fl, fr, hl, hr = (st[walk, PAWS.index(p)] for p in PAWS)
    # Trot: each diagonal pair moves together...
    assert np.array_equal(fl, hr) and np.array_equal(fr, hl)
    # ...and the two pairs are never in swing at the same time.
    assert not np.any(~fl & ~fr)
    # and they do take turns: both pairs swing, in alternation.
    lift_a = np.flatnonzero(np.diff(fl.astype(int)) == -1)
    lift_b = np.flatnonzero(np.diff(fr.astype(int)) == -1)
    assert len(lift_a) > 40 and abs(len(lift_a) - len(lift_b)) <= 3
    merged = np.sort(np.concatenate([lift_a, lift_b]))
    which = np.isin(merged, lift_a)
    assert np.mean(which[1:] != which[:-1]) > 0.9


def test_deterministic_per_seed():
    a = simulate(8.0, 30.0, seed=5)
    b = simulate(8.0, 30.0, seed=5)
    c = simulate(8.0, 30.0, seed=6)
    assert np.array_equal(a.keypoints_mm, b.keypoints_mm) and np.array_equal(a.extra_mm, b.extra_mm)
    for paw in PAWS:
        assert np.array_equal(a.contacts[paw], b.contacts[paw])
    assert not np.allclose(a.keypoints_mm, c.keypoints_mm)
    # pose_at agrees with the sampled arrays.
    kp, ex = a.pose_at(a.times_s)
    np.testing.assert_array_equal(kp, a.keypoints_mm)


def _strides(traj, paw):
    """Distances between successive touchdown spots of one paw, walking only."""
    k = KEYPOINTS.index(paw)
    iv = traj.contacts[paw]
    td = iv[(iv[:, 0] > 0), 0]
    pos, _ = traj.pose_at(td + 1e-6)
    steps = np.linalg.norm(np.diff(pos[:, k, :2], axis=0), axis=1)
    v = np.interp(td[1:], traj.times_s, traj.body_speed_mm_s)
    return steps[(steps > 60) & (v > 120)]


def test_lesion_shortens_one_side_by_the_given_fraction():
    healthy = simulate(60.0, 30.0, seed=21)
    lesioned = simulate(60.0, 30.0, seed=21, lesion=Lesion("left", 0.75))
    for traj in (healthy, lesioned):
        for paw in PAWS:
            assert len(_strides(traj, paw)) > 20
    h_ratio = np.median(_strides(healthy, "hind_left_paw")) / np.median(_strides(healthy, "hind_right_paw"))
    l_ratio = np.median(_strides(lesioned, "hind_left_paw")) / np.median(_strides(lesioned, "hind_right_paw"))
    f_ratio = np.median(_strides(lesioned, "front_left_paw")) / np.median(_strides(lesioned, "front_right_paw"))
    assert abs(h_ratio - 1.0) < 0.04
    assert abs(l_ratio - 0.75) < 0.05 and abs(f_ratio - 0.75) < 0.05
    # Stance stays exact with a lesion too.
    t = np.arange(0, 59, 0.001)
    kp, _ = lesioned.pose_at(t)
    st = lesioned.in_stance_at(t)
    for j, paw in enumerate(PAWS):
        assert np.all(kp[st[:, j], KEYPOINTS.index(paw), 2] == PAW_CONTACT_Z_MM)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="duration_s"):
        simulate(0.0, 30.0, seed=1)
    with pytest.raises(ValueError, match="scenario"):
        simulate(1.0, 30.0, seed=1, scenario="cylinder")
    with pytest.raises(ValueError, match="stride_factor"):
        Lesion("left", 1.5)
    with pytest.raises(ValueError, match="side"):
        Lesion("up", 0.8)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), lesioned=st.booleans())
def test_invariants_hold_for_any_seed(seed, lesioned):
    """Inside the corridor, stance exact and still, diagonal pairs in step (healthy)."""
    lesion = Lesion("right", 0.7) if lesioned else None
    traj = simulate(15.0, 30.0, seed=seed, lesion=lesion)
    c = Corridor()
    t = np.arange(0.0, traj.times_s[-1], 0.002)
    kp, ex = traj.pose_at(t)
    st_ = traj.in_stance_at(t)
    allpts = np.concatenate([kp, ex], axis=1)
    assert np.all(np.abs(allpts[..., 1]) <= c.width_mm / 2) and np.all(allpts[..., 2] >= 0)
    for j, paw in enumerate(PAWS):
        k = KEYPOINTS.index(paw)
        assert np.all(kp[st_[:, j], k, 2] == PAW_CONTACT_Z_MM)
        both = st_[1:, j] & st_[:-1, j]
        assert not np.any(np.diff(kp[:, k], axis=0)[both])
    if not lesioned:
        walk = ~_rear_mask(traj, t)
        assert np.array_equal(st_[walk, 0], st_[walk, 3]) and np.array_equal(st_[walk, 1], st_[walk, 2])
