"""Renderer geometry and keypoint visibility of the synthetic rig."""
from __future__ import annotations

import numpy as np
import pytest

from ratrig.skeleton import KEYPOINTS
from synthetic.rat import simulate
from synthetic.render import (
    NoiseOptions,
    Renderer,
    _distort,
    _ellipse_outlines,
    behind_walls,
    body_parts,
    hidden_by_body,
    in_image,
)
from synthetic.rig import CAMERA_NAMES, Corridor, default_rig


@pytest.fixture(scope="module")
def traj():
    return simulate(12.0, 10.0, seed=3)


@pytest.fixture(scope="module")
def clear():
    return Renderer(default_rig(), Corridor(clear_walls=True), seed=0)


@pytest.fixture(scope="module")
def opaque():
    return Renderer(default_rig(), Corridor(clear_walls=False), seed=0)


def test_rig_cameras_are_realistic_and_look_at_the_corridor():
    calib = default_rig()
    assert calib.names == CAMERA_NAMES
    centers = np.array([c.center_mm for c in calib.cameras])
    az = np.degrees(np.arctan2(centers[:, 1], centers[:, 0])) % 360
    np.testing.assert_allclose(np.sort(np.diff(np.sort(az))), [90, 90, 90], atol=1e-6)
    for cam in calib.cameras:
        assert cam.size == (640, 480)
        assert 500 <= cam.matrix[0, 0] <= 700
        assert -0.1 <= cam.dist[0] <= 0.05
        elev = np.degrees(np.arcsin((cam.center_mm[2] - 40) / np.linalg.norm(cam.center_mm - [0, 0, 40])))
        assert 45 <= elev <= 60
        # The central part of the corridor floor is in every image.
        centre = np.array([[x, y, 0.0] for x in (-300, 0, 300) for y in (-30, 30)])
        assert in_image(cam, centre).all(), cam.name


