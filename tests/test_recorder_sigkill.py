"""A recorder killed with SIGKILL mid-session leaves a session readable up to the last flush interval."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratrig.clock import now_ns
from recorder.session import open_session
from recorder_helpers import CAMS, decode_index, free_base_port, publish_frames, write_rig

REPO = Path(__file__).resolve().parents[1]
FLUSH_S = 0.5


def _start_recorder(rig: Path, out: Path, endpoint: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "recorder.process", "--config", str(rig), "--out", str(out),
                             "--connect", endpoint, "--no-publish"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(path: Path, timeout_s: float) -> None:
    t = time.monotonic()
    while not path.exists():
        if time.monotonic() - t > timeout_s:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_session_keeps_everything_up_to_last_flush(tmp_path):
    base = free_base_port()
    rig = write_rig(tmp_path / "rig.toml", base, flush_s=FLUSH_S)
    endpoint = f"tcp://127.0.0.1:{base + 1}"
    out = tmp_path / "session"
    sent_log = tmp_path / "sent.csv"
    rec = _start_recorder(rig, out, endpoint)
    try:
        _wait_for(out / "session.json", 30)
        pub = mp.get_context("spawn").Process(target=publish_frames, args=(endpoint, str(sent_log), 30.0, 20.0, 0.5))
        pub.start()
        t = time.monotonic()  # kill after about 3 s of publishing (6 flush intervals)
        while not sent_log.exists() or sum(1 for _ in open(sent_log)) < 90 * len(CAMS):
            assert time.monotonic() - t < 60, "publisher did not start"
            time.sleep(0.05)
        kill_ns = now_ns()
        os.kill(rec.pid, signal.SIGKILL)
        rec.wait(10)
        pub.terminate()  # the publisher has done its job; its last log line may be partial
        pub.join(15)
    finally:
        if rec.poll() is None:
            rec.kill()
    assert rec.returncode == -signal.SIGKILL

    meta_before = (out / "session.json").read_text()
    assert '"status": "recording"' in meta_before  # the recorder never got to finish

    lines = sent_log.read_text().splitlines()
    sent = pd.DataFrame([ln.split(",") for ln in lines if ln.count(",") == 2], columns=["camera", "frame_index", "capture_ns"])
    sent = sent.astype({"frame_index": np.int64, "capture_ns": np.int64})
    s = open_session(out)  # the recorder is dead: this repairs the session
    assert s.status == "recovered"
    print("repair:", s.meta["repair"], "lag to kill (s):",
          {c: round((kill_ns - int(s.frames(c)["capture_ns"].iloc[-1])) / 1e9, 3) for c in CAMS})
    for cam in CAMS:
        frames = s.frames(cam)
        assert len(frames) > 0
        idx = frames["frame_index"].to_numpy()
        # contiguous: nothing lost between the first recorded frame and the last flushed one
        assert np.all(np.diff(idx) == 1), f"{cam}: gaps in {idx}"
        # the last flushed frame is at most one flush interval (plus scheduling slack) before the kill
        last_cap = int(frames["capture_ns"].iloc[-1])
        assert kill_ns - last_cap < (FLUSH_S + 0.4) * 1e9, f"{cam}: last frame {(kill_ns - last_cap) / 1e9:.2f} s before kill"
        # the recorder was subscribed before the publisher started: it has the session from frame 0
        assert idx[0] == 0
        # timestamps intact: exactly what the publisher stamped
        ref = sent[sent.camera == cam].set_index("frame_index")["capture_ns"]
        assert np.array_equal(frames["capture_ns"].to_numpy(), ref.loc[idx].to_numpy())
        # every listed frame decodes, and (ffv1 is lossless) it is the frame it claims to be
        decoded = [(int(row.frame_index), decode_index(img)) for row, img in s.iter_frames(cam)]
        assert len(decoded) == len(frames)
        assert all(a == b for a, b in decoded)
    # pose2d table: torn tail cut, rows intact up to the last table flush
    p2 = s.pose2d(CAMS[0])
    assert len(p2.frame_index) > 0 and np.all(np.diff(p2.frame_index) == 1)
    assert np.allclose(p2.points[:, 0, 0], 10.0 + p2.frame_index)
    assert kill_ns - int(p2.capture_ns[-1]) < (FLUSH_S + 0.4) * 1e9
    # what OpenCV makes of the segment that was open at the kill (kept in torn/, not used)
    from recorder.video import count_readable_frames

    for cam, files in s.meta["repair"]["torn_segments"].items():
        for f in files:
            p = out / "torn" / cam / f
            print(f"torn {cam}/{f}: {p.stat().st_size} bytes, {count_readable_frames(p)} frames decode")
    # a second open finds nothing more to repair and reads the same frames
    s2 = open_session(out)
    assert len(s2.frames(CAMS[0])) == len(s.frames(CAMS[0]))
