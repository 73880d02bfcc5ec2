"""Gait on realistically bad 3D: triangulation noise, wrong two-view triangulations, dropped frames.

The synthetic walking rat's exact contacts and strides are the truth; the poses it is analysed from
carry what live fusion really delivers: a few millimetres of noise everywhere, paws seen by only two
cameras now and then triangulated 50-100 mm off (for one to three frames, with an unremarkable
reprojection error: two rays always nearly meet), and frames the pipeline dropped.
"""
from __future__ import annotations

import numpy as np
import pytest

from analysis.contacts import TrackCleanParams, clean_paw_track
from analysis.gait import GaitParams, analyse_gait
from analysis.quality import floor_from_quality, session_quality
from analysis.session import PoseSession, SessionMeta
from ratrig.skeleton import PAWS
from synthetic.rat import simulate

FPS = 30.0


def _realistic(tr, noise_mm: float = 4.5, outlier_frac: float = 0.05, drop_frac: float = 0.05,
               seed: int = 3) -> PoseSession:
    rng = np.random.default_rng(seed)
    kp = tr.keypoints_mm + rng.normal(0.0, noise_mm, tr.keypoints_mm.shape)
    t_n, k_n = kp.shape[:2]
    ncams = np.full((t_n, k_n), 4.0)
    error = np.abs(rng.normal(1.5, 0.5, (t_n, k_n)))
    for paw in PAWS:
        k = tr.keypoint_names.index(paw)
        # a paw is seen by two cameras in runs; some of those frames triangulate far off
        ncams[:, k] = np.where(rng.random(t_n) < 0.6, 2.0, 3.0)
        starts = np.flatnonzero(rng.random(t_n) < outlier_frac / 2.0)
        for s in starts:
            n = int(rng.integers(1, 4))
            d = rng.normal(size=3)
            kp[s:s + n, k] += (d / np.linalg.norm(d)) * rng.uniform(50.0, 100.0)
            ncams[s:s + n, k] = 2.0
    keep = rng.random(t_n) >= drop_frac
    return PoseSession(tr.times_s[keep], kp[keep], tuple(tr.keypoint_names), error_px=error[keep],
                       ncams=ncams[keep], meta=SessionMeta(session_id="realistic", test_type="open_walk"))


@pytest.fixture(scope="module")
def noisy():
    tr = simulate(240.0, FPS, seed=21)
    session = _realistic(tr)
    return tr, session, analyse_gait(session, floor_from_quality(session_quality(session)), GaitParams())


def test_outliers_are_removed_and_noise_reduced():
    tr = simulate(60.0, FPS, seed=5)
    session = _realistic(tr, seed=5)
    k = tr.keypoint_names.index("hind_left_paw")
    keep = np.isin(tr.times_s, session.times_s)
    truth = tr.keypoints_mm[keep, k]
    raw = session.keypoints_mm[:, k]
    clean = clean_paw_track(session.times_s, raw, session.error_px[:, k], TrackCleanParams())
    raw_err = np.linalg.norm(raw - truth, axis=1)
    err = np.linalg.norm(clean - truth, axis=1)
    assert np.percentile(raw_err, 99) > 40.0  # the outliers are there...
    assert np.nanpercentile(err, 99) < 15.0  # ...and gone
    assert np.nanmedian(err) < 0.8 * np.median(raw_err)  # smoothing averages noise down
    assert np.isfinite(err).mean() > 0.97  # short holes are bridged, not left


def test_strides_survive_realistic_noise(noisy):
    tr, _, g = noisy
    s = g.strides
    n_truth, len_err, td_err = 0, [], []
    for paw in PAWS:
        c = tr.contacts[paw]
        b = g.bouts.bout_of_time(c[:, 0])
        n_truth += int(np.sum((b[:-1] >= 0) & (b[:-1] == b[1:]) & (np.diff(c[:, 0]) <= GaitParams().max_stride_s)))
        # during stance a paw is fixed on the floor: its print is its position at mid-stance
        kp, _ = tr.pose_at(0.5 * (c[:, 0] + c[:, 1]))
        prints = kp[:, tr.keypoint_names.index(paw), :2]
        length = np.hypot(*(prints[1:] - prints[:-1]).T)  # true stride i: contact i to contact i + 1
        d = s[s["paw"] == paw]
        td0, td1 = d["touchdown_s"].to_numpy(), d["next_touchdown_s"].to_numpy()
        j = np.clip(np.searchsorted(c[:, 0], td0), 1, c.shape[0] - 2)
        j = np.where(np.abs(c[j - 1, 0] - td0) < np.abs(c[j, 0] - td0), j - 1, j)
        # a found stride is a true one when both its touchdowns are within 2.5 frames of the truth's
        ok = (np.abs(c[j, 0] - td0) < 2.5 / FPS) & (np.abs(c[j + 1, 0] - td1) < 2.5 / FPS)
        len_err.extend(np.abs(d["stride_length_mm"].to_numpy()[ok] - length[j[ok]]))
        td_err.extend(np.abs(td0[ok] - c[j[ok], 0]))
    assert n_truth > 300
    assert abs(len(s) - n_truth) <= 0.05 * n_truth, (len(s), n_truth)
    assert len(len_err) >= 0.9 * n_truth  # matched to true strides, not just counted
    assert np.median(len_err) < 5.0
    assert np.median(td_err) <= 1.0 / FPS


def test_one_paw_with_noise_outliers_and_under_floor_samples():
    """A paw resting 0.3 s and swinging 0.2 s (80 mm forward, 15 mm high) at 30 fps, seen with 4.5 mm
    noise, single-frame outliers and a few frames triangulated under the floor: every stance found,
    each within 1.5 frames of the truth, with the default thresholds (which adapt to the noise)."""
    from analysis.contacts import ContactParams, detect_contacts

    fps, stance_s, swing_s, n = 30.0, 0.3, 0.2, 40
    t = np.arange(int(n * (stance_s + swing_s) * fps)) / fps
    cyc, k = t % (stance_s + swing_s), np.floor(t / (stance_s + swing_s))
    u = np.clip((cyc - stance_s) / swing_s, 0.0, 1.0)
    truth = np.c_[80.0 * (k + 10 * u**3 - 15 * u**4 + 6 * u**5), np.zeros_like(t), 4.0 + 15.0 * np.sin(np.pi * u)]
    rng = np.random.default_rng(7)
    raw = truth + rng.normal(0.0, 4.5, truth.shape)
    out = rng.random(t.size) < 0.05
    raw[out] += rng.choice([-1.0, 1.0], (out.sum(), 3)) * rng.uniform(35.0, 60.0, (out.sum(), 3))
    under = rng.random(t.size) < 0.03
    raw[under, 2] -= 30.0
    clean = clean_paw_track(t, raw, None, TrackCleanParams(), raw[:, 2])
    c = detect_contacts(t, clean, clean[:, 2], ContactParams())
    td_truth = np.arange(1, n) * (stance_s + swing_s)
    assert c.n == n
    assert np.all(np.abs(c.touchdown_s[1:] - td_truth) <= 1.5 / fps + 1e-9)
    # the same track without cleaning falls apart: outliers split and hide stances
    naive = detect_contacts(t, raw, raw[:, 2], ContactParams())
    hits = np.sum(np.min(np.abs(naive.touchdown_s[:, None] - td_truth[None, :]), axis=0) <= 1.5 / fps) if naive.n else 0
    assert naive.n != n or hits < n - 1
