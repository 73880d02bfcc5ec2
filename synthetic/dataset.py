"""Labelled frames for training a small pose network on the synthetic rig (inference stage's use).

Each sample is one rendered camera frame at a random time of a random seed's trajectory, with the
2D ground truth: the keypoints projected through the same calibration (lens distortion included)
and their visibility flags. Frames where the rat is mostly out of view are skipped.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ratrig.camera import Calibration
from synthetic.rat import simulate
from synthetic.render import NoiseOptions, Renderer
from synthetic.rig import Corridor, default_rig


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled frame: image (H, W, 3) uint8 BGR; keypoints_px (K, 2) in KEYPOINTS order
    (NaN never: points outside the image keep their coordinates, see `visible`); visible (K,) bool."""

    image: np.ndarray
    camera_name: str
    keypoints_px: np.ndarray
    visible: np.ndarray
    seed: int
    t_s: float


def training_samples(
    n: int,
    seed: int,
    *,
    corridor: Corridor | None = None,
    noise: NoiseOptions | None = None,
    calibration: Calibration | None = None,
    trajectory_s: float = 120.0,
    min_visible: int = 4,
) -> Iterator[Sample]:
    """Yield `n` labelled frames, deterministic per `seed`.

    Trajectories are simulated for seeds derived from `seed` (a new one every 200 samples), times
    drawn uniformly, cameras at random. A frame is kept when at least `min_visible` keypoints are
    visible in it.
    """
    corridor = corridor or Corridor()
    calibration = calibration or default_rig(corridor)
    renderer = Renderer(calibration, corridor, seed=seed, noise=noise)
    rng = np.random.default_rng([seed, 31])
    made = 0
    chunk = 0
    while made < n:
        traj_seed = int(rng.integers(0, 2**31 - 1))
        traj = simulate(trajectory_s, 1.0, traj_seed, corridor=corridor)
        chunk += 1
        tries = 0
        in_chunk = 0
        while made < n and in_chunk < 200 and tries < 2000:
            tries += 1
            t = float(rng.uniform(0.0, trajectory_s))
            ci = int(rng.integers(len(calibration.cameras)))
            kp, ex = traj.pose_at(t)
            vis = renderer.visibility(ci, kp, ex)
            if vis.sum() < min_visible:
                continue
            img = renderer.render(ci, kp, ex, t_s=t + 1000.0 * chunk)
            yield Sample(img, calibration.cameras[ci].name, calibration.cameras[ci].project(kp), vis,
                         traj_seed, t)
            made += 1
            in_chunk += 1
