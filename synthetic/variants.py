"""Renderer variants: other rats, light, clutter and moved cameras, for accuracy on worlds a model never saw.

A variant is a name and a recipe (`VariantSpec`); `build_variant(name, seed)` turns it into a
`SyntheticWorld`: the true trajectory (scaled for a bigger or smaller rat), the TRUE calibration the
frames are rendered with, the calibration the pipeline is given, and a `Renderer` with the variant's
appearance and image noise. Everything is deterministic by (name, seed).

Variants that move cameras (`camera_move_deg`, `camera_move_mm`) rotate every camera about a random
axis through its centre by 0.5-1 x the angle and shift it by 0.5-1 x the distance in a random
direction. The pipeline then does NOT get the true cameras: `recalibrate` renders ChArUco board videos
from the moved cameras (`ratrig synth calibration`) and calibrates them with `ratrig calibrate
--floor-frame 0` (aniposelib plus ratrig's refinement: the code path a lab uses), so calibration error
is part of the measured 3D error.

Names and what they change (the demo's world is "default"):
    default        the demo: white rat, noise 2 grey levels
    hooded         Long-Evans-like: dark grey-brown head, white body
    brown          brown (agouti, Brown Norway-like) coat
    small          rat 0.85 x the default size (a juvenile)
    large          rat 1.18 x the default size (a heavy adult)
    dim            light at 0.55, more sensor noise (7), exposure jitter 0.1
    bright         light at 1.4 (white fur saturates), exposure jitter 0.15
    clutter        24 blobs (bedding, pellets, tape, pink and white bits) on the floor and table
    moved          every camera moved by up to 10 degrees and 50 mm, re-calibrated with ratrig calibrate
    moved_brown    moved + brown coat + clutter: the hardest combination

`TRAIN_VARIANTS` are the ones `inference/train_synthetic.py` may render training frames from; the
others (`HELD_OUT_VARIANTS`) are for evaluation only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ratrig.camera import Calibration, Camera, load_calibration
from synthetic.rat import Trajectory, simulate
from synthetic.render import FUR_BGR, Appearance, NoiseOptions, Renderer
from synthetic.rig import Corridor, default_rig


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """Recipe of a renderer variant (see the module docstring)."""

    fur_bgr: tuple[float, float, float] = FUR_BGR
    head_bgr: tuple[float, float, float] | None = None
    body_scale: float = 1.0
    light_gain: float = 1.0
    noise_std: float = 2.0
    exposure_jitter: float = 0.0
    blur_px: float = 0.0
    n_clutter: int = 0
    camera_move_deg: float = 0.0
    camera_move_mm: float = 0.0


VARIANTS: dict[str, VariantSpec] = {
    "default": VariantSpec(),
    "hooded": VariantSpec(head_bgr=(48.0, 55.0, 62.0)),
    "brown": VariantSpec(fur_bgr=(92.0, 118.0, 150.0)),
    "small": VariantSpec(body_scale=0.85),
    "large": VariantSpec(body_scale=1.18),
    "dim": VariantSpec(light_gain=0.55, noise_std=7.0, exposure_jitter=0.1),
    "bright": VariantSpec(light_gain=1.4, exposure_jitter=0.15),
    "clutter": VariantSpec(n_clutter=24),
    "moved": VariantSpec(camera_move_deg=10.0, camera_move_mm=50.0),
    "moved_brown": VariantSpec(fur_bgr=(92.0, 118.0, 150.0), n_clutter=24, camera_move_deg=10.0, camera_move_mm=50.0),
}
TRAIN_VARIANTS: tuple[str, ...] = ("default", "hooded", "small", "dim", "clutter")
HELD_OUT_VARIANTS: tuple[str, ...] = tuple(v for v in VARIANTS if v not in TRAIN_VARIANTS)


def variant_spec(name: str) -> VariantSpec:
    """The recipe of a named variant; KeyError naming the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown renderer variant {name!r}; known: {', '.join(VARIANTS)}") from None


