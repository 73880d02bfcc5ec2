"""Soak: the full recorded demo for a long time; RSS of every process, dropped frames and 3D latency
over the run, printed and drawn as a PNG.

    python bench/soak.py [--minutes 30] [--fps 15] [--warmup-min 2] [--png soak.png]

Samples the resident memory of every process of the session (psutil, every --sample-s) and the
capture -> 3D-received latency of every pose3d. Figures per process: RSS after the warm-up and at the
end, growth in % (goal < 5 %); frames dropped (cameras.dropped) and lost by the recorder (goal 0);
latency p99 per window (goal: stable).
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
import psutil
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from faults import Observation, free_base_port, listen, session_parts  # noqa: E402
from ratrig.clock import now_ns  # noqa: E402
from ratrig.transport import ReceiveCounters, make_sub  # noqa: E402


def process_name(cmd: list[str]) -> str | None:
    if "-m" not in cmd:
        return None
    module = cmd[cmd.index("-m") + 1]
    for flag in ("--camera", "--worker"):
        if flag in cmd:
            return f"{module.split('.')[0]}/{cmd[cmd.index(flag) + 1]}"
    if "--standby" in cmd:  # a stage's hot spare (ratrig.standby) has its own curve
        return f"{module} (standby)"
    return module if module != "ratrig" else "session (supervisor)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--warmup-min", type=float, default=2.0)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--png", default="soak.png")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
               TF_CPP_MIN_LOG_LEVEL="2")
    duration = args.minutes * 60
    rss: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ratrig-soak-") as tmp_s:
        tmp = Path(tmp_s)
        base = free_base_port()
        demo = subprocess.Popen([sys.executable, "-m", "ratrig", "demo", "--headless", "--duration", str(duration),
                                 "--fps", str(args.fps), "--record", str(tmp / "rec"), "--base-port", str(base),
                                 "--json", str(tmp / "summary.json"), "--run-dir", str(tmp / "run")],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        root = psutil.Process(demo.pid)
        ctx = zmq.Context()
        subs = {"pose3d": make_sub(ctx, [f"tcp://127.0.0.1:{base + 80}"], [b"pose3d"], rcvhwm=100_000)}
        obs = Observation()
        t_start = None
        try:
            while demo.poll() is None:
                listen(subs, obs, now_ns() + int(args.sample_s * 1e9), ReceiveCounters())
                if not obs.pose3d:
                    continue
                t_start = t_start or obs.pose3d[0][0]
                t_min = (now_ns() - t_start) / 60e9
                if t_min > args.minutes - 0.1:
                    continue  # the session is stopping: processes exit one by one
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        name = process_name(proc.cmdline())
                        if name:
                            rss.setdefault(name, []).append((t_min, proc.memory_info().rss / 2**20))
                    except psutil.Error:
                        continue
            _, err = demo.communicate()
        finally:
            subs["pose3d"].close(0)
            ctx.term()
        if demo.returncode != 0 or not obs.pose3d:
            print(f"demo failed (exit {demo.returncode}): {err[-1500:]}")
            return 1
        s = json.loads((tmp / "summary.json").read_text())
        from recorder.session import open_session

        written = 0
        for part in session_parts(tmp / "rec"):
            sess = open_session(part)
            written += sum(len(sess.frames(c)) for c in sess.cameras)
    published = sum(c.get("published", 0) for c in s["cameras"].values())
    dropped = sum(c.get("dropped", 0) for c in s["cameras"].values())
    recv = np.array([t for t, _, _ in obs.pose3d], np.int64)
    lat = (recv - np.array([c for _, c, _ in obs.pose3d], np.int64)) / 1e6
    t_lat = (recv - recv[0]) / 60e9
    print(f"\nsoak: {args.minutes:g} min of the recorded demo at {args.fps:g} fps (machine load as it is)\n")
    print(f"{'process':<22} {'RSS MB after warm-up':>21} {'at end':>8} {'growth %':>9}")
    rows = {}
    for name, series in sorted(rss.items()):
        a = np.array(series)
        warm = a[a[:, 0] >= args.warmup_min]
        if len(warm) < 2:
            continue
        first, last = warm[0, 1], float(np.median(warm[-3:, 1]))
        rows[name] = {"after_warmup_mb": first, "end_mb": last, "growth_pct": 100 * (last - first) / first}
        print(f"{name:<22} {first:>21.1f} {last:>8.1f} {rows[name]['growth_pct']:>9.1f}")
    windows = []
    edges = np.arange(0, t_lat[-1] + 1, max(1.0, args.minutes / 10))
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (t_lat >= lo) & (t_lat < hi)
        if m.sum() >= 5:
            windows.append((float(lo), float(np.percentile(lat[m], 99))))
    print(f"\nlatency p99 per window (min: ms): " + ", ".join(f"{lo:.0f}: {v:.0f}" for lo, v in windows))
    print(f"frames dropped before inference: {dropped}; published {published}, recorded {written}, "
          f"lost by the recorder {published - written}; problems {s['problems']}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for name, series in sorted(rss.items()):
        a = np.array(series)
        ax1.plot(a[:, 0], a[:, 1], label=name)
    ax1.axvline(args.warmup_min, color="grey", ls="--")
    ax1.set_ylabel("RSS (MB)")
    ax1.legend(fontsize=7, ncol=3)
    ax1.set_title(f"ratrig demo soak, {args.minutes:g} min, {args.fps:g} fps, recorded")
    ax2.plot([w[0] for w in windows], [w[1] for w in windows], "o-")
    ax2.set_ylabel("capture -> 3D p99 (ms)")
    ax2.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"curve: {args.png}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rss": rows, "latency_p99": windows, "dropped": dropped,
                                               "recorder_lost": published - written, "series": rss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
