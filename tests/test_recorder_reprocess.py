"""Offline reprocessing: 2D filters, aniposelib triangulation, and offline vs live error on synthetic truth."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from recorder.filters import median_filter, viterbi_filter
from recorder.align import align_frame_sets

REPO = Path(__file__).resolve().parents[1]


def _track(n=40):
    t = np.arange(n)
    pts = np.zeros((n, 1, 3))
    pts[:, 0, 0] = 100 + 2.0 * t
    pts[:, 0, 1] = 200 + 0.5 * t
    pts[:, 0, 2] = 0.95
    return pts


def test_median_filter_removes_a_jump_and_keeps_the_track():
    pts = _track()
    pts[20, 0, :2] += [60, -40]
    out = median_filter(pts, size=7, offset_threshold_px=15)
    assert np.isnan(out[20, 0, 0]) and out[20, 0, 2] == 0
    keep = np.arange(40) != 20
    assert np.allclose(out[keep, 0, :2], pts[keep, 0, :2])


def test_viterbi_filter_rejects_isolated_jump_and_bridges_a_dropout():
    pts = _track()
    pts[10, 0, :2] += [80, 80]  # a confident wrong detection
    pts[25, 0] = np.nan  # a missed frame
    out = viterbi_filter(pts, n_back=2, sigma_px=6.0)
    assert not np.allclose(out[10, 0, :2], pts[10, 0, :2])
    assert np.linalg.norm(out[10, 0, :2] - (pts[9, 0, :2])) < 1e-9  # the previous frame's detection
    assert np.allclose(out[25, 0, :2], pts[24, 0, :2])  # bridged with a recent detection
    assert np.allclose(out[30:, 0, :2], pts[30:, 0, :2])


def test_align_frame_sets_groups_by_time_and_leaves_holes():
    a = np.array([0, 33, 66, 100])
    b = np.array([1, 67, 101])  # b missed the frame at 33
    sets, rows = align_frame_sets([a, b], 16)
    assert sets.tolist() == [0, 33, 66, 100]
    assert rows.tolist() == [[0, 1, 2, 3], [0, -1, 1, 2]]


@pytest.mark.slow
def test_offline_optimisation_beats_live_filter_on_synthetic_truth(tmp_path):
    spec = importlib.util.spec_from_file_location("recorder_experiment", REPO / "bench" / "recorder_experiment.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    res = exp.run(tmp_path, duration_s=2.0, seed=3, methods=(("median", "optim", False),))
    live, off = res["live_filtered"], res["offline_median_optim"]
    print(json.dumps(res, indent=1))
    assert res["live_poses"] == res["frames"]
    assert off["coverage"] > 0.95
    assert off["median_mm"] < live["median_mm"]
    assert off["mean_mm"] < live["mean_mm"]
    assert off["median_mm"] < res["live_raw"]["median_mm"]
    # the result sits beside the live files, never over them
    s = tmp_path / "session"
    assert (s / "pose3d.csv").is_file() and (s / "reprocessed" / "median_optim" / "pose3d.csv").is_file()
    info = json.loads((s / "reprocessed" / "median_optim" / "result.json").read_text())
    assert info["triangulation"] == "optim" and info["calibration"]["sha256"]


MODEL = Path(__import__("os").environ.get("RATRIG_TEST_MODEL", REPO / "inference" / "models" / "synthrat"))


@pytest.mark.slow
@pytest.mark.skipif(not (MODEL / "pose_cfg.yaml").is_file(), reason=f"no trained model at {MODEL}")
def test_reprocess_reruns_dlclive_on_recorded_frames(tmp_path):
    from ratrig.config import CameraConfig, InferenceConfig, RigConfig
    from ratrig.messages import FramePacket
    from recorder.reprocess import reprocess
    from recorder.session import open_session
    from recorder.video import check_codec
    from recorder.writer import SessionWriter
    from synthetic.rat import simulate
    from synthetic.render import Renderer
    from synthetic.rig import CAMERA_NAMES, default_rig

    calib = default_rig()
    calib.save(tmp_path / "calibration.toml")
    traj = simulate(0.5, 30.0, 2)
    r = Renderer(calib, seed=2)
    rig = RigConfig(name="t", cameras=[CameraConfig(n, "synthetic") for n in CAMERA_NAMES],
                    inference=InferenceConfig(model=str(MODEL), resize=0.5))
    w = SessionWriter(tmp_path / "s", rig, check_codec("ffv1"), calibration_path=str(tmp_path / "calibration.toml"),
                      model_path=str(MODEL))
    frames = {}
    for i in range(6):
        for c, cam in enumerate(CAMERA_NAMES):
            img = r.render(c, traj.keypoints_mm[i], traj.extra_mm[i], float(traj.times_s[i]))
            frames[(cam, i)] = img
            w.submit_frame(FramePacket(cam, i, 10**10 + i * 33_333_333, img))
    w.close()
    s = open_session(tmp_path / "s")
    out = reprocess(s, filter_name="none", triangulation="dlt", progress=False, name="rerun")
    # the 2D written equals dlclive run directly on the original (pre-encoding) frames: FFV1 is lossless
    import dlclive

    live = dlclive.DLCLive(str(MODEL), model_type="base", resize=0.5)
    p2 = s.pose2d(CAMERA_NAMES[1], result="rerun")
    assert p2.frame_index.tolist() == list(range(6))
    for i in range(6):
        img = frames[(CAMERA_NAMES[1], i)]
        pose = live.init_inference(img) if i == 0 else live.get_pose(img)
        assert np.allclose(p2.points[i], pose[:, :3], atol=1e-3, equal_nan=True)
    info = json.loads((out / "result.json").read_text())
    assert info["model"]["sha256"] and info["inference"].startswith("rerun")
    assert len(s.pose3d(result="rerun").fnum) == 6


@pytest.mark.parametrize("method", ["dlt", "ransac"])
def test_triangulate_sets_recovers_points_and_leaves_unseen_ones_nan(tmp_path, method):
    from recorder.reprocess import load_camera_group, triangulate_sets
    from synthetic.rig import CAMERA_NAMES, default_rig

    calib = default_rig()
    calib.save(tmp_path / "c.toml")
    cg = load_camera_group(tmp_path / "c.toml", CAMERA_NAMES)
    truth = np.array([[[0.0, 0.0, 30.0], [50.0, 10.0, 60.0], [-40.0, 5.0, 20.0]]] * 3)  # (S=3, K=3, 3)
    pts = np.stack([np.concatenate([calib.cameras[c].project(truth.reshape(-1, 3)).reshape(3, 3, 2),
                                    np.full((3, 3, 1), 0.9)], -1) for c in range(4)])
    pts[:, :, 2] = np.nan  # keypoint 2 seen by no camera
    pts[1:, 1, 1] = np.nan  # keypoint 1 of frame 1 seen by one camera only
    res = triangulate_sets(cg, pts, method, 0.5)
    assert np.allclose(res["p3d"][:, 0], truth[:, 0], atol=0.05)
    assert np.all(np.isnan(res["p3d"][:, 2])) and np.isnan(res["p3d"][1, 1]).all()
    assert res["ncams"][0, 0] >= 2 and res["ncams"][1, 1] <= 1
    assert np.all(res["error"][:, 0] < 0.1)
