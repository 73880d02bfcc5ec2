"""SessionWriter -> open_session round trip, loss accounting, the recorder process's clean stop."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ratrig.config import load_config
from ratrig.messages import EventPacket, FramePacket, Pose3DPacket
from recorder.session import SessionFormatError, open_session
from recorder.tables import read_table
from recorder.video import VideoCodecError, check_codec
from recorder.writer import SessionError, SessionWriter
from recorder_helpers import CAMS, decode_index, frame_image, free_base_port, publish_frames, write_rig

REPO = Path(__file__).resolve().parents[1]
KPS = ("nose", "tail_base")


def _pose3d(i: int, cap: int) -> Pose3DPacket:
    raw = np.array([[i, 2.0 * i, 30.0], [np.nan, np.nan, np.nan]])
    filt = raw + 0.5
    filt[1] = [1.0, 2.0, 3.0]
    return Pose3DPacket(i, cap, KPS, CAMS, raw, filt, np.array([0.7, np.nan]), np.array([3, 0], np.int8),
                        np.array([0.9, np.nan]), frame_indices={CAMS[0]: i, CAMS[1]: i + 100})


def test_round_trip_and_gap_accounting(tmp_path):
    rig = load_config(write_rig(tmp_path / "rig.toml", 6000, flush_s=0.2))
    w = SessionWriter(tmp_path / "s", rig, check_codec("ffv1"))
    sent = {c: [] for c in CAMS}
    for i in range(40):
        for c, cam in enumerate(CAMS):
            if cam == CAMS[1] and i in (10, 11, 12, 30):  # frames lost before the recorder
                continue
            cap = 1_000_000_000 + i * 33_333_333 + c
            w.submit_frame(FramePacket(cam, i, cap, frame_image(c, i)))
            sent[cam].append((i, cap))
        w.write_pose3d(_pose3d(i, 1_000_000_000 + i * 33_333_333))
        if i % 10 == 0:
            w.write_event(EventPacket("touchdown", "nose", i, 1_000_000_000 + i, 1_000_000_100 + i, (1.0, 2.0, 0.0)))
        time.sleep(0.01)
    summary = w.close()
    assert summary["cameras"][CAMS[1]]["missing_upstream"] == 4
    assert summary["cameras"][CAMS[1]]["gaps"] == [[10, 3], [30, 1]]
    assert summary["cameras"][CAMS[0]]["missing_upstream"] == 0
    assert summary["frames_lost_total"] == 4

    s = open_session(tmp_path / "s")
    assert s.status == "complete" and s.cameras == CAMS and s.keypoints == KPS
    assert s.meta["ratrig_version"]
    assert s.encoder(CAMS[0])["codec"] == "ffv1" and s.encoder(CAMS[0])["lossless"] is True
    assert s.config_path.is_file()
    for cam in CAMS:
        f = s.frames(cam)
        assert list(zip(f.frame_index, f.capture_ns)) == sent[cam]
        assert len(s.video_paths(cam)) >= 2  # 0.4 s of writing with 0.2 s flushes: several segments
        got = [(int(r.frame_index), decode_index(img)) for r, img in s.iter_frames(cam)]
        assert got == [(i, i) for i, _ in sent[cam]]
        assert np.all(f.wall_ns - f.capture_ns == f.wall_ns[0] - f.capture_ns[0])  # one timebase mapping
        for i, _ in sent[cam][::7]:
            assert decode_index(s.frame(cam, i)) == i  # random access by frame_index
    with pytest.raises(KeyError, match="no recorded frame 11"):
        s.frame(CAMS[1], 11)
    p = s.pose3d()
    assert p.raw_mm.shape == (40, 2, 3)
    assert np.allclose(p.raw_mm[:, 0, 0], np.arange(40))
    assert np.all(np.isnan(p.raw_mm[:, 1]))
    assert np.allclose(p.filtered_mm[:, 1], [1.0, 2.0, 3.0])
    assert np.array_equal(p.ncams[:, 0], np.full(40, 3)) and np.array_equal(p.frame_indices[CAMS[1]], np.arange(40) + 100)
    ev = s.events()
    assert [e["frame_set_index"] for e in ev] == [0, 10, 20, 30] and ev[0]["position_mm"] == [1.0, 2.0, 0.0]
    # Anipose column names in pose3d.csv
    cols = list(read_table(tmp_path / "s" / "pose3d.csv").columns)
    for k in KPS:
        for sfx in ("x", "y", "z", "error", "ncams", "score", "fx", "fy", "fz"):
            assert f"{k}_{sfx}" in cols
    assert "fnum" in cols


def test_refuses_existing_session_and_bad_folder(tmp_path):
    rig = load_config(write_rig(tmp_path / "rig.toml", 6000))
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("x")
    with pytest.raises(SessionError, match="not empty"):
        SessionWriter(tmp_path / "s", rig, check_codec("ffv1"))
    with pytest.raises(SessionFormatError, match="session.json"):
        open_session(tmp_path / "s")
    with pytest.raises(VideoCodecError, match="unknown codec"):
        check_codec("prores")


def test_mjpeg_records_encoder_quality(tmp_path):
    rig = load_config(write_rig(tmp_path / "rig.toml", 6000, codec="mjpeg", flush_s=0.2))
    w = SessionWriter(tmp_path / "s", rig, check_codec("mjpeg"))
    for i in range(5):
        w.submit_frame(FramePacket(CAMS[0], i, i, frame_image(0, i)))
    w.close()
    s = open_session(tmp_path / "s")
    enc = s.encoder(CAMS[0])
    assert enc["codec"] == "mjpeg" and enc["quality"] == 95 and enc["lossless"] is False
    imgs = [img for _, img in s.iter_frames(CAMS[0])]
    assert len(imgs) == 5
    assert max(abs(decode_index(im) - i) for i, im in enumerate(imgs)) <= 1  # visually lossless
    assert abs(decode_index(s.frame(CAMS[0], 3)) - 3) <= 1


@pytest.mark.slow
def test_recorder_process_clean_stop_on_sigterm(tmp_path):
    base = free_base_port()
    rig = write_rig(tmp_path / "rig.toml", base, flush_s=0.5)
    endpoint = f"tcp://127.0.0.1:{base + 1}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rec = subprocess.Popen([sys.executable, "-m", "recorder.process", "--config", str(rig), "--out",
                            str(tmp_path / "s"), "--connect", endpoint], env=env, cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t = time.monotonic()
    while not (tmp_path / "s" / "session.json").exists() and time.monotonic() - t < 30:
        time.sleep(0.05)
    pub = mp.get_context("spawn").Process(target=publish_frames, args=(endpoint, str(tmp_path / "sent.csv"), 30.0, 2.0, 0.5))
    pub.start()
    pub.join(20)
    time.sleep(0.3)
    rec.send_signal(signal.SIGTERM)
    out, _ = rec.communicate(timeout=30)
    assert rec.returncode == 0, out
    s = open_session(tmp_path / "s")
    assert s.status == "complete"
    n_sent = sum(1 for _ in open(tmp_path / "sent.csv")) // len(CAMS)
    for cam in CAMS:
        assert len(s.frames(cam)) == n_sent  # every frame sent was recorded
    assert json.loads((tmp_path / "s" / "session.json").read_text())["counts"]["frames_lost_total"] == 0
    assert "written" in out


def test_recorder_refuses_when_disk_too_full(tmp_path):
    rig = write_rig(tmp_path / "rig.toml", 6000, extra="")
    text = rig.read_text().replace("min_free_gb = 0.05", "min_free_gb = 1000000").replace("warn_free_gb = 0.1", "warn_free_gb = 2000000")
    rig.write_text(text)
    from recorder.process import main

    assert main(["--config", str(rig), "--out", str(tmp_path / "s"), "--no-publish"]) == 2
    assert not (tmp_path / "s" / "session.json").exists()


def test_torn_last_line_is_ignored_then_repaired(tmp_path):
    from recorder.tables import AppendTable, read_table, repair_table

    t = AppendTable(tmp_path / "t.csv", ["a", "b"])
    t.append([1, 2.5])
    t.append([2, float("nan")])
    t.close()
    with open(tmp_path / "t.csv", "ab") as f:
        f.write(b"3,4.")  # a kill in the middle of a line
    df = read_table(tmp_path / "t.csv", ["a", "b"])
    assert df["a"].tolist() == [1, 2] and np.isnan(df["b"].iloc[1])
    assert repair_table(tmp_path / "t.csv") == 4
    assert (tmp_path / "t.csv").read_bytes().endswith(b"\n")
    assert repair_table(tmp_path / "t.csv") == 0


def test_disk_monitor_warns_and_stops(tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    from recorder.process import GB, DiskMonitor

    usage = namedtuple("usage", "total used free")
    free = [5 * GB]
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(100 * GB, 0, free[0]))
    mon = DiskMonitor(tmp_path, min_free_gb=2.0, warn_free_gb=10.0)
    f, warning, stop = mon.check()
    assert f == 5 * GB and "LOW DISK SPACE" in warning and not stop
    free[0] = 1 * GB
    _, warning, stop = mon.check()
    assert stop and "below recorder.min_free_gb" in warning


def test_mono_camera_round_trips_losslessly(tmp_path):
    rig = load_config(write_rig(tmp_path / "rig.toml", 6000, flush_s=0.2))
    w = SessionWriter(tmp_path / "s", rig, check_codec("ffv1"))
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (240, 320), dtype=np.uint8) for _ in range(4)]
    for i, img in enumerate(imgs):
        w.submit_frame(FramePacket(CAMS[0], i, i, img))
    w.close()
    s = open_session(tmp_path / "s")
    assert s.encoder(CAMS[0])["is_color"] is False
    got = [img for _, img in s.iter_frames(CAMS[0])]
    assert all(g.shape == (240, 320) and np.array_equal(g, o) for g, o in zip(got, imgs)) and len(got) == 4
