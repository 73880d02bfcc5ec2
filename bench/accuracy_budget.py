"""Where the 3D error comes from: 2D error vs calibration error vs filtering, on one variant world.

    nice python bench/accuracy_budget.py [--seed 21] [--variant moved] [--model PATH] [--seconds 20]
                                         [--cache-dir DIR]

The same FusionPipeline / EventsStage / Evaluator as `bench/accuracy_variants.py` (whose 2D cache it
shares), fed with different 2D inputs and calibrations:

    exact 2D           the true projections of the keypoints the truth shows in a camera (likelihood 1),
                       nothing for hidden ones: what fusion and filtering alone cost
    exact 2D + noise   the same plus isotropic Gaussian noise whose median size equals the model's median
                       2D error on visible keypoints: what "typical" 2D error costs
    model 2D           the model's output (its misses, outliers and guesses on hidden keypoints included)

each with the TRUE calibration of the rendered cameras and, for a moved-camera variant, with the one
`ratrig calibrate` made from rendered boards. Raw vs filtered columns give the filter's share.
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


def exact_2d(world, cams: list[str], n: int) -> np.ndarray:  # noqa: ANN001
    """(N, C, K, 3) true projections of the keypoints the truth shows (likelihood 1), NaN / 0 for hidden."""
    traj = world.trajectory
    out = np.full((n, len(cams), traj.keypoints_mm.shape[1], 3), np.nan, np.float32)
    out[..., 2] = 0.0
    for c, name in enumerate(cams):
        cam = world.true_calibration.camera(name)
        for k in range(n):
            row = k % len(traj.times_s)
            kp, ex = traj.keypoints_mm[row], traj.extra_mm[row]
            vis = world.renderer.visibility(name, kp, ex)
            uv = cam.project(kp)
            out[k, c, vis, :2] = uv[vis]
            out[k, c, vis, 2] = 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "synthetic.toml"))
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--variant", default="moved")
    p.add_argument("--model", default=None)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "ratrig_accuracy_variants"))
    args = p.parse_args(argv)

    from accuracy_variants import infer_world, model_hash, score_row, summarise

    from ratrig.config import load_config
    from synthetic.live import corridor_of, rig_fps
    from synthetic.variants import build_variant

    rig = load_config(args.config)
    model = str(Path(args.model).resolve()) if args.model else rig.inference.model
    session_s = args.seconds + 10.0
    rig = dataclasses.replace(rig, inference=dataclasses.replace(rig.inference, model=model),
                              synthetic=dataclasses.replace(rig.synthetic, seed=args.seed, session_s=session_s))
    n = int(round(args.seconds * rig_fps(rig)))
    cache_dir = Path(args.cache_dir)
    world = build_variant(args.variant, args.seed, duration_s=session_s, fps=rig_fps(rig),
                          calib_dir=cache_dir / f"calib_{args.variant}_{args.seed}", corridor=corridor_of(rig))
    cache = cache_dir / f"kp2d_{model_hash(Path(model))}_{args.seed}_{args.variant}_{args.seconds:g}s_{session_s:g}.npz"
    if cache.is_file():
        model2d = np.load(cache)["kp2d"][:n]
    else:
        model2d = infer_world(rig, world, n)
    cams = list(rig.camera_names)
    exact = exact_2d(world, cams, n)
    seen = exact[..., 2] > 0
    err = np.linalg.norm(model2d[..., :2] - exact[..., :2], axis=-1)[seen & (model2d[..., 2] >= rig.fusion.min_likelihood)]
    med = float(np.nanmedian(err))
    sigma = med / np.sqrt(2 * np.log(2))  # median of a 2D isotropic Gaussian's radius = sigma sqrt(2 ln 2)
    noisy = exact.copy()
    rng = np.random.default_rng(0)
    noisy[..., :2] += rng.normal(0, sigma, noisy[..., :2].shape).astype(np.float32)
    moved = world.calibration is not world.true_calibration
    calibs = [("true", world.true_calibration)] + ([("ratrig calibrate", world.calibration)] if moved else [])
    print(f"seed {args.seed}, variant {args.variant}, {args.seconds:g} s, model {Path(model).name}: model 2D error on "
          f"visible keypoints it reports (likelihood >= {rig.fusion.min_likelihood}): median {med:.2f} px, "
          f"p95 {np.nanpercentile(err, 95):.2f} px; noise row: sigma {sigma:.2f} px")
    print("| 2D input | calibration | 3D raw med | raw p95 | 3D filt med | filt p95 | cov >=2 cams | TD P | TD R | TD onset ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, kp2d in (("exact 2D", exact), (f"exact 2D + noise (sigma {sigma:.2f} px)", noisy), ("model 2D", model2d)):
        for cname, calib in calibs:
            w = dataclasses.replace(world, calibration=calib)
            f = summarise(score_row(rig, w, kp2d))

            def fmt(key: str, nd: int = 2) -> str:
                v = f.get(key)
                return "-" if v is None else f"{v:.{nd}f}"

            print(f"| {label} | {cname} | {fmt('3d_raw_median_mm')} | {fmt('3d_raw_p95_mm')} | "
                  f"{fmt('3d_filt_median_mm')} | {fmt('3d_filt_p95_mm')} | {fmt('coverage_2cams', 3)} | "
                  f"{fmt('touchdown_precision', 3)} | {fmt('touchdown_recall', 3)} | {fmt('touchdown_timing_ms', 1)} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
