"""`ratrig view` as a process: clear errors, its own Xvfb for --screenshot without a display, closing and
reopening without disturbing the session, and a guard against the PySide6 build that corrupts
Python's reference counts."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from viewer_stream import publish_session, stream_calibration

REPO = Path(__file__).resolve().parents[1]


def viewer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run_viewer(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "viewer.app", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_no_display_is_a_clear_error(tmp_path):
    run = run_viewer(["--connect", "tcp://127.0.0.1:9"], viewer_env(), tmp_path)
    assert run.returncode == 2
    assert "no display" in run.stderr and "--screenshot" in run.stderr


def test_unreachable_session_names_the_endpoint(tmp_path):
    # The offscreen platform stands in for a display: the directory is asked before any window opens.
    run = run_viewer(["--connect", "tcp://127.0.0.1:9", "--wait", "0.5"], viewer_env(QT_QPA_PLATFORM="offscreen"), tmp_path)
    assert run.returncode == 2
    assert "tcp://127.0.0.1:9" in run.stderr and "session running" in run.stderr


def test_bad_arguments_are_rejected(tmp_path):
    run = run_viewer(["--duration", "-1"], viewer_env(QT_QPA_PLATFORM="offscreen"), tmp_path)
    assert run.returncode == 2 and "--duration" in run.stderr
    run = run_viewer(["--nice", "40"], viewer_env(QT_QPA_PLATFORM="offscreen"), tmp_path)
    assert run.returncode == 2 and "--nice" in run.stderr
    bad = tmp_path / "rig.toml"
    bad.write_text('name = "x"\n[[cameras]]\nname = "a"\nsource = "synthetic"\nfps = "thirty"\n')
    run = run_viewer(["--config", str(bad)], viewer_env(QT_QPA_PLATFORM="offscreen"), tmp_path)
    assert run.returncode == 2 and "fps" in run.stderr and str(bad) in run.stderr
    run = run_viewer(["--replay", str(tmp_path)], viewer_env(QT_QPA_PLATFORM="offscreen"), tmp_path)
    assert run.returncode == 2 and "session.json" in run.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb not installed (Debian package xvfb)")
def test_screenshot_without_a_display_and_reopening_leave_the_session_alone(tmp_path):
    calib = stream_calibration()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    duration_s, fps = 14.0, 30.0
    proc = ctx.Process(target=publish_session, args=(calib.to_dict(), q, duration_s, fps))
    proc.start()
    try:
        endpoints = q.get(timeout=60)
        import cv2

        for attempt in range(2):  # close and reopen: the session must not notice
            png, stats = tmp_path / f"shot{attempt}.png", tmp_path / f"stats{attempt}.json"
            run = run_viewer(["--connect", endpoints["directory"], "--screenshot", str(png), "--duration", "1.5",
                              "--stats-json", str(stats)], viewer_env(), tmp_path)
            assert run.returncode == 0, run.stderr
            img = cv2.imread(str(png))
            assert img is not None and img.shape[0] >= 600 and img.shape[1] >= 1000
            assert img.std() > 5  # something was drawn (the pixels are checked in test_viewer_render)
            figures = json.loads(stats.read_text())
            # It yields the CPU to the pipeline (default --nice 10), and says what it drew.
            assert figures["niceness"] == min(19, os.nice(0) + 10), figures
            assert figures["redraws"] > 0 and figures["poses_seen"] > 0 and figures["gl_renders_live"] > 0
        sent = q.get(timeout=60)
    finally:
        proc.join(30)
    assert proc.exitcode == 0
    expected = duration_s * fps
    assert sent["poses"] >= 0.9 * expected, sent
    assert sent["frames"] == len(calib.names) * sent["poses"], sent


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None/True/False are immortal from Python 3.12 on")
def test_qt_bindings_keep_reference_counts_intact(tmp_path):
    """PySide6 6.12.0 drops a reference to True/None on every signal emit and item update under Python
    3.11; a viewer that runs for minutes then aborts ("deallocating True"). Pinned below 6.12."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import pyqtgraph as pg
        app = pg.mkQApp()
        view = pg.GraphicsLayoutWidget()
        img = pg.ImageItem(axisOrder="row-major")
        view.addViewBox().addItem(img)
        frame = np.zeros((24, 32, 3), np.uint8)
        img.setImage(frame, levels=(0, 255))
        t0, n0 = sys.getrefcount(True), sys.getrefcount(None)
        for _ in range(3000):
            img.setImage(frame, levels=(0, 255))
            img.update()
        print(sys.getrefcount(True) - t0, sys.getrefcount(None) - n0)
    """)
    run = subprocess.run([sys.executable, "-c", code], env=viewer_env(QT_QPA_PLATFORM="offscreen"),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    d_true, d_none = map(int, run.stdout.split())
    assert d_true > -100 and d_none > -100, f"Qt bindings leak references to True/None: {d_true}, {d_none}"
