"""The synthetic rig as live cameras, and its ground truth for live evaluation.

Cameras of the synthetic rig tick on one schedule (frame k at t0 + k / fps), so a frame's index is
its moment: camera processes render `truth.keypoints_mm[k]` and the evaluator compares against the
same row. Sessions longer than `synthetic.session_s` loop the simulated walk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ratrig.camera import Calibration
from ratrig.config import RigConfig
from synthetic.rat import Trajectory, simulate
from synthetic.render import NoiseOptions, Renderer
from synthetic.rig import Corridor, default_rig


def corridor_of(rig: RigConfig) -> Corridor:
    c = rig.corridor
    return Corridor(length_mm=c.length_mm, width_mm=c.width_mm, wall_height_mm=c.wall_height_mm,
                    clear_walls=rig.synthetic.walls == "clear")


def noise_of(rig: RigConfig) -> NoiseOptions:
    s = rig.synthetic
    return NoiseOptions(sensor_noise_sigma=s.noise_std, blur_sigma_px=1.0 if s.blur else 0.0,
                        exposure_jitter=s.exposure_jitter)


def rig_fps(rig: RigConfig) -> float:
    fps = {c.fps for c in rig.cameras}
    if len(fps) != 1:
        raise ValueError(f"synthetic rig: all cameras must share one fps, got {sorted(fps)}")
    return fps.pop()


@dataclass
class SyntheticTruth:
    """The walk of one synthetic session, sampled on the cameras' shared tick schedule."""

    trajectory: Trajectory
    calibration: Calibration

    @classmethod
    def from_rig_config(cls, rig: RigConfig) -> SyntheticTruth:
        corridor = corridor_of(rig)
        traj = simulate(rig.synthetic.session_s, rig_fps(rig), rig.synthetic.seed, corridor=corridor)
        return cls(traj, default_rig(corridor).subset(rig.camera_names))

    def row(self, frame_index: int) -> int:
        """Row of the sampled arrays for a camera frame index (looping past the end)."""
        return int(frame_index) % len(self.trajectory.times_s)

    def keypoints_mm(self, frame_index: int) -> np.ndarray:
        """(K, 3) true keypoints at the moment of `frame_index`, mm."""
        return self.trajectory.keypoints_mm[self.row(frame_index)]

    def extra_mm(self, frame_index: int) -> np.ndarray:
        return self.trajectory.extra_mm[self.row(frame_index)]


class LiveCamera:
    """Renders one camera of the synthetic rig at its scheduled frames."""

    def __init__(self, truth: SyntheticTruth, renderer: Renderer, camera: str, fps: float) -> None:
        self.truth = truth
        self.renderer = renderer
        self.camera = camera
        self.fps = fps

    @classmethod
    def from_rig_config(cls, rig: RigConfig, camera: str) -> LiveCamera:
        truth = SyntheticTruth.from_rig_config(rig)
        calib = truth.calibration.subset([camera])
        renderer = Renderer(calib, corridor_of(rig), seed=rig.synthetic.seed, noise=noise_of(rig))
        return cls(truth, renderer, camera, rig_fps(rig))

    def render_at(self, t_s: float) -> np.ndarray:
        """(H, W, 3) uint8 BGR image of the frame scheduled at t_s seconds after t0."""
        k = int(round(t_s * self.fps))
        return self.renderer.render(0, self.truth.keypoints_mm(k), self.truth.extra_mm(k), t_s=t_s)
