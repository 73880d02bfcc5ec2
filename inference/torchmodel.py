"""A small DeepLabCut 3 PyTorch export, built and trained by the project (the PyTorch engine's test model).

    nice -n 5 python -m inference.torchmodel [--seconds 240] [--out inference/models/dots_pytorch/dots.pt]

The export has DeepLabCut 3's layout, ``{"config", "pose": state_dict, "detector": None}``, with registry
types dlclive builds itself: a ``CSPNeXt`` backbone (P5, deepen 0.167, widen 0.125, plain BN, built with
pretrained=False, so nothing is downloaded) and a ``HeatmapHead`` (two 2x2 stride-2 deconvolutions to
output stride 8, score map + location refinement) decoded by dlclive's ``HeatmapPredictor``.

Its task is deliberately trivial and exactly checkable: each keypoint is a filled disc of its own
colour on a noisy grey background (`draw_dots`), so a test can draw discs at known positions and check
what dlclive returns. It is trained from scratch on such images for a few minutes of one CPU thread.
It is a fixture for the PyTorch engine, not a rat model.
"""
from __future__ import annotations

import argparse
import copy
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.skeleton import KEYPOINTS

DEFAULT_OUT = Path(__file__).resolve().parent / "models" / "dots_pytorch" / "dots.pt"
LOCREF_STD = 7.2801
STRIDE = 8
#: One RGB colour per keypoint (KEYPOINTS order), far apart in colour space.
DOT_COLOURS_RGB: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0),
    (255, 0, 255), (0, 255, 255), (255, 128, 0), (128, 0, 255),
)
DOT_RADIUS_PX = 5


def dlc3_config(bodyparts: Sequence[str]) -> dict[str, Any]:
    """The DeepLabCut 3 export config dlclive needs: method, model (registry types), data.inference,
    metadata.bodyparts."""
    j = len(bodyparts)
    head = {"channels": [128, 64, 64], "kernel_size": [2, 2], "strides": [2, 2]}
    return {
        "method": "bu",
        "model": {
            "backbone": {"type": "CSPNeXt", "model_name": "cspnext_s", "arch": "P5", "deepen_factor": 0.167,
                         "widen_factor": 0.125, "norm_layer": "BN", "out_indices": -1, "pretrained": False,
                         "freeze_bn_stats": False, "freeze_bn_weights": False},
            "backbone_output_channels": 128,
            "heads": {"bodypart": {
                "type": "HeatmapHead",
                "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": True, "clip_scores": False,
                              "location_refinement": True, "locref_std": LOCREF_STD},
                "heatmap_config": dict(head, final_conv={"out_channels": j, "kernel_size": 1}),
                "locref_config": dict(head, final_conv={"out_channels": 2 * j, "kernel_size": 1}),
            }},
        },
        "data": {"inference": {"normalize_images": False,
                               "auto_padding": {"pad_height_divisor": 32, "pad_width_divisor": 32}}},
        "metadata": {"project_path": "", "pose_config_path": "", "bodyparts": list(bodyparts),
                     "unique_bodyparts": [], "individuals": ["animal"], "with_identity": None},
        "net_type": "cspnext_tiny_ratrig",
    }


def build_model(cfg: dict[str, Any]) -> Any:
    """The PoseModel dlclive builds from this config (same code path as its runner)."""
    from inference.engines import import_dlclive

    import_dlclive()
    from dlclive.pose_estimation_pytorch import models

    return models.PoseModel.build(copy.deepcopy(cfg["model"]))


