"""Where the demo's touchdown errors come from: every missed and every false touchdown, classified by
how fusion saw that paw around the moment (issue 16).

    nice python bench/touchdown_errors.py [--seeds 7 21 22 23] [--variant default] [--model PATH]
                                          [--seconds 20] [--cache-dir DIR] [--fusion KEY=VALUE ...]
                                          [--events KEY=VALUE ...] [--list]

Same input and code path as `bench/accuracy_variants.py` (and the same 2D cache): the variant's walk,
rendered and inferred at every moment, through the live FusionPipeline and EventsStage. Touchdowns are
matched to the exact contacts as the demo's evaluator does (`events.accuracy.match_times`, 0.1 s, from
1 s to 0.5 s before the end). Each miss (at the true touchdown, frames -1..+3) and each false touchdown
(at its estimated onset, frames -3..+1) is put in the first class that fits:

    >= 3 views      fusion triangulated the paw from 3 or 4 cameras in that window
    2 views, z off  only 2-view triangulations, one of them > 5 mm from the true height
    2 views         only 2-view triangulations, all within 5 mm of the true height (timing, thresholds)
    <= 1 view       no triangulation at all (the events stage had one-camera floor points or nothing)

`--list` also prints every error with the paw's views, raw and true height per frame.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CLASSES = (">= 3 views", "2 views, z off", "2 views", "<= 1 view")
Z_OFF_MM = 5.0


def classify(ncams: list[int], raw_z: list[float], true_z: list[float]) -> str:
    """One error's window: views per frame, raw and true paw height (mm) -> its class (CLASSES)."""
    if any(n >= 3 for n in ncams):
        return CLASSES[0]
    two = [abs(r - t) for n, r, t in zip(ncams, raw_z, true_z) if n == 2 and np.isfinite(r)]
    if two:
        return CLASSES[1] if max(two) > Z_OFF_MM else CLASSES[2]
    return CLASSES[3]


def run_seed(rig, world, kp2d: np.ndarray) -> tuple[dict, dict[int, tuple], list]:  # noqa: ANN001
    """Fusion + events over the cached 2D -> (contacts, moment -> (raw (K,3), n_cameras (K,)), touchdowns)."""
    from events.process import EventsStage, setup_from_config
    from fusion.process import FusionPipeline, options_from_config
    from ratrig.messages import Keypoints2DPacket
    from synthetic.live import rig_fps

    fusion = FusionPipeline(world.calibration.subset(rig.camera_names), rig.keypoints, options_from_config(rig))
    events = EventsStage(setup_from_config(rig), [])
    t0, period = 10**12, int(round(1e9 / rig_fps(rig)))
    names = tuple(rig.keypoints)
    seen: dict[int, tuple] = {}
    touchdowns = []
    for k in range(len(kp2d)):
        capture = t0 + k * period
        poses = []
        for c, cam in enumerate(rig.camera_names):
            poses += fusion.add(Keypoints2DPacket(cam, k, capture, names, kp2d[k, c]), capture + 30_000_000)
        poses += fusion.poll(capture + 30_000_000 + 2 * period)
        for p in poses:
            moment = int(np.median(list(p.frame_indices.values())))
            seen[moment] = (np.asarray(p.raw_mm, float), np.asarray(p.n_cameras, int))
            touchdowns += [((int(e.extra.get("onset_ns", e.capture_ns)) - t0) * 1e-9, e.subject)
                           for e in events.handle(p) if e.name == "touchdown"]
    return world.trajectory.contacts, seen, touchdowns


