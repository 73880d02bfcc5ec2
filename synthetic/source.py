"""A live frame source: one virtual camera of the synthetic rig, with faults on demand.

Several sources built with the same `seed` (and the same `epoch_ns`) share one trajectory, so four
sources, one per camera, in four processes, film the same rat in sync: the pose drawn is a pure
function of the capture time, t = (capture_ns - epoch_ns) / 1e9 s.

`read()` mimics `cv2.VideoCapture.read` plus a timestamp: ``(ok, frame, capture_ns)``.

* ok True: a frame captured now (or at the next frame slot when `paced=True`).
* ok False and `source.dead` False: this frame was dropped (fault `drop_prob`); try again.
* ok False and `source.dead` True: the camera died (fault `die_after_s`); every later read fails.

Timestamp jitter (`jitter_ms`) perturbs the reported capture_ns, not the instant drawn, the way a
late software timestamp does on a real camera.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ratrig.camera import Calibration, Camera
from ratrig.clock import now_ns
from synthetic.rat import Lesion, Trajectory, simulate
from synthetic.render import NoiseOptions, Renderer
from synthetic.rig import Corridor, default_rig


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults of one camera. drop_prob: chance a frame is lost; jitter_ms: std of the error of the
    reported timestamp; die_after_s: the camera stops for good this long after the epoch."""

    drop_prob: float = 0.0
    jitter_ms: float = 0.0
    die_after_s: float | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.drop_prob < 1.0):
            raise ValueError(f"Faults.drop_prob: expected 0 <= p < 1, got {self.drop_prob!r}")
        if not (np.isfinite(self.jitter_ms) and self.jitter_ms >= 0):
            raise ValueError(f"Faults.jitter_ms: expected a number >= 0, got {self.jitter_ms!r}")
        if self.die_after_s is not None and not (self.die_after_s >= 0):
            raise ValueError(f"Faults.die_after_s: expected None or >= 0, got {self.die_after_s!r}")


class SyntheticSource:
    """One virtual camera filming the synthetic rat.

    Args:
        camera_name: a camera of `calibration` (default rig: cam_ne, cam_nw, cam_sw, cam_se).
        fps: nominal frame rate (used when `paced`, and for the trajectory's sampling).
        seed: trajectory seed; sources with equal seeds see the same rat.
        faults: drops, timestamp jitter, death (default none). Fault randomness is seeded by
            (seed, camera) so runs repeat.
        epoch_ns: monotonic time (ratrig.clock.now_ns) of trajectory time 0; give every camera the
            same value. Default: when this object has finished building.
        corridor, lesion, noise: as for `simulate` and `Renderer`.
        calibration: default `default_rig(corridor)`.
        trajectory_s: length of the simulated motion; time wraps around after it (the rat jumps
            back to its start once per wrap).
        paced: when True, read() sleeps until the next frame slot epoch + k / fps, like a
            free-running camera; when False (default) the caller paces and each read() captures now.
    """

    def __init__(
        self,
        camera_name: str,
        fps: float = 30.0,
        seed: int = 0,
        faults: Faults | None = None,
        *,
        epoch_ns: int | None = None,
        corridor: Corridor | None = None,
        lesion: Lesion | None = None,
        noise: NoiseOptions | None = None,
        calibration: Calibration | None = None,
        trajectory_s: float = 300.0,
        paced: bool = False,
    ) -> None:
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"SyntheticSource: fps must be > 0, got {fps!r}")
        self.corridor = corridor or Corridor()
        full = calibration or default_rig(self.corridor)
        if camera_name not in full.names:
            raise KeyError(f"SyntheticSource: no camera named {camera_name!r} (rig has {list(full.names)})")
        self.camera_name = camera_name
        self.calibration = full
        self.camera: Camera = full.camera(camera_name)
        self.fps = float(fps)
        self.seed = int(seed)
        self.faults = faults or Faults()
        self.paced = bool(paced)
        self.trajectory_s = float(trajectory_s)
        self.trajectory: Trajectory = simulate(self.trajectory_s, 1.0, self.seed, lesion=lesion,
                                               corridor=self.corridor)
        self._renderer = Renderer(full.subset([camera_name]), self.corridor, seed=self.seed, noise=noise)
        cam_index = full.names.index(camera_name)
        self._rng = np.random.default_rng([self.seed, 1009, cam_index])
        self.frame_index = -1  # index of the last frame slot read (dropped frames count)
        self.dead = False
        self.last_true_capture_ns = -1  # when the last read really captured (before jitter)
        self._next_slot = 0
        # Default epoch: now that the source is ready (building it takes about a second).
        self.epoch_ns = int(epoch_ns) if epoch_ns is not None else now_ns()

    def trajectory_time(self, t_s: float) -> float:
        """Session time, s -> time on the (wrapping) trajectory, s."""
        t = max(0.0, float(t_s))
        return t % self.trajectory_s

    def pose_at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth at session time t_s: (K, 3) keypoints, (E, 3) extras, mm."""
        return self.trajectory.pose_at(self.trajectory_time(t_s))

    def render_at(self, t_s: float) -> np.ndarray:
        """The frame this camera sees at session time t_s (no faults): (H, W, 3) uint8 BGR."""
        kp, ex = self.pose_at(t_s)
        return self._renderer.render(0, kp, ex, t_s=float(t_s))

    def visibility_at(self, t_s: float) -> np.ndarray:
        """(K,) bool ground-truth visibility of each keypoint in this camera at t_s."""
        kp, ex = self.pose_at(t_s)
        return self._renderer.visibility(0, kp, ex)

    def read(self) -> tuple[bool, np.ndarray | None, int]:
        """Capture one frame: (ok, frame (H, W, 3) uint8 BGR or None, capture_ns). See module doc."""
        if self.paced:
            slot_ns = self.epoch_ns + int(round(self._next_slot * 1e9 / self.fps))
            now = now_ns()
            if slot_ns < now:  # fell behind: skip to the current slot, as a camera would
                self._next_slot = int(np.ceil((now - self.epoch_ns) * self.fps / 1e9))
                slot_ns = self.epoch_ns + int(round(self._next_slot * 1e9 / self.fps))
            delay = (slot_ns - now_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            self._next_slot += 1
            true_ns = slot_ns
        else:
            true_ns = now_ns()
        self.last_true_capture_ns = true_ns
        t_s = (true_ns - self.epoch_ns) / 1e9
        if self.dead or (self.faults.die_after_s is not None and t_s >= self.faults.die_after_s):
            self.dead = True
            return False, None, true_ns
        self.frame_index += 1
        if self.faults.drop_prob > 0 and self._rng.random() < self.faults.drop_prob:
            return False, None, true_ns
        stamp = true_ns
        if self.faults.jitter_ms > 0:
            stamp += int(round(self._rng.normal(0.0, self.faults.jitter_ms) * 1e6))
        return True, self.render_at(t_s), stamp

    def close(self) -> None:
        """Nothing to release; present so a source can stand in for a real camera."""
        self.dead = True
