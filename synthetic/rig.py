"""The synthetic rig: corridor geometry and four calibrated virtual cameras.

World frame (shared by the whole project): millimetres, x along the corridor, y across it, z up,
floor z = 0. The corridor is centred on the origin: x in [-length/2, length/2], y in
[-width/2, width/2], walls from z = 0 to z = wall_height.

Default corridor: 1500 x 70 mm with 230 mm walls, the 150 x 7 cm (x 23 cm high) corridor of the
corridor task (Dowd et al. 2005, Brain Res Bull 68:24-30; figures as commonly cited for that task,
not re-checked against the paper here). Its width only just fits an adult rat, so turning around
at the ends is a tight U-turn.

Cameras: four, 90 degrees apart around the corridor centre at the diagonals, named by compass
direction with north = +y and east = +x: ``cam_ne`` (azimuth 45 deg), ``cam_nw`` (135),
``cam_sw`` (225), ``cam_se`` (315). Each is mounted about 0.75 m from the corridor centre, looks down
at about 50 degrees below horizontal, 640 x 480 px, fx 590-620 px, small radial distortion. All four
see the central ~0.8 m of the corridor; near the ends the rat leaves some views.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ratrig.camera import Calibration, Camera

CAMERA_NAMES: tuple[str, ...] = ("cam_ne", "cam_nw", "cam_sw", "cam_se")
IMAGE_SIZE: tuple[int, int] = (640, 480)  # (width, height) px


@dataclass(frozen=True, slots=True)
class Corridor:
    """Corridor geometry, mm. `clear_walls`: transparent (acrylic) walls that occlude nothing."""

    length_mm: float = 1500.0
    width_mm: float = 70.0
    wall_height_mm: float = 230.0
    clear_walls: bool = True

    def __post_init__(self) -> None:
        for name in ("length_mm", "width_mm", "wall_height_mm"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"Corridor.{name}: expected a positive number of mm, got {v!r}")
        if self.width_mm < 50.0:
            raise ValueError(f"Corridor.width_mm: a rat needs at least 50 mm, got {self.width_mm}")
        if self.length_mm < 600.0:
            raise ValueError(f"Corridor.length_mm: expected at least 600 mm, got {self.length_mm}")


def look_at_camera(
    name: str,
    center_mm: np.ndarray,
    target_mm: np.ndarray,
    fx_px: float,
    dist: np.ndarray,
    size: tuple[int, int] = IMAGE_SIZE,
    principal_offset_px: tuple[float, float] = (0.0, 0.0),
) -> Camera:
    """A camera at `center_mm` looking at `target_mm` with the image's up roughly towards +z.

    (3,), (3,) mm -> Camera with world -> camera rvec, tvec (OpenCV: x right, y down, z forward).
    """
    c = np.asarray(center_mm, np.float64)
    fwd = np.asarray(target_mm, np.float64) - c
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])  # rows: camera axes in world coordinates
    rvec = cv2.Rodrigues(rot)[0].ravel()
    tvec = -rot @ c
    w, h = size
    matrix = np.array(
        [
            [fx_px, 0.0, (w - 1) / 2.0 + principal_offset_px[0]],
            [0.0, fx_px, (h - 1) / 2.0 + principal_offset_px[1]],
            [0.0, 0.0, 1.0],
        ]
    )
    return Camera(name, (int(w), int(h)), matrix, np.asarray(dist, np.float64).copy(), rvec, tvec)


def default_rig(corridor: Corridor | None = None) -> Calibration:
    """The four virtual cameras (see module docstring), as a `ratrig.camera.Calibration`.

    The geometry does not depend on the corridor's length; `corridor` only sets the aim height.
    """
    corridor = corridor or Corridor()
    target = np.array([0.0, 0.0, 40.0])
    # Per-camera differences so that no code can get away with assuming identical cameras.
    specs = {
        # name: (azimuth deg, elevation deg, distance mm, fx px, dist (k1 k2 p1 p2 k3), principal offset)
        "cam_ne": (45.0, 50.0, 760.0, 600.0, (-0.08, 0.03, 0.0005, -0.0003, 0.0), (4.0, -3.0)),
        "cam_nw": (135.0, 52.0, 740.0, 610.0, (-0.05, 0.01, -0.0004, 0.0002, 0.0), (-3.0, 2.0)),
        "cam_sw": (225.0, 48.0, 780.0, 590.0, (-0.10, 0.04, 0.0002, 0.0004, 0.0), (2.0, 5.0)),
        "cam_se": (315.0, 50.0, 760.0, 620.0, (0.03, -0.01, -0.0002, -0.0005, 0.0), (-5.0, -2.0)),
    }
    cams = []
    for name in CAMERA_NAMES:
        az, el, dist_mm, fx, dist, off = specs[name]
        a, e = np.radians(az), np.radians(el)
        center = target + dist_mm * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        cams.append(look_at_camera(name, center, target, fx, np.array(dist), IMAGE_SIZE, off))
    meta = {
        "source": "ratrig synthetic rig",
        "corridor_mm": [corridor.length_mm, corridor.width_mm, corridor.wall_height_mm],
    }
    return Calibration(tuple(cams), meta)
