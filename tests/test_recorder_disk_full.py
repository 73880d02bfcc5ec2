"""Disk full: the recorder on a small tmpfs (mounted here as root; skipped where that is not
allowed). With no margin (min_free_gb = 0) the disk really fills: the recorder stops with exit
status 3 and a DISK FULL line, and the session up to that moment opens and its frames decode. With a
margin, video stops before the disk is full and poses go on being recorded."""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from ratrig.clock import now_ns
from ratrig.messages import FramePacket, Keypoints2DPacket
from ratrig.transport import make_pub, send_packet

from tests.helpers import PYTHON, REPO, free_base_port

W, H = 320, 240


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB tmpfs, or skip when mounting is not allowed here."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def rig(tmp_path: Path, min_free_gb: float) -> Path:
    path = tmp_path / "rig.toml"
    path.write_text("\n".join([
        'name = "diskfull"', 'keypoints = ["nose", "tail_base"]', "[network]", f"base_port = {free_base_port()}",
        "[recorder]", 'codec = "mjpeg"', "flush_interval_s = 0.25", f"min_free_gb = {min_free_gb}",
        f"warn_free_gb = {max(min_free_gb, 0.001)}", "queue_frames = 30",
        "[[cameras]]", 'name = "cam0"', 'source = "synthetic"', f"width = {W}", f"height = {H}", "fps = 30"]) + "\n")
    return path


def record_until(config: Path, out: Path, seconds: float, fps: float = 30.0) -> tuple[subprocess.Popen, int, str]:
    """Start the recorder, publish noise frames (incompressible) and poses for `seconds` or until it
    exits; (process, frames sent, its log)."""
    from ratrig.config import Endpoints, load_config

    eps = Endpoints(load_config(config))
    log_path = out.parent / f"{out.name}.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([PYTHON, "-m", "recorder.process", "--config", str(config), "--out", str(out),
                                 "--no-publish"], cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    ctx = zmq.Context()
    pub = make_pub(ctx, eps.bind("camera/cam0"), sndhwm=1000)
    rng = np.random.default_rng(0)
    sent = 0
    try:
        time.sleep(2.0)  # the recorder connects
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end and proc.poll() is None:
            cap = now_ns()
            send_packet(pub, FramePacket("cam0", sent, cap, rng.integers(0, 255, (H, W, 3), dtype=np.uint8)))
            kp = np.array([[10.0, 20.0, 0.9], [30.0, 40.0, 0.8]], np.float32)
            send_packet(pub, Keypoints2DPacket("cam0", sent, cap, ("nose", "tail_base"), kp))
            sent += 1
            time.sleep(1 / fps)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(60)
        pub.close(0)
        ctx.term()
    return proc, sent, log_path.read_text(errors="replace")


@pytest.mark.slow
def test_a_full_disk_stops_the_recorder_cleanly_and_keeps_the_session(small_disk, tmp_path):
    from recorder.session import open_session
    from recorder.video import count_readable_frames

    out = small_disk / "session"
    proc, sent, log = record_until(rig(tmp_path, 0.0), out, 20)
    assert proc.returncode == 3, log[-2000:]
    assert "DISK FULL" in log and str(out) in log
    s = open_session(out)  # repairs what the full disk left torn
    frames = s.frames("cam0")
    assert 0 < len(frames) < sent
    # every frame the session lists decodes
    listed = frames.groupby("segment").size() if "segment" in frames else None
    decodable = sum(count_readable_frames(p) for p in s.video_paths("cam0"))
    assert decodable >= len(frames), (decodable, len(frames), listed)


@pytest.mark.slow
def test_with_a_margin_video_stops_before_the_disk_is_full_and_poses_go_on(small_disk, tmp_path):
    from recorder.session import open_session

    out = small_disk / "session"
    # stop video below 3 MB free, at ~1 MB/s: a late disk check (a loaded machine) still has room
    proc, sent, log = record_until(rig(tmp_path, 0.003), out, 8, fps=15)
    assert proc.returncode == 0, log[-2000:]
    assert "below recorder.min_free_gb" in log
    assert log.count("below recorder.min_free_gb") == 1  # said once, not every check
    s = open_session(out)
    assert s.status == "complete"
    assert 0 < len(s.frames("cam0")) < sent
    assert len(s.pose2d("cam0").frame_index) >= 0.9 * sent  # poses kept after the video stopped
