"""Gait analysis against the synthetic walking rat, whose every contact and stride is known exactly."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.bouts import straight_walking_bouts
from analysis.contacts import ContactParams, detect_contacts, paw_speed_mm_s
from analysis.series import hysteresis, runs
from analysis.gait import GaitParams, analyse_gait, asymmetry_index, step_sequence
from analysis.quality import floor_from_quality, session_quality
from analysis.session import PoseSession, SessionMeta
from ratrig.skeleton import PAWS
from synthetic.rat import Lesion, simulate

FPS = 30.0
NOISE_MM = 1.0


def _session(tr, lesion_side: str = "none", noise_mm: float = NOISE_MM, seed: int = 0) -> PoseSession:
    rng = np.random.default_rng(seed)
    kp = tr.keypoints_mm + rng.normal(0.0, noise_mm, tr.keypoints_mm.shape)
    return PoseSession(tr.times_s, kp, tuple(tr.keypoint_names),
                       meta=SessionMeta(session_id="synthetic", lesion_side=lesion_side, test_type="open_walk"))


def _analyse(session: PoseSession):
    q = session_quality(session)
    return analyse_gait(session, floor_from_quality(q), GaitParams())


def _truth_strides(tr, bouts, paw: str, max_stride_s: float = GaitParams().max_stride_s):
    """Truth strides of a paw whose touchdowns fall in one detected bout: (td0, lo0, td1, length_mm)."""
    c = tr.contacts[paw]
    b = bouts.bout_of_time(c[:, 0])
    idx = np.flatnonzero((b[:-1] >= 0) & (b[:-1] == b[1:]) & (np.diff(c[:, 0]) <= max_stride_s))
    # during stance a paw is fixed on the floor: its print is its position at mid-stance
    kp, _ = tr.pose_at(0.5 * (c[:, 0] + c[:, 1]))
    prints = kp[:, list(tr.keypoint_names).index(paw), :2]
    length = np.hypot(*(prints[idx + 1] - prints[idx]).T)
    return c[idx, 0], c[idx, 1], c[idx + 1, 0], length


@pytest.fixture(scope="module")
def healthy():
    tr = simulate(240.0, FPS, seed=11)
    session = _session(tr)
    return tr, session, _analyse(session)


@pytest.fixture(scope="module")
def lesioned():
    # the left side's stride is shortened: a right-hemisphere lesion (left = contralateral)
    tr = simulate(240.0, FPS, seed=12, lesion=Lesion("left", 0.8))
    session = _session(tr, lesion_side="right", seed=1)
    return tr, session, _analyse(session)


def test_contacts_match_truth_within_a_frame(healthy):
    tr, _, g = healthy
    for paw in PAWS:
        truth = tr.contacts[paw]
        found = g.contacts[paw].as_array()
        assert abs(len(found) - len(truth)) <= max(2, 0.02 * len(truth)), paw
        j = np.clip(np.searchsorted(found[:, 0], truth[:, 0]), 1, len(found) - 1)
        j = np.where(np.abs(found[j - 1, 0] - truth[:, 0]) < np.abs(found[j, 0] - truth[:, 0]), j - 1, j)
        td_err = found[j, 0] - truth[:, 0]
        lo_err = found[j, 1] - truth[:, 1]
        matched = np.abs(td_err) < 1.5 / FPS
        # over the whole session (turns, pauses, rears: slow micro-steps, paws coming down slowly) ...
        assert matched.mean() > 0.9, paw
        # ... and on straight walking, where gait is measured, nearly all
        walking = g.bouts.bout_of_time(truth[:, 0]) >= 0
        assert walking.sum() > 100
        assert matched[walking].mean() > 0.99, paw
        # frame quantisation centred on zero: no systematic early/late bias
        assert abs(np.median(td_err[matched])) < 0.25 / FPS, paw
        assert abs(np.median(lo_err[matched])) < 0.25 / FPS, paw


def test_strides_match_truth(healthy):
    tr, _, g = healthy
    s = g.strides
    n_truth = 0
    len_err, stance_err, swing_err = [], [], []
    for paw in PAWS:
        td0, lo0, td1, length = _truth_strides(tr, g.bouts, paw)
        n_truth += td0.size
        d = s[s["paw"] == paw]
        k = np.clip(np.searchsorted(td0, d["touchdown_s"].to_numpy()), 1, max(td0.size - 1, 1))
        k = np.where(np.abs(td0[k - 1] - d["touchdown_s"].to_numpy()) < np.abs(td0[k] - d["touchdown_s"].to_numpy()), k - 1, k)
        ok = np.abs(td0[k] - d["touchdown_s"].to_numpy()) < 1.5 / FPS
        len_err.extend(np.abs(d["stride_length_mm"].to_numpy()[ok] - length[k[ok]]))
        stance_err.extend(np.abs(d["stance_s"].to_numpy()[ok] - (lo0 - td0)[k[ok]]))
        swing_err.extend(np.abs(d["swing_s"].to_numpy()[ok] - (td1 - lo0)[k[ok]]))
    assert n_truth > 400  # the test rests on enough strides
    assert abs(len(s) - n_truth) <= 0.02 * n_truth
    assert len(len_err) >= 0.98 * n_truth  # strides are matched one to one, not just counted
    assert np.median(len_err) < 3.0
    assert np.median(stance_err) <= 1.0 / FPS
    assert np.median(swing_err) <= 1.0 / FPS
    # a healthy rat is symmetric
    a = g.summary["asymmetry"]
    assert abs(a["fore"]["stride_length_mm"]["index"]) < 0.03
    assert abs(a["hind"]["stride_length_mm"]["index"]) < 0.03


def test_lesioned_asymmetry_within_ten_percent_of_truth(lesioned):
    tr, _, g = lesioned
    a = g.summary["asymmetry"]
    assert a["convention"].startswith("(contra - ipsi)")
    for limb, (left, right) in {"fore": ("front_left_paw", "front_right_paw"),
                                "hind": ("hind_left_paw", "hind_right_paw")}.items():
        contra = np.median(_truth_strides(tr, g.bouts, left)[3])
        ipsi = np.median(_truth_strides(tr, g.bouts, right)[3])
        truth = (contra - ipsi) / (contra + ipsi)
        # stride factor 0.8 on the contralateral side: (0.8 - 1) / (0.8 + 1) = -0.11 at equal speeds
        assert -0.14 < truth < -0.07
        found = a[limb]["stride_length_mm"]["index"]
        assert abs(found - truth) <= 0.1 * abs(truth), (limb, found, truth)
    # the contralateral side makes more, shorter steps
    paws = g.summary["paws"]
    assert paws["front_left_paw"]["laterality"] == "contra"
    assert paws["front_left_paw"]["n_strides"] > paws["front_right_paw"]["n_strides"]


def test_bouts_exclude_pauses_and_rears(healthy):
    tr, _, g = healthy
    b = g.bouts
    assert b.n >= 10
    for t0, t1 in np.r_[tr.pauses_s, tr.rears_s]:
        overlap = np.minimum(b.end_s, t1) - np.maximum(b.start_s, t0)
        assert np.all(overlap < 0.3), (t0, t1)
    assert np.all(b.speed_mm_s > GaitParams().bouts.min_speed_mm_s)


def test_step_sequence_and_regularity(healthy):
    _, _, g = healthy
    # the synthetic trot places diagonal pairs together: every group of four is a normal pattern
    assert g.summary["regularity_index_pct"] > 95.0
    assert g.summary["regularity_placements"] > 400
    counts, n = step_sequence(["LF", "RH", "RF", "LH"] * 5)
    assert counts["Ab"] == 5 and n == 20
    # an irregular placement in the middle breaks one group
    counts, n = step_sequence(["RF", "RH", "LF", "LH", "RF", "RF", "RH", "LF", "LH"])
    assert counts["Aa"] == 2 and n == 9
    counts, n = step_sequence(["LF", "LF", "LF", "LF"])
    assert sum(counts.values()) == 0 and n == 0


def test_phases_of_a_trot(healthy):
    _, _, g = healthy
    ph = g.summary["phases"]
    # healthy trot: left/right half a cycle apart, diagonal pairs in phase (0 == 1 on the circle)
    assert abs(ph["fore_left_right"]["mean_phase"] - 0.5) < 0.05
    d = ph["diagonal_LF_RH"]["mean_phase"]
    assert min(d, 1 - d) < 0.05


def test_speed_normalised_values_remove_speed(healthy):
    _, _, g = healthy
    s = g.strides
    raw = np.corrcoef(s["body_speed_mm_s"], s["stride_length_mm"])[0, 1]
    norm = np.corrcoef(s["body_speed_mm_s"], s["stride_length_mm_at_ref_speed"])[0, 1]
    assert raw > 0.5  # rats lengthen strides with speed
    assert abs(norm) < 0.1


def test_hysteresis_and_runs():
    strong = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    weak = np.array([0, 1, 1, 1, 0, 1, 1, 1, 1, 0], bool)
    assert hysteresis(strong, weak).astype(int).tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    s, e = runs(np.array([1, 1, 0, 1, 0, 0, 1], bool))
    assert s.tolist() == [0, 3, 6] and e.tolist() == [1, 3, 6]


def test_detect_contacts_on_minimum_jerk_steps():
    """A paw resting 0.2 s and swinging 0.15 s on a minimum-jerk path (60 mm, 10 mm high), at 100 fps:
    every stance found, durations within a frame of the truth."""
    fps, stance_s, swing_s, n = 100.0, 0.2, 0.15, 12
    t = np.arange(int(n * (stance_s + swing_s) * fps)) / fps
    cyc = t % (stance_s + swing_s)
    k = np.floor(t / (stance_s + swing_s))
    u = np.clip((cyc - stance_s) / swing_s, 0.0, 1.0)
    s = 10 * u**3 - 15 * u**4 + 6 * u**5
    x = 60.0 * (k + s)
    z = 4.0 + 10.0 * np.sin(np.pi * u)
    paw = np.c_[x, np.zeros_like(x), z]
    c = detect_contacts(t, paw, z, ContactParams())
    assert c.n == n
    dur = c.liftoff_s - c.touchdown_s
    assert np.all(np.abs(dur[:-1] - stance_s) <= 1.0 / fps + 1e-9)  # the last one is cut by the end
    td_truth = np.arange(1, n) * (stance_s + swing_s)
    assert np.all(np.abs(c.touchdown_s[1:] - td_truth) <= 1.0 / fps)


def test_contacts_ignore_unseen_frames():
    t = np.arange(100) / 30.0
    paw = np.zeros((100, 3))
    paw[40:45] = np.nan
    c = detect_contacts(t, paw, paw[:, 2], ContactParams())
    # a 5-frame (167 ms) hole is a real gap; no contact spans it
    assert c.n == 2
    assert c.last_frame[0] < 40 and c.first_frame[1] > 44


def test_speed_is_central_difference():
    t = np.arange(5) / 10.0
    p = np.c_[np.array([0.0, 0.0, 1.0, 3.0, 6.0]), np.zeros(5), np.zeros(5)]
    v = paw_speed_mm_s(t, p)
    assert np.allclose(v, [0.0, 5.0, 15.0, 25.0, 30.0])


def test_asymmetry_index():
    assert asymmetry_index(80.0, 100.0) == pytest.approx(-20.0 / 180.0)
    assert np.isnan(asymmetry_index(0.0, 0.0))


def test_no_walking_no_strides():
    t = np.arange(300) / 30.0
    kp = np.zeros((300, 8, 3))
    kp[:, :, 0] = np.arange(8)[None, :] * 10.0  # a still rat
    kp[:, 3, 0] = -100.0  # tail base behind
    s = PoseSession(t, kp, tuple(["nose", "left_ear", "right_ear", "tail_base"] + list(PAWS)))
    g = analyse_gait(s, None)
    assert g.bouts.n == 0 and len(g.strides) == 0
    assert g.summary["regularity_index_pct"] is None
    assert straight_walking_bouts(s).n == 0


def test_missing_frames_cost_little(healthy):
    """3 % of keypoints lost at random (as from occlusions): strides still found and measured."""
    tr, _, g_full = healthy
    rng = np.random.default_rng(5)
    kp = tr.keypoints_mm + rng.normal(0.0, NOISE_MM, tr.keypoints_mm.shape)
    kp[rng.random(kp.shape[:2]) < 0.03] = np.nan
    s = PoseSession(tr.times_s, kp, tuple(tr.keypoint_names), meta=SessionMeta(session_id="holes"))
    g = _analyse(s)
    assert abs(len(g.strides) - len(g_full.strides)) <= 0.03 * len(g_full.strides)
    for paw in PAWS:
        a = g.strides.loc[g.strides["paw"] == paw, "stride_length_mm"].median()
        b = g_full.strides.loc[g_full.strides["paw"] == paw, "stride_length_mm"].median()
        assert abs(a - b) < 2.0
