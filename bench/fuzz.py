"""Fuzz every subscriber stage with hostile multipart messages through real sockets; print counts.

    python bench/fuzz.py [--messages 100000] [--stages probe,inference,fusion,events,recorder]
                         [--before REV]

For each stage in turn the real process (`python -m inference.worker`, `fusion.process`,
`events.process`, `recorder.process`, `acquisition.probe`) is started on the synthetic rig's config;
this script binds its upstream PUB ports in place of the cameras / workers / fusion / events and
sends N hostile messages (`tests/hostile.py`: 14 categories, every one malformed by construction)
spread over them. The PUB side queues without limit and the stage's receive queue pushes back over
TCP, so every message reaches the stage. Figures per stage: messages sent, malformed messages the
stage counted (from its own stats; goal: exactly N), whether it is still alive, its RSS before and at
peak during the flood (goal: flat; the messages declare up to 2^80 bytes each), and the rate.

`--before REV` also runs the same messages through the decoder of git revision REV in this process
and counts what it would have let through or raised (the receive loops only caught MessageError).
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ratrig.cli._session import prepare  # noqa: E402
from ratrig.config import Endpoints, load_config, replace_section, save_config  # noqa: E402
from ratrig.messages import MessageError, StatsPacket, decode  # noqa: E402
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet  # noqa: E402
from tests.helpers import free_base_port  # noqa: E402
from tests.hostile import MUTATORS, hostile_message  # noqa: E402

STAGES = ("probe", "inference", "fusion", "events", "recorder")


def rig_config(tmp: Path) -> tuple[Path, object]:
    rig = load_config(REPO / "configs" / "synthetic.toml")
    rig = replace_section(rig, "network", base_port=free_base_port())
    rig = replace_section(rig, "recorder", min_free_gb=0.5, warn_free_gb=0.5)
    rig, _ = prepare(rig, tmp)
    path = tmp / "rig.toml"
    save_config(rig, path)
    return path, load_config(path)


def stage_plan(stage: str, rig, config: Path, tmp: Path) -> tuple[list[str], str, list[tuple[str, str, str]]]:
    """(command, stats endpoint, [(upstream bind endpoint, message kind, camera)])."""
    ep = Endpoints(rig)
    cams = rig.camera_names
    frame_ups = [(ep.bind(f"camera/{c}"), "frame", c) for c in cams]
    if stage == "probe":
        return (["-m", "acquisition.probe", "--config", str(config), "--bind", ep.bind("monitor")],
                ep.connect("monitor"), frame_ups)
    if stage == "inference":
        group = rig.worker_groups()[0]
        return (["-m", "inference.worker", "--config", str(config), "--worker", "0"], ep.connect("inference/0"),
                [(ep.bind(f"camera/{c}"), "frame", c) for c in group])
    pose2d_ups = [(ep.bind(f"inference/{j}"), "pose2d", g[0]) for j, g in enumerate(rig.worker_groups())]
    if stage == "fusion":
        return ["-m", "fusion.process", "--config", str(config)], ep.connect("fusion"), pose2d_ups
    if stage == "events":
        return ["-m", "events.process", "--config", str(config)], ep.connect("events"), [(ep.bind("fusion"), "pose3d", "")]
    if stage == "recorder":
        return (["-m", "recorder.process", "--config", str(config), "--out", str(tmp / "session")], ep.connect("recorder"),
                frame_ups + pose2d_ups + [(ep.bind("fusion"), "pose3d", ""), (ep.bind("events"), "event", "")])
    raise ValueError(stage)


def malformed_of(stats: dict) -> int:
    if "malformed" in stats and stats["malformed"] is not None:
        return int(stats["malformed"])
    return sum(int(c.get("malformed", 0)) for c in stats.get("cameras", {}).values())  # inference worker


class StatsWatch:
    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sub = make_sub(ctx, [endpoint], [b"stats/"])
        self.counters = ReceiveCounters()
        self.latest: dict | None = None
        self.updates = 0

    def pump(self, timeout_ms: int) -> None:
        if self.sub.poll(timeout_ms):
            while True:
                pkt = recv_packet(self.sub, self.counters, zmq.NOBLOCK)
                if pkt is None:
                    break
                if isinstance(pkt, StatsPacket):
                    self.latest = dict(pkt.stats)
                    self.updates += 1

    def wait(self, cond, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pump(100)
            if self.latest is not None and cond(self.latest):
                return True
        return False


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)


def fuzz_stage(stage: str, n: int, seed: int, tmp: Path) -> dict:
    config, rig = rig_config(tmp)
    cmd, stats_ep, ups = stage_plan(stage, rig, config, tmp)
    ctx = zmq.Context()
    pubs = {}
    for bind, _, _ in ups:
        if bind not in pubs:
            pubs[bind] = make_pub(ctx, bind, sndhwm=0)  # unlimited queue: this side never drops
    watch = StatsWatch(ctx, stats_ep)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_path = tmp / f"{stage}.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=env)
    result = {"stage": stage, "sent": n, "counted": None, "alive": False, "rss_before_mb": None, "rss_peak_mb": None,
              "rate_per_s": None, "log": str(log_path)}
    try:
        if not watch.wait(lambda s: True, 180):
            result["error"] = "no stats (did not start): " + log_path.read_text(errors="replace")[-400:]
            return result
        # Slow joiner: messages sent before the stage's subscription arrives are dropped by PUB. Sync
        # with single garbage messages until the stage has counted one, then take a steady baseline.
        deadline = time.monotonic() + 60
        while malformed_of(watch.latest) == 0 and time.monotonic() < deadline:
            for bind, _, cam in ups:
                pubs[bind].send_multipart([b"frame/" + cam.encode() if cam else b"pose3d", b"\xc1"])
            watch.pump(300)
        before = -1
        while True:
            updates = watch.updates
            watch.wait(lambda s: watch.updates >= updates + 2, 10)
            if malformed_of(watch.latest) == before:
                break
            before = malformed_of(watch.latest)
        rss = RssSampler(proc.pid)
        result["rss_before_mb"] = rss.proc.memory_info().rss / 2**20
        rss.start()
        rng = np.random.default_rng(seed)
        categories = collections.Counter()
        t0 = time.monotonic()
        for i in range(n):
            bind, kind, cam = ups[i % len(ups)]
            category, frames = hostile_message(rng, kind, cam or "cam_ne")
            categories[category] += 1
            pubs[bind].send_multipart(frames)
            if i % 2000 == 0:
                watch.pump(0)
        done = watch.wait(lambda s: malformed_of(s) - before >= n, 600)
        elapsed = time.monotonic() - t0
        watch.wait(lambda s: False, 1.5)  # one more stats period: nothing beyond N may arrive
        rss.stop.set()
        rss.join()
        result.update(counted=malformed_of(watch.latest) - before, alive=proc.poll() is None,
                      rss_peak_mb=rss.peak / 2**20, rate_per_s=n / elapsed if done else None,
                      categories=dict(categories))
        return result
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        result["exit_code"] = proc.returncode
        for s in pubs.values():
            s.close(0)
        watch.sub.close(0)
        ctx.term()


def decoder_before(rev: str, n: int, seed: int) -> dict:
    """Run N hostile messages through this decoder and through revision `rev`'s; count outcomes."""
    src = subprocess.check_output(["git", "show", f"{rev}:ratrig/messages.py"], cwd=REPO).decode()
    spec = importlib.util.spec_from_loader("messages_before", loader=None)
    old = importlib.util.module_from_spec(spec)
    sys.modules["messages_before"] = old
    exec(compile(src, f"{rev}:ratrig/messages.py", "exec"), old.__dict__)
    rng = np.random.default_rng(seed)
    counts = {"now": collections.Counter(), "before": collections.Counter()}
    for i in range(n):
        _, frames = hostile_message(rng, ("frame", "pose2d", "pose3d", "event")[i % 4])
        for key, mod, err in (("now", None, MessageError), ("before", old, old.MessageError)):
            try:
                (decode if mod is None else mod.decode)(frames)
                counts[key]["accepted"] += 1
            except err:
                counts[key]["rejected"] += 1
            except Exception as e:  # noqa: BLE001 - what would have left the receive loop
                counts[key][f"raised {type(e).__name__}"] += 1
    return {k: dict(v) for k, v in counts.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000, help="hostile messages per stage (default 100000)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {','.join(STAGES)}")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--before", default=None, metavar="REV", help="also count what REV's decoder did with them")
    p.add_argument("--json", default=None, help="also write the rows (and the --before counts) here")
    args = p.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"{len(MUTATORS)} categories of hostile message: {', '.join(MUTATORS)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ratrig-fuzz-") as tmp:
        for stage in args.stages.split(","):
            d = Path(tmp) / stage
            d.mkdir()
            r = fuzz_stage(stage, args.messages, args.seed, d)
            rows.append(r)
            if "error" in r:
                print(f"{stage}: {r['error']}", flush=True)
            else:
                print(f"{stage}: sent {r['sent']}, counted {r['counted']}, alive {r['alive']}, "
                      f"RSS {r['rss_before_mb']:.0f} -> peak {r['rss_peak_mb']:.0f} MB", flush=True)
    print()
    print(f"{'stage':<10} {'sent':>8} {'counted':>8} {'crashes':>8} {'RSS MB before':>14} {'peak':>7} "
          f"{'growth':>7} {'msgs/s':>8}")
    ok = True
    for r in rows:
        if "error" in r:
            print(f"{r['stage']:<10} {'did not run':>8}")
            ok = False
            continue
        crashed = 0 if r["alive"] else 1
        growth = r["rss_peak_mb"] - r["rss_before_mb"]
        rate = f"{r['rate_per_s']:.0f}" if r["rate_per_s"] else "-"
        print(f"{r['stage']:<10} {r['sent']:>8} {r['counted']:>8} {crashed:>8} {r['rss_before_mb']:>14.1f} "
              f"{r['rss_peak_mb']:>7.1f} {growth:>7.1f} {rate:>8}")
        ok &= r["counted"] == r["sent"] and r["alive"]
    print("\ngoal: counted == sent (every hostile message counted, none accepted), 0 crashes, RSS flat")
    before = None
    if args.before:
        before = decoder_before(args.before, args.messages, args.seed)
        print(f"\ndecoder alone, same {args.messages} messages: now {before['now']}; at {args.before}: {before['before']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"stages": rows, "decoder": before}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
