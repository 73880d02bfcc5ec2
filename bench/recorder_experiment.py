"""Live fusion vs offline reprocessing against synthetic ground truth (used by bench and a test).

A synthetic rat walks the corridor (synthetic.rat.simulate, exact 3D ground truth). Its keypoints
are projected into the four true cameras and degraded like a 2D detector's output: Gaussian pixel
noise, occasional gross errors with high likelihood (a detector locking onto the wrong paw), and
missed detections; points outside the image are missing. These 2D keypoints go, frame set by frame
set, through the live fusion core (fusion.process.FusionPipeline: online triangulation + Kalman) and
are recorded with a real SessionWriter exactly as the recorder would (pose2d + pose3d tables,
calibration copy). The session is then reprocessed offline (recorder.reprocess, 2D reused) and the
3D errors of live raw, live filtered and each offline method are measured against the ground truth.

NOT covered here: the 2D detector itself. The 2D keypoints are simulated, not inferred from
rendered images by the model; so these figures compare the 3D stages (live vs offline) only.
"""
from __future__ import annotations


import time
from pathlib import Path
from typing import Any

import numpy as np

from fusion.process import FusionPipeline, options_from_config
from ratrig.config import CameraConfig, RigConfig
from ratrig.messages import Keypoints2DPacket
from ratrig.skeleton import KEYPOINTS
from recorder.reprocess import reprocess
from recorder.session import open_session
from recorder.video import check_codec
from recorder.writer import SessionWriter
from synthetic.rat import simulate
from synthetic.rig import CAMERA_NAMES, IMAGE_SIZE, default_rig


def simulated_detections(calib, gt_mm: np.ndarray, rng: np.random.Generator, noise_px: float = 1.5,
                         outlier_rate: float = 0.03, miss_rate: float = 0.03) -> np.ndarray:
    """(T, K, 3) ground truth mm -> (C, T, K, 3) x px, y px, likelihood as a detector would give."""
    t, k, _ = gt_mm.shape
    out = np.full((len(calib.cameras), t, k, 3), np.nan)
    for c, cam in enumerate(calib.cameras):
        px = cam.project(gt_mm.reshape(-1, 3)).reshape(t, k, 2)
        depth = cam.depth_mm(gt_mm.reshape(-1, 3)).reshape(t, k)
        inside = (depth > 0) & (px[..., 0] >= 0) & (px[..., 0] < IMAGE_SIZE[0]) & (px[..., 1] >= 0) & (px[..., 1] < IMAGE_SIZE[1])
        det = px + rng.normal(0, noise_px, px.shape)
        like = np.clip(rng.normal(0.93, 0.04, (t, k)), 0.55, 1.0)
        gross = rng.random((t, k)) < outlier_rate
        det[gross] += rng.uniform(25, 70, (int(gross.sum()), 2)) * rng.choice([-1, 1], (int(gross.sum()), 2))
        miss = rng.random((t, k)) < miss_rate
        like[miss] = rng.uniform(0.0, 0.3, int(miss.sum()))
        ok = inside
        out[c, ok, :2] = det[ok]
        out[c, ok, 2] = like[ok]
    return out


def record_live_session(out: Path, duration_s: float = 4.0, fps: float = 30.0, seed: int = 3) -> dict[str, Any]:
    """Simulate, run live fusion, record. Returns ground truth arrays and the session path."""
    calib = default_rig()
    traj = simulate(duration_s, fps, seed)
    rng = np.random.default_rng(seed)
    det = simulated_detections(calib, traj.keypoints_mm, rng)
    calib_path = out.parent / f"{out.name}_calibration.toml"
    calib.save(calib_path)
    rig = RigConfig(name="synthetic", cameras=[CameraConfig(n, "synthetic", fps=fps) for n in CAMERA_NAMES])
    pipeline = FusionPipeline(calib, KEYPOINTS, options_from_config(rig))
    writer = SessionWriter(out, rig, check_codec("ffv1"), calibration_path=str(calib_path))
    start_ns = 10_000_000_000
    cap = start_ns + np.round(traj.times_s * 1e9).astype(np.int64)
    poses = 0
    for i in range(len(cap)):
        for c, cam in enumerate(CAMERA_NAMES):
            pkt = Keypoints2DPacket(cam, i, int(cap[i]) + 50_000 * c, KEYPOINTS, det[c, i].astype(np.float32))
            writer.write_pose2d(pkt, int(cap[i]) + 20_000_000)
            for pose in pipeline.add(pkt, int(cap[i]) + 20_000_000):
                writer.write_pose3d(pose)
                poses += 1
    for pose in pipeline.flush(int(cap[-1]) + 10**9):
        writer.write_pose3d(pose)
        poses += 1
    writer.close()
    calib_path.unlink()
    return {"session": out, "gt_mm": traj.keypoints_mm, "capture_ns": cap, "poses": poses}


