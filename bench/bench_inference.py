"""Inference benchmarks: batched vs per-camera, and ratrig's worker vs a plain dlclive loop.

    nice -n 10 python bench/bench_inference.py [--moments 40] [--seconds 10] [--threads 1] [--skip-live]

Part 1, same frames (4 synthetic cameras, one moment = 4 frames):
  per-camera: four DLCLive.get_pose calls (dlclive as shipped)
  batched:    one forward pass of the same model with a batch of 4 (inference.engines)
  for the bundled TensorFlow model (synthrat, resize 0.5) and the bundled PyTorch export (dots, resize 0.5).
  Throughput = frames/s (4 / mean moment time), latency = time until all 4 poses of a moment exist;
  the first pose of the per-camera loop is ready after about a quarter of that. The two are run
  interleaved, moment by moment, so that both see the same machine load.

Part 2, same video (a 4-camera synthetic session written as FFV1 files, played at 30 fps):
  plain loop: one process reads each camera's frame at its capture time and calls DLCLive.get_pose on
              every frame, in order (what a script around dlclive does); latency = result - capture time.
  ratrig:     4 capture processes (acquisition.capture, video sources) -> 1 inference worker (4 cameras,
              batched) over ZeroMQ; latency from the packets' stamps; frames it skipped are reported.

The machine's load average is printed: on a shared machine figures move with it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference import engines  # noqa: E402
from ratrig.config import InferenceConfig  # noqa: E402
from ratrig.skeleton import KEYPOINTS  # noqa: E402

SYNTHRAT = REPO / "inference" / "models" / "synthrat"
DOTS = REPO / "inference" / "models" / "dots_pytorch" / "dots.pt"


def _pct(a, q):
    return float(np.percentile(np.asarray(a, float), q))


def render_moments(n: int, seed: int = 7) -> tuple[list[str], list[list[np.ndarray]]]:
    from synthetic.rat import simulate
    from synthetic.render import NoiseOptions, Renderer
    from synthetic.rig import default_rig

    cal = default_rig()
    traj = simulate(duration_s=max(2.0, n / 30 + 1), fps=30.0, seed=seed)
    r = Renderer(cal, seed=seed, noise=NoiseOptions(sensor_noise_sigma=2.0))
    moments = []
    for k in range(n):
        t = 0.5 + k / 30
        kp, ex = traj.pose_at(t)
        moments.append([r.render(c.name, np.asarray(kp), np.asarray(ex), t_s=t) for c in cal.cameras])
    return [c.name for c in cal.cameras], moments


def bench_batching(model: Path, cams: list[str], moments: list[list[np.ndarray]], threads: int) -> dict:
    cfg = InferenceConfig(model=str(model), resize=0.5, threads=threads)
    info = engines.check_model(cfg, KEYPOINTS)
    names = ("per-camera (4 x DLCLive.get_pose)", "batched (1 pass, batch 4)")
    ests = [engines.build_estimator(info, cfg, cams, batch=b) for b in (False, True)]
    for est in ests:
        est.infer(cams, moments[0])  # warm-up (first call builds the session / model)
    lat: list[list[float]] = [[], []]
    # Interleaved, alternating which goes first: on a shared machine both see the same load.
    for i, frames in enumerate(moments):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            t = time.perf_counter()
            ests[j].infer(cams, frames)
            lat[j].append((time.perf_counter() - t) * 1e3)
    for est in ests:
        est.close()
    return {name: {"fps": len(cams) * 1e3 / float(np.mean(lat[j])), "p50": _pct(lat[j], 50), "p99": _pct(lat[j], 99)}
            for j, name in enumerate(names)}


def bench_models(models: list[Path], cams: list[str], moments: list[list[np.ndarray]], threads: int) -> dict:
    """Batched inference (the demo's worker path) of several models, interleaved moment by moment."""
    cfg = [InferenceConfig(model=str(m), resize=0.5, threads=threads) for m in models]
    ests = [engines.build_estimator(engines.check_model(c, KEYPOINTS), c, cams, batch=True) for c in cfg]
    for est in ests:
        est.infer(cams, moments[0])
    lat: list[list[float]] = [[] for _ in models]
    for i, frames in enumerate(moments):
        order = range(len(models)) if i % 2 == 0 else reversed(range(len(models)))
        for j in order:
            t = time.perf_counter()
            ests[j].infer(cams, frames)
            lat[j].append((time.perf_counter() - t) * 1e3)
    for est in ests:
        est.close()
    return {str(m): {"fps": len(cams) * 1e3 / float(np.mean(lat[j])), "p50": _pct(lat[j], 50), "p99": _pct(lat[j], 99)}
            for j, m in enumerate(models)}


def print_batching(title: str, res: dict) -> None:
    print(f"\n{title}")
    print(f"  {'':36}{'frames/s':>10}{'moment p50 ms':>15}{'p99 ms':>9}")
    for name, r in res.items():
        print(f"  {name:36}{r['fps']:>10.1f}{r['p50']:>15.1f}{r['p99']:>9.1f}")
    per, bat = list(res.values())
    print(f"  batched / per-camera: throughput x{bat['fps'] / per['fps']:.2f}, moment latency x{bat['p50'] / per['p50']:.2f}"
          f" (per-camera's first pose is ready after ~{per['p50'] / 4:.1f} ms)")


def write_rig(tmp: Path, session: Path, cams: list[str], base_port: int, threads: int) -> Path:
    lines = [f'name = "bench"\n[network]\nbase_port = {base_port}\n']
    for c in cams:
        lines.append(f'[[cameras]]\nname = "{c}"\nsource = "video:{session / (c + ".mkv")}"\nfps = 30.0\npace = true\n')
    groups = ", ".join(f'"{c}"' for c in cams)
    lines.append(f'[inference]\nmodel = "{SYNTHRAT}"\nresize = 0.5\nworkers = [[{groups}]]\nbatch = true\nthreads = {threads}\n')
    path = tmp / "bench_rig.toml"
    path.write_text("\n".join(lines))
    return path


def plain_loop(session: Path, cams: list[str], seconds: float, threads: int) -> dict:
    """Every frame of every camera through DLCLive.get_pose, in order, frames arriving at 30 fps."""
    import cv2

    dlclive = engines.import_dlclive()
    import tensorflow as tf

    cfgp = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=1)
    lives = {c: dlclive.DLCLive(str(SYNTHRAT), model_type="base", resize=0.5, tf_config=cfgp) for c in cams}
    caps = {c: cv2.VideoCapture(str(session / f"{c}.mkv")) for c in cams}
    n = int(seconds * 30)
    for c in cams:
        lives[c].init_inference(np.zeros((480, 640, 3), np.uint8))
    lat = []
    t0 = time.perf_counter() + 0.2
    for k in range(n):
        arrival = t0 + k / 30
        while time.perf_counter() < arrival:
            time.sleep(0.0005)
        for c in cams:
            ok, frame = caps[c].read()  # decoding is part of the loop, as it is in ratrig's capture
            lives[c].get_pose(frame)
            lat.append((time.perf_counter() - arrival) * 1e3)
    done = time.perf_counter()
    return {"frames": n * len(cams), "inferred": n * len(cams), "p50": _pct(lat, 50), "p99": _pct(lat, 99),
            "final_lag_ms": lat[-1], "wall_s": done - t0, "stream_s": n / 30}


