"""The viewer, started as `ratrig view` would start it (under Xvfb), attached to a real ZeroMQ stream from
another process, draws the known pose where geometry says it must be: in the 3D view (through the GL
view's own view/projection matrices) and in the camera panels (through the calibration).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ratrig.skeleton import KEYPOINTS
from viewer.model import keypoint_colors
from viewer_stream import FRAME_GREY, KNOWN_POSE_MM, colour_near, gl_project, publish_session, stream_calibration, visible

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    shutil.which("xvfb-run") is None or shutil.which("Xvfb") is None,
    reason="xvfb-run/Xvfb not installed (Debian package xvfb); the 3D view needs an X server with OpenGL",
)


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer")
    calib = stream_calibration()
    names = calib.names
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # No 2D keypoints for the third camera: its panel shows only the reprojected 3D pose.
    pose2d = tuple(n for i, n in enumerate(names) if i != 2)
    proc = ctx.Process(target=publish_session, args=(calib.to_dict(), queue, 40.0), kwargs={"pose2d_cameras": pose2d})
    proc.start()
    try:
        endpoints = queue.get(timeout=60)
        png, layout = out / "view.png", out / "layout.json"
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable, "-m", "viewer.app",
               "--connect", endpoints["directory"], "--screenshot", str(png), "--duration", "3",
               "--layout-json", str(layout)]
        run = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"viewer failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    finally:
        proc.terminate()
        proc.join(10)
    import cv2

    img = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert img is not None, f"{png} is not a readable PNG"
    return img[:, :, ::-1].copy(), json.loads(layout.read_text()), calib, pose2d


@pytest.mark.slow
def test_3d_view_draws_the_known_pose_where_the_gl_matrices_project_it(screenshot):
    img, layout, _, _ = screenshot
    assert list(img.shape[1::-1]) == layout["window_size"]
    px, depth = gl_project(KNOWN_POSE_MM, layout)
    x0, y0, w, h = layout["gl"]["rect"]
    assert np.all((px[:, 0] > x0) & (px[:, 0] < x0 + w) & (px[:, 1] > y0) & (px[:, 1] < y0 + h)), px
    colours = keypoint_colors(KEYPOINTS)
    checked = visible(px, depth, min_sep_px=9.0)  # the nearer joint hides the farther one
    assert len(checked) >= 5, f"too few unoccluded joints to check: {checked}"
    missing = [KEYPOINTS[i] for i in checked if not colour_near(img, px[i], colours[i])]
    assert not missing, f"joints not drawn where the GL view projects them: {missing}"
    # The same check must fail for a pose that is not there (the test can tell right from wrong).
    wrong, _ = gl_project(KNOWN_POSE_MM + [250.0, 0.0, 60.0], layout)
    hits = [KEYPOINTS[i] for i in checked if colour_near(img, wrong[i], colours[i])]
    assert len(hits) <= 1, f"colours found where no joint is: {hits}"


@pytest.mark.slow
def test_camera_panels_show_detections_and_reprojection_where_the_calibration_projects(screenshot):
    img, layout, calib, pose2d = screenshot
    colours = keypoint_colors(KEYPOINTS)
    assert set(layout["panels"]) == set(calib.names)
    for cam in calib.cameras:
        sx, ox, sy, oy = layout["panels"][cam.name]
        uv = cam.project(KNOWN_POSE_MM)
        px = np.stack([sx * uv[:, 0] + ox, sy * uv[:, 1] + oy], axis=1)
        # Later spots are drawn over earlier ones.
        checked = visible(px, -np.arange(len(px)), min_sep_px=8.0)
        assert len(checked) >= 3, (cam.name, px)
        missing = [KEYPOINTS[i] for i in checked if not colour_near(img, px[i], colours[i], radius=1)]
        what = "2D detections" if cam.name in pose2d else "reprojected 3D pose (no 2D stream for this camera)"
        assert not missing, f"{cam.name}: {what} not drawn at the calibrated projection: {missing}"
        # The image itself, the right way round: the frame's dark band is on its left edge.
        band = img[int(sy * 240 + oy), int(sx * 20 + ox)]
        body = img[int(sy * 400 + oy), int(sx * 600 + ox)]
        assert abs(int(band[0]) - 30) <= 6 and abs(int(body[0]) - FRAME_GREY) <= 6, (cam.name, band, body)
