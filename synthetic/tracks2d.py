"""2D tracks of the synthetic rat as a lab's tracker would hand them over: one DeepLabCut file per camera.

For `ratrig triangulate` tests and bench/bench_triangulate.py: the rat's exact 3D keypoints
(`synthetic.rat.simulate`) projected into calibrated cameras, with the faults real 2D trackers
make -- pixel noise, missed detections, a wrong detection in one view and left/right swaps -- and
written as DeepLabCut .h5 tables (`recorder.export.dlc_dataframe`, the layout DeepLabCut writes).

    truth, points = rat_tracks_2d(default_rig(), n_frames=1000, fps=100, seed=1, swap_rate=0.02)
    files = write_dlc_files(points, ("cam_ne", ...), KEYPOINTS, folder)   # camera -> .h5

Shapes: truth (T, K, 3) mm; points (C, T, K, 3) x px, y px, likelihood (NaN x/y = not detected).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ratrig.camera import Calibration

#: left/right keypoint pairs of the synthetic rat a tracker can confuse
SWAP_PAIRS = (("left_ear", "right_ear"), ("front_left_paw", "front_right_paw"), ("hind_left_paw", "hind_right_paw"))


def rat_tracks_2d(calibration: Calibration, n_frames: int, fps: float = 100.0, seed: int = 0,
                  noise_px: float = 0.5, drop_rate: float = 0.0, outlier_rate: float = 0.0,
                  swap_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Synthetic 2D tracks of a walking rat in every camera of `calibration`.

    Args:
        calibration: the cameras (e.g. `synthetic.rig.default_rig()`).
        n_frames: T frames at `fps`.
        seed: the walk and the faults.
        noise_px: Gaussian pixel noise (standard deviation, each axis).
        drop_rate: fraction of (camera, frame, keypoint) detections missing (NaN).
        outlier_rate: fraction of detections replaced by a wrong point 30-120 px away (likelihood 0.6-0.95).
        swap_rate: fraction of (frame, pair) where two cameras swap a left/right pair.

    Returns:
        (truth (T, K, 3) mm, points (C, T, K, 3) x px, y px, likelihood, keypoint names).
    """
    from fusion.triangulate import RigGeometry, project
    from synthetic.rat import simulate

    rng = np.random.default_rng(seed)
    traj = simulate(n_frames / fps, fps, seed)
    truth = np.asarray(traj.keypoints_mm[:n_frames], np.float64)
    names = tuple(traj.keypoint_names)
    t, k = truth.shape[:2]
    rig = RigGeometry.from_calibration(calibration)
    c = rig.n_cameras
    px = project(rig, truth.reshape(-1, 3)).reshape(c, t, k, 2)
    px = px + rng.normal(0.0, noise_px, px.shape)
    like = np.clip(rng.normal(0.93, 0.04, (c, t, k)), 0.55, 1.0)
    if outlier_rate > 0:
        bad = rng.random((c, t, k)) < outlier_rate
        angle = rng.uniform(0, 2 * np.pi, bad.sum())
        dist = rng.uniform(30, 120, bad.sum())
        px[bad] += np.stack([dist * np.cos(angle), dist * np.sin(angle)], -1)
        like[bad] = rng.uniform(0.6, 0.95, bad.sum())
    if swap_rate > 0:
        idx = {n: i for i, n in enumerate(names)}
        for a, b in SWAP_PAIRS:
            if a not in idx or b not in idx:
                continue
            for f in np.flatnonzero(rng.random(t) < swap_rate):
                for cam in rng.choice(c, 2, replace=False):
                    ia, ib = idx[a], idx[b]
                    px[cam, f, [ia, ib]] = px[cam, f, [ib, ia]]
    if drop_rate > 0:
        gone = rng.random((c, t, k)) < drop_rate
        px[gone] = np.nan
        like[gone] = np.nan
    points = np.concatenate([px, like[..., None]], axis=-1)
    return truth, points, names


def write_dlc_files(points: np.ndarray, cameras: Sequence[str], keypoints: Sequence[str], folder: Path,
                    scorer: str = "DLC_resnet50_ratSep1shuffle1_100000", csv: Sequence[str] = ()) -> dict[str, Path]:
    """(C, T, K, 3) -> one DeepLabCut file per camera, `<camera><scorer>.h5` (or .csv for cameras in `csv`)."""
    from recorder.export import dlc_dataframe, write_dlc_h5

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for c, cam in enumerate(cameras):
        df = dlc_dataframe(points[c], keypoints, scorer)
        if cam in csv:
            path = folder / f"{cam}{scorer}.csv"
            df.to_csv(path)
        else:
            path = folder / f"{cam}{scorer}.h5"
            write_dlc_h5(df, path)
        out[cam] = path
    return out