def ratrig_live(rig_path: Path, cams: list[str], seconds: float) -> dict:
    import zmq

    from ratrig.clock import now_ns
    from ratrig.config import Endpoints, load_config
    from ratrig.messages import Keypoints2DPacket, StatsPacket
    from ratrig.transport import ReceiveCounters, make_sub, recv_packet

    rig = load_config(rig_path)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    worker = subprocess.Popen([sys.executable, "-m", "inference.worker", "--config", str(rig_path), "--worker", "0"],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    sub = make_sub(ctx, [Endpoints(rig).connect("inference/0")], [b"pose2d/", b"stats/"])
    counters = ReceiveCounters()
    ready = False
    deadline = time.monotonic() + 120
    while not ready and time.monotonic() < deadline:
        if sub.poll(200):
            p = recv_packet(sub, counters)
            ready = isinstance(p, StatsPacket)
    if not ready:
        worker.kill()
        raise RuntimeError("worker did not start")
    t0 = now_ns() + 2_000_000_000  # captures open their files first, then start on one tick schedule
    capture = [subprocess.Popen([sys.executable, "-m", "acquisition.capture", "--config", str(rig_path), "--camera", c,
                                 "--t0-ns", str(t0), "--duration", str(seconds)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in cams]
    lat, last_stats = [], None
    end = time.monotonic() + seconds + 4
    while time.monotonic() < end:
        if sub.poll(50):
            p = recv_packet(sub, counters)
            if isinstance(p, Keypoints2DPacket):
                lat.append((p.stamps_ns["inferred"] - p.capture_ns) / 1e6)
            elif isinstance(p, StatsPacket):
                last_stats = p.stats
    for c in capture:
        c.wait(timeout=30)
    worker.terminate()
    worker.wait(timeout=30)
    sub.close(0)
    ctx.term()
    per_cam = last_stats["cameras"] if last_stats else {}
    return {"frames": sum(v["received"] for v in per_cam.values()),
            "inferred": sum(v["inferred"] for v in per_cam.values()),
            "skipped": sum(v["skipped"] for v in per_cam.values()),
            "p50": _pct(lat, 50) if lat else float("nan"), "p99": _pct(lat, 99) if lat else float("nan"),
            "moments": last_stats.get("moments") if last_stats else None,
            "partial": last_stats.get("partial_moments") if last_stats else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moments", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--base-port", type=int, default=47100)
    ap.add_argument("--compare-model", action="append", default=[], metavar="PATH",
                    help="only compare the batched speed of the bundled model with these TF exports, then exit")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}, cpus: {os.cpu_count()}, threads per model: {args.threads}")
    if args.compare_model:
        cams, moments = render_moments(args.moments)
        res = bench_models([SYNTHRAT] + [Path(m).resolve() for m in args.compare_model], cams, moments, args.threads)
        print(f"batched, 1 pass of 4 cameras per moment, resize 0.5, {args.moments} moments, interleaved")
        base = res[str(SYNTHRAT)]
        for name, r in res.items():
            print(f"  {name}: {r['fps']:.1f} frames/s, moment p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                  f"time per moment x{r['p50'] / base['p50']:.2f} of the bundled model")
        return 0

    cams, moments = render_moments(args.moments)
    print_batching(f"TensorFlow synthrat (resize 0.5, 640x480 -> 320x240), {args.moments} moments x 4 cameras",
                   bench_batching(SYNTHRAT, cams, moments, args.threads))
    if DOTS.is_file():
        print_batching(f"PyTorch dots export (resize 0.5), {args.moments} moments x 4 cameras",
                       bench_batching(DOTS, cams, moments, args.threads))

    if not args.skip_live:
        from synthetic.session import write_session

        with tempfile.TemporaryDirectory() as tmp:
            session = Path(tmp) / "session"
            write_session(session, args.seconds + 1, fps=30.0, seed=7)
            print(f"\nsame video, 4 cameras x {args.seconds:.0f} s at 30 fps ({int(args.seconds * 30) * 4} frames), synthrat")
            plain = plain_loop(session, cams, args.seconds, args.threads)
            print(f"  plain DLCLive.get_pose loop: {plain['inferred']}/{plain['frames']} frames, latency p50 "
                  f"{plain['p50']:.0f} ms p99 {plain['p99']:.0f} ms, lag at the end {plain['final_lag_ms']:.0f} ms, "
                  f"{plain['wall_s']:.1f} s wall for {plain['stream_s']:.1f} s of video")
            rig_path = write_rig(Path(tmp), session, cams, args.base_port, args.threads)
            live = ratrig_live(rig_path, cams, args.seconds)
            print(f"  ratrig capture -> worker (batched): {live['inferred']}/{live['frames']} frames inferred, "
                  f"{live['skipped']} skipped, {live['moments']} moments ({live['partial']} partial), capture-to-2D "
                  f"latency p50 {live['p50']:.0f} ms p99 {live['p99']:.0f} ms")
    print(f"\nload average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
