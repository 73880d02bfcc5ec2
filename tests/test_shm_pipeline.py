"""Shared-memory mode ([network] shared_memory = true) with the real processes: a capture process
writes its ring and announces frames, an inference worker runs the model on frames in place."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import zmq

from ratrig.config import Endpoints, load_config
from ratrig.messages import FramePacket, FrameRefPacket, Keypoints2DPacket
from ratrig.shmring import FrameRingReader, FrameRingWriter, RingError, ring_name
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

from tests.helpers import PYTHON, REPO, video_rig_toml
from tests.test_inference_worker import _collect, _env, _free_base_port, _write_config, tiny_model  # noqa: F401


def test_capture_writes_its_ring_announces_each_frame_and_unlinks_at_exit(tmp_path):
    rig_path = video_rig_toml(tmp_path, 1, n_frames=30, fps=30.0, loop=False)
    rig_path.write_text(rig_path.read_text().replace("[network]\n", "[network]\nshared_memory = true\nring_slots = 16\n"))
    rig = load_config(rig_path)
    ctx = zmq.Context()
    sub = make_sub(ctx, [Endpoints(rig).connect("camera/cam0")], [b"frameref/", b"frame/"])
    t0 = time.monotonic_ns() + 1_500_000_000
    proc = subprocess.Popen([PYTHON, "-m", "acquisition.capture", "--config", str(rig_path), "--camera", "cam0",
                             "--t0-ns", str(t0)], cwd=REPO)
    counters = ReceiveCounters()
    from_ring: dict[int, np.ndarray] = {}
    from_wire: dict[int, np.ndarray] = {}
    ring = None
    reader = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(from_ring) < 30 or len(from_wire) < 30):
            if not sub.poll(200):
                continue
            pkt = recv_packet(sub, counters)
            if isinstance(pkt, FrameRefPacket):
                if reader is None:
                    reader = FrameRingReader(pkt.ring)
                    ring = pkt.ring
                assert (pkt.height, pkt.width, pkt.channels) == (48, 64, 3)
                from_ring[pkt.frame_index] = reader.read(pkt.slot, pkt.sequence)
            elif isinstance(pkt, FramePacket):
                from_wire[pkt.frame_index] = pkt.image.copy()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if reader is not None:
            reader.close()
        sub.close()
        ctx.term()
    assert sorted(from_ring) == list(range(30)) and sorted(from_wire) == list(range(30))
    for k in range(30):  # the ring holds exactly the frame the wire carried
        np.testing.assert_array_equal(from_ring[k], from_wire[k])
    assert ring == f"ratrig{rig.network.base_port}_cam0_{proc.pid}"
    assert not os.path.exists(f"/dev/shm/{ring}")  # the writer unlinked it
    with pytest.raises(RingError, match="no such"):
        FrameRingReader(ring)


def _ref(ring: FrameRingWriter, cam: str, k: int, capture_ns: int) -> FrameRefPacket:
    slot, seq = ring.write(np.full((480, 640, 3), 40 + (k % 50), np.uint8))
    return FrameRefPacket(cam, k, capture_ns, ring.name, slot, seq, 480, 640, 3,
                          {"capture": capture_ns, "publish": time.monotonic_ns()})


@pytest.mark.slow
def test_worker_runs_frames_in_place_and_drops_the_ones_it_was_lapped_on(tmp_path, tiny_model):  # noqa: F811
    cfg_path = _write_config(tmp_path / "rig.toml", tiny_model, _free_base_port())
    cfg_path.write_text(cfg_path.read_text().replace("[network]\n", "[network]\nshared_memory = true\nring_slots = 4\n"))
    rig = load_config(cfg_path)
    ep = Endpoints(rig)
    ctx = zmq.Context()
    cams = {c: make_pub(ctx, ep.bind(f"camera/{c}")) for c in ("c0", "c1")}
    rings = {c: FrameRingWriter(ring_name(rig.network.base_port, c, os.getpid()), 4, (480, 640, 3)) for c in cams}
    sub = make_sub(ctx, [ep.connect("inference/0")], [b"pose2d/", b"stats/"])
    proc = subprocess.Popen([PYTHON, "-m", "inference.worker", "--config", str(cfg_path), "--worker", "0"],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and not ready:
            assert proc.poll() is None, proc.stdout.read()
            _, stats = _collect(sub, 0.5)
            ready = any(s.process == "inference/0" and s.stats.get("ready") for s in stats)
        assert ready, "worker did not publish stats within 90 s"
        k = 0
        kps: list[Keypoints2DPacket] = []
        for _ in range(40):  # 30 fps, every frame announced
            cap = time.monotonic_ns()
            for c, pub in cams.items():
                send_packet(pub, _ref(rings[c], c, k, cap))
            k += 1
            got, _ = _collect(sub, 1 / 30)
            kps += got
        got, _ = _collect(sub, 0.5)
        kps += got
        c0 = {p.frame_index for p in kps if p.camera == "c0"}
        assert len(c0) >= 5, f"only {len(c0)} results for c0"
        assert c0 == {p.frame_index for p in kps if p.camera == "c1"}  # moments stay aligned
        assert all("ring_sequence" not in p.stamps_ns for p in kps)
        p = kps[-1]
        assert p.stamps_ns["capture"] <= p.stamps_ns["received"] <= p.stamps_ns["inferred"]
        # a frame the camera overwrote before the worker got to it: no result, counted as lapped
        lapped_k = k
        cap = time.monotonic_ns()
        refs = {c: _ref(rings[c], c, lapped_k, cap) for c in cams}
        for c in cams:
            for _ in range(4):  # a full lap of the 4-slot ring, unannounced
                rings[c].write(np.zeros((480, 640, 3), np.uint8))
            send_packet(cams[c], refs[c])
        k += 1
        got, stats = _collect(sub, 1.0)
        assert not any(q.frame_index == lapped_k for q in got)
        last = [s for s in stats if s.process == "inference/0"][-1].stats
        assert last["cameras"]["c0"]["lapped"] >= 1 and last["cameras"]["c1"]["lapped"] >= 1
        # and the worker goes on with the next frames
        for _ in range(10):
            cap = time.monotonic_ns()
            for c, pub in cams.items():
                send_packet(pub, _ref(rings[c], c, k, cap))
            k += 1
            got, _ = _collect(sub, 1 / 30)
            kps += got
        got, _ = _collect(sub, 0.5)
        kps += got
        assert any(q.frame_index > lapped_k for q in kps)
        # a reference to a ring that is not this camera's (another session's, or a hostile name): refused
        with FrameRingWriter(f"rrother{os.getpid()}", 4, (480, 640, 3)) as other:
            for name, ring in (("c0", other), ("c1", rings["c0"])):
                slot, seq = ring.write(np.zeros((480, 640, 3), np.uint8))
                send_packet(cams[name], FrameRefPacket(name, k, time.monotonic_ns(), ring.name, slot, seq, 480, 640, 3))
            got, _ = _collect(sub, 0.5)  # (the worker takes only the newest message of a socket per drain)
            send_packet(cams["c0"], FrameRefPacket("c0", k, time.monotonic_ns(), "../../etc/passwd", 0, 0, 480, 640, 3))
            more, stats = _collect(sub, 1.0)
            got += more
        assert not any(q.frame_index == k for q in got)
        last = [s for s in stats if s.process == "inference/0"][-1].stats
        assert last["cameras"]["c0"]["ring_errors"] == 2 and last["cameras"]["c1"]["ring_errors"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        # the worker only attached: the rings are still the writer's
        for r in rings.values():
            assert os.path.exists(f"/dev/shm/{r.name}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for r in rings.values():
            r.close()
        sub.close(0)
        for s in cams.values():
            s.close(0)
        ctx.term()


def test_network_mode_refuses_shared_memory(tmp_path):
    from ratrig.config import ConfigError

    rig_path = video_rig_toml(tmp_path, 1, n_frames=5)
    text = rig_path.read_text()
    for net, key in (('shared_memory = true\nhost = "0.0.0.0"', "0.0.0.0"),
                     ('shared_memory = true\ncamera_host = "10.0.0.7"', "10.0.0.7")):
        rig_path.write_text(text.replace("[network]\n", f"[network]\n{net}\n"))
        with pytest.raises(ConfigError, match=rf"network\.shared_memory: .*{key}.* keep the ZeroMQ wire"):
            load_config(rig_path)
    rig_path.write_text(text.replace("[network]\n", "[network]\nshared_memory = true\nring_slots = 1\n"))
    with pytest.raises(ConfigError, match=r"network\.ring_slots: expected 2\.\.1024, got 1"):
        load_config(rig_path)
