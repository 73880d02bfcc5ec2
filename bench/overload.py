"""Overload: cameras faster than inference can take; live latency must stay bounded and the recorder
must keep every frame. Prints latency per time window, skipped frames and recorder losses.

    python bench/overload.py [--fps 30] [--duration 40] [--window 10]

Runs `ratrig demo --headless --record` with every camera at --fps (the 2-core demo infers about 15
moments/s, so 30 fps is about 2x what inference takes; the summary's inferred/skipped show the ratio
actually reached) and listens to fusion's pose3d. Figures: capture -> 3D-received latency p50/p99 per
window (goal: no growth from the first window to the last), frames skipped by inference (counted),
frames the cameras published vs frames in the recorded session (goal: 0 lost).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from faults import Observation, free_base_port, listen, session_parts  # noqa: E402
from ratrig.clock import now_ns  # noqa: E402
from ratrig.transport import ReceiveCounters, make_sub  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--duration", type=float, default=40.0)
    p.add_argument("--window", type=float, default=10.0, help="latency window, s")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
               TF_CPP_MIN_LOG_LEVEL="2")
    with tempfile.TemporaryDirectory(prefix="ratrig-overload-") as tmp_s:
        tmp = Path(tmp_s)
        base = free_base_port()
        summary_path = tmp / "summary.json"
        demo = subprocess.Popen([sys.executable, "-m", "ratrig", "demo", "--headless", "--duration", str(args.duration),
                                 "--fps", str(args.fps), "--record", str(tmp / "rec"), "--base-port", str(base),
                                 "--json", str(summary_path), "--run-dir", str(tmp / "run")],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ctx = zmq.Context()
        subs = {"pose3d": make_sub(ctx, [f"tcp://127.0.0.1:{base + 80}"], [b"pose3d"], rcvhwm=100_000)}
        obs = Observation()
        try:
            while demo.poll() is None:
                listen(subs, obs, now_ns() + 500_000_000, ReceiveCounters())
            _, err = demo.communicate()
        finally:
            subs["pose3d"].close(0)
            ctx.term()
        if demo.returncode != 0 or not obs.pose3d:
            print(f"demo failed (exit {demo.returncode}): {err[-1500:]}")
            return 1
        s = json.loads(summary_path.read_text())
        from recorder.session import open_session

        written: dict[str, int] = {}
        for part in session_parts(tmp / "rec"):
            sess = open_session(part)
            for c in sess.cameras:
                written[c] = written.get(c, 0) + len(sess.frames(c))

    recv = np.array([t for t, _, _ in obs.pose3d], np.int64)
    lat_ms = (recv - np.array([c for _, c, _ in obs.pose3d], np.int64)) / 1e6
    t_rel = (recv - recv[0]) / 1e9
    print(f"\noverload: 4 cameras at {args.fps:g} fps for {args.duration:g} s, recorded; machine load as it is "
          f"(absolute latencies are noisy)\n")
    print(f"{'window s':>10} {'3D sets':>8} {'latency p50 ms':>15} {'p99 ms':>8}")
    edges = np.arange(0, t_rel[-1] + args.window, args.window)
    windows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (t_rel >= lo) & (t_rel < hi)
        if m.sum() < 5:
            continue
        windows.append({"from_s": float(lo), "sets": int(m.sum()), "p50_ms": float(np.percentile(lat_ms[m], 50)),
                        "p99_ms": float(np.percentile(lat_ms[m], 99))})
        print(f"{lo:>4.0f}-{hi:<5.0f} {int(m.sum()):>8} {windows[-1]['p50_ms']:>15.1f} {windows[-1]['p99_ms']:>8.1f}")
    print(f"\n{'camera':<8} {'captured':>9} {'published':>10} {'inferred':>9} {'skipped':>8} {'recorded':>9} {'lost':>5}")
    lost_total = 0
    for cam, c in s["cameras"].items():
        lost = c.get("published", 0) - written.get(cam, 0)
        lost_total += max(lost, 0)
        print(f"{cam:<8} {c.get('captured', 0):>9} {c.get('published', 0):>10} {c.get('inferred', 0):>9} "
              f"{c.get('skipped', 0):>8} {written.get(cam, 0):>9} {lost:>5}")
    inferred = sum(c.get("inferred", 0) for c in s["cameras"].values())
    received = sum(c.get("received", 0) for c in s["cameras"].values())
    print(f"\noffered / inferred: {received / max(inferred, 1):.2f}x; recorder lost {lost_total} frames "
          f"(goal 0); summary latency capture_to_3d {s['latency_ms'].get('capture_to_3d')}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "windows": windows, "offered_over_inferred": received / max(inferred, 1), "recorder_lost": lost_total,
            "skipped": sum(c.get("skipped", 0) for c in s["cameras"].values()),
            "published": sum(c.get("published", 0) for c in s["cameras"].values())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
