"""Replay publishes a recorded session as live cameras: a second recorder gets the same frames back."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ratrig.config import load_config
from ratrig.messages import FramePacket
from recorder.replay import ReplayMapping
from recorder.session import open_session
from recorder.video import check_codec
from recorder.writer import SessionWriter
from recorder_helpers import CAMS, decode_index, frame_image, free_base_port, write_rig

REPO = Path(__file__).resolve().parents[1]


def test_mapping_round_trip():
    m = ReplayMapping(t0_ns=5_000, first_capture_ns=1_000)
    assert m.map(1_000) == 5_000 and m.map(1_333) == 5_333 and m.unmap(m.map(987_654)) == 987_654


@pytest.mark.slow
def test_replay_into_a_new_recorder_reproduces_frames_and_timing(tmp_path):
    base = free_base_port()
    rig_path = write_rig(tmp_path / "rig.toml", base, flush_s=0.3)
    rig = load_config(rig_path)
    w = SessionWriter(tmp_path / "orig", rig, check_codec("ffv1"))
    n = 45
    for i in range(n):
        for c, cam in enumerate(CAMS):
            if cam == CAMS[1] and i == 7:
                continue
            w.submit_frame(FramePacket(cam, 100 + i, 10_000_000_000 + i * 33_333_333 + 250_000 * c, frame_image(c, i)))
    w.close()

    env = dict(os.environ, PYTHONPATH=str(REPO))
    rec = subprocess.Popen([sys.executable, "-m", "recorder.process", "--config", str(rig_path), "--out",
                            str(tmp_path / "again"), "--no-publish"], env=env, cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t = time.monotonic()
        while not (tmp_path / "again" / "session.json").exists() and time.monotonic() - t < 30:
            time.sleep(0.05)
        rp = subprocess.run([sys.executable, "-m", "recorder.replay", str(tmp_path / "orig"), "--speed", "1",
                             "--wait-s", "1.0", "--mapping-out", str(tmp_path / "map.json")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert rp.returncode == 0, rp.stderr
        time.sleep(1.0)
    finally:
        rec.terminate()
        out, _ = rec.communicate(timeout=30)
    assert rec.returncode == 0, out
    orig, again = open_session(tmp_path / "orig"), open_session(tmp_path / "again")
    import json

    mapping = json.loads((tmp_path / "map.json").read_text())
    for cam in CAMS:
        a, b = orig.frames(cam), again.frames(cam)
        assert list(b.frame_index) == list(a.frame_index)  # every frame, same numbers, gap kept
        shift = b.capture_ns.to_numpy() - a.capture_ns.to_numpy()
        assert np.all(shift == mapping["t0_ns"] - mapping["first_capture_ns"])  # relative timing exact
        # paced at real time: arrival spacing follows capture spacing (loose bound for a loaded CI box)
        recv = b.recv_ns.to_numpy()
        assert (recv[-1] - recv[0]) / 1e9 == pytest.approx((a.capture_ns.iloc[-1] - a.capture_ns.iloc[0]) / 1e9, abs=0.25)
        assert [decode_index(img) for _, img in again.iter_frames(cam)] == [int(f) - 100 for f in a.frame_index]
