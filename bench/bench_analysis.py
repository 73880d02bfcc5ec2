"""Benchmark: analysing one hour of 30 fps 3D poses (108,000 frames x 8 keypoints).

Synthetic: one hour of the synthetic walking rat (`synthetic.rat.simulate`), 1 mm noise, 2 % of raw
points missing (filled by the "filter" columns, as the recorder writes them). Times:

1. writing the recorder-format pose3d.csv (setup, not counted),
2. loading it (`analysis.loader.load_session`),
3. the analyses (`analysis.pipeline.analyse_session`: quality, floor fit, contacts, bouts, strides,
   step sequences, phases, asymmetry, rotation),
4. writing the CSV/JSON outputs and the HTML report.

The target is load + analyse + write under 60 s on this machine. For scale, the vectorised stance
detector is compared with the plain alternative, a per-frame Python state machine with the same
thresholds, on the same paw (and both must find the same stances).

Usage: nice -n 10 python bench/bench_analysis.py [--minutes 60] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def write_pose3d(path: Path, times_s: np.ndarray, kp: np.ndarray, names: tuple[str, ...], seed: int = 0) -> None:
    from recorder.tables import pose3d_columns

    cams = ("cam_ne", "cam_nw", "cam_sw", "cam_se")
    rng = np.random.default_rng(seed)
    kp = kp + rng.normal(0.0, 1.0, kp.shape)
    raw = kp.copy()
    raw[rng.random(kp.shape[:2]) < 0.02] = np.nan
    n = len(times_s)
    data = {"fnum": np.arange(n), "capture_ns": np.round(times_s * 1e9).astype(np.int64) + 10**9,
            "wall_ns": np.zeros(n, np.int64), "recv_ns": np.zeros(n, np.int64)}
    for k, name in enumerate(names):
        for j, a in enumerate("xyz"):
            data[f"{name}_{a}"] = raw[:, k, j]
            data[f"{name}_f{a}"] = kp[:, k, j]
        data[f"{name}_error"] = rng.uniform(0.3, 1.5, n)
        data[f"{name}_ncams"] = np.full(n, 4)
        data[f"{name}_score"] = np.full(n, 0.95)
    for c in cams:
        data[f"frame_index_{c}"] = np.arange(n)
    pd.DataFrame(data)[pose3d_columns(names, cams)].to_csv(path, index=False, float_format="%.3f")


def plain_stance_detector(times_s: np.ndarray, paw_mm: np.ndarray, height_mm: np.ndarray, p) -> list[tuple[int, int]]:
    """The plain alternative: one Python loop over frames, the same rule as `analysis.contacts`
    (a stance is a run of frames below the liftoff thresholds holding at least one frame below the
    touchdown thresholds)."""
    h = height_mm - np.nanpercentile(height_mm, p.baseline_percentile)
    n = len(times_s)
    out: list[tuple[int, int]] = []
    start, strong_seen = -1, False
    for i in range(n + 1):
        weak = strong = False
        if i < n:
            a, b = max(i - 1, 0), min(i + 1, n - 1)
            d = paw_mm[b] - paw_mm[a]
            v = float(np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])) / (times_s[b] - times_s[a])
            strong = bool(h[i] < p.touchdown_height_mm and v < p.touchdown_speed_mm_s)
            weak = strong or bool(h[i] < p.liftoff_height_mm and v < p.liftoff_speed_mm_s)
        if weak:
            if start < 0:
                start, strong_seen = i, False
            strong_seen |= strong
        elif start >= 0:
            if strong_seen:
                out.append((start, i - 1))
            start = -1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--out", help="keep the outputs here (default: a temporary folder)")
    args = ap.parse_args(argv)

    from analysis.contacts import ContactParams, detect_contacts
    from analysis.loader import load_session
    from analysis.outputs import write_session_outputs
    from analysis.pipeline import analyse_session
    from analysis.report import session_report
    from synthetic.rat import simulate

    t0 = time.perf_counter()
    tr = simulate(args.minutes * 60.0, args.fps, seed=2024)
    t_sim = time.perf_counter() - t0
    n, k = tr.keypoints_mm.shape[:2]
    print(f"synthetic rat: {n} frames x {k} keypoints ({args.minutes:.0f} min at {args.fps:.0f} fps), "
          f"simulated in {t_sim:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        folder = root / "bench_session"
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_pose3d(folder / "pose3d.csv", tr.times_s, tr.keypoints_mm, tuple(tr.keypoint_names))
        size_mb = (folder / "pose3d.csv").stat().st_size / 1e6
        print(f"setup: pose3d.csv {size_mb:.0f} MB written in {time.perf_counter() - t0:.1f} s (not counted)")

        t0 = time.perf_counter()
        session = load_session(folder / "pose3d.csv", {"lesion_side": "right", "test_type": "open_walk"})
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = analyse_session(session)
        t_analyse = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_session_outputs(result, root / "out")
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        session_report(result, root / "out" / "report.html")
        t_report = time.perf_counter() - t0
        g = result.summary["gait"]
        total = t_load + t_analyse + t_write
        print(f"load pose3d.csv      {t_load:6.1f} s")
        print(f"analyse              {t_analyse:6.1f} s  ({g['n_bouts']} bouts, {g['n_strides']} strides, "
              f"{sum(result.gait.contacts[p].n for p in result.gait.contacts)} contacts)")
        print(f"write CSV + JSON     {t_write:6.1f} s")
        print(f"HTML report          {t_report:6.1f} s")
        print(f"load + analyse + write: {total:.1f} s for {args.minutes:.0f} min of data "
              f"({'under' if total < 60 else 'OVER'} one minute); with the report {total + t_report:.1f} s")

        # vectorised stance detector vs the plain per-frame loop, one paw, same data
        paw = session.kp("front_left_paw")
        height = paw[:, 2]
        params = ContactParams(min_stance_ms=0.0, min_swing_ms=0.0, max_fill_ms=0.0)
        t0 = time.perf_counter()
        fast = detect_contacts(session.times_s, paw, height, params)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = plain_stance_detector(session.times_s, paw, height, params)
        t_plain = time.perf_counter() - t0
        same = len(plain) == fast.n and all(a == s and b == e for (a, b), s, e in
                                            zip(plain, fast.first_frame, fast.last_frame))
        print(f"stance detector, one paw, {n} frames: vectorised {t_fast * 1e3:.1f} ms, plain loop "
              f"{t_plain * 1e3:.0f} ms (x{t_plain / max(t_fast, 1e-9):.0f}); same stances: {same}")
    return 0 if total < 60 else 1


if __name__ == "__main__":
    sys.exit(main())
