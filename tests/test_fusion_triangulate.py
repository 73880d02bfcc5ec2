"""Triangulation: agreement with aniposelib, exactness on noise-free rigs, weighting, outlier rejection."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusion.triangulate import (
    RigGeometry,
    TriangulationOptions,
    project,
    triangulate,
    triangulate_linear,
    undistort,
)
from ratrig.camera import Calibration, Camera


def look_at(center: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation of a camera at `center` looking at `target`, image y pointing down."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def random_rig(rng: np.random.Generator, n_cams: int, distortion: float = 1.0, skew: float = 0.0) -> Calibration:
    """Cameras 400-1200 mm from the origin on a ring, looking at it, 640x480, random lens."""
    cams = []
    for i in range(n_cams):
        ang = 2 * np.pi * i / n_cams + rng.uniform(-0.3, 0.3)
        dist_mm = rng.uniform(400, 1200)
        center = np.array([dist_mm * np.cos(ang), dist_mm * np.sin(ang), rng.uniform(50, 600)])
        rot = look_at(center, rng.normal(0, 20, 3))
        f = rng.uniform(500, 1500)
        K = np.array([[f, skew * rng.uniform(-1, 1), rng.uniform(290, 350)],
                      [0, f * rng.uniform(0.98, 1.02), rng.uniform(210, 270)], [0, 0, 1]])
        dist = distortion * np.array([rng.uniform(-0.4, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(-0.01, 0.01),
                                      rng.uniform(-0.01, 0.01), rng.uniform(-0.1, 0.1)])
        cams.append(Camera(f"cam{i}", (640, 480), K, dist, cv2.Rodrigues(rot)[0].ravel(), -rot @ center))
    return Calibration(tuple(cams))


def visible_points(calib: Calibration, points: np.ndarray) -> np.ndarray:
    """(C, N, 2) projections with NaN where a point falls outside the 640x480 image."""
    p2 = calib.project(points)
    inside = (p2[..., 0] >= 0) & (p2[..., 0] < 640) & (p2[..., 1] >= 0) & (p2[..., 1] < 480)
    p2[~inside] = np.nan
    return p2


def anipose_group(calib: Calibration):
    from aniposelib.cameras import Camera as ACamera
    from aniposelib.cameras import CameraGroup

    return CameraGroup([
        ACamera(name=c.name, size=c.size, matrix=c.matrix, dist=c.dist, rvec=c.rvec, tvec=c.tvec)
        for c in calib.cameras
    ])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_cams=st.integers(2, 6), noise_px=st.floats(0.0, 5.0))
def test_plain_linear_case_agrees_with_aniposelib(seed, n_cams, noise_px):
    """Same 2D points, same calibration: our DLT == aniposelib's CameraGroup.triangulate to 1e-6 mm.

    aniposelib 0.8.0 undistorts with cv2.undistortPoints (5 fixed-point iterations, OpenCV's default)
    and solves the unweighted DLT with jax's SVD (float64). Our undistortion runs the same fixed-point
    iteration; for the comparison it is limited to the same 5 iterations (tol 0). Noise and missing
    views (NaN) make the DLT over-determined and inexact, so this compares the solvers, not the truth.
    """
    rng = np.random.default_rng(seed)
    calib = random_rig(rng, n_cams)
    pts = rng.normal(0, 80, (64, 3))
    p2 = visible_points(calib, pts) + rng.normal(0, noise_px, (n_cams, 64, 2))
    p2[rng.random((n_cams, 64)) < 0.2] = np.nan
    ours = triangulate_linear(RigGeometry.from_calibration(calib), p2, undistort_max_iter=5, undistort_tol=0.0)
    theirs = anipose_group(calib).triangulate(p2.copy(), undistort=True)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ok = np.isfinite(ours).all(axis=1)
    assert ok.sum() > 0 or n_cams == 2
    np.testing.assert_allclose(ours[ok], theirs[ok], rtol=0, atol=1e-6)


def test_undistortion_matches_opencv_with_five_iterations_and_converges_beyond():
    rng = np.random.default_rng(5)
    calib = random_rig(rng, 4)
    rig = RigGeometry.from_calibration(calib)
    pts = rng.normal(0, 80, (300, 3))
    p2 = visible_points(calib, pts)
    ours5 = undistort(rig, p2, max_iter=5, tol=0.0)
    for c, cam in enumerate(calib.cameras):
        np.testing.assert_allclose(ours5[c], cam.undistort(p2[c]), rtol=0, atol=1e-12)
    # converged undistortion is the exact inverse of the projection
    exact = np.stack([(pts @ cam.rotation_matrix.T + cam.tvec) for cam in calib.cameras])
    exact = exact[..., :2] / exact[..., 2:]
    conv = undistort(rig, p2)
    ok = np.isfinite(p2[..., 0])
    assert np.abs(conv - exact)[ok].max() < 1e-12
    assert np.abs(ours5 - exact)[ok].max() > 1e-9  # OpenCV's 5 iterations are not converged there


@pytest.mark.parametrize("n_cams", [2, 3, 4, 8])
def test_noise_free_projections_triangulate_back_exactly(n_cams):
    rng = np.random.default_rng(n_cams)
    calib = random_rig(rng, n_cams, skew=5.0)
    rig = RigGeometry.from_calibration(calib)
    pts = rng.normal(0, 80, (200, 3))
    # project with skew honoured (OpenCV ignores matrix[0, 1])
    p2 = project(rig, pts)
    res = triangulate(rig, p2)
    ok = res.n_cameras >= 2
    assert ok.mean() > 0.9
    assert np.abs(res.points_mm[ok] - pts[ok]).max() < 1e-8
    assert np.nanmax(res.reprojection_error_px) < 1e-8
    np.testing.assert_array_equal(res.n_cameras[ok], np.isfinite(p2[..., 0]).sum(axis=0)[ok])


def test_project_equals_opencv_without_skew():
    rng = np.random.default_rng(11)
    calib = random_rig(rng, 3)
    pts = rng.normal(0, 80, (50, 3))
    np.testing.assert_allclose(project(RigGeometry.from_calibration(calib), pts), calib.project(pts), atol=1e-9)


def test_outlier_view_is_rejected():
    rng = np.random.default_rng(3)
    calib = random_rig(rng, 4, distortion=0.5)
    rig = RigGeometry.from_calibration(calib)
    pts = rng.normal(0, 50, (40, 3))
    p2 = project(rig, pts) + rng.normal(0, 0.3, (4, 40, 2))
    assert np.isfinite(p2).all()
    bad_cam = np.arange(40) % 4
    p2[bad_cam, np.arange(40)] += rng.choice([-1, 1], (40, 2)) * rng.uniform(40, 120, (40, 2))
    plain = triangulate(rig, p2, options=TriangulationOptions(outlier_threshold_px=math.inf))
    robust = triangulate(rig, p2)
    err_plain = np.linalg.norm(plain.points_mm - pts, axis=1)
    err_robust = np.linalg.norm(robust.points_mm - pts, axis=1)
    assert np.median(err_plain) > 5.0
    assert err_robust.max() < 2.0
    assert (robust.n_cameras == 3).all()
    assert not robust.views_used[bad_cam, np.arange(40)].any()
    assert robust.reprojection_error_px.max() < 2.0


def test_likelihood_threshold_weighting_and_score():
    rng = np.random.default_rng(4)
    calib = random_rig(rng, 4, distortion=0.3)
    rig = RigGeometry.from_calibration(calib)
    pts = rng.normal(0, 50, (100, 3))
    p2 = project(rig, pts)
    noisy = p2.copy()
    noisy[0] += rng.normal(0, 6, (100, 2))  # one poor view, which the 2D model rates low
    like = np.full((4, 100), 0.95)
    like[0] = 0.55
    like[1, :10] = 0.1  # below min_likelihood: not used
    no_reject = dict(outlier_threshold_px=math.inf)
    weighted = triangulate(rig, noisy, like, TriangulationOptions(**no_reject))
    unweighted = triangulate(rig, noisy, like, TriangulationOptions(weighted=False, **no_reject))
    e_w = np.linalg.norm(weighted.points_mm - pts, axis=1)
    e_u = np.linalg.norm(unweighted.points_mm - pts, axis=1)
    assert np.median(e_w) < 0.8 * np.median(e_u)
    assert (weighted.n_cameras[:10] == 3).all() and (weighted.n_cameras[10:] == 4).all()
    assert not weighted.views_used[1, :10].any()
    np.testing.assert_allclose(weighted.score, 0.55)  # Anipose: smallest likelihood of the views used
    # fewer than two usable views -> NaN row
    like2 = like.copy()
    like2[1:, 0] = 0.0
    one = triangulate(rig, noisy, like2)
    assert np.isnan(one.points_mm[0]).all() and one.n_cameras[0] == 0 and np.isnan(one.score[0])
    cols = one.to_anipose_columns([f"kp{i}" for i in range(100)])
    assert set(cols) >= {"kp0_x", "kp0_y", "kp0_z", "kp0_error", "kp0_ncams", "kp0_score"}


def test_bad_shapes_are_refused():
    rig = RigGeometry.from_calibration(random_rig(np.random.default_rng(0), 3))
    with pytest.raises(ValueError, match=r"points_px: expected shape \(3, N, 2\)"):
        triangulate(rig, np.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="likelihood"):
        triangulate(rig, np.zeros((3, 5, 2)), np.ones((3, 4)))