def draw_dots(rng: np.random.Generator, height: int, width: int, positions: np.ndarray | None = None,
              present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A BGR image with one coloured disc per keypoint.

    Args:
        positions: (K, 2) x, y px of the disc centres; random (apart from each other) when None.
        present: (K,) bool, which discs are drawn (default all).

    Returns:
        (H, W, 3) uint8 BGR image, (K, 2) float positions.
    """
    import cv2

    k = len(DOT_COLOURS_RGB)
    if positions is None:
        positions = np.zeros((k, 2))
        for i in range(k):
            for _ in range(100):
                p = rng.uniform([8, 8], [width - 9, height - 9])
                if i == 0 or np.min(np.hypot(*(positions[:i] - p).T)) > 3 * DOT_RADIUS_PX:
                    break
            positions[i] = p
    present = np.ones(k, bool) if present is None else present
    base = rng.uniform(60, 160)
    img = np.clip(rng.normal(base, rng.uniform(2, 12), (height, width, 3)), 0, 255).astype(np.uint8)
    shift = 4  # sub-pixel centres for cv2.circle
    for i in range(k):
        if present[i]:
            r, g, b = DOT_COLOURS_RGB[i]
            centre = tuple(int(round(v * (1 << shift))) for v in positions[i])
            cv2.circle(img, centre, DOT_RADIUS_PX << shift, (b, g, r), -1, cv2.LINE_AA, shift)
    return img, positions.astype(np.float64)


def train(seconds: float, seed: int, log: Any, size: int = 128, batch_size: int = 16,
          resume: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Train the dots model for `seconds` of wall-clock time on one thread (optionally continuing from
    the weights of an earlier export `resume`). Returns (model, summary)."""
    from inference.engines import _import_torch
    from inference.train_synthetic import make_targets

    torch = _import_torch("cpu")
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = dlc3_config(KEYPOINTS)
    model = build_model(cfg)
    if resume:
        model.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True)["pose"])
        log(f"  continuing from {resume}")
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t0 = time.monotonic()
    last = t0
    steps = 0
    hist: list[float] = []
    while time.monotonic() - t0 < seconds:
        frac = (time.monotonic() - t0) / seconds
        for g in opt.param_groups:
            g["lr"] = 2e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))
        imgs, xys, vis = [], [], []
        for _ in range(batch_size):
            present = rng.random(len(KEYPOINTS)) > 0.1
            img, pos = draw_dots(rng, size, size, present=present)
            pos = pos.copy()
            pos[~present] = -1000.0  # an absent disc is a negative everywhere
            imgs.append(img[:, :, ::-1])  # dlclive feeds RGB
            xys.append(pos)
            vis.append(np.ones(len(KEYPOINTS), bool))
        st, sw, lt, lw = make_targets(np.array(xys, np.float32), np.array(vis), size, STRIDE, LOCREF_STD)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).permute(0, 3, 1, 2).float() / 255.0
        out = model(x)["bodypart"]
        heat = out["heatmap"].permute(0, 2, 3, 1)
        loc = out["locref"].permute(0, 2, 3, 1)
        score_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            heat, torch.from_numpy(st), weight=torch.from_numpy(sw).expand_as(heat), reduction="sum",
            pos_weight=torch.full((len(KEYPOINTS),), 5.0)) / float(sw.sum())  # positives are few cells
        lw_t = torch.from_numpy(lw)
        loc_loss = (torch.nn.functional.huber_loss(loc, torch.from_numpy(lt), reduction="none") * lw_t).sum() / (lw_t.sum() + 1e-6)
        loss = score_loss + 0.1 * loc_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
        steps += 1
        if time.monotonic() - last > 30 or steps == 1:
            last = time.monotonic()
            log(f"  {last - t0:6.1f} s  step {steps:5d}  loss {np.mean(hist[-50:]):.4f}")
    model.eval()
    return model, {"steps": steps, "images_seen": steps * batch_size, "wall_s": round(time.monotonic() - t0, 1),
                   "final_loss": round(float(np.mean(hist[-50:])), 5)}


def save_export(model: Any, cfg: dict[str, Any], path: str | Path) -> Path:
    """Write a DeepLabCut 3 export file {"config", "pose", "detector": None} atomically."""
    import torch

    from ratrig.tomlio import atomic_write_bytes

    buf = io.BytesIO()
    torch.save({"config": cfg, "pose": model.state_dict(), "detector": None}, buf)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.torchmodel", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=240.0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="continue from the weights of this export")
    args = p.parse_args(None if argv is None else list(argv))
    lines: list[str] = []
    log_path = Path(args.out).parent / "TRAINING_LOG.txt"
    if args.resume and log_path.is_file():
        lines += log_path.read_text().splitlines()

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    log(f"dots PyTorch model: {time.strftime('%Y-%m-%d %H:%M:%S')}, 1 thread, {args.seconds} s, seed {args.seed}")
    model, summary = train(args.seconds, args.seed, log, resume=args.resume)
    log(f"training done: {summary}")
    out = save_export(model, dlc3_config(KEYPOINTS), args.out)
    n_params = sum(int(p.numel()) for p in model.parameters())
    log(f"exported {out} ({out.stat().st_size / 1e6:.2f} MB, {n_params} parameters)")
    from ratrig.tomlio import atomic_write_text

    atomic_write_text(Path(out).parent / "TRAINING_LOG.txt", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
