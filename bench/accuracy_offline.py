"""The demo's accuracy figures without sockets or a clock: a synthetic walk, rendered, through the model,
FusionPipeline and EventsStage, scored by the demo's evaluator.

    nice python bench/accuracy_offline.py [--config configs/synthetic.toml] [--seed 11] [--seconds 60]
                                          [--session-s 600] [--model PATH] [--cache 2d.npz]
                                          [--events KEY=VALUE ...] [--busy-workers LO-HI]

Every moment is rendered and inferred (nothing is skipped, as on an idle machine), then the 2D results
go through the same fusion and events code as the live pipeline, in capture order, each camera's
packet arriving 30 ms after capture. Prints `accuracy` and `events.touchdown` as in the demo summary,
plus the 3D error split by the number of views. `--cache` keeps the 2D results (rendering and
inference are ~95 % of the run time), so fusion or events settings can be compared on the same input.
Use another `--seed` than the demo's to check that a setting is not tuned to the demo's walk; note
that the walk also depends on `--session-s` (the demo simulates duration + 10 s).

`--events KEY=VALUE` overrides a key of the config's [events] section (a TOML value: `inf`, `[]`
for no floor area, numbers), e.g. `--events step_distance_mm=inf` to see what a setting buys.
`--busy-workers LO-HI` replays what a machine too slow for every moment does: each inference worker
of the config runs the newest moment whenever it is free and takes LO-HI ms (uniform) per moment,
so it skips some (`--busy-workers 28-42`: ~5 % skipped, as a loaded 2-core machine); fusion then
completes the frame sets that lack a worker's cameras by its deadline, as live.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def infer_session(rig, n_frames: int) -> np.ndarray:  # noqa: ANN001
    """Render and infer every moment -> (N, C, K, 3) x px, y px, likelihood."""
    from inference.engines import build_estimator, check_model, to_pipeline
    from synthetic.live import LiveCamera, rig_fps

    info = check_model(rig.inference, rig.keypoints)
    cams = list(rig.camera_names)
    est = build_estimator(info, rig.inference, cams)
    live = [LiveCamera.from_rig_config(rig, c) for c in cams]
    fps = rig_fps(rig)
    out = np.zeros((n_frames, len(cams), len(rig.keypoints), 3), np.float32)
    for k in range(n_frames):
        poses = est.infer(cams, [lc.render_at(k / fps) for lc in live])
        for c, pose in enumerate(poses):
            out[k, c] = to_pipeline(pose, info)
    est.close()
    return out


def busy_worker_moments(n: int, period_ms: float, infer_ms: tuple[float, float], seed: int) -> np.ndarray:
    """Moments a worker that is free only every LO-HI ms runs: the newest one captured when it gets
    free (never one it already ran) -> sorted (M,) moment indices < n."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    t = 0.0
    while True:
        k = int(t // period_ms)
        if out and k <= out[-1]:
            k = out[-1] + 1
        if k >= n:
            return np.array(out, np.int64)
        out.append(k)
        t = max(t, k * period_ms) + float(rng.uniform(*infer_ms))


def fuse_and_score(rig, kp2d: np.ndarray, busy_ms: tuple[float, float] | None = None,  # noqa: ANN001
                   truth=None, renderer=None, calibration=None, every_2d: int = 10) -> dict:  # noqa: ANN001
    """(N, C, K, 3) 2D results -> the evaluator's report plus 3D errors by number of views.
    `busy_ms`: emulate workers that skip moments (see the module docstring).
    `truth` (SyntheticTruth), `renderer` (its visibility is the truth's) and `calibration` (what fusion
    is given, e.g. a re-calibration of moved cameras) default to the config's synthetic rig.
    `every_2d`: the evaluator scores 2D errors and the coverage split on every N-th moment."""
    from events.process import EventsStage, setup_from_config
    from fusion.process import FusionPipeline, options_from_config
    from ratrig.messages import Keypoints2DPacket
    from synthetic.evaluate import Evaluator
    from synthetic.live import SyntheticTruth, corridor_of, noise_of, rig_fps
    from synthetic.render import Renderer

    truth = truth or SyntheticTruth.from_rig_config(rig)
    renderer = renderer or Renderer(truth.calibration, corridor_of(rig), seed=rig.synthetic.seed, noise=noise_of(rig))
    evaluator = Evaluator(truth, renderer, list(rig.keypoints), every_2d=every_2d)
    fusion = FusionPipeline(calibration or truth.calibration, rig.keypoints, options_from_config(rig))
    events = EventsStage(setup_from_config(rig), [])
    t0 = 10**12
    period = int(round(1e9 / rig_fps(rig)))
    evaluator.t0_ns = t0
    names = tuple(rig.keypoints)
    by_views: dict[int, list[float]] = {}
    runs = {cam: None for cam in rig.camera_names}  # camera -> moments its worker ran (None: all)
    if busy_ms is not None:
        for j, group in enumerate(rig.worker_groups()):
            moments = set(busy_worker_moments(len(kp2d), period / 1e6, busy_ms, seed=j).tolist())
            runs.update({cam: moments for cam in group})
    skipped = 0
    for k in range(len(kp2d)):
        capture = t0 + k * period
        poses = []
        for c, cam in enumerate(rig.camera_names):
            if runs[cam] is not None and k not in runs[cam]:
                skipped += 1
                continue
            packet = Keypoints2DPacket(cam, k, capture, names, kp2d[k, c])
            evaluator.add_pose2d(packet)
            poses += fusion.add(packet, capture + 30_000_000)
        poses += fusion.poll(capture + 30_000_000 + 2 * period)  # sets that lack a skipped worker's views
        for pose in poses:
            evaluator.add_pose3d(pose)
            for ev in events.handle(pose):
                evaluator.add_event(ev)
            moment = int(np.median(list(pose.frame_indices.values())))
            err = np.linalg.norm(np.asarray(pose.raw_mm) - truth.keypoints_mm(moment), axis=1)
            for n, e in zip(np.asarray(pose.n_cameras), err):
                if np.isfinite(e):
                    by_views.setdefault(int(n), []).append(float(e))
    report = evaluator.report()
    report["pose3d_raw_error_mm_by_views"] = {
        str(n): {"n": len(v), "median": round(float(np.median(v)), 2), "p95": round(float(np.percentile(v, 95)), 2)}
        for n, v in sorted(by_views.items())
    }
    report["events_stage"] = events.stats()
    report["views_skipped"] = skipped
    return report


def parse_overrides(items: list[str]) -> dict:
    """["key=toml value", ...] -> {key: value}; ValueError naming a malformed item."""
    from ratrig.tomlio import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--events {item!r}: expected KEY=VALUE")
        out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "synthetic.toml"))
    p.add_argument("--seed", type=int, default=None, help="simulation seed (default: the config's)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--session-s", type=float, default=None, help="simulated walk length (default: the config's)")
    p.add_argument("--model", default=None, help="model path (default: the config's)")
    p.add_argument("--cache", default=None, help="npz of the 2D results: read if present, else written")
    p.add_argument("--events", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of [events] (a TOML value), e.g. step_distance_mm=inf")
    p.add_argument("--busy-workers", default=None, metavar="LO-HI",
                   help="emulate inference workers taking LO-HI ms per moment (they skip moments)")
    args = p.parse_args(argv)

    from ratrig.config import load_config
    from synthetic.live import rig_fps

    rig = load_config(args.config)
    syn = {k: v for k, v in (("seed", args.seed), ("session_s", args.session_s)) if v is not None}
    if syn:
        rig = dataclasses.replace(rig, synthetic=dataclasses.replace(rig.synthetic, **syn))
    if args.model:
        rig = dataclasses.replace(rig, inference=dataclasses.replace(rig.inference, model=str(Path(args.model).resolve())))
    if args.events:
        rig = dataclasses.replace(rig, events=dataclasses.replace(rig.events, **parse_overrides(args.events)))
    busy = None
    if args.busy_workers:
        lo, _, hi = args.busy_workers.partition("-")
        busy = (float(lo), float(hi or lo))
    n = int(round(args.seconds * rig_fps(rig)))
    t = time.monotonic()
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        kp2d = np.load(cache)["kp2d"][:n]
        print(f"2D results from {cache} ({len(kp2d)} moments)")
    else:
        kp2d = infer_session(rig, n)
        if cache is not None:
            np.savez(cache, kp2d=kp2d)
        print(f"rendered and inferred {n} moments x {len(rig.camera_names)} cameras in {time.monotonic() - t:.0f} s")
    report = fuse_and_score(rig, kp2d, busy)
    print(f"seed {rig.synthetic.seed}, walk of {rig.synthetic.session_s:g} s, first {len(kp2d) / rig_fps(rig):g} s, "
          f"model {rig.inference.model}" + (f", events {args.events}" if args.events else "")
          + (f", workers busy {busy[0]:g}-{busy[1]:g} ms per moment" if busy else ""))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
