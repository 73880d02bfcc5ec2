"""`ratrig triangulate` against anipose's triangulation on the same 10,000-frame, 4-camera input.

    nice -n 10 python bench/bench_triangulate.py [--frames 10000] [--repeats 3] [--json OUT]

The input: the synthetic rat walking for 10,000 frames (100 fps) seen by the synthetic rig's four
cameras (`synthetic.tracks2d`): 0.7 px noise, 5 % of detections missing, 2 % wrong detections
30-120 px off, 1 % left/right swaps in two views -- written as one DeepLabCut .h5 per camera, with
an Anipose calibration.toml. Both sides are warmed up once on the same input first (numba cache,
jax compilation), then timed `--repeats` times; the best time counts. All in one process, so both
see the same machine load (on a shared machine the absolute figures are noisy; the ratios less so).

  end to end   ratrig: `recorder.triangulate.triangulate_files` -- read the four .h5 files, undistort,
               weighted DLT with the outlier subset search, the Kalman filter frame by frame, write the
               session folder (pose3d.csv, Anipose pose-3d.csv, 2D tables, DLC 3D .h5, summary.json).
               anipose: `anipose.triangulate.triangulate` (what `anipose triangulate` runs per trial,
               optim and ransac off) -- read the .h5 files, aniposelib's DLT, reprojection errors, CSV.
               Also ratrig with --no-kalman.
  triangulation  in memory, the same 2D (likelihood < 0.5 removed): ratrig's kernel (`fusion.triangulate.
               triangulate`, default options: weighted DLT + outlier search; and LINEAR, the plain DLT)
               against aniposelib 0.8's `CameraGroup.triangulate` (jax-vectorised DLT).
  fusion       `recorder.triangulate.fuse` (the kernel + Kalman, frame by frame) in memory.

Prints frames/s of each and the ratios ratrig / anipose, and the 3D error of both against the truth.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")

    import pandas as pd
    from anipose.triangulate import triangulate as anipose_triangulate
    from aniposelib.cameras import CameraGroup

    from fusion.triangulate import LINEAR, RigGeometry, TriangulationOptions, triangulate
    from recorder.triangulate import TriangulateOptions, build_frame_sets, fuse, triangulate_files
    from synthetic.rig import default_rig
    from synthetic.tracks2d import rat_tracks_2d, write_dlc_files

    n = args.frames
    root = Path(tempfile.mkdtemp(prefix="bench_triangulate_"))
    try:
        calib = default_rig()
        (root / "calib").mkdir()
        calib.save(root / "calib" / "calibration.toml")
        truth, pts, names = rat_tracks_2d(calib, n, 100.0, seed=11, noise_px=0.7, drop_rate=0.05,
                                          outlier_rate=0.02, swap_rate=0.01)
        files = write_dlc_files(pts, calib.names, names, root / "pose")
        cal = root / "calib" / "calibration.toml"
        print(f"input: {n} frames x {len(calib.names)} cameras x {len(names)} keypoints "
              f"(0.7 px noise, 5 % missing, 2 % wrong, 1 % swapped), DeepLabCut .h5 per camera")

        # -- end to end ------------------------------------------------------------------------------
        k = {"i": 0}

        def ours(kalman: bool = True) -> dict:
            k["i"] += 1
            return triangulate_files(cal, files, root / f"out{k['i']}", TriangulateOptions(fps=100.0, kalman=kalman))

        config = {"triangulation": {"score_threshold": 0.5, "optim": False, "ransac": False}}
        fdict = {c: str(f) for c, f in files.items()}

        def theirs() -> None:
            k["i"] += 1
            anipose_triangulate(config, str(root / "calib"), str(root), str(root / "pose"), fdict,
                                str(root / f"anipose{k['i']}.csv"))

        t0 = time.perf_counter()
        summary = ours()
        cold_ours, first_ours = time.perf_counter() - t0, k["i"]
        t0 = time.perf_counter()
        theirs()
        cold_theirs, first_theirs = time.perf_counter() - t0, k["i"]
        t_ours = best_of(ours, args.repeats)
        t_ours_nok = best_of(lambda: ours(False), args.repeats)
        t_theirs = best_of(theirs, args.repeats)

        # -- in memory -------------------------------------------------------------------------------
        rig = RigGeometry.from_calibration(calib)
        flat = pts.reshape(len(calib.names), -1, 3)
        xy = flat[..., :2].copy()
        like = flat[..., 2].copy()
        xy_ani = xy.copy()
        xy_ani[~(np.nan_to_num(like) >= 0.5)] = np.nan
        cg = CameraGroup.load(str(cal))
        cg.triangulate(xy_ani.copy())  # jax compilation for this shape
        triangulate(rig, xy, like)
        t_kernel = best_of(lambda: triangulate(rig, xy, like), args.repeats)
        t_linear = best_of(lambda: triangulate(rig, xy_ani, None, LINEAR), args.repeats)
        t_ani = best_of(lambda: cg.triangulate(xy_ani.copy()), args.repeats)
        from recorder.posefiles import read_pose_file

        tracks = {c: read_pose_file(f) for c, f in files.items()}
        cols = {c: (list(range(len(names))), list(names)) for c in calib.names}
        sets = build_frame_sets(tracks, calib.names, names, cols, 10_000_000)
        from fusion.kalman import KalmanOptions

        t_fuse = best_of(lambda: fuse(rig, sets, TriangulationOptions(), KalmanOptions()), args.repeats)

        # -- accuracy ----------------------------------------------------------------------------------
        from recorder.session import open_session

        pose = open_session(root / f"out{first_ours}", repair=False).pose3d()
        ani = pd.read_csv(root / f"anipose{first_theirs}.csv")
        ani_xyz = np.stack([ani[[f"{kp}_x", f"{kp}_y", f"{kp}_z"]].to_numpy() for kp in names], axis=1)

        def err(a: np.ndarray) -> str:
            e = np.linalg.norm(a - truth, axis=-1)
            return f"median {np.nanmedian(e):.2f} mm, p95 {np.nanpercentile(e, 95):.2f} mm, coverage {np.isfinite(e).mean():.3f}"
    finally:
        shutil.rmtree(root, ignore_errors=True)

    fps = lambda t: n / t  # noqa: E731
    rows = [
        ("end to end: ratrig triangulate (Kalman, all outputs)", t_ours, t_theirs),
        ("end to end: ratrig triangulate --no-kalman", t_ours_nok, t_theirs),
        ("triangulation: fusion kernel, weighted DLT + outlier search", t_kernel, t_ani),
        ("triangulation: fusion kernel, plain DLT (LINEAR)", t_linear, t_ani),
        ("fusion in memory: kernel + Kalman frame by frame", t_fuse, t_ani),
    ]
    print(f"\n{'':58s} {'ratrig f/s':>12s} {'anipose f/s':>12s} {'ratio':>7s}")
    for name, a, b in rows:
        print(f"{name:58s} {fps(a):12.0f} {fps(b):12.0f} {b / a:7.2f}x")
    print(f"(end-to-end anipose = anipose.triangulate.triangulate; in-memory anipose = aniposelib CameraGroup.triangulate)")
    print(f"first call (numba cache / jax compile included): ratrig {cold_ours:.2f} s, anipose {cold_theirs:.2f} s")
    print(f"ratrig summary: {summary['time_per_frame_ms'] * 1e3:.1f} us per frame in the fusion, "
          f"reprojection error p50 {summary['reprojection_error_px']['p50']:.2f} px, p95 {summary['reprojection_error_px']['p95']:.2f} px")
    print(f"3D error vs truth: ratrig raw      {err(pose.raw_mm)}")
    print(f"                   ratrig filtered {err(pose.filtered_mm)}")
    print(f"                   anipose         {err(ani_xyz)}")
    out = {"frames": n, "cameras": 4, "keypoints": len(names),
           "frames_per_s": {name: {"ratrig": fps(a), "anipose": fps(b), "ratio": b / a} for name, a, b in rows},
           "cold_s": {"ratrig": cold_ours, "anipose": cold_theirs}}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
