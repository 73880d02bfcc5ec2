"""Camera model and Anipose's `calibration.toml`.

Data only: a `Camera` is a pinhole camera with OpenCV's 5-term distortion (k1, k2, p1, p2, k3),
world-to-camera rotation vector and translation in mm. Projection helpers are thin wrappers over
OpenCV so every stage projects the same way. Triangulation lives in `fusion.triangulate`.

File format (what aniposelib's `CameraGroup.dump` writes and `CameraGroup.load` reads)::

    [cam_0]
    name = "cam_ne"
    size = [640, 480]             # width, height in px
    matrix = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    distortions = [k1, k2, p1, p2, k3]
    rotation = [rx, ry, rz]       # Rodrigues vector, world -> camera
    translation = [tx, ty, tz]    # mm
    [metadata]
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.tomlio import TOMLDecodeError, read_toml, write_toml


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file, camera and field."""


@dataclass(frozen=True)
class Camera:
    """One calibrated camera. Arrays are float64; `matrix` (3, 3), `dist` (5,), `rvec` (3,), `tvec` (3,) mm."""

    name: str
    size: tuple[int, int]  # (width, height) px
    matrix: np.ndarray
    dist: np.ndarray
    rvec: np.ndarray
    tvec: np.ndarray

    @property
    def rotation_matrix(self) -> np.ndarray:
        import cv2

        return cv2.Rodrigues(np.asarray(self.rvec, np.float64).reshape(3, 1))[0]

    @property
    def center_mm(self) -> np.ndarray:
        """(3,) camera centre in world coordinates, mm."""
        return -self.rotation_matrix.T @ np.asarray(self.tvec, np.float64)

    @property
    def extrinsic(self) -> np.ndarray:
        """(3, 4) [R | t], world -> camera."""
        return np.hstack([self.rotation_matrix, np.asarray(self.tvec, np.float64).reshape(3, 1)])

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world points, mm -> (N, 2) distorted image points, px. NaN rows stay NaN."""
        import cv2

        pts = np.asarray(points_mm, np.float64).reshape(-1, 3)
        out = np.full((len(pts), 2), np.nan)
        ok = np.all(np.isfinite(pts), axis=1)
        if ok.any():
            proj, _ = cv2.projectPoints(pts[ok], self.rvec, self.tvec, self.matrix, self.dist)
            out[ok] = proj.reshape(-1, 2)
        return out

    def depth_mm(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N,) depth along the optical axis, mm (negative = behind)."""
        pts = np.asarray(points_mm, np.float64).reshape(-1, 3)
        return pts @ self.rotation_matrix[2] + float(np.asarray(self.tvec)[2])

    def undistort(self, points_px: np.ndarray) -> np.ndarray:
        """(N, 2) distorted image points, px -> (N, 2) normalised image coordinates (x/z, y/z)."""
        import cv2

        pts = np.asarray(points_px, np.float64).reshape(-1, 2)
        out = np.full((len(pts), 2), np.nan)
        ok = np.all(np.isfinite(pts), axis=1)
        if ok.any():
            und = cv2.undistortPoints(pts[ok].reshape(-1, 1, 2), self.matrix, self.dist)
            out[ok] = und.reshape(-1, 2)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": [int(self.size[0]), int(self.size[1])],
            "matrix": np.asarray(self.matrix, float).tolist(),
            "distortions": np.asarray(self.dist, float).ravel().tolist(),
            "rotation": np.asarray(self.rvec, float).ravel().tolist(),
            "translation": np.asarray(self.tvec, float).ravel().tolist(),
        }