def test_ellipsoid_outline_is_the_exact_projection():
    """Points on an ellipsoid's surface project inside its drawn outline, and its silhouette
    touches the outline."""
    cam = default_rig().cameras[2]
    P = cam.matrix @ cam.extrinsic
    rng = np.random.default_rng(1)
    c = np.array([[30.0, -10.0, 40.0]])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    axes = (q * np.array([40.0, 20.0, 12.0]))[None]
    outline, center = _ellipse_outlines(P, c, axes)
    u = rng.normal(size=(20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pts = c[0] + u @ axes[0].T
    h = pts @ P[:, :3].T + P[:, 3]
    uv = h[:, :2] / h[:, 2:]
    # Ellipse in implicit form from its outline: fit via the eigen decomposition used to draw it.
    d = outline[0] - center[0]
    cov = d.T @ d / len(d) * 2.0  # for points on an ellipse x = L cos, cov = L L^T / 2
    r2 = np.einsum("ni,ij,nj->n", uv - center[0], np.linalg.inv(cov), uv - center[0])
    assert r2.max() <= 1.0 + 1e-6
    assert r2.max() > 0.999  # the silhouette reaches the outline
    # Distortion applied to outlines agrees with OpenCV's projection.
    np.testing.assert_allclose(_distort(cam, uv[:50]), cam.project(pts[:50]), atol=1e-6)


def test_render_shape_type_and_keypoints_on_the_rat(traj, clear):
    calib = clear.calibration
    on_rat = total = 0
    for fi in range(0, len(traj.times_s), 7):
        kp, ex = traj.keypoints_mm[fi], traj.extra_mm[fi]
        for ci in range(4):
            img = clear.render(ci, kp, ex)
            assert img.shape == (480, 640, 3) and img.dtype == np.uint8
            diff = np.abs(img.astype(int) - clear.background(ci).astype(int)).max(axis=2) > 10
            vis = clear.visibility(ci, kp, ex)
            uv = np.round(calib.cameras[ci].project(kp)).astype(int)
            for k in np.flatnonzero(vis):
                total += 1
                on_rat += bool(diff[uv[k, 1], uv[k, 0]])
    assert total > 100 and on_rat == total


def test_opaque_walls_hide_the_floor_from_oblique_cameras(traj, clear, opaque):
    kp, ex = traj.keypoints_mm[40], traj.extra_mm[40]
    for ci in range(4):
        v_clear = clear.visibility(ci, kp, ex)
        v_opaque = opaque.visibility(ci, kp, ex)
        assert not v_opaque.any(), "230 mm opaque walls must hide a rat on the floor from 50 deg cameras"
        assert not np.any(v_opaque & ~v_clear)
    # And the picture agrees: the rat does not show through an opaque wall.
    img = opaque.render(0, kp, ex)
    assert np.array_equal(img, opaque.background(0))
    assert sum(clear.visibility(ci, kp, ex).sum() for ci in range(4)) > 8


def test_behind_walls_geometry():
    corridor = Corridor(clear_walls=False)
    cam_c = np.array([300.0, 500.0, 500.0])  # north of the corridor, above the wall tops
    pts = np.array([
        [300.0, 0.0, 5.0],  # corridor floor, line of sight through the north wall
        [300.0, 0.0, 300.0],  # above the wall: nothing in between
        [300.0, 100.0, 5.0],  # outside the corridor on the camera's side
        [300.0, -100.0, 5.0],  # beyond the corridor: crosses both walls
    ])
    np.testing.assert_array_equal(behind_walls(cam_c, pts, corridor), [True, False, False, True])
    # From straight above, the corridor floor is visible.
    assert not behind_walls(np.array([0.0, 0.0, 1000.0]), pts[:1], corridor)[0]


def test_body_hides_paws_on_the_far_side(traj):
    kp, ex = traj.keypoints_mm[40].copy(), traj.extra_mm[40].copy()
    parts = body_parts(kp, ex)
    belly = parts.centers_mm[parts.names.index("belly")]
    # A camera high on the rat's left sees the left paws but not the right ones behind the body.
    side = kp[KEYPOINTS.index("hind_left_paw")] - kp[KEYPOINTS.index("hind_right_paw")]
    side[2] = 0
    side /= np.linalg.norm(side)
    cam_c = belly + 500 * side + np.array([0.0, 0.0, 600.0])
    hidden = hidden_by_body(cam_c, kp, parts)
    assert not hidden[KEYPOINTS.index("hind_left_paw")]
    assert hidden[KEYPOINTS.index("hind_right_paw")]
    # From straight above, the ears and the tail base are in plain view.
    top = hidden_by_body(belly + np.array([0.0, 0.0, 800.0]), kp, parts)
    assert not top[KEYPOINTS.index("left_ear")] and not top[KEYPOINTS.index("right_ear")]
    assert not top[KEYPOINTS.index("tail_base")]
    # From straight ahead the nose is seen; from straight behind (low) the head hides it.
    fwd = kp[KEYPOINTS.index("nose")] - (kp[KEYPOINTS.index("left_ear")] + kp[KEYPOINTS.index("right_ear")]) / 2
    fwd[2] = 0
    fwd /= np.linalg.norm(fwd)
    nose = kp[KEYPOINTS.index("nose")]
    assert not hidden_by_body(nose + 500 * fwd + [0, 0, 50], kp, parts)[KEYPOINTS.index("nose")]
    assert hidden_by_body(nose - 500 * fwd + [0, 0, 20], kp, parts)[KEYPOINTS.index("nose")]


def test_every_keypoint_is_outside_foreign_parts(traj):
    """A keypoint inside a part that does not own it would be hidden from every side."""
    t = np.linspace(0, traj.times_s[-1], 300)
    kp_all, ex_all = traj.pose_at(t)
    owners = {"nose": ("nose_tip",), "left_ear": ("left_ear",), "right_ear": ("right_ear",),
              "tail_base": ("rump",)}
    for kp, ex in zip(kp_all, ex_all):
        parts = body_parts(kp, ex)
        inv = np.linalg.inv(parts.axes_mm)
        for name, own in owners.items():
            p = kp[KEYPOINTS.index(name)]
            r = np.linalg.norm(np.einsum("pij,pj->pi", inv, p - parts.centers_mm), axis=1)
            foreign = np.array([n not in own for n in parts.names])
            assert r[foreign].min() >= 1.0 - 1e-9, (name, parts.names[int(np.argmin(np.where(foreign, r, 9)))])


def test_noise_options_are_deterministic_per_time(traj):
    noisy = Renderer(default_rig(), Corridor(), seed=2,
                     noise=NoiseOptions(sensor_noise_sigma=4.0, blur_sigma_px=0.8, exposure_jitter=0.1))
    kp, ex = traj.keypoints_mm[5], traj.extra_mm[5]
    a = noisy.render(1, kp, ex, t_s=0.5)
    b = noisy.render(1, kp, ex, t_s=0.5)
    c = noisy.render(1, kp, ex, t_s=0.6)
    clean = Renderer(default_rig(), Corridor(), seed=2).render(1, kp, ex)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    err = np.abs(a.astype(float) - clean.astype(float))
    assert 1.0 < err.mean() < 40.0


def test_bad_camera_names_are_refused(clear, traj):
    with pytest.raises(KeyError, match="cam_xx"):
        clear.render("cam_xx", traj.keypoints_mm[0], traj.extra_mm[0])
    with pytest.raises(IndexError):
        clear.render(7, traj.keypoints_mm[0], traj.extra_mm[0])
    with pytest.raises(ValueError, match="sensor_noise_sigma"):
        NoiseOptions(sensor_noise_sigma=-1)

