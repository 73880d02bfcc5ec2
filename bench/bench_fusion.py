"""Fusion cost per frame set, against a plain per-frame loop over aniposelib's triangulation.

    nice -n 10 python bench/bench_fusion.py [--frames 1000] [--ransac-frames 0] [--configs 4x8,8x20,12x20]
                                            [--scaling-frames 200] [--compare-to GIT_REV] [--json OUT]

Per configuration (cameras x keypoints; 4x8, 8x20 and 12x20 by default) it times, per frame set, on
one core after compilation:
  ours/full     triangulate (undistort, weighted DLT, outlier rejection) + Kalman step
  ours/linear   the plain linear triangulation alone (what aniposelib computes)
  pipeline      FusionPipeline.add of the frame set's C Keypoints2DPacket (sync + arrays + triangulate
                + Kalman + building the Pose3DPacket): the fusion process's cost without the sockets
  floor         fusion.floor.floor_points for half the keypoints, each seen by exactly one camera
                (the worst case of the paws' floor points, on top of `pipeline`)
  anipose       aniposelib CameraGroup.triangulate called once per frame set (undistort=True)
  anipose/ransac  CameraGroup.triangulate_ransac per frame set (its outlier-rejecting path; few frames)
and prints the ratios and the pipeline's 3D error against the truth (raw and filtered, mm).

The input: a row of keypoints walking back and forth through the middle of a ring of cameras
(every point inside every image), 1 px noise, 10 % of views hidden, 2 % of views off by 60 px.
(Until issue 19 the row walked out of the rig after a few seconds -- points behind cameras and far
outside the images -- so most of the time went into outlier searches over garbage.)

Then the outlier search against the number of cameras (2..12, 20 keypoints, 5 % bad views): cost per
frame set and 3D error for the default options, the exhaustive subset search up to 6 views and up to
4 views, greedy leave-one-out only (trying the 3 worst views, or every view), and no rejection. Then the start-up cost in fresh subprocesses: import +
first call with an empty numba cache (cold) and again with the cache filled (warm).

`--compare-to REV` runs the same measurements in a subprocess on `git archive REV` of fusion/ and
ratrig/ (the code before a change) and prints a before/after table: both columns come from one
command, though not from the same moment (the machine's load can differ between them; the ratios to
aniposelib are taken within each run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parents[1]
# the code under test: this tree, or (for --compare-to) an archive of an older commit
ROOT = Path(os.environ.get("RATRIG_BENCH_ROOT") or HERE)
sys.path.insert(0, str(ROOT))

from fusion.kalman import KalmanFilter3D  # noqa: E402
from fusion.triangulate import RigGeometry, TriangulationOptions, project, triangulate, triangulate_linear  # noqa: E402
from ratrig.camera import Calibration, Camera  # noqa: E402

PERIOD_NS = 33_333_333


def ring_rig(n_cams: int, seed: int = 0) -> Calibration:
    """n cameras on a ring 900 mm out, 50 degrees up, looking at the corridor centre; mild distortion."""
    rng = np.random.default_rng(seed)
    cams = []
    for i in range(n_cams):
        az = 2 * np.pi * (i + 0.5) / n_cams
        el = np.radians(50)
        center = 900 * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        z = -center / np.linalg.norm(center)
        x = np.cross(z, [0, 0, 1.0])
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        K = np.array([[600.0 + 10 * i, 0, 320], [0, 600.0 + 10 * i, 240], [0, 0, 1]])
        dist = np.array([-0.08, 0.03, 0.0005, -0.0003, 0.0]) * rng.uniform(0.5, 1.5)
        cams.append(Camera(f"cam{i}", (640, 480), K, dist, cv2.Rodrigues(R)[0].ravel(), -R @ center))
    return Calibration(tuple(cams))


def make_data(calib: Calibration, n_kp: int, n_frames: int, seed: int = 1, outlier_rate: float = 0.02):
    """-> rig, truth (T, K, 3) mm, points (T, C, K, 2) px, likelihood (T, C, K).

    A row of keypoints 8 mm apart walking back and forth (+-150 mm, 4 s period) through the middle
    of the ring: every point is inside every image. 1 px noise, 10 % hidden views, `outlier_rate`
    of the views 60 px off."""
    rng = np.random.default_rng(seed)
    rig = RigGeometry.from_calibration(calib)
    t = np.arange(n_frames) / 30.0
    pts3 = np.stack([np.stack([150 * np.sin(2 * np.pi * t / 4) + 8 * (k - n_kp / 2), 10 * np.sin(t + k),
                               20 + 3 * k + 0 * t], -1) for k in range(n_kp)], 1)  # (T, K, 3)
    p2 = np.stack([project(rig, pts3[i]) for i in range(n_frames)])  # (T, C, K, 2)
    p2 += rng.normal(0, 1.0, p2.shape)
    like = rng.uniform(0.6, 1.0, p2.shape[:3])
    hidden = rng.random(p2.shape[:3]) < 0.1
    p2[hidden] = np.nan
    like[hidden] = 0.0
    outlier = rng.random(p2.shape[:3]) < outlier_rate
    p2[outlier] += 60.0
    return rig, pts3, p2, like


def per_frame(fn, n: int) -> np.ndarray:
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        times[i] = time.perf_counter_ns() - t0
    return times / 1e3  # us


def error_stats(est: np.ndarray, truth: np.ndarray) -> dict:
    """(T, K, 3) estimate and truth -> median / p95 error (mm) and the fraction of finite points."""
    e = np.linalg.norm(est - truth, axis=-1)
    ok = np.isfinite(e)
    return {"median_mm": float(np.median(e[ok])), "p95_mm": float(np.percentile(e[ok], 95)),
            "coverage": float(ok.mean())}


def bench_config(n_cams: int, n_kp: int, n_frames: int, ransac_frames: int) -> dict:
    from aniposelib.cameras import Camera as ACamera
    from aniposelib.cameras import CameraGroup

    calib = ring_rig(n_cams)
    rig, truth, p2, like = make_data(calib, n_kp, n_frames)
    kf = KalmanFilter3D(n_kp)

    def ours_full(i: int) -> None:
        r = triangulate(rig, p2[i], like[i])
        kf.step(int(i * PERIOD_NS), r.points_mm, r.reprojection_error_px, r.score, 0.05)

    def ours_linear(i: int) -> None:
        triangulate_linear(rig, p2[i])

    cg = CameraGroup([ACamera(name=c.name, size=c.size, matrix=c.matrix, dist=c.dist, rvec=c.rvec, tvec=c.tvec)
                      for c in calib.cameras])

    from fusion.process import FusionOptions, FusionPipeline
    from fusion.sync import SyncOptions
    from ratrig.messages import Keypoints2DPacket

    names = tuple(f"kp{k}" for k in range(n_kp))
    pipe = FusionPipeline(calib, names, FusionOptions(sync=SyncOptions(PERIOD_NS)))
    packets = [[Keypoints2DPacket(cam, i, i * PERIOD_NS, names,
                                  np.concatenate([p2[i, c], like[i, c, :, None]], 1).astype(np.float32))
                for c, cam in enumerate(calib.names)] for i in range(n_frames)]
    poses: list = []

    def pipeline(i: int) -> None:
        for pkt in packets[i]:
            poses.extend(pipe.add(pkt, i * PERIOD_NS + 10_000_000))

    def anipose(i: int) -> None:
        cg.triangulate(p2[i], undistort=True)

    from fusion.floor import floor_points

    half = np.arange(n_kp // 2)
    single = np.zeros((n_frames, n_cams, len(half)), bool)
    single[np.arange(n_frames)[:, None], np.arange(len(half)) % n_cams, np.arange(len(half))] = True

    def floor(i: int) -> None:
        floor_points(rig, p2[i][:, half], single[i], 4.0)

    for fn in (ours_full, ours_linear, anipose, floor):  # compile / jit / warm caches
        fn(0)
        fn(1)
    res = {
        "ours_full_us": per_frame(ours_full, n_frames),
        "ours_linear_us": per_frame(ours_linear, n_frames),
        "pipeline_us": per_frame(pipeline, n_frames),
        "floor_us": per_frame(floor, n_frames),
        "anipose_us": per_frame(anipose, min(n_frames, 500)),
    }
    if ransac_frames:
        cg.triangulate_ransac(p2[0], undistort=True)  # jax compiles per camera subset
        res["anipose_ransac_us"] = per_frame(lambda i: cg.triangulate_ransac(p2[i], undistort=True), ransac_frames)
    # agreement of the linear paths on this data (aniposelib undistorts with 5 OpenCV iterations)
    a = cg.triangulate(p2[:50].transpose(1, 0, 2, 3).reshape(n_cams, -1, 2).copy(), undistort=True)
    o = triangulate_linear(rig, p2[:50].transpose(1, 0, 2, 3).reshape(n_cams, -1, 2), 5, 0.0)
    ok = np.isfinite(a).all(1)
    res["max_diff_vs_anipose_mm"] = float(np.abs(a[ok] - o[ok]).max())
    assert len(poses) == n_frames, (len(poses), n_frames)  # one frame set per moment, none held back
    raw = np.stack([p.raw_mm for p in poses])
    filtered = np.stack([p.filtered_mm for p in poses])
    skip = min(30, n_frames // 4)  # the filter's start
    res["error_raw"] = error_stats(raw[skip:], truth[skip:])
    res["error_filtered"] = error_stats(filtered[skip:], truth[skip:])
    return res


def _searches() -> dict[str, TriangulationOptions]:
    """The outlier searches compared; `greedy_candidates` exists from issue 19 on (older code: every view)."""
    fields = TriangulationOptions.__dataclass_fields__
    out = {"default": TriangulationOptions(),
           "exhaustive<=6": TriangulationOptions(exhaustive_max_views=6),
           "exhaustive<=4": TriangulationOptions(exhaustive_max_views=4)}
    if "greedy_candidates" in fields:
        out["greedy/top3"] = TriangulationOptions(exhaustive_max_views=0, greedy_candidates=3)
        out["greedy/all"] = TriangulationOptions(exhaustive_max_views=0, greedy_candidates=0)
    else:
        out["greedy/all"] = TriangulationOptions(exhaustive_max_views=0)
    out["none"] = TriangulationOptions(outlier_threshold_px=math.inf)
    return out


SEARCHES = _searches()


def bench_scaling(n_frames: int, n_kp: int = 20, cams: range = range(2, 13)) -> dict:
    """Outlier search vs number of cameras: triangulate's us per frame set and 3D error, per search."""
    out: dict = {}
    for n_cams in cams:
        rig, truth, p2, like = make_data(ring_rig(n_cams), n_kp, n_frames, seed=2, outlier_rate=0.05)
        row = {}
        for name, opts in SEARCHES.items():
            triangulate(rig, p2[0], like[0], opts)
            est = np.empty((n_frames, n_kp, 3))

            def run(i: int, opts=opts, est=est) -> None:
                est[i] = triangulate(rig, p2[i], like[i], opts).points_mm

            us = per_frame(run, n_frames)
            row[name] = {"median_us": float(np.median(us)), "p99_us": float(np.percentile(us, 99)),
                         **error_stats(est, truth)}
        out[str(n_cams)] = row
    return out


