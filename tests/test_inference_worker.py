"""The inference worker as a real process: ZeroMQ in and out, newest moments, skips, a dying camera,
malformed messages, stats and a clean SIGTERM.

The test process plays the cameras (PUB sockets bound where capture processes would bind) and the
fusion stage (a SUB on the worker's endpoint). The model is a small export built by the project's own
exporter with fixed random weights: this test is about the worker, not about accuracy.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from ratrig.config import Endpoints, load_config
from ratrig.messages import FramePacket, Keypoints2DPacket, StatsPacket
from ratrig.skeleton import KEYPOINTS
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet
from tests.helpers import ephemeral_port_floor

REPO = Path(__file__).resolve().parents[1]


def _free_base_port() -> int:
    for _ in range(50):
        base = random.randrange(12000, ephemeral_port_floor() - 100, 100)  # below outgoing connections' ports
        ok = True
        for off in (0, 1, 2, 40, 80, 81, 82, 83):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", base + off))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from inference import tfmodel

    folder = tmp_path_factory.mktemp("tiny_tf")
    tfmodel.export_dlc(tfmodel.init_params(len(KEYPOINTS), seed=3), folder, KEYPOINTS)
    return folder


def _write_config(path: Path, model: Path | str, base_port: int) -> Path:
    path.write_text(f"""
