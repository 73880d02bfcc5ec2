"""Renderer variants (synthetic/variants.py): deterministic, they change what they say, and moved cameras
re-calibrated with `ratrig calibrate` land on their true poses."""
from __future__ import annotations

import numpy as np
import pytest

from synthetic.rat import simulate
from synthetic.render import NoiseOptions, Renderer, body_parts, scaled_body_parts
from synthetic.rig import default_rig
from synthetic.variants import (
    HELD_OUT_VARIANTS,
    TRAIN_VARIANTS,
    appearance_of,
    build_variant,
    camera_pose_error,
    moved_rig,
    recalibrate,
    scale_trajectory,
    variant_spec,
)


def test_variants_are_deterministic_by_seed_and_named():
    one_cam = default_rig().subset(["cam_ne"])
    spec = variant_spec("clutter")
    a, b, c = appearance_of(spec, "clutter", 3), appearance_of(spec, "clutter", 3), appearance_of(spec, "clutter", 4)
    assert a.clutter == b.clutter and a.clutter != c.clutter and len(a.clutter) == spec.n_clutter
    bg_a = Renderer(one_cam, seed=3, appearance=a).background(0)
    assert np.array_equal(bg_a, Renderer(one_cam, seed=3, appearance=b).background(0))
    assert (np.abs(bg_a.astype(int) - Renderer(one_cam, seed=3).background(0)).sum(axis=2) > 30).sum() > 200
    assert not set(TRAIN_VARIANTS) & set(HELD_OUT_VARIANTS) and "moved" in HELD_OUT_VARIANTS
    with pytest.raises(KeyError, match="unknown renderer variant 'purple'"):
        build_variant("purple", 1)


def test_size_variant_scales_keypoints_and_solids_keeping_paws_on_the_floor():
    base = simulate(3.0, 30.0, 5)
    big = scale_trajectory(base, 1.18)
    k = 40
    kp, ex = base.keypoints_mm[k], base.extra_mm[k]
    bkp, bex = big.keypoints_mm[k], big.extra_mm[k]
    # nose to tail base grows by the scale; the lowest paw's height grows by it too (floor stays z = 0)
    d = np.linalg.norm(kp[0] - kp[3])
    assert abs(np.linalg.norm(bkp[0] - bkp[3]) - 1.18 * d) < 1e-6
    assert abs(bkp[4:, 2].min() - 1.18 * kp[4:, 2].min()) < 1e-6
    # the continuous motion gives the same scaled pose as the sampled arrays
    pk, _ = big.pose_at(base.times_s[k])
    assert np.allclose(pk, bkp, atol=1e-6)
    small_parts = body_parts(kp, ex)
    big_parts = scaled_body_parts(bkp, bex, 1.18)
    assert np.allclose(np.linalg.norm(big_parts.axes_mm, axis=1), 1.18 * np.linalg.norm(small_parts.axes_mm, axis=1))


def test_coat_and_light_change_the_rat_and_the_image_as_named():
    one_cam = default_rig().subset(["cam_ne"])
    traj = simulate(3.0, 30.0, 5)
    k = int(np.argmin(np.abs(traj.keypoints_mm[:, :, 0].mean(axis=1))))  # the rat near the corridor centre
    kp, ex = traj.keypoints_mm[k], traj.extra_mm[k]
    img = {}
    for v in ("default", "brown", "dim"):
        spec = variant_spec(v)
        ren = Renderer(one_cam, seed=5, noise=NoiseOptions(sensor_noise_sigma=spec.noise_std),
                       appearance=appearance_of(spec, v, 5))
        img[v] = ren.render(0, kp, ex, t_s=1.0).astype(float)
    bg = Renderer(one_cam, seed=5).background(0).astype(float)
    rat = np.abs(img["default"] - bg).sum(axis=2) > 60
    assert rat.sum() > 500  # the rat is in view, or the comparisons below prove nothing
    # brown coat: the rat's pixels get darker and redder than the white rat's, the rest stays the same
    brown_rat, white_rat = img["brown"][rat], img["default"][rat]
    assert brown_rat.mean() < white_rat.mean() - 40
    assert (brown_rat[:, 2] - brown_rat[:, 0]).mean() > (white_rat[:, 2] - white_rat[:, 0]).mean() + 20
    assert np.abs(img["brown"][~rat] - img["default"][~rat]).mean() < 4  # noise only
    # dim light: the whole image at about the variant's gain
    ratio = img["dim"].mean() / img["default"].mean()
    assert abs(ratio - variant_spec("dim").light_gain) < 0.08


@pytest.mark.slow
def test_moved_cameras_recalibrated_with_ratrig_calibrate_land_on_their_true_poses(tmp_path):
    true = default_rig().subset(["cam_ne", "cam_nw"])
    moved = moved_rig(true, 10.0, 50.0, np.random.default_rng(11))
    for before, after in zip(true.cameras, moved.cameras):
        ang, dist = camera_pose_error(before, after)
        assert 5.0 - 1e-6 <= ang <= 10.0 + 1e-6 and 25.0 - 1e-6 <= dist <= 50.0 + 1e-6
    rec = recalibrate(moved, tmp_path, seed=2, frames=30)
    assert (tmp_path / "calibration_report.toml").is_file()  # the CLI wrote its report: it really ran
    for cam in moved.cameras:
        ang, dist = camera_pose_error(cam, rec.camera(cam.name))
        assert ang < 0.5 and dist < 3.0, (cam.name, ang, dist)
        assert abs(rec.camera(cam.name).matrix[0, 0] - cam.matrix[0, 0]) < 6.0
