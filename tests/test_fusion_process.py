"""The fusion process: import boundary, the socket-free pipeline, and a real process over ZeroMQ."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fusion.kalman import KalmanOptions
from fusion.process import FusionOptions, FusionPipeline
from fusion.sync import SyncOptions
from fusion.triangulate import RigGeometry, project
from ratrig.clock import now_ns
from ratrig.messages import Keypoints2DPacket, Pose3DPacket, StatsPacket
from ratrig.skeleton import KEYPOINTS
from synthetic.rig import default_rig

ROOT = Path(__file__).resolve().parents[1]
PERIOD = 33_333_333


def truth_at(i: np.ndarray | int) -> np.ndarray:
    """Frame index -> (..., 8, 3) mm: eight keypoints walking along the corridor."""
    t = np.asarray(i, float)[..., None] / 30.0
    k = np.arange(len(KEYPOINTS))
    x = -300 + 200 * t + 12 * k
    y = 10 * np.sin(2 * np.pi * 0.5 * t + k)
    z = 20 + 5 * (k % 3) + 4 * (1 - np.cos(2 * np.pi * 2 * t + k))
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def packets_for_frame(rig: RigGeometry, i: int, capture_ns: int, drop: set[str] = frozenset()):
    """Noise-free 2D packets of frame i, one per camera (except `drop`)."""
    p2 = project(rig, truth_at(i))
    out = []
    for c, cam in enumerate(rig.camera_names):
        if cam in drop:
            continue
        kp = np.concatenate([p2[c], np.full((len(KEYPOINTS), 1), 0.9)], axis=1).astype(np.float32)
        out.append(Keypoints2DPacket(cam, i, capture_ns, KEYPOINTS, kp, {"inference_done": capture_ns + 5_000_000}))
    return out


def test_fusion_imports_no_model_framework_or_qt():
    code = textwrap.dedent(
        """
        import sys
        blocked = ("tensorflow", "torch", "PySide6", "PyQt5", "PyQt6", "pyqtgraph", "dlclive", "keras")
        for name in blocked:
            sys.modules[name] = None  # any import of them raises ImportError
        import numpy as np
        import fusion.process, fusion.sync, fusion.kalman, fusion.triangulate
        from fusion.triangulate import RigGeometry, triangulate, project
        from ratrig.camera import Calibration, Camera
        cams = tuple(Camera(f"c{i}", (640, 480), np.array([[500., 0, 320], [0, 500, 240], [0, 0, 1]]), np.zeros(5),
                            np.zeros(3), np.array([100. * i, 0, 1000])) for i in range(3))
        rig = RigGeometry.from_calibration(Calibration(cams))
        p = project(rig, np.array([[10., 20, 30]]))
        assert abs(triangulate(rig, p).points_mm - [[10, 20, 30]]).max() < 1e-9
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in blocked and sys.modules[m] is not None)
        print("LOADED", loaded)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout


def make_pipeline(**kalman) -> FusionPipeline:
    opts = FusionOptions(sync=SyncOptions(PERIOD), kalman=KalmanOptions(**kalman))
    return FusionPipeline(default_rig(), KEYPOINTS, opts)


