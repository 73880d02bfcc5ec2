"""Hot standbys of the real stages: the fusion process claims its port only when told to take over
and then fuses at once; a standby recorder under the supervisor takes over a SIGKILLed recorder and
the two parts together hold every frame and 2D pose that was sent, each exactly once, intact."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratrig.clock import now_ns
from ratrig.messages import Keypoints2DPacket, Pose3DPacket
from ratrig.standby import TAKEOVER
from ratrig.supervisor import ProcessSpec, Supervisor
from recorder.session import open_session
from recorder_helpers import CAMS, decode_index, free_base_port, publish_frames, write_rig
from synthetic.rig import default_rig
from tests.helpers import REPO

KEYPOINTS = ("nose", "tail_base")
ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


class LineReader(threading.Thread):
    """Collects a pipe's lines in the background (a child's stderr)."""

    def __init__(self, pipe) -> None:  # noqa: ANN001
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, []
        self.start()

    def run(self) -> None:
        for line in self.pipe:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in ln for ln in self.lines):
            assert proc.poll() is None, "".join(self.lines)[-2000:]
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s: " + "".join(self.lines)[-2000:]
            time.sleep(0.05)


def frame_packets(calib, i: int, capture_ns: int) -> list[Keypoints2DPacket]:
    """Noise-free 2D packets of moment i of two keypoints moving along x, one per camera."""
    truth = np.array([[-200.0 + 5 * i, 0.0, 30.0], [-260.0 + 5 * i, 5.0, 25.0]])
    px = calib.project(truth)
    return [Keypoints2DPacket(cam, i, capture_ns, KEYPOINTS,
                              np.concatenate([px[c], np.full((2, 1), 0.9)], axis=1).astype(np.float32))
            for c, cam in enumerate(calib.names)]


@pytest.mark.slow
def test_fusion_standby_binds_nothing_until_it_takes_over_then_fuses(tmp_path):
    import zmq

    from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

    calib = default_rig()
    calib.save(tmp_path / "calibration.toml")
    cams = "\n".join(f'[[cameras]]\nname = "{c}"\nsource = "synthetic"\nfps = 30.0\n' for c in calib.names)
    (tmp_path / "rig.toml").write_text(f'name = "t"\nkeypoints = ["nose", "tail_base"]\n'
                                       f'[calibration]\nfile = "calibration.toml"\n{cams}')
    kp_ep, out_ipc = f"ipc://{tmp_path}/kp.ipc", tmp_path / "fusion.ipc"
    ctx = zmq.Context()
    pub = make_pub(ctx, kp_ep)
    sub = make_sub(ctx, [f"ipc://{out_ipc}"], [b"pose3d"])
    proc = subprocess.Popen([sys.executable, "-m", "fusion.process", "--config", str(tmp_path / "rig.toml"),
                             "--connect", kp_ep, "--bind", f"ipc://{out_ipc}", "--standby"],
                            env=ENV, cwd=REPO, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = LineReader(proc.stderr)
    counters = ReceiveCounters()
    poses: list[Pose3DPacket] = []
    try:
        err.wait_for("hot standby ready", 60, proc)
        # standing by: 2D flows, but it claims no endpoint and publishes nothing
        for i in range(10):
            for p in frame_packets(calib, i, now_ns()):
                send_packet(pub, p)
            time.sleep(0.033)
        assert not out_ipc.exists(), "a standby bound the stage's endpoint"
        assert proc.poll() is None
        proc.stdin.write(TAKEOVER.decode())
        proc.stdin.flush()
        err.wait_for("took over", 10, proc)
        deadline = time.monotonic() + 10
        i = 10
        while len(poses) < 20 and time.monotonic() < deadline:
            for p in frame_packets(calib, i, now_ns()):
                send_packet(pub, p)
            i += 1
            while sub.poll(33):
                pkt = recv_packet(sub, counters)
                if isinstance(pkt, Pose3DPacket):
                    poses.append(pkt)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(0)
    assert rc == 0, "".join(err.lines)[-2000:]
    assert len(poses) >= 20, f"{len(poses)} poses after the takeover"
    for pose in poses:
        k = next(iter(pose.frame_indices.values()))
        assert k >= 10  # only moments sent after the takeover: it was not subscribed before
        truth = np.array([[-200.0 + 5 * k, 0.0, 30.0], [-260.0 + 5 * k, 5.0, 25.0]])
        assert np.abs(pose.raw_mm - truth).max() < 1e-2


def test_fusion_standby_stopped_while_standing_by_exits_cleanly(tmp_path):
    calib = default_rig()
    calib.save(tmp_path / "calibration.toml")
    cams = "\n".join(f'[[cameras]]\nname = "{c}"\nsource = "synthetic"\n' for c in calib.names)
    (tmp_path / "rig.toml").write_text(f'name = "t"\n[calibration]\nfile = "calibration.toml"\n{cams}')
    out_ipc = tmp_path / "fusion.ipc"
    proc = subprocess.Popen([sys.executable, "-m", "fusion.process", "--config", str(tmp_path / "rig.toml"),
                             "--connect", f"ipc://{tmp_path}/kp.ipc", "--bind", f"ipc://{out_ipc}", "--standby"],
                            env=ENV, cwd=REPO, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = LineReader(proc.stderr)
    try:
        err.wait_for("hot standby ready", 60, proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out_ipc.exists()
    assert not any("took over" in ln for ln in err.lines)


def sent_frames(path: Path) -> pd.DataFrame:
    rows = [ln.split(",") for ln in path.read_text().splitlines() if ln.count(",") == 2]
    return pd.DataFrame(rows, columns=["camera", "frame_index", "capture_ns"]).astype(
        {"frame_index": np.int64, "capture_ns": np.int64})


@pytest.mark.slow
def test_a_standby_recorder_takes_over_and_the_parts_hold_every_frame_once(tmp_path):
    base = free_base_port()
    rig = write_rig(tmp_path / "rig.toml", base, flush_s=0.5)
    endpoint = f"tcp://127.0.0.1:{base + 1}"
    out = tmp_path / "session"
    sent_log = tmp_path / "sent.csv"
    sup = Supervisor(tmp_path / "logs", env=ENV)
    spec = ProcessSpec("recorder", "recorder.process",
                       ("--config", str(rig), "--out", str(out), "--connect", endpoint, "--no-publish",
                        "--continue-as-part"),
                       restart=True, standby=True, standby_delay_s=0.2, backoff_s=0.2, stop_timeout_s=60.0,
                       no_restart_codes=(2, 3))
    st = sup.add(spec)
    log = sup.log_path("recorder")
    publisher = mp.get_context("spawn").Process(target=publish_frames, args=(endpoint, str(sent_log), 30.0, 7.0, 0.5))
    events: list[str] = []

    def pump(until, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < deadline, f"timed out; {events}; log: {sup.tail_log('recorder', 10)}"
            events.extend(sup.poll())
            time.sleep(0.02)

    try:
        pump(lambda: (out / "session.json").exists() and "hot standby" in log.read_text(), 60)
        first, spare = st.popen.pid, st.spare.pid
        publisher.start()
        # kill after about 3 s of frames: several segments closed, one open
        pump(lambda: sent_log.exists() and sum(1 for _ in open(sent_log)) >= 90 * len(CAMS), 60)
        os.kill(first, signal.SIGKILL)
        pump(lambda: st.popen.pid == spare, 5)
        pump(lambda: not publisher.is_alive(), 30)
        time.sleep(0.5)
    finally:
        sup.close()
        if publisher.is_alive():
            publisher.terminate()
    assert any("took over" in e for e in events), events
    assert st.exit_codes[0] == -signal.SIGKILL and st.state == "stopped", sup.report()
    sent = sent_frames(sent_log)
    dead, part2 = open_session(out), open_session(out.with_name(out.name + ".part2"))
    assert dead.status == "recovered" and part2.status == "complete"
    for cam in CAMS:
        a, b = dead.frames(cam), part2.frames(cam)
        assert len(a) > 0 and len(b) > 0
        got = np.concatenate([a["frame_index"].to_numpy(), b["frame_index"].to_numpy()])
        # each frame once, none missing from the first recorded one to the last one sent
        ref = sent[sent.camera == cam].set_index("frame_index")["capture_ns"]
        assert list(got) == list(range(int(got[0]), int(ref.index.max()) + 1)), (
            f"{cam}: dead part {a['frame_index'].iloc[[0, -1]].tolist()}, part2 {b['frame_index'].iloc[[0, -1]].tolist()}")
        assert got[0] == 0
        caps = np.concatenate([a["capture_ns"].to_numpy(), b["capture_ns"].to_numpy()])
        assert np.array_equal(caps, ref.loc[got].to_numpy())
        # the frames the standby wrote from memory decode to what was sent (ffv1 is lossless)
        decoded = [(int(row.frame_index), decode_index(img)) for row, img in part2.iter_frames(cam)][:40]
        assert all(x == y for x, y in decoded), decoded[:5]
    # nothing the dead recorder had on disk was touched: every frame it lists still decodes
    assert all(int(row.frame_index) == decode_index(img) for row, img in dead.iter_frames(CAMS[0]))
    # 2D poses likewise: every moment once across the parts
    fi = np.concatenate([dead.pose2d(CAMS[0]).frame_index, part2.pose2d(CAMS[0]).frame_index])
    assert list(fi) == list(range(int(fi[0]), int(fi[-1]) + 1))
