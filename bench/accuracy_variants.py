"""The accuracy table of issue 16: held-out seeds x renderer variants, through the demo's pipeline code.

    nice python bench/accuracy_variants.py [--seeds 7:default 21 22] [--variants default,brown,moved]
                                           [--model PATH ...] [--seconds 20] [--cache-dir DIR] [--json OUT]
                                           [--fusion KEY=VALUE ...] [--events KEY=VALUE ...]

For every (model, seed, variant): the variant's world (`synthetic.variants.build_variant`: another coat,
size, light, clutter, or moved cameras re-calibrated with `ratrig calibrate` on rendered ChArUco boards)
is rendered camera by camera exactly as the demo's camera processes do (one `Renderer` per camera, frame
k at k / fps), every moment is inferred with the model (as `bench/accuracy_offline.py`), and the 2D
results go through the live FusionPipeline and EventsStage with the calibration the variant gives the
pipeline, scored by the demo's Evaluator against the truth. Prints one row per (model, seed, variant):

    2D median/p95 px, 3D raw and filtered median/p95 mm, coverage of keypoint-moments seen by >= 2
    cameras and by exactly 1 (filtered output), touchdown precision/recall, touchdown onset error ms

The 2D results are cached per (model file hash, seed, variant, seconds, walk length) under --cache-dir,
so fusion or events changes are re-scored in seconds. A seed may carry its own variant list
(`7:default`); seeds 100-115 are the model's training walks and are refused. The walk is
`--seconds` + 10 s long, as the demo's. "trained on" says whether the model saw renders of the
variant (pose_cfg.yaml `ratrig_train_variants`, written by inference/train_synthetic.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TRAIN_SEEDS = range(100, 116)  # inference/train_synthetic.TRAIN_SEEDS (kept import-free)


def model_hash(path: Path) -> str:
    """First 12 hex digits of the sha256 of the model's weight file(s)."""
    files = sorted(path.glob("*.pb")) + sorted(path.glob("*.pt")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def train_variants(model: Path) -> set[str]:
    """Variants a model exported by inference/train_synthetic.py was trained on (pose_cfg.yaml
    `ratrig_train_variants`; models from before that key were trained on "default" only)."""
    import yaml

    cfg_path = model / "pose_cfg.yaml" if model.is_dir() else None
    if cfg_path is None or not cfg_path.is_file():
        return set()
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    return set(cfg.get("ratrig_train_variants", ["default"]))


def infer_world(rig, world, n_frames: int) -> np.ndarray:  # noqa: ANN001
    """Render (one Renderer per camera, as the demo's camera processes) and infer every moment of a
    variant world -> (N, C, K, 3) x px, y px, likelihood."""
    from inference.engines import build_estimator, check_model, to_pipeline
    from synthetic.live import rig_fps
    from synthetic.render import Renderer

    info = check_model(rig.inference, rig.keypoints)
    cams = list(rig.camera_names)
    est = build_estimator(info, rig.inference, cams)
    base = world.renderer
    renderers = [Renderer(world.true_calibration.subset([c]), world.corridor, seed=world.seed, noise=base.noise,
                          appearance=base.appearance) for c in cams]
    fps = rig_fps(rig)
    traj = world.trajectory
    out = np.zeros((n_frames, len(cams), len(rig.keypoints), 3), np.float32)
    for k in range(n_frames):
        row = k % len(traj.times_s)
        kp, ex = traj.keypoints_mm[row], traj.extra_mm[row]
        frames = [r.render(0, kp, ex, t_s=k / fps) for r in renderers]
        for c, pose in enumerate(est.infer(cams, frames)):
            out[k, c] = to_pipeline(pose, info)
    est.close()
    return out


def with_overrides(rig, fusion: list[str], events: list[str]):  # noqa: ANN001, ANN201
    """The rig with `--fusion KEY=VALUE` / `--events KEY=VALUE` overrides applied to its sections."""
    from accuracy_offline import parse_overrides

    if fusion:
        rig = dataclasses.replace(rig, fusion=dataclasses.replace(rig.fusion, **parse_overrides(fusion)))
    if events:
        rig = dataclasses.replace(rig, events=dataclasses.replace(rig.events, **parse_overrides(events)))
    return rig


def cached_2d(rig, world, variant: str, seconds: float, cache_dir: Path) -> tuple[np.ndarray, str]:  # noqa: ANN001
    """The model's 2D results for `seconds` of a variant world -> ((N, C, K, 3), "cached" or
    "rendered+inferred"); cached per (model hash, seed, variant, seconds, walk length) in cache_dir."""
    from synthetic.live import rig_fps

    n = int(round(seconds * rig_fps(rig)))
    mhash = model_hash(Path(rig.inference.model))
    cache = cache_dir / f"kp2d_{mhash}_{rig.synthetic.seed}_{variant}_{seconds:g}s_{rig.synthetic.session_s:g}.npz"
    if cache.is_file():
        return np.load(cache)["kp2d"][:n], "cached"
    kp2d = infer_world(rig, world, n)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, kp2d=kp2d)
    tmp.replace(cache)
    return kp2d, "rendered+inferred"


def score_row(rig, world, kp2d: np.ndarray) -> dict:  # noqa: ANN001
    from accuracy_offline import fuse_and_score

    from synthetic.live import SyntheticTruth

    truth = SyntheticTruth(world.trajectory, world.true_calibration.subset(rig.camera_names))
    return fuse_and_score(rig, kp2d, truth=truth, renderer=world.renderer,
                          calibration=world.calibration.subset(rig.camera_names), every_2d=2)