def errors_vs_truth(p3d: np.ndarray, capture_ns: np.ndarray, gt_mm: np.ndarray, gt_capture_ns: np.ndarray,
                    tolerance_ns: int = 5_000_000) -> np.ndarray:
    """(N, K, 3) poses at capture times -> (M,) Euclidean errors, mm, of the finite points matched to truth."""
    j = np.searchsorted(gt_capture_ns, capture_ns)
    j = np.clip(j, 0, len(gt_capture_ns) - 1)
    jm = np.clip(j - 1, 0, len(gt_capture_ns) - 1)
    j = np.where(np.abs(gt_capture_ns[jm] - capture_ns) < np.abs(gt_capture_ns[j] - capture_ns), jm, j)
    ok_t = np.abs(gt_capture_ns[j] - capture_ns) <= tolerance_ns
    e = np.linalg.norm(p3d[ok_t] - gt_mm[j[ok_t]], axis=-1)
    return e[np.isfinite(e)]


def summarise(e: np.ndarray, total: int) -> dict[str, float]:
    return {"median_mm": float(np.median(e)), "mean_mm": float(np.mean(e)), "p95_mm": float(np.percentile(e, 95)),
            "max_mm": float(np.max(e)), "coverage": float(len(e) / total)}


def run(out_dir: Path, duration_s: float = 4.0, seed: int = 3,
        methods: tuple[tuple[str, str, bool], ...] = (("median", "ransac", False), ("median", "optim", False),
                                                       ("median", "optim", True), ("viterbi", "optim", False))) -> dict[str, Any]:
    """Methods are (2D filter, triangulation, init_ransac)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    live = record_live_session(out_dir / "session", duration_s, seed=seed)
    s = open_session(live["session"])
    gt, gcap = live["gt_mm"], live["capture_ns"]
    total = gt.shape[0] * gt.shape[1]
    p = s.pose3d()
    res: dict[str, Any] = {"frames": int(gt.shape[0]), "keypoints": int(gt.shape[1]), "live_poses": int(len(p.fnum))}
    res["live_raw"] = summarise(errors_vs_truth(p.raw_mm, p.capture_ns, gt, gcap), total)
    res["live_filtered"] = summarise(errors_vs_truth(p.filtered_mm, p.capture_ns, gt, gcap), total)
    for filt, tri, init_ransac in methods:
        t0 = time.perf_counter()
        key = f"{filt}_{tri}" + ("_ransacinit" if init_ransac and tri == "optim" else "")
        path = reprocess(s, skip_inference=True, filter_name=filt, triangulation=tri, progress=False,
                         name=key, init_ransac=init_ransac)
        dt = time.perf_counter() - t0
        r = s.pose3d(result=path.name)
        res[f"offline_{key}"] = summarise(errors_vs_truth(r.raw_mm, r.capture_ns, gt, gcap), total) | {"seconds": dt}
    return res


def _fmt(res: dict[str, Any]) -> str:
    lines = [f"{res['frames']} frames x {res['keypoints']} keypoints, 4 cameras; live poses {res['live_poses']}",
             f"{'method':<36}{'median':>9}{'mean':>9}{'p95':>9}{'max':>9}{'cover':>8}{'time s':>9}"]
    for k, v in res.items():
        if isinstance(v, dict):
            lines.append(f"{k:<36}{v['median_mm']:9.2f}{v['mean_mm']:9.2f}{v['p95_mm']:9.2f}{v['max_mm']:9.1f}"
                         f"{v['coverage']:8.3f}{v.get('seconds', float('nan')):9.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    import tempfile

    dur = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    with tempfile.TemporaryDirectory() as d:
        print(_fmt(run(Path(d), dur)))

