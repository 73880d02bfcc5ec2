"""Frames on one host: shared-memory rings against today's ZeroMQ wire, with real processes.

    nice -n 10 python bench/bench_shm.py [--seconds 5] [--configs 4x120,8x60] [--slots 16] [--repeats 3]
                                         [--json OUT]

Per configuration (cameras x fps, 640x480x3 frames) and per transport, C camera processes publish
paced frames and one consumer process (an inference worker's place) takes every frame of every
camera and touches its pixels:
  wire  the camera sends a `FramePacket` (msgpack header + the raw frame, zero-copy send) on its PUB
        socket over tcp loopback, as `acquisition.capture` does today; the consumer decodes it.
  shm   the camera copies the frame into its `ratrig.shmring` ring and sends a `FrameRefPacket`
        (slot, sequence number); the consumer views the slot in place and checks it was not
        overwritten (`FrameView.intact()`) after touching the pixels.
Each camera reuses four pre-rendered frames (no rendering cost on either side). Printed per
transport: CPU time per frame of the camera processes and of the consumer (process CPU time over
the frames they handled), capture -> usable-in-consumer latency p50/p99, and frames lost (sent but
never usable: dropped by a queue, or lapped in the ring). Both transports run in one command,
alternating (`--repeats` runs each, medians reported, frames lost summed), on the same machine: the
ratios between them are the figures to read (the absolute ones, p99 above all, move with the
machine's load).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE = (480, 640, 3)


def _frames(camera: int) -> list[np.ndarray]:
    rng = np.random.default_rng(camera)
    return [rng.integers(0, 255, SHAPE, dtype=np.uint8) for _ in range(4)]


def camera_process(mode: str, camera: int, fps: float, seconds: float, endpoint: str, ring: str, slots: int,
                   t0_ns: int, q) -> None:  # runs in a child process
    import zmq

    from ratrig.messages import FramePacket, FrameRefPacket
    from ratrig.shmring import FrameRingWriter
    from ratrig.transport import make_pub, send_packet

    frames = _frames(camera)
    ctx = zmq.Context()
    pub = make_pub(ctx, endpoint, sndhwm=60)  # as acquisition.capture
    writer = FrameRingWriter(ring, slots, SHAPE) if mode == "shm" else None
    name = f"cam{camera}"
    q.put(("ready", camera))
    period = int(1e9 / fps)
    n = int(seconds * fps)
    sent = 0
    while time.monotonic_ns() < t0_ns:
        time.sleep(0.001)
    cpu0 = time.process_time()
    for k in range(n):
        due = t0_ns + k * period
        while True:
            dt = due - time.monotonic_ns()
            if dt <= 0:
                break
            time.sleep(min(dt / 1e9, 0.002))
        capture = time.monotonic_ns()
        img = frames[k % 4]
        if writer is None:
            ok = send_packet(pub, FramePacket(name, k, capture, img, {"capture": capture}), block=False)
        else:
            slot, seq = writer.write(img)
            ok = send_packet(pub, FrameRefPacket(name, k, capture, ring, slot, seq, *SHAPE, {"capture": capture}),
                             block=False)
        sent += ok
    cpu = time.process_time() - cpu0
    q.put(("camera", camera, sent, cpu))
    time.sleep(1.0)  # the consumer finishes its last reads before the ring goes
    if writer is not None:
        writer.close()
    pub.close(0)
    ctx.term()


def consumer_process(mode: str, endpoints: list[str], n_expected: int, t_end_ns: int, q) -> None:  # child
    import zmq

    from ratrig.messages import FramePacket, FrameRefPacket
    from ratrig.shmring import FrameRingReader, Lapped, RingError
    from ratrig.transport import ReceiveCounters, make_sub, recv_packet

    ctx = zmq.Context()
    topic = b"frame/" if mode == "wire" else b"frameref/"
    sub = make_sub(ctx, endpoints, [topic], rcvhwm=100_000)
    counters = ReceiveCounters()
    readers: dict[str, FrameRingReader] = {}
    q.put(("ready", -1))
    latency_ns: list[int] = []
    lapped = 0
    checksum = 0
    cpu0 = time.process_time()
    while time.monotonic_ns() < t_end_ns and len(latency_ns) + lapped < n_expected:
        if not sub.poll(100):
            continue
        pkt = recv_packet(sub, counters, zmq.NOBLOCK)
        if pkt is None:
            continue
        if isinstance(pkt, FramePacket):
            checksum += int(pkt.image[240, ::64, 0].sum())  # touch the pixels
        elif isinstance(pkt, FrameRefPacket):
            try:
                r = readers.get(pkt.ring)
                if r is None:
                    r = readers[pkt.ring] = FrameRingReader(pkt.ring)
                v = r.view(pkt.slot, pkt.sequence)
                checksum += int(v.image[240, ::64, 0].sum())
                if not v.intact():
                    lapped += 1
                    continue
            except (Lapped, RingError):
                lapped += 1
                continue
        else:
            continue
        latency_ns.append(time.monotonic_ns() - pkt.capture_ns)
    cpu = time.process_time() - cpu0
    for r in readers.values():
        r.close()
    sub.close(0)
    ctx.term()
    q.put(("consumer", len(latency_ns), lapped, cpu, latency_ns, counters.malformed, checksum))


def _free_ports(n: int) -> list[int]:
    """n loopback ports free right now (each run gets its own: a previous run's may linger)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run(mode: str, n_cams: int, fps: float, seconds: float, slots: int) -> dict:
    import zmq

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    endpoints = [f"tcp://127.0.0.1:{port}" for port in _free_ports(n_cams)]
    t0 = time.monotonic_ns() + int(4e9)  # spawn and import time
    n_per_cam = int(seconds * fps)
    procs = [ctx.Process(target=camera_process, args=(mode, i, fps, seconds, endpoints[i],
                                                       f"ratrigbench{os.getpid()}_{mode}_{i}", slots, t0, q))
             for i in range(n_cams)]
    for p in procs:
        p.start()
    ready = 0
    while ready < n_cams:
        ready += q.get(timeout=60)[0] == "ready"
    cons = ctx.Process(target=consumer_process,
                       args=(mode, endpoints, n_per_cam * n_cams, t0 + int((seconds + 3) * 1e9), q))
    cons.start()
    assert q.get(timeout=60)[0] == "ready"
    cams, consumer = [], None
    while len(cams) < n_cams or consumer is None:
        msg = q.get(timeout=seconds + 60)
        if msg[0] == "camera":
            cams.append(msg)
        elif msg[0] == "consumer":
            consumer = msg
    for p in (*procs, cons):
        p.join(30)
    del zmq
    sent = sum(m[2] for m in cams)
    cam_cpu = sum(m[3] for m in cams)
    got, lapped, cons_cpu, lat, malformed = consumer[1], consumer[2], consumer[3], np.array(consumer[4]), consumer[5]
    total = n_per_cam * n_cams
    return {
        "frames": total, "sent": sent, "usable": got, "lost": total - got, "lapped": lapped, "malformed": malformed,
        "camera_cpu_us_per_frame": cam_cpu / max(sent, 1) * 1e6,
        "consumer_cpu_us_per_frame": cons_cpu / max(got, 1) * 1e6,
        "latency_ms": {"p50": float(np.percentile(lat, 50)) / 1e6 if lat.size else None,
                       "p99": float(np.percentile(lat, 99)) / 1e6 if lat.size else None},
    }


def _median_run(runs: list[dict]) -> dict:
    """Per figure, the median over repeated runs (frames lost: the total)."""
    med = lambda key: float(np.median([r[key] for r in runs]))  # noqa: E731
    return {
        "frames": sum(r["frames"] for r in runs), "lost": sum(r["lost"] for r in runs),
        "lapped": sum(r["lapped"] for r in runs), "malformed": sum(r["malformed"] for r in runs),
        "camera_cpu_us_per_frame": med("camera_cpu_us_per_frame"),
        "consumer_cpu_us_per_frame": med("consumer_cpu_us_per_frame"),
        "latency_ms": {q: float(np.median([r["latency_ms"][q] for r in runs])) for q in ("p50", "p99")},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--configs", default="4x120,8x60", help="CAMERASxFPS,... (default 4x120,8x60)")
    ap.add_argument("--slots", type=int, default=16, help="ring slots per camera (default 16)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs per transport, interleaved; figures are medians over them (default 3)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPUs, 640x480x3 frames, {args.seconds:g} s per run, ring of {args.slots} slots")
    out: dict = {}
    for cfg in args.configs.split(","):
        n_cams, fps = cfg.lower().split("x")
        n_cams, fps = int(n_cams), float(fps)
        runs: dict[str, list[dict]] = {"wire": [], "shm": []}
        for _ in range(args.repeats):  # interleaved, so both transports see the same spells of load
            for mode in runs:
                runs[mode].append(run(mode, n_cams, fps, args.seconds, args.slots))
        res = {mode: _median_run(rs) for mode, rs in runs.items()}
        out[cfg] = {"median": res, "runs": runs}
        print(f"\n{n_cams} cameras x {fps:g} fps ({n_cams * fps:g} frames/s), "
              f"{'median of ' + str(args.repeats) + ' runs each' if args.repeats > 1 else 'one run each'}:")
        print(f"  {'':<5} {'camera CPU/frame':>17} {'consumer CPU/frame':>19} {'latency p50':>12} {'p99':>9} "
              f"{'lost':>6} {'of':>6}")
        for mode, r in res.items():
            lat = r["latency_ms"]
            print(f"  {mode:<5} {r['camera_cpu_us_per_frame']:14.0f} us {r['consumer_cpu_us_per_frame']:16.0f} us "
                  f"{lat['p50']:9.2f} ms {lat['p99']:6.2f} ms {r['lost']:6d} {r['frames']:6d}")
            if args.repeats > 1:
                print(f"  {'':<5} p99 per run: " + ", ".join(f"{x['latency_ms']['p99']:.2f}" for x in runs[mode])
                      + f" ms; lost per run: {[x['lost'] for x in runs[mode]]}")
        w, s = res["wire"], res["shm"]
        print(f"  shm / wire: camera CPU {s['camera_cpu_us_per_frame'] / w['camera_cpu_us_per_frame']:.2f}x, consumer "
              f"CPU {s['consumer_cpu_us_per_frame'] / w['consumer_cpu_us_per_frame']:.2f}x, p99 latency "
              f"{s['latency_ms']['p99'] / w['latency_ms']['p99']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