def _rng(name: str, seed: int, what: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{name}/{what}".encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:4], "little")])


class ScaledMotion:
    """A `RatMotion` whose poses are scaled by `scale` about (mean keypoint x, y, z = 0) per instant."""

    def __init__(self, motion: Any, scale: float) -> None:
        self._motion = motion
        self.scale = float(scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._motion, name)

    def pose_at(self, t_s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        kp, ex = self._motion.pose_at(t_s)
        return scale_pose(kp, ex, self.scale)


def scale_pose(kp: np.ndarray, ex: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(..., K, 3), (..., E, 3) -> the same scaled by `scale` about (mean keypoint x, y, 0) of each pose."""
    kp = np.asarray(kp, np.float64)
    ex = np.asarray(ex, np.float64)
    if scale == 1.0:
        return kp, ex
    c = kp.mean(axis=-2, keepdims=True).copy()
    c[..., 2] = 0.0
    return c + scale * (kp - c), c + scale * (ex - c)


def scale_trajectory(traj: Trajectory, scale: float) -> Trajectory:
    """A bigger (scale > 1) or smaller rat on the same walk: positions scaled per frame about the point
    under the keypoints' mean, so paws on the floor stay on it and contact times are unchanged."""
    if scale == 1.0:
        return traj
    kp, ex = scale_pose(traj.keypoints_mm, traj.extra_mm, scale)
    return dataclasses.replace(traj, keypoints_mm=kp, extra_mm=ex, motion=ScaledMotion(traj.motion, scale))


def random_rotation(rng: np.random.Generator, angle_rad: float) -> np.ndarray:
    """(3, 3) rotation by `angle_rad` about a random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return cv2.Rodrigues(axis * angle_rad)[0]


def move_camera(cam: Camera, rotation_world: np.ndarray, shift_mm: np.ndarray) -> Camera:
    """The camera turned by `rotation_world` (3, 3) about its own centre and moved by `shift_mm` (3,)."""
    r = cam.rotation_matrix @ rotation_world.T
    centre = cam.center_mm + np.asarray(shift_mm, np.float64)
    return dataclasses.replace(cam, rvec=cv2.Rodrigues(r)[0].ravel(), tvec=-r @ centre)


def moved_rig(calib: Calibration, max_deg: float, max_mm: float, rng: np.random.Generator) -> Calibration:
    """Every camera rotated by 0.5-1 x `max_deg` about a random axis and shifted 0.5-1 x `max_mm`."""
    cams = []
    for cam in calib.cameras:
        rot = random_rotation(rng, np.deg2rad(max_deg * rng.uniform(0.5, 1.0)))
        d = rng.normal(size=3)
        shift = d / np.linalg.norm(d) * max_mm * rng.uniform(0.5, 1.0)
        cams.append(move_camera(cam, rot, shift))
    return Calibration(tuple(cams), dict(calib.metadata, source="ratrig synthetic rig, moved cameras"))


def camera_pose_error(a: Camera, b: Camera) -> tuple[float, float]:
    """(rotation difference deg, centre distance mm) between two cameras."""
    dr = a.rotation_matrix @ b.rotation_matrix.T
    ang = float(np.degrees(np.arccos(np.clip((np.trace(dr) - 1) / 2, -1, 1))))
    return ang, float(np.linalg.norm(a.center_mm - b.center_mm))


def recalibrate(true_calib: Calibration, work_dir: str | Path, seed: int, frames: int = 40) -> Calibration:
    """Render ChArUco board videos from `true_calib` and calibrate them with `ratrig calibrate`.

    Runs the two CLI commands (`ratrig synth calibration`, `ratrig calibrate --floor-frame 0`) in this
    process, their printout going to stderr; the result is cached as work_dir/calibration.toml (reused
    only while work_dir/true_calibration.toml holds the same cameras). RuntimeError when calibration fails.
    """
    from ratrig.cli import main as ratrig_main

    work = Path(work_dir)
    out = work / "calibration.toml"
    true_path = work / "true_calibration.toml"
    if out.is_file() and true_path.is_file() and _same_cameras(load_calibration(true_path), true_calib):
        return load_calibration(out, true_calib.names)
    work.mkdir(parents=True, exist_ok=True)
    true_calib.save(true_path)
    boards = work / "boards"
    with contextlib.redirect_stdout(sys.stderr):
        rc = ratrig_main(["synth", "calibration", str(boards), "--frames", str(frames), "--seed", str(seed),
                          "--calibration", str(true_path)])
        if rc != 0:
            raise RuntimeError(f"ratrig synth calibration {boards} failed with status {rc}")
        videos = [str(boards / f"{c.name}.avi") for c in true_calib.cameras]
        rc = ratrig_main(["calibrate", *videos, "--board", str(boards / "board.toml"), "-o", str(out),
                          "--floor-frame", "0", "--no-progress", "--workers", "1"])
    if rc != 0 or not out.is_file():
        raise RuntimeError(f"ratrig calibrate on the boards in {boards} failed with status {rc}")
    return load_calibration(out, true_calib.names)


def _same_cameras(a: Calibration, b: Calibration, tol: float = 1e-6) -> bool:
    if a.names != b.names:
        return False
    return all(np.allclose(x.matrix, y.matrix, atol=tol) and np.allclose(x.rvec, y.rvec, atol=tol)
               and np.allclose(x.tvec, y.tvec, atol=1e-3) for x, y in zip(a.cameras, b.cameras))


@dataclass(frozen=True)
class SyntheticWorld:
    """One variant of the synthetic rig: what is rendered and what the pipeline is told."""

    name: str
    seed: int
    trajectory: Trajectory
    true_calibration: Calibration  # the cameras the frames are rendered with
    calibration: Calibration  # the cameras the pipeline uses (re-calibrated when moved)
    renderer: Renderer
    corridor: Corridor


def appearance_of(spec: VariantSpec, name: str, seed: int) -> Appearance:
    """The renderer appearance of a variant; clutter blobs drawn deterministically by (name, seed)."""
    rng = _rng(name, seed, "clutter")
    clutter = []
    palette = [(70, 90, 110), (40, 40, 45), (200, 200, 195), (150, 130, 230), (60, 120, 60), (30, 160, 210)]
    for _ in range(spec.n_clutter):
        x = rng.uniform(-700, 700)
        y = rng.uniform(-35, 35) if rng.random() < 0.5 else rng.uniform(-400, 400)
        r = rng.uniform(4, 25)
        col = np.array(palette[int(rng.integers(len(palette)))], float) * rng.uniform(0.8, 1.15)
        clutter.append((float(x), float(y), float(r * rng.uniform(0.6, 1.6)), float(r), *map(float, col)))
    return Appearance(fur_bgr=spec.fur_bgr, head_bgr=spec.head_bgr, body_scale=spec.body_scale,
                      light_gain=spec.light_gain, clutter=tuple(clutter))


def build_variant(name: str, seed: int, duration_s: float = 30.0, fps: float = 30.0,
                  calib_dir: str | Path | None = None, corridor: Corridor | None = None) -> SyntheticWorld:
    """The world of variant `name` for walk `seed`.

    calib_dir: where a moved-camera variant's board videos and calibration are written (and cached);
    default a folder under the system temp directory named by (name, seed).
    """
    spec = variant_spec(name)
    corridor = corridor or Corridor()
    traj = scale_trajectory(simulate(duration_s, fps, seed, corridor=corridor), spec.body_scale)
    true_calib = default_rig(corridor)
    calib = true_calib
    if spec.camera_move_deg > 0 or spec.camera_move_mm > 0:
        true_calib = moved_rig(true_calib, spec.camera_move_deg, spec.camera_move_mm, _rng(name, seed, "cameras"))
        work = Path(calib_dir) if calib_dir else Path(tempfile.gettempdir()) / f"ratrig_variant_{name}_{seed}"
        calib = recalibrate(true_calib, work, seed)
    noise = NoiseOptions(sensor_noise_sigma=spec.noise_std, blur_sigma_px=spec.blur_px,
                         exposure_jitter=spec.exposure_jitter)
    renderer = Renderer(true_calib, corridor, seed=seed, noise=noise, appearance=appearance_of(spec, name, seed))
    return SyntheticWorld(name, int(seed), traj, true_calib, calib, renderer, corridor)
