"""Capture processes over real ZeroMQ sockets: video-file cameras, a camera dying mid-run while the
others go on, and a clean shutdown that leaves no orphan processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import zmq

from ratrig.config import Endpoints, load_config
from ratrig.messages import FramePacket
from ratrig.transport import ReceiveCounters, make_sub, recv_packet

from tests.helpers import PYTHON, REPO, pid_alive, video_rig_toml


def test_video_camera_publishes_paced_frames_in_order(tmp_path):
    rig_path = video_rig_toml(tmp_path, 1, n_frames=40, fps=40.0, loop=False)
    rig = load_config(rig_path)
    ctx = zmq.Context()
    sub = make_sub(ctx, [Endpoints(rig).connect("camera/cam0")], [b"frame/"])
    t0 = time.monotonic_ns() + 1_500_000_000  # time for the subscription to reach the publisher
    proc = subprocess.Popen([PYTHON, "-m", "acquisition.capture", "--config", str(rig_path), "--camera", "cam0",
                             "--t0-ns", str(t0)], cwd=REPO)
    got: list[FramePacket] = []
    counters = ReceiveCounters()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(got) < 40:
            if sub.poll(200):
                pkt = recv_packet(sub, counters)
                if isinstance(pkt, FramePacket):
                    got.append(pkt)
        assert proc.wait(10) == 0  # end of file is a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
        ctx.term()
    assert [p.frame_index for p in got] == list(range(40))
    # frame k of the file has brightness k: the right pixels went with the right index (MJPG is lossy)
    assert all(abs(int(p.image.mean()) - p.frame_index) <= 2 for p in got)
    capture = np.array([p.capture_ns for p in got])
    assert capture[0] >= t0
    assert np.allclose(np.diff(capture), 25e6, atol=0.5e6)  # paced on the 40 fps schedule
    assert all(p.stamps_ns["publish"] >= p.capture_ns for p in got)


def test_camera_that_cannot_open_exits_with_a_named_error(tmp_path):
    rig_path = video_rig_toml(tmp_path, 1)
    (tmp_path / "cam0.avi").write_bytes(b"not a video")
    out = subprocess.run([PYTHON, "-m", "acquisition.capture", "--config", str(rig_path), "--camera", "cam0"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert out.returncode == 3
    assert "camera cam0: cannot open video file" in out.stderr


def run_session_cli(args, timeout=120):
    return subprocess.run([PYTHON, "-m", "ratrig", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_camera_dying_mid_run_while_others_continue_and_clean_shutdown(tmp_path):
    rig_path = video_rig_toml(tmp_path, 3, n_frames=60, fps=30.0)
    out_json = tmp_path / "summary.json"
    res = run_session_cli(["run", str(rig_path), "--duration", "5", "--headless", "--no-inference",
                           "--kill-camera", "cam1@1.5", "--json", str(out_json), "--run-dir", str(tmp_path / "run")])
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads(out_json.read_text())
    cams = s["cameras"]
    for name in ("cam0", "cam2"):
        assert cams[name]["captured"] >= 0.95 * 5 * 30, cams[name]
        assert cams[name]["received"] >= 0.99 * cams[name]["captured"], cams[name]
    assert 30 <= cams["cam1"]["captured"] <= 1.7 * 30, cams["cam1"]
    assert cams["cam1"]["restarts"] >= 1
    assert any("camera/cam1 exited with code 3" in line for line in s["problems"])
    assert s["latency_ms"]["transport"]["p99"] > 0
    # clean shutdown: every process the session started is gone
    pids = [p["pid"] for p in s["processes"].values() if p["pid"]]
    assert len(pids) == 4
    assert not [pid for pid in pids if pid_alive(pid)]
    assert {s["processes"][f"camera/{c}"]["state"] for c in ("cam0", "cam2")} == {"stopped"}


@pytest.mark.slow
def test_killing_the_supervisor_leaves_no_orphans(tmp_path):
    rig_path = video_rig_toml(tmp_path, 2)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([PYTHON, "-m", "ratrig", "run", str(rig_path), "--headless", "--no-inference",
                             "--run-dir", str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        children: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(children) < 3:
            time.sleep(0.3)
            try:
                children = [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
            except OSError:
                break
        assert len(children) == 3, children  # probe + two cameras
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(pid_alive(c) for c in children):
            time.sleep(0.2)
        assert not [c for c in children if pid_alive(c)]
    finally:
        if proc.poll() is None:
            proc.kill()
