"""Exports: DeepLabCut .h5 layout, Anipose project and pose-3d columns, NWB (ndx-pose) validation."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pandas as pd
import pytest

from ratrig.camera import Calibration, Camera
from ratrig.config import load_config
from ratrig.messages import FramePacket, Keypoints2DPacket, Pose3DPacket
from ratrig.tomlio import read_toml
from recorder.export import export_anipose, export_dlc, export_nwb, main as export_main
from recorder.session import open_session
from recorder.video import check_codec
from recorder.writer import SessionWriter
from recorder_helpers import CAMS, frame_image, write_rig

KPS = ("nose", "tail_base")
N = 12


def _calibration(path):
    cams = []
    for i, name in enumerate(CAMS):
        K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
        cams.append(Camera(name, (320, 240), K, np.zeros(5), np.array([0.0, 0.3 * i, 0.0]), np.array([0.0, 0.0, 500.0])))
    Calibration(tuple(cams)).save(path)
    return path


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    rig = load_config(write_rig(tmp / "rig.toml", 6000, flush_s=0.2))
    w = SessionWriter(tmp / "s", rig, check_codec("ffv1"), calibration_path=str(_calibration(tmp / "calibration.toml")))
    for i in range(N):
        cap = 2_000_000_000 + i * 33_333_333
        for c, cam in enumerate(CAMS):
            if cam == CAMS[1] and i == 5:
                continue  # cam_b lost frame 5: the Anipose export must keep the cameras aligned
            w.submit_frame(FramePacket(cam, i, cap + 1000 * c, frame_image(c, i)))
            kp = np.array([[100.0 + i, 50.0 + c, 0.95], [np.nan, np.nan, 0.0]], np.float32)
            w.write_pose2d(Keypoints2DPacket(cam, i, cap + 1000 * c, KPS, kp))
        raw = np.array([[float(i), 1.0, 2.0], [np.nan] * 3])
        w.write_pose3d(Pose3DPacket(i, cap, KPS, CAMS, raw, raw + 0.1, np.array([0.5, np.nan]), np.array([2, 0], np.int8),
                                    np.array([0.95, np.nan]), frame_indices={c: i for c in CAMS}))
        time.sleep(0.005)
    w.close()
    return open_session(tmp / "s")


def test_dlc_h5_has_deeplabcut_layout(session, tmp_path):
    paths = export_dlc(session, tmp_path / "dlc")
    assert len(paths) == 2
    df = pd.read_hdf(paths[0], key="df_with_missing")
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("bodyparts").unique()) == list(KPS)
    assert list(df.columns.get_level_values("coords")[:3]) == ["x", "y", "likelihood"]
    scorer = df.columns.get_level_values("scorer")[0]
    assert np.allclose(df[(scorer, "nose", "x")].to_numpy(), 100.0 + np.arange(N))
    assert np.all(np.isnan(df[(scorer, "tail_base", "x")])) and np.all(df[(scorer, "tail_base", "likelihood")] == 0)
    df_b = pd.read_hdf(paths[1], key="df_with_missing")
    assert len(df_b) == N - 1  # one row per recorded video frame of cam_b


def test_anipose_project(session, tmp_path):
    sess_dir = export_anipose(session, tmp_path / "proj")
    cfg = read_toml(tmp_path / "proj" / "config.toml")
    assert cfg["nesting"] == 1 and cfg["triangulation"]["cam_regex"] == "--(.+)$"
    import re

    for cam in CAMS:
        v = sess_dir / "videos-raw" / f"trial--{cam}.avi"
        assert re.search(cfg["triangulation"]["cam_regex"], v.stem).group(1) == cam
        cap = cv2.VideoCapture(str(v))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == N  # aligned: a black frame where cam_b lost one
        h5 = pd.read_hdf(sess_dir / "pose-2d" / f"trial--{cam}.h5", key="df_with_missing")
        assert len(h5) == N
    h5b = pd.read_hdf(sess_dir / "pose-2d" / f"trial--{CAMS[1]}.h5", key="df_with_missing")
    sc = h5b.columns.get_level_values(0)[0]
    assert np.isnan(h5b[(sc, "nose", "x")].iloc[5]) and h5b[(sc, "nose", "x")].iloc[6] == 106.0
    p3 = pd.read_csv(sess_dir / "pose-3d" / "trial.csv")
    for kp in KPS:
        for s in ("x", "y", "z", "error", "ncams", "score"):
            assert f"{kp}_{s}" in p3.columns
    for name in ["M_00", "M_22", "center_0", "fnum"]:
        assert name in p3.columns
    assert np.allclose(p3["nose_x"], np.arange(N)) and (p3["nose_ncams"] == 2).all()
    # the calibration reads back with aniposelib, camera names matching the video names' cameras
    from aniposelib.cameras import CameraGroup

    cg = CameraGroup.load(str(sess_dir / "calibration" / "calibration.toml"))
    assert cg.get_names() == list(CAMS)


def test_nwb_validates_and_reads_back(session, tmp_path):
    from pynwb import NWBHDF5IO, validate

    path = export_nwb(session, tmp_path / "s.nwb")
    errors = validate(path=str(path))
    assert errors == [], errors
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        beh = nwb.processing["behavior"]
        pe = beh["PoseEstimation_cam_a"]
        nose = pe.pose_estimation_series["nose"]
        assert np.allclose(nose.data[:, 0], 100.0 + np.arange(N))
        assert nose.timestamps[1] - nose.timestamps[0] == pytest.approx(1 / 30, abs=1e-6)
        assert list(pe.skeleton.nodes[:]) == list(KPS)
        p3 = beh["PoseEstimation3D"].pose_estimation_series["nose"]
        assert np.allclose(p3.data[:, 0] * 1000.0, np.arange(N))
        assert "PoseEstimation3DFiltered" in beh.data_interfaces


def test_cli_rejects_missing_session(tmp_path, caplog):
    assert export_main([str(tmp_path / "nope"), "--to", "dlc", str(tmp_path / "o")]) == 1
    assert "session.json" in caplog.text


@pytest.mark.slow
@pytest.mark.skipif(__import__("importlib").util.find_spec("anipose") is None,
                    reason="the anipose tool is not installed (pip install --no-deps anipose)")
def test_anipose_tool_triangulates_the_exported_project(tmp_path):
    """The `anipose` tool itself continues from the export: its triangulate step reads our
    calibration.toml, pose-2d .h5 files and camera names, and writes the same pose-3d columns."""
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("recorder_experiment", repo / "bench" / "recorder_experiment.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    live = exp.record_live_session(tmp_path / "sess", duration_s=1.5, seed=5)
    s = open_session(live["session"])
    sess_dir = export_anipose(s, tmp_path / "proj")
    ours = pd.read_csv(sess_dir / "pose-3d" / "trial.csv")
    shutil.rmtree(sess_dir / "pose-3d")
    r = subprocess.run([sys.executable, "-c", "from anipose.anipose import cli; cli()", "triangulate"],
                       cwd=tmp_path / "proj", env=dict(os.environ, PYTHONPATH=str(repo)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = pd.read_csv(sess_dir / "pose-3d" / "trial.csv")
    assert list(theirs.columns) == list(ours.columns)
    assert len(theirs) == len(ours) == live["gt_mm"].shape[0]
    p3 = np.stack([theirs[[f"{k}_x", f"{k}_y", f"{k}_z"]].to_numpy() for k in s.keypoints], 1)
    err = np.linalg.norm(p3 - live["gt_mm"], axis=-1)
    assert np.isfinite(err).mean() > 0.95
    assert np.nanmedian(err) < 4.0  # simulated 2D noise 1.5 px: ~2 mm, as our own triangulation