def test_pipeline_fuses_frame_sets_with_dropped_views_and_reordered_keypoints():
    pipe = make_pipeline()
    rig = pipe.rig
    rng = np.random.default_rng(0)
    t0 = 50_000_000_000
    poses: list[Pose3DPacket] = []
    for i in range(90):
        capture = t0 + i * PERIOD
        drop = {"cam_se"} if i % 3 == 0 else set()
        pkts = packets_for_frame(rig, i, capture, drop)
        # one camera's model reports keypoints in another order plus an unknown one
        p = pkts[0]
        order = rng.permutation(len(KEYPOINTS))
        names = tuple(KEYPOINTS[j] for j in order) + ("tail_tip",)
        kp = np.vstack([p.keypoints[order], [[1.0, 2.0, 0.9]]]).astype(np.float32)
        pkts[0] = Keypoints2DPacket(p.camera, p.frame_index, p.capture_ns, names, kp, p.stamps_ns)
        arrivals = np.sort(rng.integers(5_000_000, 25_000_000, len(pkts)))
        for j, arrival in zip(rng.permutation(len(pkts)), arrivals):
            poses += pipe.add(pkts[j], capture + int(arrival))
    poses += pipe.poll(t0 + 100 * PERIOD)
    assert [p.frame_set_index for p in poses] == list(range(90))
    assert "tail_tip" in pipe.unknown_keypoint_names
    for i, pose in enumerate(poses):
        assert set(pose.frame_indices.values()) == {i}
        assert pose.capture_ns == t0 + i * PERIOD
        n_views = 3 if i % 3 == 0 else 4
        assert len(pose.cameras) == n_views and (pose.n_cameras == n_views).all()
        assert np.abs(pose.raw_mm - truth_at(i)).max() < 1e-3  # float32 pixels on the wire
        assert pose.stamps_ns["inference_done"] == pose.capture_ns + 5_000_000
        assert pose.stamps_ns["capture"] <= pose.stamps_ns["fusion_first_in"] <= pose.stamps_ns["fusion_last_in"]
        assert pose.stamps_ns["fusion_last_in"] <= pose.stamps_ns["fusion_set"]
        assert np.isfinite(pose.filtered_mm).all()
    # noise-free input: the filter converges onto the truth
    assert np.abs(poses[-1].filtered_mm - truth_at(89)).max() < 2.0
    stats = pipe.stats()
    assert stats["frame_sets"] == 90 and stats["partial"] == 30 and stats["late"] == 0


def test_pipeline_forward_prediction_is_reported():
    opts = FusionOptions(sync=SyncOptions(PERIOD), predict_ahead_ms=50.0)
    pipe = FusionPipeline(default_rig(), KEYPOINTS, opts)
    poses = []
    for i in range(60):
        for p in packets_for_frame(pipe.rig, i, i * PERIOD + 10**9):
            poses += pipe.add(p, i * PERIOD + 10**9 + 1000)
    last = poses[-1]
    assert last.predicted_ahead_ms == pytest.approx(50.0)
    # filtered_mm is the estimate 50 ms after capture: closer to the truth then than to the truth at capture
    future = truth_at(59 + 1.5)
    assert np.linalg.norm(last.filtered_mm - future, axis=1).mean() < np.linalg.norm(last.raw_mm - future, axis=1).mean()


def test_main_refuses_bad_config_and_missing_calibration(tmp_path, capsys):
    from fusion.process import main

    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: config file not found" in capsys.readouterr().err
    cams = "\n".join(f'[[cameras]]\nname = "{c}"\nsource = "synthetic"\n' for c in ("cam_a", "cam_b"))
    (tmp_path / "rig.toml").write_text(f'name = "t"\n{cams}')
    assert main(["--config", str(tmp_path / "rig.toml")]) == 2
    assert "no --calibration given" in capsys.readouterr().err
    default_rig().save(tmp_path / "calibration.toml")
    assert main(["--config", str(tmp_path / "rig.toml"), "--calibration", str(tmp_path / "calibration.toml")]) == 2
    err = capsys.readouterr().err
    assert "cameras ['cam_a', 'cam_b'] of the rig config are not in the calibration" in err
    cams = "\n".join(f'[[cameras]]\nname = "{c}"\nsource = "synthetic"\n' for c in default_rig().names)
    (tmp_path / "rig2.toml").write_text('name = "t"\n[fusion]\ntolerance_ms = 20.0\n' + cams)
    assert main(["--config", str(tmp_path / "rig2.toml"), "--calibration", str(tmp_path / "calibration.toml")]) == 2
    err = capsys.readouterr().err
    assert "rig2.toml: [fusion]: SyncOptions.tolerance_ns: expected 0 < tolerance < half the frame period" in err


