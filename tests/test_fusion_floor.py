"""Floor points (fusion.floor): one camera's ray meets the floor at a planted paw's height."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.floor import floor_points
from fusion.process import FusionOptions, FusionPipeline
from fusion.sync import SyncOptions
from fusion.triangulate import RigGeometry, project
from ratrig.messages import Keypoints2DPacket, Pose3DPacket, decode, encode
from ratrig.skeleton import KEYPOINTS, PAWS
from synthetic.rig import default_rig

PERIOD = 33_333_333


@pytest.fixture(scope="module")
def rig() -> RigGeometry:
    return RigGeometry.from_calibration(default_rig())


def test_one_view_floor_point_is_the_true_point_on_the_floor(rig):
    """Points at the planted-paw height seen by exactly one (distorting) camera come back exact."""
    rng = np.random.default_rng(0)
    h = 4.0
    pts = np.column_stack([rng.uniform(-300, 300, 40), rng.uniform(-30, 30, 40), np.full(40, h)])
    px = project(rig, pts)  # (C, N, 2)
    usable = np.zeros((rig.n_cameras, len(pts)), bool)
    usable[rng.integers(0, rig.n_cameras, len(pts)), np.arange(len(pts))] = True
    got = floor_points(rig, px, usable, h)
    np.testing.assert_allclose(got, pts, atol=1e-6)


def test_only_single_view_keypoints_get_a_floor_point(rig):
    pts = np.array([[0.0, 0.0, 4.0], [50.0, 10.0, 4.0], [-80.0, -10.0, 4.0]])
    px = project(rig, pts)
    usable = np.zeros((rig.n_cameras, 3), bool)
    usable[1, 0] = True  # one view: a floor point
    usable[[0, 2], 1] = True  # two views: triangulated elsewhere, no floor point
    # keypoint 2: no view at all
    got = floor_points(rig, px, usable, 4.0)
    assert np.isfinite(got[0]).all() and np.isnan(got[1:]).all()
    # a NaN pixel does not count as a view even where `usable` says so
    px2 = px.copy()
    px2[1, 0] = np.nan
    assert np.isnan(floor_points(rig, px2, usable, 4.0)[0]).all()
    with pytest.raises(ValueError, match="expected matching shapes"):
        floor_points(rig, px, usable[:, :2], 4.0)


def test_a_raised_paw_lands_on_the_ray_behind_it(rig):
    """A paw 20 mm up seen by one camera is placed where its ray meets the floor plane: on the same
    ray, farther from the camera (that is what the events stage must not take for a planted paw)."""
    paw = np.array([[30.0, 5.0, 24.0]])
    px = project(rig, paw)
    usable = np.zeros((rig.n_cameras, 1), bool)
    usable[0, 0] = True
    got = floor_points(rig, px, usable, 4.0)[0]
    rot, t = rig.extrinsic[0, :, :3], rig.extrinsic[0, :, 3]
    centre = -rot.T @ t
    assert got[2] == pytest.approx(4.0)
    along = (paw[0] - centre) / np.linalg.norm(paw[0] - centre)
    assert np.allclose((got - centre) / np.linalg.norm(got - centre), along, atol=1e-9)
    assert np.linalg.norm(got - centre) > np.linalg.norm(paw[0] - centre)
    # a plane above the camera is never reached in front of it
    assert np.isnan(floor_points(rig, px, usable, 5000.0)).all()


def test_pipeline_publishes_floor_points_for_floor_keypoints_seen_once(rig):
    opts = FusionOptions(sync=SyncOptions(PERIOD), floor_keypoints=tuple(PAWS), floor_height_mm=4.0)
    pipe = FusionPipeline(default_rig(), KEYPOINTS, opts)
    truth = np.column_stack([np.linspace(-100, 100, len(KEYPOINTS)), np.zeros(len(KEYPOINTS)), np.full(len(KEYPOINTS), 4.0)])
    px = project(pipe.rig, truth)
    only_one = [KEYPOINTS.index("front_left_paw"), KEYPOINTS.index("nose")]
    poses = []
    for c, cam in enumerate(pipe.rig.camera_names):
        kp = np.column_stack([px[c], np.ones(len(KEYPOINTS))]).astype(np.float32)
        if c > 0:
            kp[only_one, 2] = 0.1  # below min_likelihood: camera 0 alone sees them
        poses += pipe.add(Keypoints2DPacket(cam, 0, 10**9, KEYPOINTS, kp), 10**9 + 10**6)
    (pose,) = poses
    flp, nose = only_one
    assert pose.n_cameras[flp] == 0 and np.isnan(pose.raw_mm[flp]).all()
    np.testing.assert_allclose(pose.floor_mm[flp], truth[flp], atol=1e-3)  # float32 pixels on the wire
    assert np.isnan(pose.floor_mm[nose]).all()  # not a floor keypoint
    triangulated = [i for i in range(len(KEYPOINTS)) if i not in only_one]
    assert np.isnan(pose.floor_mm[triangulated]).all()
    # on the wire and back
    back = decode(encode(pose))
    np.testing.assert_array_equal(back.floor_mm, pose.floor_mm)
    with pytest.raises(ValueError, match="floor_keypoints: unknown keypoints"):
        FusionPipeline(default_rig(), KEYPOINTS, FusionOptions(sync=SyncOptions(PERIOD), floor_keypoints=("tail_tip",)))


def test_pose_without_floor_points_decodes_to_none():
    k = len(KEYPOINTS)
    p = Pose3DPacket(0, 1, KEYPOINTS, ("a",), np.zeros((k, 3)), np.zeros((k, 3)), np.zeros(k), np.zeros(k, np.int8), np.ones(k))
    assert decode(encode(p)).floor_mm is None
