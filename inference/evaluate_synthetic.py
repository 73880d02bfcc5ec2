"""2D accuracy of a model on held-out synthetic renders, through dlclive's DLCLive.get_pose.

    python -m inference.evaluate_synthetic [--model inference/models/synthrat] [--seed 7] [--times 100]
                                           [--resize 0.5] [--write]

Renders `--times` random moments of a walk simulated with `--seed` (not one of the training seeds),
from all four cameras, runs each frame through DLCLive.get_pose (the real inference path, full 640x480
frames, resize 0.5) and compares with the exact ground-truth projections, counting only keypoints the
renderer reports visible. Prints per-keypoint median error, 95th percentile and the share within 8 px;
`--write` stores the same figures as ACCURACY.json beside the model.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.skeleton import KEYPOINTS

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "synthrat"
HELD_OUT_SEED = 7
WITHIN_PX = 8.0


def render_eval_set(seed: int, n_times: int, rng_seed: int = 1) -> dict[str, Any]:
    """Held-out frames: {"frames": list of (480, 640, 3) BGR, "uv": (N, K, 2) px, "visible": (N, K) bool,
    "camera": list of names}. N = n_times x 4 cameras."""
    from synthetic.rat import simulate
    from synthetic.render import NoiseOptions, Renderer
    from synthetic.rig import default_rig

    cal = default_rig()
    traj = simulate(duration_s=20.0, fps=30.0, seed=seed)
    renderer = Renderer(cal, seed=seed, noise=NoiseOptions(sensor_noise_sigma=3.0, blur_sigma_px=0.7, exposure_jitter=0.1))
    rng = np.random.default_rng(rng_seed)
    frames, uv, vis, names = [], [], [], []
    for t in np.sort(rng.uniform(traj.times_s[0], traj.times_s[-1], n_times)):
        kp, ex = traj.pose_at(float(t))
        kp, ex = np.asarray(kp).reshape(-1, 3), np.asarray(ex).reshape(-1, 3)
        for cam in cal.cameras:
            frames.append(renderer.render(cam.name, kp, ex, t_s=float(t)))
            uv.append(np.asarray(cam.project(kp), np.float64).reshape(-1, 2))
            vis.append(np.asarray(renderer.visibility(cam.name, kp, ex), bool))
            names.append(cam.name)
    return {"frames": frames, "uv": np.array(uv), "visible": np.array(vis), "camera": names}


def keypoint_errors(pred_xy: np.ndarray, true_xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, K, 2) predicted px, (N, K, 2) true px, (N, K) visible -> (N, K) error px, NaN where hidden."""
    err = np.linalg.norm(pred_xy - true_xy, axis=-1)
    return np.where(visible, err, np.nan)


def summarise(err: np.ndarray, names: Sequence[str] = KEYPOINTS) -> dict[str, Any]:
    """(N, K) errors (NaN = hidden) -> per-keypoint and overall median, p95, share within 8 px, count."""
    def one(e: np.ndarray) -> dict[str, float]:
        e = e[np.isfinite(e)]
        if e.size == 0:
            return {"n": 0, "median_px": float("nan"), "p95_px": float("nan"), "within_8px": float("nan")}
        return {"n": int(e.size), "median_px": round(float(np.median(e)), 3),
                "p95_px": round(float(np.percentile(e, 95)), 3),
                "within_8px": round(float(np.mean(e <= WITHIN_PX)), 4)}

    return {"per_keypoint": {n: one(err[:, i]) for i, n in enumerate(names)}, "all": one(err.ravel())}


def hidden_confidence(likelihood: np.ndarray, visible: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """(N, K) likelihoods, (N, K) visible -> how often the model reports a HIDDEN keypoint as seen.

    A model that confidently guesses where a hidden paw is hands fusion a wrong view that it cannot
    tell from a right one when only two cameras report the paw. Returns the share of hidden
    keypoints with likelihood >= threshold (lower is better) and the same share for visible ones.
    """
    hidden = ~visible & np.isfinite(likelihood)
    seen = visible & np.isfinite(likelihood)
    return {"threshold": threshold, "n_hidden": int(hidden.sum()),
            "hidden_above": round(float(np.mean(likelihood[hidden] >= threshold)), 4) if hidden.any() else float("nan"),
            "visible_above": round(float(np.mean(likelihood[seen] >= threshold)), 4) if seen.any() else float("nan")}


def evaluate(model: str, seed: int, n_times: int, resize: float) -> dict[str, Any]:
    from inference.engines import import_dlclive

    dlclive = import_dlclive()
    data = render_eval_set(seed, n_times)
    live = dlclive.DLCLive(str(model), model_type="base" if Path(model).is_dir() else "pytorch", resize=resize)
    preds = []
    for i, f in enumerate(data["frames"]):
        pose = live.init_inference(f) if i == 0 else live.get_pose(f)
        preds.append(np.array(pose)[:, :3])
    live.close()
    pred = np.array(preds)
    err = keypoint_errors(pred[..., :2], data["uv"], data["visible"])
    out = summarise(err)
    out["likelihood"] = hidden_confidence(pred[..., 2], data["visible"])
    out.update({"model": str(model), "seed": seed, "frames": len(data["frames"]), "resize": resize,
                "cameras": sorted(set(data["camera"])), "visible_keypoints": int(np.isfinite(err).sum())})
    return out


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'keypoint':<18}{'n':>6}{'median px':>11}{'p95 px':>9}{'<=8 px':>9}"]
    rows = list(summary["per_keypoint"].items()) + [("ALL", summary["all"])]
    for name, s in rows:
        lines.append(f"{name:<18}{s['n']:>6}{s['median_px']:>11.2f}{s['p95_px']:>9.2f}{100 * s['within_8px']:>8.1f}%")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.evaluate_synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="simulation seed (training used 100-115)")
    p.add_argument("--times", type=int, default=100, help="moments to render (x 4 cameras)")
    p.add_argument("--resize", type=float, default=0.5)
    p.add_argument("--write", action="store_true", help="write ACCURACY.json beside the model")
    args = p.parse_args(None if argv is None else list(argv))
    from inference.train_synthetic import TRAIN_SEEDS

    if args.seed in TRAIN_SEEDS:
        print(f"seed {args.seed} was used in training; pick another", file=sys.stderr)
        return 2
    summary = evaluate(args.model, args.seed, args.times, args.resize)
    print(f"model {args.model}, held-out seed {args.seed}, {summary['frames']} frames, "
          f"{summary['visible_keypoints']} visible keypoints, resize {args.resize}")
    print(format_table(summary))
    lk = summary["likelihood"]
    print(f"likelihood >= {lk['threshold']}: {100 * lk['visible_above']:.1f} % of visible keypoints, "
          f"{100 * lk['hidden_above']:.1f} % of {lk['n_hidden']} hidden ones (reported as seen although hidden)")
    worst_median = max(s["median_px"] for s in summary["per_keypoint"].values())
    worst_within = min(s["within_8px"] for s in summary["per_keypoint"].values())
    ok = worst_median <= 3.0 and worst_within >= 0.95
    print(f"targets (every keypoint): median <= 3 px, >= 95 % within 8 px -> {'MET' if ok else 'NOT MET'}")
    if args.write:
        from ratrig.tomlio import atomic_write_text

        path = Path(args.model) / "ACCURACY.json" if Path(args.model).is_dir() else Path(args.model).with_suffix(".accuracy.json")
        summary["targets_met"] = ok
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