@dataclass(frozen=True)
class Calibration:
    """A calibrated rig: cameras in a fixed order plus Anipose's free-form metadata."""

    cameras: tuple[Camera, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def camera(self, name: str) -> Camera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"no camera named {name!r} in calibration (has {list(self.names)})")

    def subset(self, names: Sequence[str]) -> Calibration:
        """A new calibration holding `names` in that order."""
        return Calibration(tuple(self.camera(n) for n in names), dict(self.metadata))

    def projection_matrices(self) -> np.ndarray:
        """(C, 3, 4) K[R|t] for each camera (ignores distortion)."""
        return np.stack([c.matrix @ c.extrinsic for c in self.cameras])

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) world points, mm -> (C, N, 2) image points, px."""
        return np.stack([c.project(points_mm) for c in self.cameras])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"cam_{i}": c.to_dict() for i, c in enumerate(self.cameras)}
        out["metadata"] = dict(self.metadata)
        return out

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write Anipose's calibration.toml atomically."""
        write_toml(path, self.to_dict())


def _array(value: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: expected numbers of shape {shape}, got {value!r}") from None
    if arr.shape != shape:
        raise CalibrationError(f"{where}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: contains non-finite values {arr.tolist()}")
    return arr


def camera_from_dict(d: dict[str, Any], where: str) -> Camera:
    """Validate one `[cam_N]` table. `where` prefixes every error (file and table)."""
    if not isinstance(d, dict):
        raise CalibrationError(f"{where}: expected a table, got {type(d).__name__}")
    for key in ("name", "size", "matrix", "distortions", "rotation", "translation"):
        if key not in d:
            raise CalibrationError(f"{where}: missing key {key!r}")
    if d.get("fisheye"):
        raise CalibrationError(f"{where}: fisheye cameras are not supported (fisheye = true)")
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise CalibrationError(f"{where}.name: expected a non-empty string, got {name!r}")
    size = _array(d["size"], (2,), f"{where}.size")
    if np.any(size <= 0):
        raise CalibrationError(f"{where}.size: expected positive [width, height], got {size.tolist()}")
    matrix = _array(d["matrix"], (3, 3), f"{where}.matrix")
    if matrix[0, 0] <= 0 or matrix[1, 1] <= 0:
        raise CalibrationError(f"{where}.matrix: focal lengths must be positive, got {matrix.tolist()}")
    dist = np.asarray(d["distortions"], dtype=np.float64).ravel()
    if dist.size not in (4, 5, 8) or not np.all(np.isfinite(dist)):
        raise CalibrationError(
            f"{where}.distortions: expected 4, 5 or 8 finite numbers (k1 k2 p1 p2 [k3..]), got {d['distortions']!r}"
        )
    if dist.size == 4:
        dist = np.append(dist, 0.0)
    rvec = np.asarray(d["rotation"], dtype=np.float64)
    if rvec.shape == (3, 3):  # some tools store the matrix
        import cv2

        rvec = cv2.Rodrigues(rvec)[0].ravel()
    rvec = _array(rvec, (3,), f"{where}.rotation")
    tvec = _array(d["translation"], (3,), f"{where}.translation")
    return Camera(name, (int(size[0]), int(size[1])), matrix, dist, rvec, tvec)


def load_calibration(
    path: str | os.PathLike[str], expected_names: Sequence[str] | None = None
) -> Calibration:
    """Read and validate an Anipose calibration.toml.

    Args:
        path: the file.
        expected_names: camera names of the rig config; every one must be present (extra cameras in
            the file are allowed), and the result is ordered as given.

    Raises:
        CalibrationError: naming the file, the table and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found")
    try:
        data = read_toml(path)
    except (TOMLDecodeError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{path}: not valid TOML ({e})") from None
    tables = sorted((k for k in data if k.startswith("cam_")), key=lambda k: (len(k), k))
    if not tables:
        raise CalibrationError(f"{path}: no [cam_N] tables; is this an Anipose calibration.toml?")
    cams = [camera_from_dict(data[k], f"{path}: [{k}]") for k in tables]
    names = [c.name for c in cams]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise CalibrationError(f"{path}: camera names appear more than once: {sorted(dupes)}")
    calib = Calibration(tuple(cams), dict(data.get("metadata", {})))
    if expected_names is not None:
        missing = [n for n in expected_names if n not in names]
        if missing:
            raise CalibrationError(
                f"{path}: cameras {missing} of the rig config are not in the calibration (it has {names})"
            )
        calib = calib.subset(expected_names)
    return calib