def test_pipeline_auto_forward_prediction_follows_measured_latency():
    opts = FusionOptions(sync=SyncOptions(PERIOD), predict_ahead_ms="auto", latency_window=10)
    pipe = FusionPipeline(default_rig(), KEYPOINTS, opts)
    poses = []
    for i in range(20):
        capture = i * PERIOD + 10**9
        for p in packets_for_frame(pipe.rig, i, capture):
            for pose in pipe.add(p, capture + 1000):
                pipe.published(pose, pose.capture_ns + 40_000_000)  # 40 ms capture -> publish
                poses.append(pose)
    assert poses[0].predicted_ahead_ms == 0.0  # nothing measured yet
    assert poses[-1].predicted_ahead_ms == pytest.approx(40.0)
    stats = pipe.stats()
    assert stats["capture_to_3d_ms"]["p50"] == pytest.approx(40.0)
    assert stats["views_used_mean"] == pytest.approx(4.0)


@pytest.mark.slow
def test_fusion_process_over_zeromq(tmp_path):
    import zmq

    from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

    calib = default_rig()
    calib.save(tmp_path / "calibration.toml")
    cams = "\n".join(f'[[cameras]]\nname = "{c}"\nsource = "synthetic"\nfps = 30.0\n' for c in calib.names)
    (tmp_path / "rig.toml").write_text(
        f'name = "t"\n[calibration]\nfile = "calibration.toml"\n[fusion]\nmax_wait_ms = 60.0\n{cams}'
    )
    kp_ep = f"ipc://{tmp_path}/kp.ipc"
    out_ep = f"ipc://{tmp_path}/fusion.ipc"
    ctx = zmq.Context()
    pub = make_pub(ctx, kp_ep)
    sub = make_sub(ctx, [out_ep])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fusion.process import main; sys.exit(main(sys.argv[1:]))",
         "--config", str(tmp_path / "rig.toml"), "--connect", kp_ep, "--bind", out_ep, "--stats-interval", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    counters = ReceiveCounters()
    rig = RigGeometry.from_calibration(calib)
    poses: list[Pose3DPacket] = []
    stats: list[StatsPacket] = []

    def receive(timeout_ms: int) -> None:
        while sub.poll(timeout_ms):
            pkt = recv_packet(sub, counters)
            (poses if isinstance(pkt, Pose3DPacket) else stats).append(pkt)
            timeout_ms = 0

    try:
        deadline = time.monotonic() + 60
        while not stats and time.monotonic() < deadline:  # up and connected (numba cache loaded)
            assert proc.poll() is None, proc.communicate()[1]
            receive(100)
        assert stats, "no stats message from the fusion process"
        sent_after_first = None
        i = 0
        while (sent_after_first is None or i < sent_after_first + 45) and time.monotonic() < deadline:
            capture = now_ns()
            drop = {"cam_nw"} if i % 4 == 1 else set()
            for p in packets_for_frame(rig, i, capture, drop):
                send_packet(pub, p)
            next_send = time.monotonic() + PERIOD / 1e9
            while (left := next_send - time.monotonic()) > 0:  # pace at the rig's 30 fps
                receive(max(1, int(left * 1000)))
            if poses and sent_after_first is None:
                sent_after_first = i
            i += 1
        receive(300)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        receive(300)
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(0)
    err = proc.stderr.read()
    assert rc == 0, err
    assert "stopping (signal" in err
    assert sent_after_first is not None, "no 3D pose came back"
    received = {next(iter(p.frame_indices.values())) for p in poses}
    # slow-joiner losses only at the start; afterwards every frame set is fused
    assert set(range(sent_after_first + 1, i)) <= received
    for pose in poses:
        frame = next(iter(pose.frame_indices.values()))
        assert set(pose.frame_indices.values()) == {frame}
        assert np.abs(pose.raw_mm - truth_at(frame)).max() < 1e-3
        assert (pose.n_cameras == (3 if frame % 4 == 1 else 4)).all()
        lat_ms = (pose.stamps_ns["fusion_published"] - pose.capture_ns) / 1e6
        assert 0 < lat_ms < 500
    final = stats[-1].stats
    assert final["frame_sets"] >= len(poses) and final["published"] == final["frame_sets"]
    assert final["late"] == 0 and final["partial"] >= (i - sent_after_first) // 4 - 1
    assert 0 < final["capture_to_3d_ms"]["p50"] < 500 and 3.0 <= final["views_used_mean"] <= 4.0
