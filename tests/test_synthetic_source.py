"""The live synthetic frame source: synchronised cameras and faults on demand."""
from __future__ import annotations

import numpy as np
import pytest

from ratrig.clock import now_ns
from synthetic.rig import CAMERA_NAMES
from synthetic.source import Faults, SyntheticSource

EPOCH = 5_000_000_000


@pytest.fixture(scope="module")
def pair():
    a = SyntheticSource("cam_ne", fps=30, seed=9, epoch_ns=EPOCH, trajectory_s=30.0)
    b = SyntheticSource("cam_sw", fps=30, seed=9, epoch_ns=EPOCH, trajectory_s=30.0)
    return a, b


def test_cameras_with_one_seed_film_one_rat(pair):
    a, b = pair
    for t in (0.0, 1.234, 7.5, 21.0):
        ka, ea = a.pose_at(t)
        kb, eb = b.pose_at(t)
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(ea, eb)
    other = SyntheticSource("cam_ne", fps=30, seed=10, epoch_ns=EPOCH, trajectory_s=30.0)
    assert not np.allclose(other.pose_at(5.0)[0], a.pose_at(5.0)[0])
    # Different cameras see it differently; the same camera renders the same time identically.
    fa, fb = a.render_at(3.0), b.render_at(3.0)
    assert fa.shape == (480, 640, 3) and fa.dtype == np.uint8
    assert not np.array_equal(fa, fb)
    assert np.array_equal(fa, a.render_at(3.0))
    assert a.calibration.names == CAMERA_NAMES


def test_read_renders_the_pose_at_the_capture_time():
    src = SyntheticSource("cam_nw", fps=30, seed=2, trajectory_s=20.0, epoch_ns=now_ns() - 2_000_000_000)
    ok, frame, stamp = src.read()
    assert ok and frame is not None
    t = (stamp - src.epoch_ns) / 1e9
    assert 2.0 <= t < 4.0
    assert np.array_equal(frame, src.render_at(t))
    assert src.frame_index == 0


def test_dropped_frames_and_jitter():
    src = SyntheticSource("cam_se", fps=30, seed=4, trajectory_s=10.0,
                          faults=Faults(drop_prob=0.3, jitter_ms=2.0))
    oks = []
    errors_ms = []
    for _ in range(150):
        before = now_ns()
        ok, frame, stamp = src.read()
        oks.append(ok)
        assert not src.dead
        assert src.last_true_capture_ns >= before
        if ok:
            assert frame is not None
            errors_ms.append((stamp - src.last_true_capture_ns) / 1e6)
            # the picture shows the true capture instant, not the jittered stamp
            t_true = (src.last_true_capture_ns - src.epoch_ns) / 1e9
            if len(errors_ms) <= 3:
                assert np.array_equal(frame, src.render_at(t_true))
        else:
            assert frame is None
    assert 1.4 < np.std(errors_ms) < 2.8 and abs(np.mean(errors_ms)) < 0.8
    drop_rate = 1 - np.mean(oks)
    assert 0.15 < drop_rate < 0.45
    assert src.frame_index == 149  # dropped frames still use up a frame slot
    clean = SyntheticSource("cam_se", fps=30, seed=4, trajectory_s=10.0)
    assert all(clean.read()[0] for _ in range(20))


def test_camera_dies_mid_session():
    src = SyntheticSource("cam_ne", fps=30, seed=1, trajectory_s=10.0, faults=Faults(die_after_s=0.3))
    results = []
    while len(results) < 2000:
        ok, frame, _ = src.read()
        results.append(ok)
        if src.dead:
            break
    assert sum(results) > 5 and not results[-1] and src.dead
    assert (src.last_true_capture_ns - src.epoch_ns) / 1e9 >= 0.3
    assert all(not src.read()[0] for _ in range(3))


def test_paced_source_runs_at_its_frame_rate():
    src = SyntheticSource("cam_sw", fps=50, seed=1, trajectory_s=10.0, paced=True)
    stamps = []
    for _ in range(15):
        ok, _, stamp = src.read()
        assert ok
        stamps.append(stamp)
    np.testing.assert_allclose(np.median(np.diff(stamps)) / 1e6, 20.0, atol=1.0)


def test_bad_arguments_are_refused():
    with pytest.raises(KeyError, match="cam_zz"):
        SyntheticSource("cam_zz")
    with pytest.raises(ValueError, match="drop_prob"):
        Faults(drop_prob=1.5)
    with pytest.raises(ValueError, match="fps"):
        SyntheticSource("cam_ne", fps=0)
