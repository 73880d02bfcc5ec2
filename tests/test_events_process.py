"""The events process end to end: real ZeroMQ sockets, a real subprocess, outputs, stats, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from events.accuracy import degrade
from events.paw import PawPlacementDetector, default_thresholds
from events.rules import RuleEngine, RuleSpec
from ratrig.clock import now_ns
from ratrig.messages import EventPacket, Pose3DPacket, StatsPacket
from ratrig.skeleton import KEYPOINTS, PAWS
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet
from synthetic.rat import simulate

ROOT = Path(__file__).resolve().parents[1]
FPS = 30.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_config(path: Path, events_toml: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        name = "events-test"
        [[cameras]]
        name = "cam_ne"
        source = "synthetic"
        [network]
        base_port = {free_port() // 100 * 100 % 60000 + 1100}
        [events]
        stats_interval_s = 0.2
    """) + textwrap.dedent(events_toml))
    return path


def start(cfg: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "events.process", "--config", str(cfg), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_bad_output_config_exits_2_naming_the_key(tmp_path):
    cfg = write_config(tmp_path / "rig.toml", """
        [[events.outputs]]
        type = "serial"
        port = "/dev/ttyACM0"
        baud = "fast"
    """)
    proc = start(cfg)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "events.outputs[0].baud" in err and "rig.toml" in err


def test_run_check_validates_the_events_section_before_anything_starts(tmp_path):
    """`ratrig run --check` (and every session, before its first process) checks [events] the way
    the events process would: a bad rule or floor area is named without starting anything."""
    good = write_config(tmp_path / "good.toml", """
        floor_area_mm = [-760.0, -45.0, 760.0, 45.0]
        [[events.rules]]
        name = "far_end"
        when = "nose.x > 600 mm"
    """)
    bad = write_config(tmp_path / "bad.toml", """
        [[events.rules]]
        name = "far_end"
        when = "nose.x >> 600 mm"
    """)
    area = write_config(tmp_path / "area.toml", """
        floor_area_mm = [0.0, 0.0, 10.0]
    """)
    run = [sys.executable, "-m", "ratrig", "run", "--check"]
    ok = subprocess.run(run + [str(good)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    for path, key in ((bad, "events.rules[0].when"), (area, "events.floor_area_mm")):
        res = subprocess.run(run + [str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert key in res.stderr and path.name in res.stderr, res.stderr


def test_events_process_end_to_end(tmp_path):
    walk = simulate(8.0, FPS, seed=5)
    paw_idx = [KEYPOINTS.index(p) for p in PAWS]
    filtered = walk.keypoints_mm.copy()
    filtered[:, paw_idx] = degrade(walk.keypoints_mm[:, paw_idx], FPS, 3.0, seed=2)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.05)
    (tmp_path / "crash.py").write_text("class Crash:\n    def process(self, event):\n        raise ValueError('boom')\n")
    x_mid = float(np.median(walk.keypoints_mm[:, 0, 0]))
    cfg = write_config(tmp_path / "rig.toml", f"""
        [[events.rules]]
        name = "nose_past_mid"
        when = "nose.x > {x_mid:.1f} mm"
        [[events.outputs]]
        type = "python"
        path = "crash.py"
        class = "Crash"
        [[events.outputs]]
        type = "udp"
        port = {rx.getsockname()[1]}
        on = ["touchdown"]
    """)
    ctx = zmq.Context()
    pub = make_pub(ctx, "tcp://127.0.0.1:*")
    fusion_ep = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    events_ep = f"tcp://127.0.0.1:{free_port()}"
    sub = make_sub(ctx, [events_ep], [b"event/", b"stats/events"])
    proc = start(cfg, "--fusion", fusion_ep, "--bind", events_ep)
    try:
        counters = ReceiveCounters()
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        deadline = time.monotonic() + 30
        stats_seen = None
        while stats_seen is None and time.monotonic() < deadline:  # process up and connected
            if poller.poll(100):
                p = recv_packet(sub, counters)
                if isinstance(p, StatsPacket):
                    stats_seen = p
            assert proc.poll() is None, proc.stderr.read()
        assert stats_seen is not None
        time.sleep(0.3)
        t0 = now_ns()
        n = len(walk.times_s)
        for k in range(n):
            pkt = Pose3DPacket(
                frame_set_index=k, capture_ns=t0 + int(round(walk.times_s[k] * 1e9)),
                keypoint_names=KEYPOINTS, cameras=("cam_ne",), raw_mm=walk.keypoints_mm[k].copy(),
                filtered_mm=filtered[k].copy(), reprojection_error_px=np.zeros(8), n_cameras=np.full(8, 4, np.int8),
                score=np.ones(8), stamps_ns={"fusion": now_ns()})
            send_packet(pub, pkt)
            time.sleep(0.001)
        received: list[EventPacket] = []
        last_stats = None
        udp = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if poller.poll(50):
                p = recv_packet(sub, counters)
                if isinstance(p, EventPacket):
                    received.append(p)
                elif isinstance(p, StatsPacket):
                    last_stats = p
                    if p.stats["frames"] == n and time.monotonic() > deadline - 4:
                        break
            try:
                while True:
                    udp.append(json.loads(rx.recv(65536)))
            except (socket.timeout, BlockingIOError):
                pass
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(0)
        pub.close(0)
        ctx.term()
    try:
        while True:
            udp.append(json.loads(rx.recv(65536)))
    except (socket.timeout, BlockingIOError):
        pass
    rx.close()

    # the same frames through the detector and rules in this process give the same events
    det = PawPlacementDetector({p: default_thresholds() for p in PAWS})
    rules = RuleEngine([RuleSpec("nose_past_mid", f"nose.x > {x_mid:.1f} mm")], KEYPOINTS)
    expected = []
    for k in range(n):
        t = t0 + int(round(walk.times_s[k] * 1e9))
        expected += det.feed(t, filtered[k, paw_idx], k) + rules.feed(t, filtered[k], k)
    key = lambda e: (e.frame_set_index, e.name, e.subject)  # noqa: E731
    assert sorted(map(key, received)) == sorted(map(key, expected))
    touchdowns = [e for e in received if e.name == "touchdown"]
    assert len(touchdowns) >= 15
    assert any(e.name == "nose_past_mid" for e in received)
    for e in received:
        assert e.topic == b"event/" + e.name.encode()
        assert "events" in e.stamps_ns and "fusion" in e.stamps_ns
        assert e.emitted_ns >= e.capture_ns - 10**10
    # UDP output: touchdowns only, every one of them, despite the crashing plugin beside it
    assert sorted((u["frame_set_index"], u["subject"]) for u in udp) == sorted(
        (e.frame_set_index, e.subject) for e in touchdowns)
    s = last_stats.stats
    assert s["frames"] == n and s["events"]["touchdown"] == len(touchdowns)
    assert sum(s["touchdowns_by_paw"].values()) == len(touchdowns) and set(s["touchdowns_by_paw"]) <= set(PAWS)
    assert s["outputs"]["python[0]"]["errors"] == len(received)
    assert s["outputs"]["udp[1]"]["written"] == len(touchdowns)
    assert s["capture_to_event_ms_p50"] is not None


def test_setup_from_config_validates_and_derives_thresholds(tmp_path):
    from events.process import setup_from_config
    from ratrig.config import ConfigError, load_config

    cfg = write_config(tmp_path / "rig.toml", """
        rat_length_mm = 200.0
        touchdown_speed_mm_s = 180.0
        [events.paws.hind_left_paw]
        touchdown_height_mm = 9.0
        [[events.rules]]
        name = "rearing"
        when = "nose.z > 150 mm for 0.3 s"
        [[events.outputs]]
        type = "udp"
        port = 9999
        on = ["rearing", "touchdown"]
    """)
    setup = setup_from_config(load_config(cfg))
    assert setup.event_names == ("touchdown", "liftoff", "rearing")
    assert setup.thresholds["front_left_paw"].touchdown_speed_mm_s == 180.0
    assert setup.thresholds["front_left_paw"].touchdown_height_mm == pytest.approx(0.06 * 200)
    assert setup.thresholds["hind_left_paw"].touchdown_height_mm == 9.0
    assert setup.outputs[0].on == ("rearing", "touchdown")
    bad = write_config(tmp_path / "bad.toml", """
        [[events.rules]]
        name = "rearing"
        when = "snout.z > 150 mm"
    """)
    with pytest.raises(ConfigError, match=r"bad\.toml.*events\.rules\[0\]\.when: unknown keypoint 'snout'"):
        setup_from_config(load_config(bad))
    bad2 = write_config(tmp_path / "bad2.toml", """
        touchdown_height_mm = 30.0
    """)
    with pytest.raises(ConfigError, match=r"bad2\.toml: events: liftoff_height_mm"):
        setup_from_config(load_config(bad2))
    assert setup.floor_area_mm is None
    area = write_config(tmp_path / "area.toml", """
        floor_area_mm = [-760.0, -45.0, 760.0, 45.0]
    """)
    assert setup_from_config(load_config(area)).floor_area_mm == (-760.0, -45.0, 760.0, 45.0)
    bad3 = write_config(tmp_path / "bad3.toml", """
        floor_area_mm = [760.0, -45.0, -760.0, 45.0]
    """)
    with pytest.raises(ConfigError, match=r"bad3\.toml: events\.floor_area_mm: expected \[x_min, y_min, x_max, y_max\]"):
        setup_from_config(load_config(bad3))


def test_events_stage_imports_no_gui_or_model_framework():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('PySide6', 'pyqtgraph', 'tensorflow', 'torch', 'dlclive', 'synthetic'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import events.process, events.paw, events.rules, events.outputs, events.accuracy\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_stage_shifts_onsets_of_predicted_ahead_poses():
    from events.process import EventsStage, setup_from_config
    from ratrig.config import config_from_dict

    setup = setup_from_config(config_from_dict({"cameras": [{"name": "a", "source": "synthetic"}]}))
    dt = int(1e9 / 30)

    def run(ahead_ms):
        stage = EventsStage(setup, [])
        out = []
        for k in range(30):
            pts = np.zeros((len(KEYPOINTS), 3))
            pts[:, 2] = 4.0
            if 10 <= k < 20:  # front left paw swings forward 100 mm and lands at frame 20
                pts[KEYPOINTS.index("front_left_paw")] = [10.0 * (k - 9), 0.0, 15.0]
            elif k >= 20:
                pts[KEYPOINTS.index("front_left_paw")] = [100.0, 0.0, 4.0]
            out += stage.handle(Pose3DPacket(k, k * dt, KEYPOINTS, ("a",), pts, pts, np.zeros(8), np.full(8, 3, np.int8),
                                             np.ones(8), {}, ahead_ms))
        return [e for e in out if e.name == "touchdown"]

    (plain,), (ahead,) = run(0.0), run(40.0)
    assert plain.capture_ns == ahead.capture_ns == 20 * dt
    assert ahead.extra["onset_ns"] - plain.extra["onset_ns"] == 40_000_000
    assert ahead.extra["predicted_ahead_ms"] == 40.0 and "predicted_ahead_ms" not in plain.extra


def test_stage_ignores_coasted_paws_and_packets_without_quality():
    """EventsStage hands fusion's per-keypoint n_cameras to the detector: a paw the filter only
    coasted (n_cameras 0) cannot lift off; a packet without per-keypoint counts is judged by
    positions alone."""
    from events.process import EventsStage, setup_from_config
    from ratrig.config import config_from_dict

    setup = setup_from_config(config_from_dict({"cameras": [{"name": "a", "source": "synthetic"}]}))
    dt = int(1e9 / 30)
    paw = KEYPOINTS.index("front_left_paw")

    def run(n_cameras_up):
        stage = EventsStage(setup, [])
        out = []
        for k in range(14):
            pts = np.zeros((len(KEYPOINTS), 3))
            pts[:, 2] = 4.0
            n_cam = np.full(8, 3, np.int8)
            if k >= 10:  # the paw "rises" on frames the filter had no measurement for
                pts[paw] = [10.0 * (k - 9), 0.0, 30.0]
                n_cam = n_cameras_up(n_cam)
            out += stage.handle(Pose3DPacket(k, k * dt, KEYPOINTS, ("a",), pts, pts, np.ones(8), n_cam,
                                             np.ones(8), {}, 0.0))
        return [(e.name, e.subject) for e in out]

    def coasted(n):
        n = n.copy()
        n[paw] = 0
        return n

    assert run(coasted) == []
    assert run(lambda n: n) == [("liftoff", "front_left_paw")]
    assert run(lambda n: np.zeros(0, np.int8)) == [("liftoff", "front_left_paw")]


def test_stage_detects_steps_of_a_paw_seen_by_one_camera_through_floor_points():
    """A paw fusion could not triangulate (n_cameras 0, NaN) but placed on the floor from one
    camera (floor_mm) still gives its touchdown; the decision waits single_view_min_duration_ms,
    the onset does not. A triangulated paw ignores floor points."""
    from events.process import EventsStage, setup_from_config
    from ratrig.config import config_from_dict

    setup = setup_from_config(config_from_dict({"cameras": [{"name": "a", "source": "synthetic"}]}))
    dt = int(1e9 / 30)
    flp = KEYPOINTS.index("front_left_paw")

    def run(single_view: bool):
        stage = EventsStage(setup, [])
        out = []
        for k in range(40):
            pts = np.zeros((len(KEYPOINTS), 3))
            pts[:, 2] = 4.0
            n_cam = np.full(len(KEYPOINTS), 3, np.int8)
            paw = [100.0, 0.0, 4.0] if k >= 20 else [10.0 * (k - 9), 0.0, 4.0] if k >= 10 else [0.0, 0.0, 4.0]
            floor = np.full((len(KEYPOINTS), 3), np.nan)
            if single_view:  # the floor point of a swing races along the floor, then stops
                floor[flp] = paw
                pts[flp] = np.nan
                n_cam[flp] = 0
            else:
                pts[flp] = paw
                floor[flp] = [500.0, 500.0, 4.0]  # must be ignored: the paw is triangulated
            out += stage.handle(Pose3DPacket(k, k * dt, KEYPOINTS, ("a",), pts, pts, np.zeros(8), n_cam,
                                             np.ones(8), {}, 0.0, floor_mm=floor))
        return stage, [e for e in out if e.name == "touchdown" and e.subject == "front_left_paw"]

    stage3, (tri,) = run(False)
    stage1, (mono,) = run(True)
    assert stage3.counters.floor_points == 0 and stage1.counters.floor_points == 40
    assert mono.extra["onset_ns"] == tri.extra["onset_ns"]  # same onset ...
    assert mono.capture_ns == tri.capture_ns + 2 * dt  # ... decided 40 ms later, i.e. 2 frames at 30 fps
    assert np.allclose(mono.position_mm, [100.0, 0.0, 4.0])
