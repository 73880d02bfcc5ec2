"""Train the bundled demo model (inference/models/synthrat) on renders of the synthetic rig.

    nice -n 5 python -m inference.train_synthetic [--minutes 20] [--out inference/models/synthrat]
        [--variants default,hooded,small,dim,clutter] [--augment strong|basic] [--init-from MODEL.pb]

What it does, in order:
1. Renders training crops once into an .npz cache (`--cache`, default under the system temp folder):
   random times of several simulated walks (seeds `TRAIN_SEEDS`, a few with a lesioned gait), each
   rendered in every renderer variant of `--variants` (`synthetic.variants`: coat, size, light, clutter;
   never the moved-camera ones), all four cameras, randomised sensor noise / blur / exposure. Frames are resized by 0.5 with cv2.resize (what
   dlclive does with resize=0.5) and labels are the exact ground-truth projections scaled by 0.5;
   keypoints the renderer reports as not visible (hidden by the body, behind a wall) are negatives:
   their score map must be zero everywhere, so the exported model says "not seen" (low likelihood)
   instead of guessing where a hidden paw is (`--hidden masked` restores the older behaviour of
   leaving them out of the loss). Most crops are centred
   on the rat (with jitter), the rest are anywhere in the frame, so the network also learns the empty
   corridor.
2. Trains `inference.tfmodel` (about 0.55 M parameters, output stride 8) from scratch with Adam on ONE
   CPU thread for a fixed wall-clock budget (or continues an earlier export's weights, `--init-from`):
   score-map sigmoid cross-entropy + Huber loss on the location-refinement offsets; augmentation:
   horizontal mirroring (swaps left/right labels) and brightness/contrast changes, and with
   `--augment strong` (the default) also scale, colour, gamma, blur and noise.
3. Exports the trained weights in DeepLabCut's TensorFlow format (`tfmodel.export_dlc`), checks that
   dlclive's DLCLive loads the export and returns the same keypoints as the training graph on a
   rendered frame, and writes TRAINING_LOG.txt next to the model.

The model is meant to be run with inference.resize = 0.5 on 640x480 frames. Accuracy on held-out
renders: `python -m inference.evaluate_synthetic` (writes ACCURACY.json).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.skeleton import KEYPOINTS

TRAIN_SEEDS = tuple(range(100, 116))  # the evaluation uses seeds outside this range
LESION_SEEDS = frozenset({103, 107, 111, 115})
CROP = 128  # training crop, px at half resolution
SCALE = 0.5  # training resolution / camera resolution; run with inference.resize = 0.5
POS_RADIUS_PX = 10.0  # score-map target radius, px at half resolution
DEFAULT_OUT = Path(__file__).resolve().parent / "models" / "synthrat"


def mirror_index(names: Sequence[str]) -> np.ndarray:
    """Joint order after a horizontal flip: left_* and right_* swap."""
    idx = []
    for n in names:
        if n.startswith("left_") or "_left_" in n:
            m = n.replace("left", "right")
        elif n.startswith("right_") or "_right_" in n:
            m = n.replace("right", "left")
        else:
            m = n
        idx.append(list(names).index(m))
    return np.array(idx)


def render_dataset(n_crops: int, seeds: Sequence[int], rng_seed: int = 0, log: Any = print,
                   variants: Sequence[str] = ("default",)) -> dict[str, np.ndarray]:
    """Render crops for training, from every (seed, variant) pair (`synthetic.variants`).

    Returns {"images": (N, CROP, CROP, 3) uint8 RGB, "xy": (N, K, 2) float32 px in the crop,
    "visible": (N, K) bool}. Labels are ground-truth projections x SCALE, minus the crop origin.
    Each pair's sensor noise, blur and exposure jitter are the variant's plus a random amount.
    """
    import cv2

    from synthetic.rat import Lesion, simulate
    from synthetic.render import NoiseOptions, Renderer
    from synthetic.rig import Corridor, default_rig
    from synthetic.variants import appearance_of, scale_trajectory, variant_spec

    rng = np.random.default_rng(rng_seed)
    cal = default_rig()
    corridor = Corridor()
    cams = [c.name for c in cal.cameras]
    for v in variants:
        spec = variant_spec(v)
        if spec.camera_move_deg or spec.camera_move_mm:
            raise ValueError(f"variant {v!r} moves the cameras: not a training variant (labels use the default rig)")
    pairs = [(s, v) for s in seeds for v in variants]
    per_pair = int(np.ceil(n_crops / len(pairs)))
    images = np.zeros((n_crops, CROP, CROP, 3), np.uint8)
    xy = np.zeros((n_crops, len(KEYPOINTS), 2), np.float32)
    visible = np.zeros((n_crops, len(KEYPOINTS)), bool)
    n = 0
    walks: dict[int, Any] = {}
    for s, v in pairs:
        lesion = Lesion("left", 0.8) if s in LESION_SEEDS else None
        if s not in walks:
            walks[s] = simulate(duration_s=20.0, fps=30.0, seed=s, lesion=lesion, corridor=corridor)
        spec = variant_spec(v)
        traj = scale_trajectory(walks[s], spec.body_scale)
        noise = NoiseOptions(sensor_noise_sigma=spec.noise_std + float(rng.uniform(0, 3)),
                             blur_sigma_px=spec.blur_px + float(rng.uniform(0, 1.2)),
                             exposure_jitter=spec.exposure_jitter + float(rng.uniform(0, 0.1)))
        renderer = Renderer(cal, corridor, seed=s, noise=noise, appearance=appearance_of(spec, v, s))
        times = rng.uniform(traj.times_s[0], traj.times_s[-1], size=per_pair)
        for t in times:
            if n >= n_crops:
                break
            kp, ex = traj.pose_at(float(t))
            kp, ex = np.asarray(kp).reshape(-1, 3), np.asarray(ex).reshape(-1, 3)
            cam = cams[int(rng.integers(len(cams)))]
            vis = np.asarray(renderer.visibility(cam, kp, ex), bool)
            uv = np.asarray(cal.camera(cam).project(kp), np.float64).reshape(-1, 2) * SCALE
            bgr = renderer.render(cam, kp, ex, t_s=float(t))
            h, w = bgr.shape[:2]
            small = cv2.cvtColor(cv2.resize(bgr, (int(w * SCALE), int(h * SCALE))), cv2.COLOR_BGR2RGB)
            sh, sw = small.shape[:2]
            if rng.random() < 0.75 and vis.any():
                cx, cy = uv[vis].mean(axis=0) + rng.normal(0, 18, 2)
                x0, y0 = int(round(cx - CROP / 2)), int(round(cy - CROP / 2))
            else:
                x0, y0 = int(rng.integers(0, sw - CROP + 1)), int(rng.integers(0, sh - CROP + 1))
            x0, y0 = int(np.clip(x0, 0, sw - CROP)), int(np.clip(y0, 0, sh - CROP))
            images[n] = small[y0:y0 + CROP, x0:x0 + CROP]
            xy[n] = uv - [x0, y0]
            inside = (xy[n, :, 0] >= 0) & (xy[n, :, 0] <= CROP - 1) & (xy[n, :, 1] >= 0) & (xy[n, :, 1] <= CROP - 1)
            # A visible keypoint outside the crop is "not in this crop": a negative, not masked.
            visible[n] = vis
            xy[n, ~inside] = -1000.0
            n += 1
        log(f"  rendered seed {s} variant {v}: {n}/{n_crops} crops")
    return {"images": images[:n], "xy": xy[:n], "visible": visible[:n]}


def make_targets(xy: np.ndarray, visible: np.ndarray, size: int, stride: int, locref_stdev: float,
                 hidden_negative: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(B, K, 2) px + (B, K) visible -> score target (B, h, w, K), score weight (B, 1, 1, K),
    locref target (B, h, w, 2K) interleaved (dx, dy) in locref_stdev units, locref weight (B, h, w, 2K).

    hidden_negative: a keypoint that is not visible gets an all-zero score target with full weight
    (the model learns to report it as absent); otherwise it is left out of the score loss.

    Cell (i, j) stands for pixel (j * stride + stride / 2, i * stride + stride / 2), dlclive's decoding.
    """
    b, k, _ = xy.shape
    cells = size // stride
    centres = np.arange(cells) * stride + stride / 2
    dx = xy[:, :, 0][:, None, None, :] - centres[None, None, :, None]  # (B, 1, w, K)
    dy = xy[:, :, 1][:, None, None, :] - centres[None, :, None, None]  # (B, h, 1, K)
    dist2 = dx ** 2 + dy ** 2  # (B, h, w, K)
    pos = (dist2 <= POS_RADIUS_PX ** 2).astype(np.float32) * visible[:, None, None, :]
    score_w = (np.ones_like(visible, np.float32) if hidden_negative else visible.astype(np.float32))[:, None, None, :]
    loc = np.zeros((b, cells, cells, k, 2), np.float32)
    loc[..., 0] = np.broadcast_to(dx, dist2.shape) / locref_stdev
    loc[..., 1] = np.broadcast_to(dy, dist2.shape) / locref_stdev
    loc_w = np.repeat(pos[..., None], 2, axis=-1)
    return pos, score_w, loc.reshape(b, cells, cells, 2 * k), loc_w.reshape(b, cells, cells, 2 * k)