def errors_of(rig, world, kp2d: np.ndarray, fps: float) -> tuple[list[dict], int]:  # noqa: ANN001
    """Every missed / false touchdown of one walk, with its class and window; and how many true
    touchdowns were scored."""
    from events.accuracy import match_times
    from ratrig.skeleton import PAWS

    contacts, seen, touchdowns = run_seed(rig, world, kp2d)
    names = list(rig.keypoints)
    truth_names = list(world.trajectory.keypoint_names)
    end_s = min(len(kp2d) / fps, world.trajectory.duration_s) - 0.5
    out = []
    n_true = 0
    for paw in PAWS:
        j, jt = names.index(paw), truth_names.index(paw)
        true = contacts[paw][:, 0]
        true = true[(true > 0) & (true >= 1.0) & (true <= end_s)]
        n_true += true.size
        det = np.array([t for t, s in touchdowns if s == paw])
        det = det[(det >= 1.0) & (det <= end_s + 0.1)] if det.size else det
        pairs = match_times(det, true, 0.1)
        matched_d, matched_t = {a for a, _ in pairs}, {b for _, b in pairs}
        for kind, times, matched, frames in (("missed", true, matched_t, range(-1, 4)),
                                             ("false", det, matched_d, range(-3, 2))):
            for i, t in enumerate(times):
                if i in matched:
                    continue
                k0 = int(round(t * fps))
                win = [(k, int(seen[k][1][j]), float(seen[k][0][j, 2]),
                        float(world.trajectory.keypoints_mm[k % len(world.trajectory.times_s)][jt, 2]))
                       for k in (k0 + d for d in frames) if k in seen]
                out.append({"kind": kind, "paw": paw, "t_s": float(t), "window": win,
                            "class": classify([w[1] for w in win], [w[2] for w in win], [w[3] for w in win])})
    return out, n_true


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "synthetic.toml"))
    p.add_argument("--seeds", nargs="+", type=int, default=[7, 21, 22, 23])
    p.add_argument("--variant", default="default")
    p.add_argument("--model", default=None)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--cache-dir", default=None, help="the 2D cache of bench/accuracy_variants.py")
    p.add_argument("--fusion", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--events", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--list", action="store_true", help="print every error's window")
    args = p.parse_args(argv)

    from accuracy_variants import TRAIN_SEEDS, cached_2d, with_overrides

    from ratrig.config import load_config
    from synthetic.live import corridor_of, rig_fps
    from synthetic.variants import build_variant

    rig0 = with_overrides(load_config(args.config), args.fusion, args.events)
    model = str(Path(args.model or rig0.inference.model).resolve())
    rig0 = dataclasses.replace(rig0, inference=dataclasses.replace(rig0.inference, model=model))
    cache_dir = Path(args.cache_dir or Path(tempfile.gettempdir()) / "ratrig_accuracy_variants")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fps = rig_fps(rig0)
    session_s = args.seconds + 10.0
    counts = {(kind, c): 0 for kind in ("missed", "false") for c in CLASSES}
    n_true = 0
    for seed in args.seeds:
        if seed in TRAIN_SEEDS:
            raise SystemExit(f"--seeds {seed}: a training seed of the bundled model (100-115); pick another")
        rig = dataclasses.replace(rig0, synthetic=dataclasses.replace(rig0.synthetic, seed=seed, session_s=session_s))
        world = build_variant(args.variant, seed, duration_s=session_s, fps=fps,
                              calib_dir=cache_dir / f"calib_{args.variant}_{seed}", corridor=corridor_of(rig))
        kp2d, _ = cached_2d(rig, world, args.variant, args.seconds, cache_dir)
        errs, n_seed = errors_of(rig, world, kp2d, fps)
        n_true += n_seed
        n_missed = sum(e["kind"] == "missed" for e in errs)
        n_false = sum(e["kind"] == "false" for e in errs)
        print(f"seed {seed} {args.variant}: {n_missed} missed, {n_false} false")
        for e in errs:
            counts[(e["kind"], e["class"])] += 1
            if args.list:
                win = ", ".join(f"k{k}: {v} views z {r:.1f} (true {t:.1f})" for k, v, r, t in e["window"])
                print(f"  {e['kind']:<6} {e['paw']:<16} t={e['t_s']:6.2f} s  [{e['class']}]  {win}")
    print(f"\nmodel {Path(model).name}, seeds {args.seeds}, variant {args.variant}, {args.seconds:g} s each; "
          f"true touchdowns scored: {n_true}"
          + (f"; fusion {args.fusion}" if args.fusion else "") + (f"; events {args.events}" if args.events else ""))
    print("| how fusion saw the paw | missed | false |")
    print("|---|---|---|")
    for c in CLASSES:
        print(f"| {c} | {counts[('missed', c)]} | {counts[('false', c)]} |")
    print(f"| all | {sum(v for (k, _), v in counts.items() if k == 'missed')} "
          f"| {sum(v for (k, _), v in counts.items() if k == 'false')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
