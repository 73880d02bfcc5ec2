"""Kalman filter on a synthetic noisy walking-like 3D trajectory: smoothing, gating, coasting, prediction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.kalman import COASTING, GATED, NO_TRACK, STARTED, UPDATED, KalmanFilter3D, KalmanOptions

FPS = 30.0
K = 8


def walk(t: np.ndarray) -> np.ndarray:
    """(T,) s -> (T, K, 3) mm: keypoints of an animal walking along x at 200 mm/s, swaying sideways
    and bobbing 3 mm at a 2 Hz stride (a body keypoint's motion, not a paw's swing)."""
    out = np.empty((len(t), K, 3))
    for k in range(K):
        phase = 2 * np.pi * (2.0 * t + k / K)
        out[:, k, 0] = 200.0 * t + 3.0 * np.sin(phase) + 15 * k
        out[:, k, 1] = 25.0 * np.sin(2 * np.pi * 0.4 * t) + 1.5 * np.cos(phase) + (k % 2) * 30 - 15
        out[:, k, 2] = 20.0 + 3.0 * (1 - np.cos(phase)) + 5 * (k // 2)
    return out


def run(kf: KalmanFilter3D, t: np.ndarray, z: np.ndarray, err=None, score=None, ahead: float = 0.0):
    outs = [
        kf.step(int(round(ti * 1e9)), z[i], None if err is None else err[i], None if score is None else score[i], ahead)
        for i, ti in enumerate(t)
    ]
    return (np.array([o.filtered_mm for o in outs]), np.array([o.predicted_mm for o in outs]),
            np.array([o.status for o in outs]), np.array([o.variance_mm2 for o in outs]))


# the constant-velocity model (tau = inf): these tests exercise its mechanics on a body keypoint's
# steady walk; the default Ornstein-Uhlenbeck model is tested on simulated paws further down
CV = dict(velocity_time_constant_s=math.inf, two_view_noise_factor=1.0)
OPTS = KalmanOptions(accel_noise_mm_s2=1000.0, measurement_sigma_mm=3.0, mm_per_px=0.0, **CV)


def test_filtered_error_is_lower_than_raw_with_dropouts():
    rng = np.random.default_rng(0)
    t = np.arange(600) / FPS
    truth = walk(t)
    raw = truth + rng.normal(0, 3.0, truth.shape)
    raw[rng.random((len(t), K)) < 0.1] = np.nan  # dropouts
    filt, _, status, _ = run(KalmanFilter3D(K, OPTS), t, raw)
    e_raw = np.linalg.norm(raw - truth, axis=2)[30:]
    e_filt = np.linalg.norm(filt - truth, axis=2)[30:]
    assert np.isfinite(e_filt).all()  # dropouts are bridged
    assert np.nanmean(e_filt) < 0.85 * np.nanmean(e_raw)
    assert (status[30:][np.isnan(raw[30:, :, 0])] == COASTING).all()


def test_measurement_noise_follows_reprojection_error_and_score():
    rng = np.random.default_rng(1)
    t = np.arange(300) / FPS
    truth = walk(t)
    raw = truth + rng.normal(0, 1.0, truth.shape)
    bad = rng.random((len(t), K)) < 0.3
    raw[bad] += rng.normal(0, 12.0, (bad.sum(), 3))  # poor measurements, flagged by error and score
    err = np.where(bad, 25.0, 0.5)
    score = np.where(bad, 0.2, 0.95)
    opts = KalmanOptions(accel_noise_mm_s2=4000.0, measurement_sigma_mm=1.0, mm_per_px=0.5, gate_sigma=1e6, **CV)
    informed, *_ = run(KalmanFilter3D(K, opts), t, raw, err, score)
    blind, *_ = run(KalmanFilter3D(K, opts), t, raw)
    e_inf = np.linalg.norm(informed - truth, axis=2)[30:].mean()
    e_blind = np.linalg.norm(blind - truth, axis=2)[30:].mean()
    assert e_inf < 0.7 * e_blind


def test_gating_rejects_injected_outliers():
    rng = np.random.default_rng(2)
    t = np.arange(300) / FPS
    truth = walk(t)
    raw = truth + rng.normal(0, 2.0, truth.shape)
    frames = np.arange(40, 290, 25)
    raw[frames, 3] += np.array([80.0, -60.0, 50.0])  # e.g. a left/right swap in one view
    kf = KalmanFilter3D(K, OPTS)
    filt, _, status, _ = run(kf, t, raw)
    assert (status[frames, 3] == GATED).all()
    assert kf.gated_total[3] == len(frames)
    assert np.linalg.norm(filt[frames, 3] - truth[frames, 3], axis=1).max() < 10.0
    # without a gate the outliers drag the estimate
    ungated, *_ = run(KalmanFilter3D(K, KalmanOptions(4000.0, 3.0, 0.0, gate_sigma=1e9, **CV)), t, raw)
    assert np.linalg.norm(ungated[frames, 3] - truth[frames, 3], axis=1).min() > 20.0
    # outside the injected frames almost nothing is rejected
    others = np.ones(len(t), bool)
    others[frames] = False
    assert (status[others] == GATED).mean() < 0.01


def test_coasting_through_occlusion_then_giving_up_then_restarting():
    rng = np.random.default_rng(3)
    t = np.arange(200) / FPS
    truth = walk(t)
    raw = truth + rng.normal(0, 1.0, truth.shape)
    raw[60:66, 0] = np.nan  # 6 frames = 0.2 s: within max_coast_s = 0.25
    raw[100:130, 1] = np.nan  # 1 s: beyond it
    kf = KalmanFilter3D(K, KalmanOptions(4000.0, 1.0, 0.0, max_coast_s=0.25, **CV))
    filt, _, status, var = run(kf, t, raw)
    assert (status[60:66, 0] == COASTING).all()
    assert np.isfinite(filt[60:66, 0]).all()
    assert np.all(np.diff(var[59:66, 0, 0]) > 0)  # uncertainty grows while coasting
    assert np.linalg.norm(filt[60:66, 0] - truth[60:66, 0], axis=1).max() < 15.0
    assert status[66, 0] == UPDATED
    # keypoint 1: coasts for 0.25 s (7 frame periods), then NaN, then restarts at the next measurement
    coasting = np.flatnonzero(status[100:130, 1] == COASTING)
    assert len(coasting) == 7 and coasting[0] == 0
    assert (status[107:130, 1] == NO_TRACK).all() and np.isnan(filt[107:130, 1]).all()
    assert status[130, 1] == STARTED
    np.testing.assert_allclose(filt[130, 1], raw[130, 1])


def test_forward_prediction_compensates_latency():
    rng = np.random.default_rng(4)
    latency = 0.06
    t = np.arange(600) / FPS
    truth = walk(t)
    future = walk(t + latency)
    raw = truth + rng.normal(0, 2.0, truth.shape)
    filt, pred, _, _ = run(KalmanFilter3D(K, KalmanOptions(1000.0, 2.0, 0.0, **CV)), t, raw, ahead=latency)
    e_now = np.linalg.norm(filt - future, axis=2)[30:].mean()
    e_pred = np.linalg.norm(pred - future, axis=2)[30:].mean()
    assert e_pred < 0.6 * e_now, (e_pred, e_now)


def test_bad_input_is_refused():
    kf = KalmanFilter3D(K)
    with pytest.raises(ValueError, match=r"measurement_mm: expected shape \(8, 3\)"):
        kf.step(0, np.zeros((7, 3)))
    with pytest.raises(ValueError, match="gate_sigma"):
        KalmanOptions(gate_sigma=0)
    with pytest.raises(ValueError, match="n_keypoints"):
        KalmanFilter3D(0)


def test_vague_coasted_positions_are_reported_as_nan_while_the_track_goes_on():
    """report_max_sigma_mm hides a coasted estimate once it is vaguer than the bound; the track
    continues internally (the next measurement updates it instead of restarting it)."""
    rng = np.random.default_rng(5)
    t = np.arange(120) / FPS
    truth = walk(t)
    raw = truth + rng.normal(0, 1.0, truth.shape)
    raw[60:66, 0] = np.nan  # 0.2 s gap, within max_coast_s
    opts = KalmanOptions(4000.0, 1.0, 0.0, max_coast_s=0.25, report_max_sigma_mm=6.0, **CV)
    filt, _, status, var = run(KalmanFilter3D(K, opts), t, raw)
    sigma = np.sqrt(var[:, 0].max(axis=1))
    assert (status[60:66, 0] == COASTING).all()
    hidden = np.isnan(filt[60:66, 0, 0])
    assert hidden.any() and not hidden.all()  # the first coasted frames are still sharp enough
    np.testing.assert_array_equal(hidden, sigma[60:66] > 6.0)
    assert status[66, 0] == UPDATED and np.isfinite(filt[66, 0]).all()
    # without the bound every coasted frame is reported
    filt_all, *_ = run(KalmanFilter3D(K, KalmanOptions(4000.0, 1.0, 0.0, max_coast_s=0.25, **CV)), t, raw)
    assert np.isfinite(filt_all[60:66, 0]).all()
    with pytest.raises(ValueError, match="report_max_sigma_mm"):
        KalmanOptions(report_max_sigma_mm=0.0)


def test_per_keypoint_motion_models():
    """A smooth body keypoint is filtered better by a constant-velocity model with little process
    noise than by the paw-oriented default (decaying velocity, 1e4 mm/s^2); `motion` sets it per
    keypoint and leaves the others on the options' model."""
    rng = np.random.default_rng(6)
    t = np.arange(600) / FPS
    truth = walk(t)
    raw = truth + rng.normal(0, 3.0, truth.shape)
    default = KalmanOptions(measurement_sigma_mm=3.0, mm_per_px=0.0, two_view_noise_factor=1.0)
    motion = [(1000.0, math.inf)] * 4 + [None] * 4
    f_mixed, *_ = run(KalmanFilter3D(K, default, motion), t, raw)
    f_default, *_ = run(KalmanFilter3D(K, default), t, raw)
    e_mixed = np.linalg.norm(f_mixed - truth, axis=2)[30:].mean(axis=0)
    e_default = np.linalg.norm(f_default - truth, axis=2)[30:].mean(axis=0)
    assert (e_mixed[:4] < 0.8 * e_default[:4]).all(), (e_mixed, e_default)
    np.testing.assert_allclose(f_mixed[:, 4:], f_default[:, 4:])  # None: unchanged
    with pytest.raises(ValueError, match="motion: expected 8 entries"):
        KalmanFilter3D(K, default, motion[:3])
    with pytest.raises(ValueError, match=r"motion\[1\]"):
        KalmanFilter3D(K, default, [None, (0.0, 1.0)] + [None] * 6)
