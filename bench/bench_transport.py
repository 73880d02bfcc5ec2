"""Transport benchmark: 4 camera processes publishing 640x480 BGR frames over ZeroMQ tcp loopback to
one subscriber process, paced at 4x30, 4x60 and 4x120 frames/s; plus an unpaced run for the ceiling.

ratrig's wire form (msgpack header + zero-copy raw buffer) against the plain alternative on the same
frames: `send_pyobj` (pickle of a dict holding the array). Prints frames/s, loss and latency
(publish -> receive) p50/p99 in ms.

    python bench/bench_transport.py [--seconds 5]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import pickle
import time

import numpy as np
import zmq

from ratrig.messages import FramePacket, decode, encode

N_CAMERAS = 4
SHAPE = (480, 640, 3)


def publisher(endpoint: str, camera: str, fps: float | None, seconds: float, wire: str, start_at: float) -> None:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 100000)
    pub.connect(endpoint)
    base = np.random.default_rng(0).integers(0, 255, SHAPE, dtype=np.uint8)
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.monotonic_ns()
    k = 0
    while True:
        due = t0 + (int(k * 1e9 / fps) if fps else 0)
        now = time.monotonic_ns()
        if now - t0 > seconds * 1e9:
            break
        if fps and due > now:
            time.sleep((due - now) / 1e9)
        image = base.copy()  # a fresh buffer per frame, as a camera delivers
        if wire == "ratrig":
            pkt = FramePacket(camera, k, time.monotonic_ns(), image, {"publish": time.monotonic_ns()})
            pub.send_multipart(encode(pkt), copy=False)
        else:
            pub.send_pyobj({"camera": camera, "frame_index": k, "publish_ns": time.monotonic_ns(), "image": image},
                           protocol=pickle.HIGHEST_PROTOCOL)
        k += 1
    pub.send_multipart([b"end", camera.encode()])
    time.sleep(0.5)
    pub.close(linger=1000)
    ctx.term()


def run(fps: float | None, seconds: float, wire: str) -> dict:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    start_at = time.time() + 1.5
    procs = [mp.Process(target=publisher, args=(endpoint, f"cam{i}", fps, seconds, wire, start_at))
             for i in range(N_CAMERAS)]
    for p in procs:
        p.start()
    latencies: list[float] = []
    counts = {f"cam{i}": 0 for i in range(N_CAMERAS)}
    last_index = {f"cam{i}": -1 for i in range(N_CAMERAS)}
    ended = set()
    t_first = t_last = None
    while len(ended) < N_CAMERAS:
        if not sub.poll(10000):
            break
        if wire == "ratrig":
            frames = sub.recv_multipart(copy=False)
            if bytes(frames[0].buffer) == b"end":
                ended.add(bytes(frames[1].buffer).decode())
                continue
            pkt = decode(frames)
            now = time.monotonic_ns()
            cam, idx, pub_ns = pkt.camera, pkt.frame_index, pkt.stamps_ns["publish"]
            assert pkt.image.shape == SHAPE
        else:
            msg = sub.recv_multipart()
            if msg[0] == b"end":
                ended.add(msg[1].decode())
                continue
            obj = pickle.loads(msg[0])
            now = time.monotonic_ns()
            cam, idx, pub_ns = obj["camera"], obj["frame_index"], obj["publish_ns"]
        counts[cam] += 1
        last_index[cam] = max(last_index[cam], idx)
        latencies.append((now - pub_ns) / 1e6)
        t_first = t_first or time.monotonic()
        t_last = time.monotonic()
    for p in procs:
        p.join()
    sub.close()
    ctx.term()
    sent = sum(v + 1 for v in last_index.values())
    got = sum(counts.values())
    lat = np.array(latencies)
    return {"fps_target": None if fps is None else N_CAMERAS * fps, "received_fps": got / max(1e-9, (t_last - t_first)),
            "lost": sent - got, "sent": sent, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    print(f"transport: {N_CAMERAS} publisher processes -> 1 subscriber, 640x480x3 uint8, tcp loopback, {args.seconds:.0f} s each")
    print(f"{'rate':>12} {'wire':>8} {'recv fps':>9} {'sent':>6} {'lost':>5} {'p50 ms':>7} {'p99 ms':>7}")
    rows = {}
    for fps in (30.0, 60.0, 120.0, None):
        for wire in ("ratrig", "pickle"):
            r = run(fps, args.seconds, wire)
            rows[(fps, wire)] = r
            label = f"4x{fps:.0f}" if fps else "unpaced"
            print(f"{label:>12} {wire:>8} {r['received_fps']:9.1f} {r['sent']:6d} {r['lost']:5d} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f}")
    for fps in (30.0, 60.0, 120.0, None):
        a, b = rows[(fps, "ratrig")], rows[(fps, "pickle")]
        label = f"4x{fps:.0f}" if fps else "unpaced"
        print(f"ratio pickle/ratrig at {label}: p50 latency {b['p50_ms'] / a['p50_ms']:.2f}x, "
              f"p99 {b['p99_ms'] / a['p99_ms']:.2f}x, throughput {a['received_fps'] / b['received_fps']:.2f}x (ratrig/pickle)")


if __name__ == "__main__":
    main()