def summarise(report: dict) -> dict:
    """The evaluator's report -> the table's figures (None where a figure is missing)."""
    acc = report.get("accuracy", {})
    td = report.get("events", {}).get("touchdown", {})

    def get(d: dict, *keys: str) -> float | None:
        for k in keys:
            if not isinstance(d, dict) or k not in d or d[k] is None:
                return None
            d = d[k]
        return d

    return {
        "2d_median_px": get(acc, "pose2d_error_px", "median"), "2d_p95_px": get(acc, "pose2d_error_px", "p95"),
        "3d_raw_median_mm": get(acc, "pose3d_error_mm", "raw", "median"),
        "3d_raw_p95_mm": get(acc, "pose3d_error_mm", "raw", "p95"),
        "3d_filt_median_mm": get(acc, "pose3d_error_mm", "filtered", "median"),
        "3d_filt_p95_mm": get(acc, "pose3d_error_mm", "filtered", "p95"),
        "coverage_2cams": get(acc, "pose3d_coverage", "filtered"),
        "coverage_1cam": get(acc, "pose3d_coverage_seen_by_1", "filtered"),
        "coverage_all": get(acc, "pose3d_coverage_all_keypoints", "filtered"),
        "touchdown_precision": get(td, "precision"), "touchdown_recall": get(td, "recall"),
        "touchdown_timing_ms": get(td, "timing_error_ms_median"),
    }


COLUMNS = (("2d_median_px", "2D med", 2), ("2d_p95_px", "2D p95", 2), ("3d_raw_median_mm", "3D raw med", 2),
           ("3d_raw_p95_mm", "raw p95", 2), ("3d_filt_median_mm", "3D filt med", 2), ("3d_filt_p95_mm", "filt p95", 2),
           ("coverage_2cams", "cov >=2 cams", 3), ("coverage_1cam", "cov 1 cam", 3),
           ("touchdown_precision", "TD P", 3), ("touchdown_recall", "TD R", 3), ("touchdown_timing_ms", "TD onset ms", 1))


def format_table(rows: list[dict]) -> str:
    head = ["model", "seed", "variant", "trained on"] + [c[1] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["seed"]), r["variant"], r["trained_on"]]
        for key, _, nd in COLUMNS:
            v = r["figures"].get(key)
            cells.append("-" if v is None else f"{v:.{nd}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_seeds(items: list[str], variants: list[str]) -> list[tuple[int, list[str]]]:
    """["7:default", "21"] -> [(7, ["default"]), (21, variants)]; ValueError for a training seed."""
    out = []
    for item in items:
        seed_s, _, vs = item.partition(":")
        seed = int(seed_s)
        if seed in TRAIN_SEEDS:
            raise ValueError(f"--seeds {seed}: a training seed of the bundled model (100-115); pick another")
        out.append((seed, [v for v in vs.split(",") if v] if vs else list(variants)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "synthetic.toml"))
    p.add_argument("--seeds", nargs="+", default=["7:default", "21"],
                   help="walk seeds, each optionally SEED:VARIANT,VARIANT (default: 7:default 21)")
    p.add_argument("--variants", default="default,hooded,brown,small,large,dim,bright,clutter,moved",
                   help="comma-separated variants for seeds without their own list")
    p.add_argument("--model", action="append", default=None, help="model path (repeat to compare; default: the config's)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "ratrig_accuracy_variants"))
    p.add_argument("--json", default=None, help="also write the rows (figures and full reports) to this file")
    p.add_argument("--fusion", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of [fusion] (a TOML value), e.g. min_likelihood=0.7")
    p.add_argument("--events", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of [events] (a TOML value)")
    args = p.parse_args(argv)

    from ratrig.config import load_config
    from synthetic.live import corridor_of, rig_fps
    from synthetic.variants import build_variant, variant_spec

    rig0 = with_overrides(load_config(args.config), args.fusion, args.events)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        variant_spec(v)
    seeds = parse_seeds(args.seeds, variants)
    models = [str(Path(m).resolve()) for m in (args.model or [rig0.inference.model])]
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    session_s = args.seconds + 10.0
    rows = []
    for model in models:
        rig = dataclasses.replace(rig0, inference=dataclasses.replace(rig0.inference, model=model))
        mhash = model_hash(Path(model))
        label = Path(model).name
        trained = train_variants(Path(model))
        for seed, vlist in seeds:
            rig_s = dataclasses.replace(rig, synthetic=dataclasses.replace(rig.synthetic, seed=seed, session_s=session_s))
            for variant in vlist:
                t = time.monotonic()
                world = build_variant(variant, seed, duration_s=session_s, fps=rig_fps(rig_s),
                                      calib_dir=cache_dir / f"calib_{variant}_{seed}", corridor=corridor_of(rig_s))
                kp2d, how = cached_2d(rig_s, world, variant, args.seconds, cache_dir)
                report = score_row(rig_s, world, kp2d)
                row = {"model": label, "model_sha": mhash, "seed": seed, "variant": variant,
                       "trained_on": "yes" if variant in trained else "held out",
                       "figures": summarise(report), "report": report}
                rows.append(row)
                print(f"{label} seed {seed} {variant}: {how} in {time.monotonic() - t:.0f} s  "
                      + json.dumps(row["figures"]), file=sys.stderr, flush=True)
    print(f"config {args.config}, {args.seconds:g} s of a {session_s:g} s walk per row, 30 fps, 4 cameras; "
          f"coverage = filtered output, over the keypoint-moments the truth shows in >= 2 / exactly 1 camera "
          f"(every 2nd moment); 'trained on': the model saw renders of this variant (of other walks: seeds here "
          f"are never training seeds)" + (f"; fusion {args.fusion}" if args.fusion else "")
          + (f"; events {args.events}" if args.events else ""))
    print(format_table(rows))
    if args.json:
        from ratrig.tomlio import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
