"""The demo's live evaluator: exact outputs score zero, known offsets score exactly."""
from __future__ import annotations

import numpy as np

from ratrig.config import load_config, replace_section
from ratrig.messages import Keypoints2DPacket, Pose3DPacket
from ratrig.skeleton import KEYPOINTS
from synthetic.evaluate import Evaluator
from synthetic.live import LiveCamera, SyntheticTruth, corridor_of
from synthetic.render import Renderer

from tests.helpers import REPO


def make():
    rig = replace_section(load_config(REPO / "configs" / "synthetic.toml"), "synthetic", session_s=20.0)
    truth = SyntheticTruth.from_rig_config(rig)
    return rig, truth, Evaluator(truth, Renderer(truth.calibration, corridor_of(rig)), rig.keypoints, every_2d=1)


def test_exact_outputs_score_zero_and_offsets_score_their_size():
    rig, truth, ev = make()
    names = tuple(KEYPOINTS)
    for k in range(100, 110):
        kp = truth.keypoints_mm(k)
        for cam in truth.calibration.cameras:
            px = cam.project(kp)
            pred = np.column_stack([px + np.array([3.0, 4.0]), np.ones(len(px))]).astype(np.float32)
            ev.add_pose2d(Keypoints2DPacket(cam.name, k, 0, names, pred))
        raw = kp + np.array([0.0, 0.0, 2.0])
        ev.add_pose3d(Pose3DPacket(k, 0, names, truth.calibration.names, raw, kp.copy(), np.zeros(8),
                                   np.full(8, 4, np.int8), np.ones(8), frame_indices={"cam_ne": k}))
    rep = ev.report()["accuracy"]
    assert abs(rep["pose2d_error_px"]["median"] - 5.0) < 1e-3  # a 3-4-5 offset in every view
    assert rep["pose2d_error_px"]["n"] < 4 * 10 * 8  # hidden keypoints are left out
    assert abs(rep["pose3d_error_mm"]["raw"]["median"] - 2.0) < 1e-9
    assert rep["pose3d_error_mm"]["filtered"]["median"] < 1e-9
    assert rep["pose3d_coverage"] == {"raw": 1.0, "filtered": 1.0}


def test_live_camera_renders_the_truth_of_its_frame():
    rig, truth, _ = make()
    hits = []
    for name in ("cam_nw", "cam_se"):
        cam = LiveCamera.from_rig_config(rig, name)
        bg = cam.renderer.background(0)
        for k in range(60, 480, 60):
            img = cam.render_at(k / 30.0)
            px = truth.calibration.camera(name).project(truth.keypoints_mm(k))
            vis = cam.renderer.visibility(0, truth.keypoints_mm(k), truth.extra_mm(k))
            changed = np.abs(img.astype(int) - bg.astype(int)).sum(axis=2) > 60
            hits += [changed[int(round(y)), int(round(x))] for (x, y), v in zip(px, vis) if v]
    # the rat is drawn where its visible keypoints project (a wrong frame or camera would miss)
    assert len(hits) >= 40 and np.mean(hits) >= 0.8, (len(hits), np.mean(hits))
