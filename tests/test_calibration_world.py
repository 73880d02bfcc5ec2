"""World frame: floor/corridor from a board lying on the floor, frame changes, similarity alignment."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.board import BoardSpec
from calibration.world import (
    FLOOR_FLIP,
    WorldFrameError,
    align_to,
    rotation_angle_deg,
    set_floor,
    similarity_transform,
    transform_calibration,
)
from synthetic.rig import default_rig


def _random_rotation(rng) -> np.ndarray:
    return cv2.Rodrigues(rng.normal(size=3))[0]


def test_transform_keeps_every_projection():
    rng = np.random.default_rng(1)
    calib = default_rig()
    r, t, s = _random_rotation(rng), rng.normal(size=3) * 300, 1.7
    new = transform_calibration(calib, r, t, s)
    pts_new = rng.uniform(-100, 100, (50, 3))
    pts_old = s * pts_new @ r.T + t  # X_old = s R X_new + t
    np.testing.assert_allclose(new.project(pts_new), calib.project(pts_old), atol=1e-6)
    assert new.names == calib.names and new is not calib


def test_transform_rejects_a_reflection():
    with pytest.raises(ValueError, match="proper rotation"):
        transform_calibration(default_rig(), np.diag([1.0, 1.0, -1.0]), np.zeros(3))


def test_set_floor_recovers_the_world_from_a_board_on_the_floor():
    spec = BoardSpec()
    true = default_rig()
    rng = np.random.default_rng(2)
    # The solver's frame: camera-0-like, unrelated to the floor.
    solver = transform_calibration(true, _random_rotation(rng), rng.normal(size=3) * 500)
    # Board face up on the floor, origin at the world origin, x along the corridor.
    corners_world = spec.object_points_mm() @ FLOOR_FLIP.T
    views = {}
    for cam in true.cameras:
        uv = cam.project(corners_world)
        ok = (uv[:, 0] > 0) & (uv[:, 0] < 639) & (uv[:, 1] > 0) & (uv[:, 1] < 479)
        views[cam.name] = (np.flatnonzero(ok), uv[ok])
    assert sum(len(v[0]) >= 12 for v in views.values()) >= 2
    floor = set_floor(solver, spec, views)
    for cam in floor.cameras:
        ref = true.camera(cam.name)
        np.testing.assert_allclose(cam.center_mm, ref.center_mm, atol=1e-4)
        assert rotation_angle_deg(cam.rotation_matrix, ref.rotation_matrix) < 1e-5
    # z is height above the floor: every camera is above it.
    assert all(c.center_mm[2] > 300 for c in floor.cameras)


def test_set_floor_without_a_view_says_so():
    with pytest.raises(WorldFrameError, match="floor frame"):
        set_floor(default_rig(), BoardSpec(), {"cam_ne": (np.arange(5), np.zeros((5, 2)))})


def test_similarity_transform_and_alignment_recover_a_known_change():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3)) * 100
    r, t, s = _random_rotation(rng), rng.normal(size=3) * 50, 0.8
    s2, r2, t2 = similarity_transform(src, s * src @ r.T + t)
    assert s2 == pytest.approx(s) and np.allclose(r2, r) and np.allclose(t2, t)
    true = default_rig()
    moved = transform_calibration(true, r, t, s)
    aligned = align_to(moved, true)
    for cam in aligned.cameras:
        np.testing.assert_allclose(cam.center_mm, true.camera(cam.name).center_mm, atol=1e-6)
