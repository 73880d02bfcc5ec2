"""Benchmark: sessions per hour of `ratrig batch reprocess` with 1 and 2 workers vs a one-at-a-time loop.

Input: N recorded synthetic sessions (bench/recorder_experiment.py: the synthetic rat walking the
corridor, 4 cameras, simulated 2D detections, live fusion, a real SessionWriter), `--duration` s each.
Work per session: `ratrig reprocess SESSION --skip-inference --triangulation ransac` (aniposelib
RANSAC triangulation; 2D inference needs recorded video and a model, see the README's scaling plan).

Compared on the same sessions, in one run, each writing its own results:

1. loop: `ratrig reprocess` once per session, one process after the other (what a lab script does);
2. batch, 1 worker: `ratrig batch reprocess SESSIONS... --workers 1 --out DIR` (LocalCluster);
3. batch, 2 workers: the same with `--workers 2`;
4. batch rerun: the same command again (every session already done: planning and hashing only).

Batch times include starting the LocalCluster. Every result is checked to exist (pose3d.csv);
the batch results are checked equal to the loop's, table by table.
The machine is shared: absolute times are noisy; compare the ratios of one run.

With --inference FRAMES the sessions hold recorded video instead and the work is 2D inference with
the synthetic model (DLCLive + TensorFlow; the batch runs one task per camera) and DLT.

Usage: nice -n 10 python bench/bench_batch.py [--sessions 6] [--duration 1.0] [--triangulation ransac]
       nice -n 10 python bench/bench_batch.py --sessions 4 --inference 10
"""
from __future__ import annotations

import argparse
import filecmp
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def make_sessions(root: Path, n: int, duration_s: float) -> list[Path]:
    spec = importlib.util.spec_from_file_location("recorder_experiment", HERE / "recorder_experiment.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    return [exp.record_live_session(root / f"session_{i:03d}", duration_s=duration_s, seed=100 + i)["session"]
            for i in range(n)]


def make_video_sessions(root: Path, n: int, frames: int) -> list[Path]:
    """Sessions with recorded FFV1 video of the synthetic rat (4 cameras) and the synthetic model."""
    from ratrig.config import CameraConfig, InferenceConfig, RigConfig
    from ratrig.messages import FramePacket
    from recorder.video import check_codec
    from recorder.writer import SessionWriter
    from synthetic.rat import simulate
    from synthetic.render import Renderer
    from synthetic.rig import CAMERA_NAMES, default_rig

    model = REPO / "inference" / "models" / "synthrat"
    calib = default_rig()
    calib.save(root / "calibration.toml")
    rig = RigConfig(name="bench", cameras=[CameraConfig(c, "synthetic") for c in CAMERA_NAMES],
                    inference=InferenceConfig(model=str(model), resize=0.5))
    out = []
    for i in range(n):
        traj, r = simulate(frames / 30.0 + 0.2, 30.0, 100 + i), Renderer(calib, seed=100 + i)
        w = SessionWriter(root / f"session_{i:03d}", rig, check_codec("ffv1"),
                          calibration_path=str(root / "calibration.toml"), model_path=str(model))
        for f in range(frames):
            for c, cam in enumerate(CAMERA_NAMES):
                img = r.render(c, traj.keypoints_mm[f], traj.extra_mm[f], float(traj.times_s[f]))
                w.submit_frame(FramePacket(cam, f, 10**10 + f * 33_333_333, img))
        w.close()
        out.append(root / f"session_{i:03d}")
    return out


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run `cmd`; returns (wall s, CPU s of it and its reaped descendants: the cluster's workers)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def total(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return sum(r[0] for r in runs), sum(r[1] for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--duration", type=float, default=1.0, help="seconds per session (30 fps)")
    ap.add_argument("--triangulation", default="ransac", choices=["dlt", "ransac", "optim"])
    ap.add_argument("--inference", type=int, default=0, metavar="FRAMES",
                    help="instead: sessions of FRAMES recorded video frames per camera, 2D rerun with the "
                         "synthetic model (DLCLive, TensorFlow) and --triangulation dlt")
    args = ap.parse_args(argv)
    py = sys.executable
    opts = ["--skip-inference", "--triangulation", args.triangulation, "--filter", "median"]
    if args.inference:
        opts = ["--triangulation", "dlt", "--filter", "none"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        sessions = (make_video_sessions(root, args.sessions, args.inference) if args.inference
                    else make_sessions(root, args.sessions, args.duration))
        ss = [str(s) for s in sessions]
        rows: list[tuple[str, tuple[float, float]]] = []
        rows.append(("loop: ratrig reprocess per session",
                     total([timed([py, "-m", "ratrig", "reprocess", s, *opts, "--name", "loop", "--no-progress"]) for s in ss])))
        for w in (1, 2):
            out = root / f"batch{w}"
            rows.append((f"ratrig batch reprocess --workers {w}",
                         timed([py, "-m", "ratrig", "batch", "reprocess", *ss, *opts, "--workers", str(w),
                                "--out", str(out), "--no-progress"])))
        rows.append(("batch rerun --workers 2 (all done)",
                     timed([py, "-m", "ratrig", "batch", "reprocess", *ss, *opts, "--workers", "2",
                            "--out", str(root / "batch2"), "--no-progress"])))
        rerun = json.loads((root / "batch2" / "batch-manifest.json").read_text())["counts"]
        assert rerun == {"done": 0, "skipped": len(ss), "failed": 0}, rerun
        for w in (1, 2):  # same numbers as the loop, table by table
            for s in sessions:
                (res,) = [p for p in (root / f"batch{w}" / s.name).iterdir() if not p.name.startswith(".")]
                tables = [f"{d}/{c}" for d in ("pose2d", "pose2d-filtered") for c in os.listdir(res / d)]
                for t in ["pose3d.csv"] + tables:
                    assert filecmp.cmp(res / t, s / "reprocessed" / "loop" / t, shallow=False), (res, t)
    work = (f"{args.sessions} sessions x {args.inference} frames x 4 cameras of FFV1 video, reprocess with the "
            "synthetic model (2D inference) --triangulation dlt" if args.inference else
            f"{args.sessions} sessions x {args.duration:g} s (4 cameras, 30 fps, 8 keypoints), "
            f"reprocess --skip-inference --triangulation {args.triangulation}")
    print(f"{work}; {os.cpu_count()} CPU cores, "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other users' work shares the cores)")
    print(f"{'':40}{'total s':>9}{'s/session':>11}{'sessions/h':>12}{'vs loop':>9}{'CPU s':>8}{'cores used':>12}")
    base = rows[0][1][0]
    for name, (t, cpu) in rows:
        print(f"{name:40}{t:9.1f}{t / args.sessions:11.2f}{3600 * args.sessions / t:12.0f}{base / t:9.2f}"
              f"{cpu:8.1f}{cpu / t:12.2f}")
    print(f"2 workers vs 1 worker: {rows[1][1][0] / rows[2][1][0]:.2f}x sessions/h; batch results equal the loop's "
          "table by table. 'cores used' = CPU s / wall s: below the worker count, the cores are busy with other work")
    return 0


if __name__ == "__main__":
    sys.exit(main())