STARTUP = """
import time, sys
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import numpy as np
from fusion.triangulate import RigGeometry, triangulate
from fusion.kalman import KalmanFilter3D
from ratrig.camera import Calibration, Camera
t1 = time.perf_counter()
cams = tuple(Camera(f"c{{i}}", (640, 480), np.array([[500., 0, 320], [0, 500, 240], [0, 0, 1]]), np.zeros(5),
                    np.zeros(3), np.array([100. * i, 0, 1000])) for i in range(4))
rig = RigGeometry.from_calibration(Calibration(cams))
r = triangulate(rig, np.full((4, 8, 2), 300.0))
KalmanFilter3D(8).step(0, r.points_mm, r.reprojection_error_px, r.score)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def startup(cache_dir: str) -> tuple[float, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", STARTUP.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, check=True)
    imp, first = (float(v) for v in out.stdout.split())
    return imp, first


def measure(args: argparse.Namespace) -> dict:
    summary: dict = {"configs": {}}
    for cfg in args.configs.split(","):
        n_cams, n_kp = (int(v) for v in cfg.lower().split("x"))
        r = bench_config(n_cams, n_kp, args.frames, args.ransac_frames)
        summary["configs"][cfg] = {
            "median_us": {k: float(np.median(v)) for k, v in r.items() if k.endswith("_us")},
            "p99_us": {k: float(np.percentile(v, 99)) for k, v in r.items() if k.endswith("_us")},
            "max_diff_vs_anipose_mm": r["max_diff_vs_anipose_mm"],
            "error_raw": r["error_raw"], "error_filtered": r["error_filtered"],
        }
    if args.scaling_frames:
        summary["scaling"] = bench_scaling(args.scaling_frames)
    if not args.no_startup:
        with tempfile.TemporaryDirectory() as cache:
            summary["startup_s"] = {"cold": startup(cache), "warm": startup(cache)}
    return summary


def print_summary(summary: dict) -> None:
    for cfg, r in summary["configs"].items():
        med, p99 = r["median_us"], r["p99_us"]
        n_cams, n_kp = cfg.split("x")
        print(f"\n{n_cams} cameras x {n_kp} keypoints, per frame set (median / p99, microseconds):")
        for k in med:
            print(f"  {k[:-3]:<16} {med[k]:10.1f} / {p99[k]:10.1f}")
        print(f"  ratio anipose / ours_linear     : {med['anipose_us'] / med['ours_linear_us']:.1f}x")
        print(f"  ratio anipose / ours_full       : {med['anipose_us'] / med['ours_full_us']:.1f}x")
        print(f"  ratio anipose / pipeline        : {med['anipose_us'] / med['pipeline_us']:.1f}x")
        if "anipose_ransac_us" in med:
            print(f"  ratio anipose_ransac / ours_full: {med['anipose_ransac_us'] / med['ours_full_us']:.0f}x")
        print(f"  max |aniposelib - ours| (linear, same 5-iteration undistortion): {r['max_diff_vs_anipose_mm']:.2e} mm")
        for what in ("raw", "filtered"):
            e = r[f"error_{what}"]
            print(f"  pipeline 3D error {what:<8}: median {e['median_mm']:.2f} mm, p95 {e['p95_mm']:.2f} mm, "
                  f"coverage {e['coverage']:.3f}")
    if "scaling" in summary:
        names = list(SEARCHES)
        print("\noutlier search vs cameras (20 keypoints, 5 % of views 60 px off, 10 % hidden): triangulate per "
              "frame set, median us (p95 3D error mm)")
        names = [n for n in names if all(n in row for row in summary["scaling"].values())]
        print(f"  {'cameras':>7}  " + "  ".join(f"{n:>19}" for n in names))
        for n_cams, row in summary["scaling"].items():
            print(f"  {n_cams:>7}  " + "  ".join(f"{row[n]['median_us']:8.1f} us ({row[n]['p95_mm']:6.2f})"
                                                 for n in names))
    if "startup_s" in summary:
        cold, warm = summary["startup_s"]["cold"], summary["startup_s"]["warm"]
        print("\nstart-up in a fresh process (import s, first triangulate + Kalman call s):")
        print(f"  cold numba cache: import {cold[0]:.2f} s, first call {cold[1]:.2f} s")
        print(f"  warm numba cache: import {warm[0]:.2f} s, first call {warm[1]:.2f} s")


def run_before(rev: str, args: argparse.Namespace) -> dict:
    """The same measurements on `git archive REV` of fusion/ and ratrig/, in a subprocess."""
    full = subprocess.run(["git", "-C", str(HERE), "rev-parse", rev], capture_output=True, text=True,
                          check=True).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"ratrig-bench-{full[:12]}"
    if not (tree / "fusion").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(HERE), "archive", full, "fusion", "ratrig"],
                                 capture_output=True, check=True).stdout
        with tempfile.TemporaryFile() as f:
            f.write(archive)
            f.seek(0)
            with tarfile.open(fileobj=f) as tar:
                tar.extractall(tree)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "before.json"
        cmd = [sys.executable, __file__, "--frames", str(args.frames), "--ransac-frames", str(args.ransac_frames),
               "--configs", args.configs, "--scaling-frames", str(args.scaling_frames), "--json", str(out)]
        if args.no_startup:
            cmd.append("--no-startup")
        subprocess.run(cmd, env=dict(os.environ, RATRIG_BENCH_ROOT=str(tree)), check=True,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text()) | {"rev": full}


def print_comparison(before: dict, after: dict) -> None:
    print(f"\nbefore ({before['rev'][:9]}) / after (this tree), median us per frame set and the ratio "
          "aniposelib / ours within each run:")
    print(f"  {'config':<7} {'stage':<11} {'before':>9} {'x anip.':>8} {'after':>9} {'x anip.':>8} {'speed-up':>9}")
    for cfg, a in after["configs"].items():
        b = before["configs"].get(cfg)
        if b is None:
            continue
        for stage in ("pipeline", "ours_full", "ours_linear"):
            bu, au = b["median_us"][f"{stage}_us"], a["median_us"][f"{stage}_us"]
            print(f"  {cfg:<7} {stage:<11} {bu:9.1f} {b['median_us']['anipose_us'] / bu:7.1f}x {au:9.1f} "
                  f"{a['median_us']['anipose_us'] / au:7.1f}x {bu / au:8.1f}x")
        for what in ("raw", "filtered"):
            eb, ea = b[f"error_{what}"], a[f"error_{what}"]
            print(f"  {cfg:<7} 3D error {what:<8}: before median {eb['median_mm']:.2f} / p95 {eb['p95_mm']:.2f} mm "
                  f"(coverage {eb['coverage']:.3f}), after {ea['median_mm']:.2f} / {ea['p95_mm']:.2f} mm "
                  f"({ea['coverage']:.3f})")
    if "startup_s" in before and "startup_s" in after:
        for which in ("cold", "warm"):
            print(f"  start-up, {which} numba cache (import s, first triangulate + Kalman call s): before "
                  f"{before['startup_s'][which][0]:.2f} / {before['startup_s'][which][1]:.2f}, after "
                  f"{after['startup_s'][which][0]:.2f} / {after['startup_s'][which][1]:.2f}")
    if "scaling" in before and "scaling" in after:
        print("  outlier search, default options, median us per frame set before -> after:")
        for n_cams, row in after["scaling"].items():
            rb = before["scaling"][n_cams]["default"]
            ra = row["default"]
            print(f"    {n_cams:>2} cameras: {rb['median_us']:8.1f} -> {ra['median_us']:7.1f} us, "
                  f"p95 error {rb['p95_mm']:.2f} -> {ra['p95_mm']:.2f} mm")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--ransac-frames", type=int, default=0,
                    help="frame sets timed through aniposelib's triangulate_ransac (seconds each at 8x20; 0: skip)")
    ap.add_argument("--configs", default="4x8,8x20,12x20", help="CAMERASxKEYPOINTS,... (default 4x8,8x20,12x20)")
    ap.add_argument("--scaling-frames", type=int, default=200,
                    help="frame sets per row of the outlier-search table, 2..12 cameras (0: skip)")
    ap.add_argument("--compare-to", metavar="GIT_REV", help="also measure the code of this commit (before/after)")
    ap.add_argument("--no-startup", action="store_true", help="skip the fresh-process start-up measurement")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, one core, {args.frames} frame sets per run"
          + (f", code from {ROOT}" if ROOT != HERE else ""))
    before = run_before(args.compare_to, args) if args.compare_to else None
    summary = measure(args)
    print_summary(summary)
    if before is not None:
        print_comparison(before, summary)
        summary["before"] = before
    a48 = summary["configs"].get("4x8")
    if a48:
        pipe_us = a48["median_us"]["pipeline_us"]
        print(f"\ngoal: whole fusion pipeline 4x8 <= 50 us per frame set and >= 20x aniposelib: "
              f"{pipe_us:.1f} us, {a48['median_us']['anipose_us'] / pipe_us:.1f}x")
    for cfg in ("8x20", "12x20"):
        r = summary["configs"].get(cfg)
        if r:
            print(f"goal: whole fusion pipeline {cfg} >= 20x aniposelib: "
                  f"{r['median_us']['anipose_us'] / r['median_us']['pipeline_us']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
