"""Event latency: frame capture -> output written, through the real events process.

Alone (default): this script publishes Pose3DPackets of the synthetic walking rat (3 mm jitter,
Kalman-smoothed, 30 fps, paced in real time) with capture_ns = the monotonic time of publishing, to
a real `events.process` subprocess configured with a UDP output and a serial output on a
pseudo-terminal, and measures on the receiving ends:

    capture -> event published (ZeroMQ SUB receive time - capture_ns)
    capture -> UDP datagram received
    capture -> serial byte read from the pty master (the TTL byte as the microcontroller would see it)

and, for comparison in the same run, the detector's own compute time per frame set in-process (the
plain alternative: no processes, no sockets). The detection delay (decided frame - estimated
contact onset; a property of the detector, not of the plumbing) is printed separately: the time
from the paw landing to the TTL pulse is that delay plus the capture -> serial latency.

With the full pipeline (cameras -> inference -> fusion -> events), capture_ns is the camera's
capture time, so the same measurement covers the whole chain. Add to the rig TOML

    [[events.outputs]]
    type = "udp"
    port = 9999

start the session (e.g. `ratrig demo --config configs/synthetic.toml`, or each stage's process),
and on the same machine (one monotonic clock) run

    nice -n 10 python bench/bench_events.py --listen-udp 9999 --duration 60

Detector accuracy through the fusion stage's own core (FusionPipeline: sync, triangulation, Kalman
filter), from the synthetic rat projected into the four cameras plus pixel noise:

    nice -n 10 python bench/bench_events.py --through-fusion --duration 60 --pixel-noise 2

Usage: nice -n 10 python bench/bench_events.py [--duration 20] [--fps 30]
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from events.accuracy import degrade, score_touchdowns  # noqa: E402
from events.paw import PawPlacementDetector, default_thresholds  # noqa: E402
from ratrig.clock import now_ns  # noqa: E402
from ratrig.messages import EventPacket, Pose3DPacket  # noqa: E402
from ratrig.skeleton import KEYPOINTS, PAWS  # noqa: E402
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet  # noqa: E402


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def line(label, ms):
    ms = np.asarray(ms, float)
    print(f"  {label:<38} n={len(ms):4d}  p50 {pct(ms, 50):7.3f} ms  p90 {pct(ms, 90):7.3f} ms  "
          f"p99 {pct(ms, 99):7.3f} ms  max {ms.max() if ms.size else float('nan'):7.3f} ms")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def listen_udp(port: int, duration_s: float) -> int:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", port))
    rx.settimeout(0.2)
    lat, sent = [], []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        try:
            data = rx.recv(65536)
        except socket.timeout:
            continue
        t = now_ns()
        msg = json.loads(data)
        lat.append((t - msg["capture_ns"]) * 1e-6)
        sent.append((msg["sent_ns"] - msg["capture_ns"]) * 1e-6)
    print(f"UDP events received on port {port} in {duration_s:.0f} s: {len(lat)}")
    line("camera capture -> events UDP sent", sent)
    line("camera capture -> UDP received", lat)
    return 0


def through_fusion(duration_s: float, fps: float, pixel_noise: float, seed: int) -> int:
    """Detector accuracy on 3D poses from the fusion stage's own core (FusionPipeline: sync,
    triangulation, Kalman filter), fed with the synthetic rat projected into the four synthetic
    cameras plus Gaussian pixel noise (no occlusion, no model): [fusion] defaults vs gating off."""
    import dataclasses

    from fusion.kalman import KalmanOptions
    from fusion.process import FusionPipeline, options_from_config
    from ratrig.config import config_from_dict
    from ratrig.messages import Keypoints2DPacket
    from synthetic.rat import simulate
    from synthetic.rig import CAMERA_NAMES, default_rig

    walk = simulate(duration_s, fps, seed)
    cal = default_rig()
    rig = config_from_dict({"cameras": [{"name": c, "source": "synthetic", "fps": fps} for c in CAMERA_NAMES]})
    rng = np.random.default_rng(seed + 100)
    uv = {c: cal.camera(c).project(walk.keypoints_mm.reshape(-1, 3)).reshape(len(walk.times_s), -1, 2)
          + rng.normal(0, pixel_noise, (len(walk.times_s), len(KEYPOINTS), 2)) for c in CAMERA_NAMES}
    paw_idx = [KEYPOINTS.index(p) for p in PAWS]
    base = options_from_config(rig)
    variants = {
        "fusion defaults": base,
        "gate off": dataclasses.replace(base, kalman=dataclasses.replace(base.kalman, gate_sigma=1e9)),
        "accel 10000 mm/s2": dataclasses.replace(base, kalman=dataclasses.replace(base.kalman, accel_noise_mm_s2=1e4)),
    }
    print(f"through FusionPipeline: {duration_s:g} s walk at {fps:g} fps, {pixel_noise:g} px noise, seed {seed}")
    t0 = 10**12
    for label, opts in variants.items():
        fp = FusionPipeline(cal, KEYPOINTS, opts)
        det = PawPlacementDetector({p: default_thresholds() for p in PAWS})
        events, err = [], []
        for k, t in enumerate(walk.times_s):
            cap = t0 + int(round(t * 1e9))
            poses = []
            for c in CAMERA_NAMES:
                kp = np.concatenate([uv[c][k], np.full((len(KEYPOINTS), 1), 0.95)], axis=1)
                poses += fp.add(Keypoints2DPacket(c, k, cap, KEYPOINTS, kp), cap + 1_000_000)
            for pose in poses:
                f = np.asarray(pose.filtered_mm)
                truth = walk.keypoints_mm[pose.frame_set_index]
                err += np.linalg.norm(f[paw_idx] - truth[paw_idx], axis=1).tolist()
                events += det.feed(pose.capture_ns, f[paw_idx], pose.frame_set_index)
        end_s = walk.times_s[-1] - 0.3
        sc = score_touchdowns(events, walk.contacts, t0, skip_s=0.5, end_s=end_s)
        gated = int(fp.kalman.gated_total[paw_idx].sum())
        print(f"  {label:<18} paw 3D error median {np.nanmedian(err):5.1f} mm p99 {np.nanpercentile(err, 99):6.1f} mm, "
              f"paw measurements gated {gated:5d}/{len(walk.times_s) * 4} | touchdown precision {sc.precision:.3f} "
              f"recall {sc.recall:.3f} onset error median {sc.timing_error_ms_median:.1f} ms")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--noise-mm", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--listen-udp", type=int, help="only listen for UDP events of a running pipeline")
    ap.add_argument("--through-fusion", action="store_true",
                    help="accuracy on poses from fusion's FusionPipeline (projected truth + pixel noise)")
    ap.add_argument("--pixel-noise", type=float, default=2.0)
    args = ap.parse_args(argv)
    if args.listen_udp:
        return listen_udp(args.listen_udp, args.duration)
    if args.through_fusion:
        return through_fusion(args.duration, args.fps, args.pixel_noise, args.seed)

    from synthetic.rat import simulate

    walk = simulate(args.duration, args.fps, args.seed)
    paw_idx = [KEYPOINTS.index(p) for p in PAWS]
    filtered = walk.keypoints_mm.copy()
    filtered[:, paw_idx] = degrade(walk.keypoints_mm[:, paw_idx], args.fps, args.noise_mm, args.seed + 1)
    n = len(walk.times_s)

    # plain alternative: the detector in-process, no sockets
    det = PawPlacementDetector({p: default_thresholds() for p in PAWS})
    feed_us, local_events = [], []
    for k in range(n):
        t = int(round(walk.times_s[k] * 1e9))
        a = time.perf_counter_ns()
        local_events += det.feed(t, filtered[k, paw_idx], k)
        feed_us.append((time.perf_counter_ns() - a) / 1e3)
    end_s = walk.times_s[-1] - 0.3
    score = score_touchdowns(local_events, walk.contacts, 0, skip_s=0.5, end_s=end_s)
    decided = score_touchdowns(local_events, walk.contacts, 0, skip_s=0.5, end_s=end_s, time="decided")

    master, slave = os.openpty()
    tty = os.ttyname(slave)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.2)
    tmp = Path(tempfile.mkdtemp(prefix="bench_events_"))
    cfg = tmp / "rig.toml"
    cfg.write_text(textwrap.dedent(f"""
        name = "bench-events"
        [[cameras]]
        name = "cam_ne"
        source = "synthetic"
        [events]
        stats_interval_s = 1.0
        [[events.outputs]]
        type = "udp"
        port = {rx.getsockname()[1]}
        [[events.outputs]]
        type = "serial"
        port = "{tty}"
        baud = 115200
        on = ["touchdown"]
    """))
    ctx = zmq.Context()
    pub = make_pub(ctx, "tcp://127.0.0.1:*")
    fusion_ep = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    events_ep = f"tcp://127.0.0.1:{free_port()}"
    sub = make_sub(ctx, [events_ep], [b"event/", b"stats/events"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "events.process", "--config", str(cfg), "--fusion", fusion_ep,
                             "--bind", events_ep, "--log-level", "WARNING"], cwd=ROOT, env=env)

    udp, zmq_lat, tty_reads = [], [], []
    stop = threading.Event()

    def read_udp():
        while not stop.is_set():
            try:
                data = rx.recv(65536)
            except socket.timeout:
                continue
            udp.append((now_ns(), json.loads(data)))

    def read_tty():
        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.1)
            if r:
                t = now_ns()
                tty_reads.extend((t, b) for b in os.read(master, 256))

    def read_sub():
        counters = ReceiveCounters()
        while not stop.is_set():
            if sub.poll(100):
                p = recv_packet(sub, counters)
                if isinstance(p, EventPacket):
                    zmq_lat.append((now_ns() - p.capture_ns) * 1e-6)

    threads = [threading.Thread(target=f, daemon=True) for f in (read_udp, read_tty, read_sub)]
    for th in threads:
        th.start()
    time.sleep(3.0)  # process start-up and subscriptions
    period_ns = int(1e9 / args.fps)
    start = now_ns()
    sent_capture = {}
    for k in range(n):
        due = start + k * period_ns
        while now_ns() < due:
            time.sleep(max(0.0, (due - now_ns()) / 1e9 - 0.0005))
        cap = now_ns()
        sent_capture[k] = cap
        send_packet(pub, Pose3DPacket(
            frame_set_index=k, capture_ns=cap, keypoint_names=KEYPOINTS, cameras=("cam_ne",),
            raw_mm=walk.keypoints_mm[k].copy(), filtered_mm=filtered[k].copy(),
            reprojection_error_px=np.zeros(len(KEYPOINTS)), n_cameras=np.full(len(KEYPOINTS), 4, np.int8),
            score=np.ones(len(KEYPOINTS))))
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(10)
    stop.set()
    for th in threads:
        th.join(1)
    sub.close(0)
    pub.close(0)
    ctx.term()

    udp_lat = [(t - m["capture_ns"]) * 1e-6 for t, m in udp]
    udp_sent = [(m["sent_ns"] - m["capture_ns"]) * 1e-6 for _, m in udp]
    emitted = [(m["emitted_ns"] - m["capture_ns"]) * 1e-6 for _, m in udp]
    td = [m for _, m in udp if m["name"] == "touchdown"]
    event_bytes = [(t, b) for t, b in tty_reads if b & 0x80]
    tty_lat = [(t - m["capture_ns"]) * 1e-6 for (t, _), m in zip(event_bytes, td)]
    print(f"events process alone: {n} frame sets at {args.fps:g} fps ({args.duration:g} s synthetic walk, "
          f"{args.noise_mm:g} mm jitter), exit status {rc}")
    print(f"events: {len(udp)} over UDP ({len(td)} touchdowns), {len(event_bytes)} serial event bytes")
    line("in-process detector feed() per frame", np.array(feed_us) / 1e3)
    line("capture -> event emitted (detector)", emitted)
    line("capture -> event received on ZeroMQ SUB", zmq_lat)
    line("capture -> UDP sent (output written)", udp_sent)
    line("capture -> UDP datagram received", udp_lat)
    line("capture -> serial byte read on pty", tty_lat)
    print(f"  ratio capture->UDP received p50 / in-process feed() p50: "
          f"{pct(udp_lat, 50) * 1e3 / max(pct(feed_us, 50), 1e-9):.0f}x")
    print(f"detector on this walk: touchdown precision {score.precision:.3f} recall {score.recall:.3f}, "
          f"onset error median {score.timing_error_ms_median:.1f} ms; decided frame - true touchdown: "
          f"median {decided.decision_delay_ms_median:.1f} ms (the paw-to-TTL latency is this plus capture -> serial)")
    return 0 if rc == 0 and len(td) == len(event_bytes) else 1


if __name__ == "__main__":
    sys.exit(main())
