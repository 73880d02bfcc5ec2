"""Fusion cost per frame set, against a plain per-frame loop over aniposelib's triangulation.

    nice -n 10 python bench/bench_fusion.py [--frames 2000] [--ransac-frames 3]

Per configuration (4 cameras x 8 keypoints, 8 cameras x 20 keypoints) it times, per frame set, on
one core after compilation:
  ours/full     triangulate (undistort, weighted DLT, outlier rejection) + Kalman step
  ours/linear   the plain linear triangulation alone (what aniposelib computes)
  pipeline      FusionPipeline.add of the frame set's C Keypoints2DPackets (sync + arrays + triangulate
                + Kalman + building the Pose3DPacket): the fusion process's cost without the sockets
  floor         fusion.floor.floor_points for half the keypoints, each seen by exactly one camera
                (the worst case of the paws' floor points, on top of `pipeline`)
  anipose       aniposelib CameraGroup.triangulate called once per frame set (undistort=True)
  anipose/ransac  CameraGroup.triangulate_ransac per frame set (its outlier-rejecting path; few frames)
and prints the ratios. Then it measures the start-up cost in fresh subprocesses: import + first
call with an empty numba cache (cold) and again with the cache filled (warm).
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

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion.kalman import KalmanFilter3D  # noqa: E402
from fusion.triangulate import RigGeometry, project, triangulate, triangulate_linear  # noqa: E402
from ratrig.camera import Calibration, Camera  # noqa: E402


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


def make_data(calib: Calibration, n_kp: int, n_frames: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    rig = RigGeometry.from_calibration(calib)
    t = np.arange(n_frames) / 30.0
    pts3 = np.stack([np.stack([-300 + 200 * t + 8 * k, 10 * np.sin(t + k), 20 + 3 * k + 0 * t], -1)
                     for k in range(n_kp)], 1)  # (T, K, 3)
    p2 = np.stack([project(rig, pts3[i]) for i in range(n_frames)])  # (T, C, K, 2)
    p2 += rng.normal(0, 1.0, p2.shape)
    like = rng.uniform(0.6, 1.0, p2.shape[:3])
    hidden = rng.random(p2.shape[:3]) < 0.1
    p2[hidden] = np.nan
    like[hidden] = 0.0
    outlier = rng.random(p2.shape[:3]) < 0.02
    p2[outlier] += 60.0
    return rig, p2, like


def per_frame(fn, n: int) -> np.ndarray:
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        times[i] = time.perf_counter_ns() - t0
    return times / 1e3  # us


def bench_config(n_cams: int, n_kp: int, n_frames: int, ransac_frames: int) -> dict:
    from aniposelib.cameras import Camera as ACamera
    from aniposelib.cameras import CameraGroup

    calib = ring_rig(n_cams)
    rig, p2, like = make_data(calib, n_kp, n_frames)
    kf = KalmanFilter3D(n_kp)

    def ours_full(i: int) -> None:
        r = triangulate(rig, p2[i], like[i])
        kf.step(int(i * 33_333_333), r.points_mm, r.reprojection_error_px, r.score, 0.05)

    def ours_linear(i: int) -> None:
        triangulate_linear(rig, p2[i])

    cg = CameraGroup([ACamera(name=c.name, size=c.size, matrix=c.matrix, dist=c.dist, rvec=c.rvec, tvec=c.tvec)
                      for c in calib.cameras])

    from fusion.process import FusionOptions, FusionPipeline
    from fusion.sync import SyncOptions
    from ratrig.messages import Keypoints2DPacket

    names = tuple(f"kp{k}" for k in range(n_kp))
    pipe = FusionPipeline(calib, names, FusionOptions(sync=SyncOptions(33_333_333)))
    packets = [[Keypoints2DPacket(cam, i, i * 33_333_333, names,
                                  np.concatenate([p2[i, c], like[i, c, :, None]], 1).astype(np.float32))
                for c, cam in enumerate(calib.names)] for i in range(n_frames)]

    def pipeline(i: int) -> None:
        out = []
        for pkt in packets[i]:
            out += pipe.add(pkt, i * 33_333_333 + 10_000_000)
        assert len(out) == 1

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
    return res


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--ransac-frames", type=int, default=3,
                    help="frame sets timed through aniposelib's triangulate_ransac (seconds each at 8x20; 0: skip)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, one core, {args.frames} frame sets per run")
    summary = {}
    for n_cams, n_kp in ((4, 8), (8, 20)):
        r = bench_config(n_cams, n_kp, args.frames, args.ransac_frames)
        med = {k: float(np.median(v)) for k, v in r.items() if k.endswith("_us")}
        p99 = {k: float(np.percentile(v, 99)) for k, v in r.items() if k.endswith("_us")}
        print(f"\n{n_cams} cameras x {n_kp} keypoints, per frame set (median / p99, microseconds):")
        for k in med:
            print(f"  {k[:-3]:<16} {med[k]:10.1f} / {p99[k]:10.1f}")
        print(f"  ratio anipose / ours_linear     : {med['anipose_us'] / med['ours_linear_us']:.1f}x")
        print(f"  ratio anipose / ours_full       : {med['anipose_us'] / med['ours_full_us']:.1f}x")
        if "anipose_ransac_us" in med:
            print(f"  ratio anipose_ransac / ours_full: {med['anipose_ransac_us'] / med['ours_full_us']:.0f}x")
        print(f"  max |aniposelib - ours| (linear, same 5-iteration undistortion): {r['max_diff_vs_anipose_mm']:.2e} mm")
        summary[f"{n_cams}x{n_kp}"] = {"median_us": med, "p99_us": p99}
    target = summary["4x8"]["median_us"]["ours_full_us"]
    pipe_us = summary["4x8"]["median_us"]["pipeline_us"]
    print(f"\ntarget: full fusion 4x8 < 200 us per frame set: {'met' if target < 200 else 'NOT met'} ({target:.1f} us; "
          f"whole pipeline incl. sync and packets {pipe_us:.1f} us)")

    with tempfile.TemporaryDirectory() as cache:
        cold = startup(cache)
        warm = startup(cache)
    print("\nstart-up in a fresh process (import s, first triangulate + Kalman call s):")
    print(f"  cold numba cache: import {cold[0]:.2f} s, first call {cold[1]:.2f} s")
    print(f"  warm numba cache: import {warm[0]:.2f} s, first call {warm[1]:.2f} s")
    summary["startup_s"] = {"cold": cold, "warm": warm}
    print("\n" + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