name = "worker-test"
[network]
base_port = {base_port}
[[cameras]]
name = "c0"
source = "synthetic"
fps = 30
[[cameras]]
name = "c1"
source = "synthetic"
fps = 30
[inference]
model = "{model}"
resize = 0.5
workers = [["c0", "c1"]]
""")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _frame(cam: str, k: int, capture_ns: int) -> FramePacket:
    img = np.full((480, 640, 3), 40 + (k % 50), np.uint8)
    return FramePacket(cam, k, capture_ns, img, {"capture": capture_ns, "publish": time.monotonic_ns()})


def _collect(sub: zmq.Socket, seconds: float) -> tuple[list[Keypoints2DPacket], list[StatsPacket]]:
    counters = ReceiveCounters()
    kps, stats = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if sub.poll(20):
            p = recv_packet(sub, counters)
            if isinstance(p, Keypoints2DPacket):
                kps.append(p)
            elif isinstance(p, StatsPacket):
                stats.append(p)
    return kps, stats


@pytest.mark.slow
def test_worker_end_to_end(tmp_path, tiny_model):
    cfg_path = _write_config(tmp_path / "rig.toml", tiny_model, _free_base_port())
    rig = load_config(cfg_path)
    ep = Endpoints(rig)
    ctx = zmq.Context()
    cams = {c: make_pub(ctx, ep.bind(f"camera/{c}")) for c in ("c0", "c1")}
    sub = make_sub(ctx, [ep.connect("inference/0")], [b"pose2d/", b"stats/"])
    proc = subprocess.Popen([sys.executable, "-m", "inference.worker", "--config", str(cfg_path), "--worker", "0"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Ready when the first stats packet arrives (model loaded and warmed up).
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and not ready:
            assert proc.poll() is None, proc.stdout.read()
            _, stats = _collect(sub, 0.5)
            ready = any(s.process == "inference/0" and s.stats.get("ready") for s in stats)
        assert ready, "worker did not publish stats within 90 s"

        # ZeroMQ's slow joiner: frames sent before the worker's subscriptions reach the cameras are
        # lost. Send a few first (a lost one makes a partial moment, by design), then measure.
        period = 1 / 30
        k = 0
        for _ in range(10):
            cap = time.monotonic_ns()
            for c, pub in cams.items():
                send_packet(pub, _frame(c, k, cap))
            k += 1
            _collect(sub, period)
        _collect(sub, 0.5)
        phase1 = k

        # Phase 1: synchronised cameras at 30 fps.
        t_end = time.monotonic() + 1.5
        kps: list[Keypoints2DPacket] = []
        while time.monotonic() < t_end:
            cap = time.monotonic_ns()
            for c, pub in cams.items():
                # 1 ms apart; c1 earlier, not later: a capture stamp after the send would make
                # "received" precede "capture" when the worker is quick
                send_packet(pub, _frame(c, k, cap - (1_000_000 if c == "c1" else 0)))
            k += 1
            got, _ = _collect(sub, period)
            kps += got
        got, _ = _collect(sub, 0.5)
        kps += got
        by_cam = {c: {p.frame_index: p for p in kps if p.camera == c and p.frame_index >= phase1} for c in cams}
        assert len(by_cam["c0"]) >= 3, f"only {len(by_cam['c0'])} results for c0 in 1.5 s"
        # Moments stay aligned: each frame run for one camera was run for the other too.
        assert set(by_cam["c0"]) == set(by_cam["c1"])
        p = kps[-1]
        assert p.keypoint_names == KEYPOINTS and p.keypoints.shape == (len(KEYPOINTS), 3)
        assert p.keypoints.dtype == np.float32
        assert p.stamps_ns["capture"] <= p.stamps_ns["received"] <= p.stamps_ns["inferred"]
        assert p.topic == f"pose2d/{p.camera}".encode()

        # Phase 2: a burst faster than the model: the worker skips, and runs the newest frame.
        burst_start = k
        for _ in range(40):
            cap = time.monotonic_ns()
            for c, pub in cams.items():
                send_packet(pub, _frame(c, k, cap))
            k += 1
        got, stats = _collect(sub, 1.5)
        burst = [q for q in got if q.frame_index >= burst_start]
        assert burst and max(q.frame_index for q in burst) == k - 1, "the newest frame of the burst was not run"
        assert len({q.frame_index for q in burst}) < 40
        assert sum(q.skipped_frames for q in burst if q.camera == "c0") > 0
        last = [s for s in stats if s.process == "inference/0"][-1].stats
        for c in cams:
            cs = last["cameras"][c]
            assert cs["skipped"] > 0
            assert cs["received"] == cs["inferred"] + cs["skipped"] + cs["failed"] + cs["pending"]
            assert cs["failed"] == 0
            assert cs["transport_latency_ms"]["p50"] >= 0 and cs["capture_to_2d_ms"]["p99"] > 0

        # Phase 3: c1 dies; c0 goes on and the worker keeps serving it.
        dead_from = k
        t_end = time.monotonic() + 1.5
        got_all: list[Keypoints2DPacket] = []
        stats_all: list[StatsPacket] = []
        while time.monotonic() < t_end:
            send_packet(cams["c0"], _frame("c0", k, time.monotonic_ns()))
            k += 1
            got, st = _collect(sub, period)
            got_all += got
            stats_all += st
        after = [q for q in got_all if q.frame_index >= dead_from]
        assert any(q.camera == "c0" for q in after), "worker stopped when c1 died"
        assert not any(q.camera == "c1" for q in after)
        assert max(q.frame_index for q in after if q.camera == "c0") >= k - 5
        assert stats_all[-1].stats["cameras"]["c1"]["alive"] is False

        # Phase 4: a malformed message and a frame the model cannot take are counted, not fatal.
        cams["c0"].send_multipart([b"frame/c0", b"\xc1 not msgpack", b"x"])
        time.sleep(0.2)
        send_packet(cams["c0"], FramePacket("c0", k, time.monotonic_ns(), np.zeros((480, 640, 2), np.uint8)))  # 2 channels: no colour conversion takes it
        time.sleep(0.5)
        k += 1
        send_packet(cams["c0"], _frame("c0", k, time.monotonic_ns()))
        got, stats = _collect(sub, 1.0)
        last = stats[-1].stats
        assert last["cameras"]["c0"]["malformed"] == 1
        assert last["errors"] >= 1 and last["cameras"]["c0"]["failed"] == 1
        assert any(q.camera == "c0" and q.frame_index == k for q in got), "worker did not recover"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close(0)
        for s in cams.values():
            s.close(0)
        ctx.term()


def test_worker_refuses_a_missing_model_before_opening_sockets(tmp_path):
    missing = tmp_path / "no_such_model"
    base = _free_base_port()
    cfg_path = _write_config(tmp_path / "rig.toml", missing, base)
    r = subprocess.run([sys.executable, "-m", "inference.worker", "--config", str(cfg_path), "--worker", "0"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert str(missing) in r.stderr and "does not exist" in r.stderr
    # Nothing was bound: the worker's port is still free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 40))


def test_worker_rejects_an_out_of_range_index(tmp_path, tiny_model):
    cfg_path = _write_config(tmp_path / "rig.toml", tiny_model, _free_base_port())
    r = subprocess.run([sys.executable, "-m", "inference.worker", "--config", str(cfg_path), "--worker", "3"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "out of range" in r.stderr
