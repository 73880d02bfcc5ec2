"""`ratrig view --replay`: a session written by the recorder plays back with correct frames, poses and
events at every time the slider can jump to; the viewer renders it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ratrig.config import config_from_dict
from ratrig.messages import EventPacket, FramePacket, Pose3DPacket
from ratrig.skeleton import KEYPOINTS
from viewer.model import ViewState, keypoint_colors
from viewer.replay import ReplayError, ReplaySource
from viewer_stream import KNOWN_POSE_MM, colour_near, gl_project, stream_calibration, visible

REPO = Path(__file__).resolve().parents[1]
FPS = 15.0
N = 30  # 2 s
K = len(KEYPOINTS)
T0 = 5_000_000_000
STEP_NS = int(1e9 / FPS)


def image_for(frame_index: int, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 50, np.uint8)
    img[:, :, 2] = (7 * frame_index) % 256  # the index, readable after lossless decoding
    return img


def pose_at(i: int) -> np.ndarray:
    return KNOWN_POSE_MM + [10.0 * i, 0.0, 0.0]


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory) -> Path:
    from recorder.video import check_codec
    from recorder.writer import SessionWriter

    root = tmp_path_factory.mktemp("replay")
    calib = stream_calibration()
    calib_path = root / "calibration.toml"
    calib.save(calib_path)
    w, h = calib.cameras[0].size
    rig = config_from_dict({
        "name": "replay-test",
        "cameras": [{"name": n, "source": "synthetic", "width": w, "height": h, "fps": FPS} for n in calib.names],
        "recorder": {"codec": "ffv1", "flush_interval_s": 0.5, "min_free_gb": 0.01, "warn_free_gb": 0.02},
    })
    out = root / "session"
    writer = SessionWriter(out, rig, check_codec("ffv1"), calibration_path=str(calib_path))
    for i in range(N):
        t = T0 + i * STEP_NS
        for cam in calib.names:
            assert writer.submit_frame(FramePacket(cam, i, t, image_for(i, w, h)), recv_ns=t)
        pts = pose_at(i)
        writer.write_pose3d(Pose3DPacket(i, t, KEYPOINTS, calib.names, pts, pts, np.zeros(K), np.full(K, 4, np.int8),
                                         np.ones(K), frame_indices={c: i for c in calib.names}), recv_ns=t)
        if i % 10 == 5:
            writer.write_event(EventPacket("touchdown", "front_left_paw", i, t, t, tuple(pts[4])), recv_ns=t)
    writer.close()
    return out


def test_replay_seeks_to_the_right_frame_pose_and_events(session_dir):
    src = ReplaySource(session_dir)
    try:
        assert src.start_ns == T0 and src.end_ns == T0 + (N - 1) * STEP_NS
        assert src.calibration_dict is not None and src.rig is not None
        state = ViewState(src.keypoints, trail_s=0.5, trace_s=1.0)
        # Forward, backward and across video segments (0.5 s each): every jump lands on the right frame.
        for i in (3, 25, 8, 29, 0, 17, 18, 19):
            src.seek(T0 + i * STEP_NS + STEP_NS // 2)
            src.feed(state, src.t_ns)
            assert state.pose.frame_set_index == i
            assert np.allclose(state.pose.filtered_mm, pose_at(i))
            for cam in src.camera_names:
                frame = state.frames[cam]
                assert frame.frame_index == i
                assert int(np.median(frame.image[:, :, 2])) == (7 * i) % 256, (cam, i)
            t, _, _ = state.traces()
            assert len(t) == i + 1 if i < 14 else 15 <= len(t) <= 16  # history rebuilt for the last 1 s
        # Events up to the cursor, none after it.
        src.seek(T0 + 16 * STEP_NS)
        state.reset_history()
        src.feed(state, src.t_ns)
        assert [m.capture_ns for m in state.marks] == [T0 + 5 * STEP_NS, T0 + 15 * STEP_NS]
        # Playing advances with the wall clock times the speed, and stops at the end.
        src.seek(src.start_ns)
        src.speed = 1000.0
        src.set_playing(True)
        src.step(state)
        import time

        time.sleep(0.01)
        src.step(state)
        assert src.t_ns == src.end_ns and not src.playing
        assert state.pose.frame_set_index == N - 1
    finally:
        src.close()


def test_replay_rejects_a_folder_that_is_not_a_session(tmp_path):
    with pytest.raises(ReplayError, match="session.json"):
        ReplaySource(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (Debian package xvfb)")
def test_replay_renders_the_recorded_pose(session_dir, tmp_path):
    png, layout_path = tmp_path / "replay.png", tmp_path / "layout.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable, "-m", "viewer.app", "--replay",
           str(session_dir), "--screenshot", str(png), "--duration", "3", "--layout-json", str(layout_path)]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    import cv2

    img = cv2.imread(str(png))[:, :, ::-1]
    layout = json.loads(layout_path.read_text())
    # 3 s of a 2 s session at 1x: the replay has reached its last pose.
    px, depth = gl_project(pose_at(N - 1), layout)
    colours = keypoint_colors(KEYPOINTS)
    checked = visible(px, depth, 9.0)
    assert len(checked) >= 5
    missing = [KEYPOINTS[i] for i in checked if not colour_near(img, px[i], colours[i])]
    assert not missing, missing
