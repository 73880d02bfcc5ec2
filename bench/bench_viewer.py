"""Viewer benchmark: its redraw rate, and that the pipeline does not notice it.

    python bench/bench_viewer.py [--seconds 10] [--fps 30]
    python bench/bench_viewer.py --fps 60     # can it draw 60 new frame sets a second?

A publisher process sends what a 4-camera session sends (4 x 640x480x3 frames, 4 x 2D keypoints and a
3D pose per frame set at --fps, the rat walking along the corridor, plus events and stats) and a
recorder-like full consumer process receives every message. Three runs of the same length:

  headless   publisher + full consumer
  viewer     + `python -m viewer.app --connect ...` rendering under its own Xvfb
  frozen     + the viewer, stopped with SIGSTOP two seconds in (a hung or debugged viewer)

Printed per run: frame sets the publisher achieved per second, how often it fell behind its
schedule, what fraction of the messages the full consumer received, the CPU time publisher and
consumer used per second of publishing (of one core), and (viewer runs, counted from the first data on):

  tick      display loop iterations per second (the loop aims at viewer.redraw_hz, 60 Hz): each
            drains the sockets and draws what changed
  redraw    ticks that put something new on screen (a pose, frames, 2D keypoints, marks, traces); a
            tick with nothing new draws nothing and is not counted. With a --fps 30 stream there are
            only ~30 new frame sets a second to draw; --fps 60 asks for a redraw at every tick
  current   share of ticks that emptied the sockets and left nothing received undrawn (the status
            text, refreshed 4 times a second, aside)
  late p95  how long after its deadline a tick started (95th percentile): a loop that cannot keep up
            starts ticks late
  cpu       the viewer process's CPU time (all threads: the software OpenGL renderer's included) per
            second and per redraw; "its Xvfb": CPU time of the X server the viewer started (it copies
            the painted pixels to the screen) per second of the viewer's whole run
  age       how old what it showed was (capture to screen, and behind the newest frame received)

Ratios are against the headless run of the same invocation. On a shared 2-core machine the absolute
figures depend on the load of the moment (printed).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic session publisher the viewer tests use

from viewer_stream import publish_session, stream_calibration  # noqa: E402

from ratrig.messages import FramePacket  # noqa: E402
from ratrig.transport import ReceiveCounters, make_sub, recv_packet  # noqa: E402

WALK_MM_S = 60.0  # the rat walks (trails, traces and reprojections change); 10 s stay in the 1.5 m corridor


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished (waited-for) children and their waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def full_consumer(endpoints: dict, out_queue, idle_stop_s: float, max_s: float) -> None:
    """Process body: receive every message from every endpoint (as the recorder does); touch each frame."""
    ctx = zmq.Context()
    eps = sorted({ep for key, ep in endpoints.items() if key != "directory"})
    sock = make_sub(ctx, eps, (b"",), rcvhwm=100_000)
    counters = ReceiveCounters()
    frames = checksum = 0
    t0 = time.monotonic()
    last = None
    cpu0 = None
    out_queue.put("ready")
    while time.monotonic() - t0 < max_s:
        if not sock.poll(100):
            if last is not None and time.monotonic() - last > idle_stop_s:
                break
            continue
        p = recv_packet(sock, counters, 0)
        last = time.monotonic()
        if cpu0 is None:
            cpu0 = time.process_time()
        if isinstance(p, FramePacket):
            frames += 1
            checksum += int(p.image[0, 0, 0])
    cpu_s = time.process_time() - cpu0 if cpu0 is not None else 0.0  # from the first message on
    out_queue.put({"received": counters.received, "frames": frames, "malformed": counters.malformed, "cpu_s": cpu_s})
    sock.close(0)
    ctx.term()


def run_case(case: str, seconds: float, fps: float, tmp: Path) -> dict:
    calib = stream_calibration()
    ctx = mp.get_context("spawn")
    pq, cq = ctx.Queue(), ctx.Queue()
    delay = 6.0 if case != "headless" else 1.5  # the viewer connects before the first frame
    pub = ctx.Process(target=publish_session, args=(calib.to_dict(), pq, seconds, fps),
                      kwargs={"start_delay_s": delay, "walk_mm_s": WALK_MM_S})
    pub.start()
    endpoints = pq.get(timeout=60)
    con = ctx.Process(target=full_consumer, args=(endpoints, cq, 2.0, seconds + delay + 30))
    con.start()
    assert cq.get(timeout=60) == "ready"
    viewer = None
    stats_path = tmp / f"{case}.json"
    if case != "headless":
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        t_viewer = time.monotonic()
        viewer = subprocess.Popen(
            [sys.executable, "-m", "viewer.app", "--connect", endpoints["directory"], "--screenshot",
             str(tmp / f"{case}.png"), "--duration", str(seconds + delay - 0.5), "--stats-json", str(stats_path)],
            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        if case == "frozen":
            time.sleep(delay + 2.0)
            os.kill(viewer.pid, signal.SIGSTOP)
    sent = pq.get(timeout=seconds + delay + 60)
    got = cq.get(timeout=60)
    pub.join(10)
    con.join(10)
    result = {"case": case, "sent": sent, "consumer": got}
    if viewer is not None:
        if case == "frozen":
            os.kill(viewer.pid, signal.SIGCONT)
        cpu0 = _children_cpu_s()  # publisher and consumer were joined above: what follows is the viewer's
        try:
            _, err = viewer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            viewer.kill()
            _, err = viewer.communicate()
        result["viewer_with_x_cpu_s"] = _children_cpu_s() - cpu0  # its Xvfb is its child, waited for
        result["viewer_wall_s"] = time.monotonic() - t_viewer
        result["viewer_rc"] = viewer.returncode
        if stats_path.is_file():
            result["viewer"] = json.loads(stats_path.read_text())
        elif err:
            result["viewer_error"] = err[-500:]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--cases", default="headless,viewer,frozen",
                    help="comma-separated runs, headless first (default: headless,viewer,frozen)")
    args = ap.parse_args(argv)
    if shutil.which("Xvfb") is None and not os.environ.get("DISPLAY"):
        print("bench_viewer: needs Xvfb (Debian package xvfb) or a display", file=sys.stderr)
        return 2
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{args.seconds:g} s per run at 4 cameras x {args.fps:g} fps, 640x480x3 frames")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or cases[0] != "headless" or not set(cases) <= {"headless", "viewer", "frozen"}:
        print(f"bench_viewer: --cases: expected headless first, then viewer and/or frozen; got {args.cases!r}",
              file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory() as d:
        for case in cases:
            r = run_case(case, args.seconds, args.fps, Path(d))
            results.append(r)
    base = results[0]
    n_cams = 4
    per_set = 2 * n_cams + 1  # frames + 2D keypoints + one pose per frame set
    print(f"{'run':9} {'sets/s':>7} {'vs headless':>11} {'late ticks':>10} {'consumer got':>13} {'pub+con cpu':>11}"
          "  viewer (while data flowed)")
    for r in results:
        s = r["sent"]
        rate = s["poses"] / s["elapsed_s"]
        # what publish_session sends: per frame set 4 frames, 4 2D keypoints, 1 pose; an event every
        # 15th set, 2 stats every 30th
        expected = s["poses"] * per_set + (s["poses"] + 14) // 15 + 2 * ((s["poses"] + 29) // 30)
        got_frac = r["consumer"]["received"] / max(1, expected)
        v = r.get("viewer")
        vtxt = ""
        if v:
            late = v.get("tick_late_ms") or {}
            per_redraw = v.get("cpu_ms_per_redraw_live")
            vtxt = (f"tick {v['tick_hz_live']:.1f} Hz, redraw {v['redraw_hz_live']:.1f} Hz, "
                    f"current {v['up_to_date_frac_live']:.0%}, late p95 {late.get('p95', float('nan')):.1f} ms, "
                    f"cpu {v['cpu_frac_live']:.0%} = {per_redraw or float('nan'):.1f} ms/redraw")
            if "viewer_with_x_cpu_s" in r:
                x_cpu_s = r["viewer_with_x_cpu_s"] - v["cpu_s"]
                vtxt += f", its Xvfb {x_cpu_s / r['viewer_wall_s']:.0%}"
            age, behind = v.get("display_age_ms"), v.get("behind_camera_ms")
            if age and behind:
                vtxt += (f", age {age['median']:.0f}/{age['p95']:.0f} ms (median/p95), "
                         f"{behind['median']:.0f}/{behind['p95']:.0f} ms behind the newest frame")
            if r["case"] == "frozen":
                vtxt = "stopped 2 s in (SIGSTOP); " + vtxt
        elif "viewer_error" in r:
            vtxt = "viewer failed: " + r["viewer_error"].strip().splitlines()[-1]
        ratio = rate / (base["sent"]["poses"] / base["sent"]["elapsed_s"])
        pipeline_cpu = (s["cpu_s"] + r["consumer"]["cpu_s"]) / s["elapsed_s"]
        print(f"{r['case']:9} {rate:7.2f} {ratio:11.3f} {s['late_ticks']:10d} "
              f"{got_frac:12.2%} {pipeline_cpu:11.0%}  {vtxt}")
        r["messages_expected"] = expected
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