def augment(images: np.ndarray, xy: np.ndarray, visible: np.ndarray, rng: np.random.Generator,
            flip_index: np.ndarray, strong: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random horizontal mirroring (left/right labels swap) and brightness/contrast changes.

    strong: also scale (0.8-1.25 about the crop centre; keypoints pushed out of the crop become
    negatives), per-channel colour gains (0.8-1.2), gamma (0.7-1.4), Gaussian blur (half the crops,
    0-1.5 px) and sensor noise (0-8 grey levels): the imgaug-style augmentation DeepLabCut uses.
    """
    import cv2

    images = images.astype(np.float32)
    xy = xy.copy()
    visible = visible.copy()
    size = images.shape[2]
    for i in range(len(images)):
        if rng.random() < 0.5:
            images[i] = images[i, :, ::-1]
            valid = xy[i, :, 0] > -500
            xy[i, valid, 0] = (images.shape[2] - 1) - xy[i, valid, 0]
            xy[i] = xy[i, flip_index]
            visible[i] = visible[i, flip_index]
        if strong:
            if rng.random() < 0.6:
                z = rng.uniform(0.8, 1.25)
                c = (size - 1) / 2.0
                m = np.array([[z, 0.0, c * (1 - z)], [0.0, z, c * (1 - z)]], np.float32)
                images[i] = cv2.warpAffine(images[i], m, (size, size), flags=cv2.INTER_LINEAR,
                                           borderMode=cv2.BORDER_REFLECT)
                valid = xy[i, :, 0] > -500
                p = xy[i, valid] * z + c * (1 - z)
                out = (p < 0).any(axis=1) | (p > size - 1).any(axis=1)
                p[out] = -1000.0
                xy[i, valid] = p
            images[i] *= rng.uniform(0.8, 1.2, 3).astype(np.float32)
            gamma = rng.uniform(0.7, 1.4)
            images[i] = 255.0 * (np.clip(images[i], 0, 255) / 255.0) ** gamma
            if rng.random() < 0.5:
                images[i] = cv2.GaussianBlur(images[i], (0, 0), rng.uniform(0.3, 1.5))
            images[i] += rng.normal(0, rng.uniform(0, 8), images[i].shape).astype(np.float32)
        gain = rng.uniform(0.75, 1.25)
        bias = rng.uniform(-20, 20)
        images[i] = images[i] * gain + bias
    return np.clip(images, 0, 255), xy, visible


def params_from_export(pb_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The weights of a model exported by `inference.tfmodel.export_dlc` (to continue training it).

    Body constants are named after their parameter (conv1_w ...); the heads are the two constants of
    each `pose/*_pred/block4` scope, weights first.
    """
    import tensorflow as tf

    gd = tf.compat.v1.GraphDef()
    gd.ParseFromString(Path(pb_path).read_bytes())
    consts = [(n.name, tf.make_ndarray(n.attr["value"].tensor)) for n in gd.node if n.op == "Const"]
    from inference import tfmodel

    params: dict[str, np.ndarray] = {}
    for name, *_ in tfmodel.BODY:
        for part in ("w", "b"):
            hits = [v for n, v in consts if n == f"{name}_{part}"]
            if len(hits) != 1:
                raise ValueError(f"{pb_path}: no constant {name}_{part}; not an export of inference.tfmodel")
            params[f"{name}/{part}"] = hits[0]
    for head, scope in (("score", "pose/part_pred/block4/"), ("locref", "pose/locref_pred/block4/")):
        vals = [v for n, v in consts if n.startswith(scope)]
        w = [v for v in vals if v.ndim == 4]
        b = [v for v in vals if v.ndim == 1]
        if len(w) != 1 or len(b) != 1:
            raise ValueError(f"{pb_path}: expected one weight and one bias under {scope}")
        params[f"{head}/w"], params[f"{head}/b"] = w[0], b[0]
    return params


LOCREF_WEIGHT = 5.0


def train(data: dict[str, np.ndarray], minutes: float, seed: int, log: Any, batch_size: int = 16,
          locref_weight: float = LOCREF_WEIGHT, hidden_negative: bool = True,
          init: dict[str, np.ndarray] | None = None, peak_lr: float = 2e-3,
          strong_augment: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train for `minutes` of wall-clock time on one thread. Returns (numpy params, summary).

    Loss = score-map cross-entropy summed over the cells of each visible joint + `locref_weight` x
    mean Huber loss of the offsets at positive cells. The score term is a sum over about 256 cells, so
    DeepLabCut's weighting (per-cell mean + 0.05 x locref) corresponds to a locref weight of about 13
    here; a first run with 0.1 left the offsets under-trained (median error 4.6 px, see README).
    """
    import tensorflow as tf

    from inference import tfmodel

    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    k = len(KEYPOINTS)
    start = init if init is not None else tfmodel.init_params(k, seed)
    params = {name: tf.Variable(v, name=name.replace("/", "_")) for name, v in start.items()}
    variables = list(params.values())
    lr = tf.Variable(2e-3, trainable=False, dtype=tf.float32)
    # Adam, written out: a few lines, and no dependence on the Keras version's optimizer API.
    adam_m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
    adam_v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
    adam_t = tf.Variable(0.0, trainable=False)
    flip = mirror_index(KEYPOINTS)

    @tf.function(reduce_retracing=True)
    def step(x, score_t, score_w, loc_t, loc_w):
        with tf.GradientTape() as tape:
            logits, locref = tfmodel.forward(tf, x, params)
            ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=score_t, logits=logits) * score_w
            score_loss = tf.reduce_sum(ce) / (tf.reduce_sum(score_w) + 1e-6)
            err = tf.abs(loc_t - locref)
            hub = tf.where(err < 1.0, 0.5 * err ** 2, err - 0.5) * loc_w
            loc_loss = tf.reduce_sum(hub) / (tf.reduce_sum(loc_w) + 1e-6)
            loss = score_loss + locref_weight * loc_loss
        grads = tape.gradient(loss, variables)
        adam_t.assign_add(1.0)
        c1 = 1.0 - tf.pow(0.9, adam_t)
        c2 = 1.0 - tf.pow(0.999, adam_t)
        for v, g, m, s2 in zip(variables, grads, adam_m, adam_v):
            m.assign(0.9 * m + 0.1 * g)
            s2.assign(0.999 * s2 + 0.001 * g * g)
            v.assign_sub(lr * (m / c1) / (tf.sqrt(s2 / c2) + 1e-7))
        return loss, score_loss, loc_loss

    n = len(data["images"])
    budget_s = minutes * 60.0
    t0 = time.monotonic()
    last_log = t0
    steps = 0
    seen = 0
    hist: list[tuple[float, float, float]] = []
    while True:
        elapsed = time.monotonic() - t0
        if elapsed >= budget_s:
            break
        frac = elapsed / budget_s
        # Warm-up over the first 3 % then cosine decay to 2 % of the peak rate.
        peak = peak_lr
        rate = peak * min(1.0, (frac + 1e-3) / 0.03) * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * frac)))
        lr.assign(rate)
        idx = rng.integers(0, n, batch_size)
        x, xy, vis = augment(data["images"][idx], data["xy"][idx], data["visible"][idx], rng, flip, strong_augment)
        st, sw, lt, lw = make_targets(xy, vis, CROP, tfmodel.STRIDE, tfmodel.LOCREF_STDEV, hidden_negative)
        loss, sl, ll = step(tf.constant(x), tf.constant(st), tf.constant(sw), tf.constant(lt), tf.constant(lw))
        hist.append((float(loss), float(sl), float(ll)))
        steps += 1
        seen += batch_size
        now = time.monotonic()
        if now - last_log >= 30 or steps == 1:
            recent = np.mean(hist[-50:], axis=0)
            log(f"  {now - t0:7.1f} s  step {steps:6d}  images {seen:7d}  lr {rate:.2e}  loss {recent[0]:.4f} "
                f"(score {recent[1]:.4f}, locref {recent[2]:.4f})  {seen / (now - t0):.1f} img/s")
            last_log = now
    wall = time.monotonic() - t0
    final = np.mean(hist[-100:], axis=0) if hist else np.array([np.nan] * 3)
    summary = {"steps": steps, "images_seen": seen, "wall_s": round(wall, 1), "batch_size": batch_size,
               "locref_weight": locref_weight, "hidden_keypoints": "negative" if hidden_negative else "masked",
               "peak_lr": peak_lr, "augmentation": "strong" if strong_augment else "basic",
               "warm_start": init is not None,
               "final_loss": round(float(final[0]), 5), "final_score_loss": round(float(final[1]), 5),
               "final_locref_loss": round(float(final[2]), 5)}
    return {name: v.numpy() for name, v in params.items()}, summary


def verify_export(folder: Path, params: dict[str, np.ndarray], log: Any) -> float:
    """Load the export with dlclive and compare it with the training graph on a rendered frame.

    Returns the largest keypoint difference in px; raises RuntimeError above 0.01 px.
    """
    import tensorflow as tf

    from inference import tfmodel
    from inference.engines import decode_scoremap, import_dlclive
    from synthetic.rat import simulate
    from synthetic.render import Renderer
    from synthetic.rig import default_rig

    dlclive = import_dlclive()
    cal = default_rig()
    traj = simulate(duration_s=2.0, fps=30.0, seed=1)
    kp, ex = traj.pose_at(1.0)
    frame = Renderer(cal, seed=1).render(cal.cameras[0].name, np.asarray(kp), np.asarray(ex), t_s=1.0)
    live = dlclive.DLCLive(str(folder), model_type="base", resize=SCALE)
    live.init_inference(frame)
    got = np.array(live.get_pose(frame))
    live.close()
    import cv2

    small = cv2.cvtColor(cv2.resize(frame, (int(frame.shape[1] * SCALE), int(frame.shape[0] * SCALE))), cv2.COLOR_BGR2RGB)
    logits, locref = tfmodel.forward(tf, tf.constant(small[None].astype(np.float32)), params)
    want = decode_scoremap(tf.sigmoid(logits).numpy(), locref.numpy(), tfmodel.STRIDE, tfmodel.LOCREF_STDEV)[0]
    want[:, :2] /= SCALE
    diff = float(np.max(np.abs(got[:, :2] - want[:, :2])))
    log(f"export check: dlclive vs training graph, max keypoint difference {diff:.2e} px")
    if diff > 0.01:
        raise RuntimeError(f"exported graph disagrees with the trained model by {diff} px")
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference.train_synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=19.0, help="training wall-clock budget")
    p.add_argument("--locref-weight", type=float, default=LOCREF_WEIGHT)
    p.add_argument("--hidden", choices=("negative", "masked"), default="negative",
                   help="hidden keypoints: zero score target (negative) or left out of the loss (masked)")
    p.add_argument("--crops", type=int, default=6000, help="training crops to render")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ratrig_synthrat_crops.npz"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="export folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="default",
                   help="comma-separated renderer variants to render training crops from (synthetic.variants; "
                        "e.g. " + ",".join(("default", "hooded", "small", "dim", "clutter")) + ")")
    p.add_argument("--augment", choices=("strong", "basic"), default="strong",
                   help="strong: + scale, colour, gamma, blur, noise; basic: mirroring and brightness only")
    p.add_argument("--init-from", default=None,
                   help="a .pb exported by this script: continue training its weights (a longer schedule)")
    p.add_argument("--peak-lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1,
                   help="TensorFlow threads (default 1: the training fits on one core of a shared machine)")
    args = p.parse_args(None if argv is None else list(argv))
    if args.threads < 1:
        p.error(f"--threads: expected >= 1, got {args.threads}")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]

    # One thread by default: the training must fit on one core of a shared machine. Set before TF starts.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(args.threads))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    t_start = time.monotonic()
    log(f"ratrig synthrat training: {time.strftime('%Y-%m-%d %H:%M:%S')}, python {sys.version.split()[0]}, "
        f"tensorflow {tf.__version__}, {args.threads} thread{'s' if args.threads > 1 else ''}, "
        f"budget {args.minutes} min, seed {args.seed}")
    cache = Path(args.cache)
    if cache.is_file():
        with np.load(cache) as z:
            data = {k: z[k] for k in ("images", "xy", "visible")}
        log(f"loaded {len(data['images'])} cached crops from {cache}")
    else:
        t = time.monotonic()
        log(f"rendering {args.crops} crops ({CROP}x{CROP} at scale {SCALE}) from seeds {TRAIN_SEEDS}, "
            f"variants {variants} ...")
        data = render_dataset(args.crops, TRAIN_SEEDS, rng_seed=args.seed, log=log, variants=variants)
        np.savez(cache, **data)
        log(f"rendered in {time.monotonic() - t:.1f} s -> {cache}")
    vis_frac = float(data["visible"].mean())
    log(f"dataset: {len(data['images'])} crops, {vis_frac:.1%} of keypoints visible in the full frame")

    from inference import tfmodel

    init = None
    if args.init_from:
        init = params_from_export(args.init_from)
        log(f"warm start from {args.init_from} ({tfmodel.count_params(init)} parameters)")
    log(f"augmentation {args.augment}, peak learning rate {args.peak_lr:g}")
    params, summary = train(data, args.minutes, args.seed, log, locref_weight=args.locref_weight,
                            hidden_negative=args.hidden == "negative", init=init, peak_lr=args.peak_lr,
                            strong_augment=args.augment == "strong")
    log(f"training done: {summary}")
    pb = tfmodel.export_dlc(params, out, KEYPOINTS, extra_cfg={
        "ratrig_note": "trained on synthetic renders by inference/train_synthetic.py; run with resize=0.5",
        "ratrig_train_scale": SCALE,
        "ratrig_train_variants": list(variants),
    })
    log(f"exported {pb} ({pb.stat().st_size / 1e6:.2f} MB, {tfmodel.count_params(params)} parameters)")
    verify_export(out, params, log)
    log(f"total wall time {time.monotonic() - t_start:.1f} s")
    from ratrig.tomlio import atomic_write_text

    atomic_write_text(out / "TRAINING_LOG.txt", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
