"""End to end on the synthetic rig: render ChArUco videos from the 4 true cameras, calibrate, compare.

One rendering and one `ratrig calibrate` run are shared by the tests of this module (about a minute
on 2 cores); the bounds are the issue's: reprojection < 0.5 px, focal within 1 %, centres within
5 mm, orientations within 0.3 degrees, triangulated rat keypoints within 1 mm (median).
"""
from __future__ import annotations

import numpy as np
import pytest

from calibration import cli_calibrate
from calibration.board import load_board
from calibration.detect import check_sources, detect_all, parse_sources
from calibration.solve import SolveOptions, calibrate_detections, shared_frames, to_camera_group
from calibration.world import align_to, rotation_angle_deg
from ratrig.camera import load_calibration
from ratrig.tomlio import read_toml
from synthetic import charuco
from synthetic.rig import CAMERA_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_calibration")
    assert charuco.main([str(out), "--frames", "40", "--seed", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def calibrated(synth_dir):
    out = synth_dir / "result" / "calibration.toml"
    videos = [str(synth_dir / f"{n}.avi") for n in CAMERA_NAMES]
    rc = cli_calibrate.main([*videos, "--board", str(synth_dir / "board.toml"), "-o", str(out),
                             "--floor-frame", "0", "--no-progress"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def detections(synth_dir):
    spec = load_board(synth_dir / "board.toml")
    sources = parse_sources([str(synth_dir / f"{n}.avi") for n in CAMERA_NAMES])
    n, _ = check_sources(sources)
    return spec, detect_all(sources, spec, n, workers=2, progress=False)


def test_synth_writes_videos_board_and_truth(synth_dir):
    true = load_calibration(synth_dir / "calibration.toml", CAMERA_NAMES)
    assert true.names == CAMERA_NAMES
    spec = load_board(synth_dir / "board.toml")
    assert (spec.squares_x, spec.squares_y, spec.marker_bits, spec.dict_size) == (10, 7, 4, 50)
    assert len(read_toml(synth_dir / "board_poses.toml")["frames"]) == 40
    n, sizes = check_sources(parse_sources([str(synth_dir / f"{c}.avi") for c in CAMERA_NAMES]))
    assert n == 40 and set(sizes.values()) == {(640, 480)}


def test_recovers_the_true_cameras_in_the_floor_frame(synth_dir, calibrated):
    true = load_calibration(synth_dir / "calibration.toml")
    rec = load_calibration(calibrated, true.names)
    # --floor-frame 0 (board flat at the origin) fixes the world frame: compare directly, no alignment.
    for cam in rec.cameras:
        t = true.camera(cam.name)
        assert abs(cam.matrix[0, 0] / t.matrix[0, 0] - 1) < 0.01, cam.name
        assert np.linalg.norm(cam.center_mm - t.center_mm) < 5.0, cam.name
        assert rotation_angle_deg(cam.rotation_matrix, t.rotation_matrix) < 0.3, cam.name
    report = read_toml(calibrated.with_name("calibration_report.toml"))
    assert report["good"] is True
    assert report["error_median_px"] < 0.5
    for c in report["cameras"]:
        assert 0 < c["error_mean_px"] < 0.5, c
        assert c["frames_used"] >= 10 and c["corners_used"] > 200
    assert len(report["pairs"]) == 6
    png = calibrated.with_name("calibration_report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_rat_keypoints_triangulate_within_1mm(synth_dir, calibrated):
    from synthetic.rat import simulate

    true = load_calibration(synth_dir / "calibration.toml")
    rec = load_calibration(calibrated, true.names)
    traj = simulate(2.0, 30.0, seed=5)
    pts = np.asarray(traj.keypoints_mm, np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    assert len(pts) > 100
    p2d = true.project(pts)  # (C, N, 2) where the true cameras see them
    tri = to_camera_group(rec).triangulate(p2d)
    err = np.linalg.norm(tri - pts, axis=1)
    assert np.median(err) < 1.0, np.median(err)
    assert np.percentile(err, 95) < 3.0


def test_same_detections_give_the_same_calibration(detections):
    spec, dets = detections
    opts = SolveOptions(max_frame_sets=25)
    a = calibrate_detections(dets, spec, opts).calibration
    b = calibrate_detections(dets, spec, opts).calibration
    for ca, cb in zip(a.cameras, b.cameras):
        np.testing.assert_array_equal(ca.matrix, cb.matrix)
        np.testing.assert_array_equal(ca.dist, cb.dist)
        np.testing.assert_array_equal(ca.rvec, cb.rvec)
        np.testing.assert_array_equal(ca.tvec, cb.tvec)


def test_opposed_cameras_that_never_share_a_view_still_calibrate(synth_dir, detections):
    """cam_ne and cam_sw face each other across the corridor; remove every frame they share."""
    from dataclasses import replace

    spec, dets = detections
    by_name = {d.name: d for d in dets}
    both = sorted({r["framenum"] for r in by_name["cam_ne"].rows} & {r["framenum"] for r in by_name["cam_sw"].rows})
    assert both, "the rendering should have frames both cameras see, or this test proves nothing"
    drop = {"cam_ne": set(both[0::2]), "cam_sw": set(both[1::2])}  # each loses half of the shared frames
    dets = [replace(d, rows=[r for r in d.rows if r["framenum"] not in drop.get(d.name, set())]) for d in dets]
    assert shared_frames(dets)[("cam_ne", "cam_sw")] == 0
    assert min(d.n_board_frames for d in dets) >= 10
    result = calibrate_detections(dets, spec, SolveOptions())
    true = load_calibration(synth_dir / "calibration.toml")
    rec = align_to(result.calibration, true)
    for cam in rec.cameras:
        t = true.camera(cam.name)
        assert np.linalg.norm(cam.center_mm - t.center_mm) < 5.0, cam.name
        assert rotation_angle_deg(cam.rotation_matrix, t.rotation_matrix) < 0.3, cam.name


def test_set_floor_cli_puts_a_camera_frame_calibration_on_the_floor(synth_dir, tmp_path):
    from calibration import cli_set_floor
    from calibration.world import transform_calibration

    true = load_calibration(synth_dir / "calibration.toml")
    cam0 = true.cameras[0]
    # The same rig expressed in camera 0's frame, as a fresh bundle adjustment returns it.
    in_cam0 = transform_calibration(true, cam0.rotation_matrix.T, cam0.center_mm)
    in_cam0.save(tmp_path / "cam0.toml")
    videos = [str(synth_dir / f"{n}.avi") for n in CAMERA_NAMES]
    out = tmp_path / "floor.toml"
    assert cli_set_floor.main([str(tmp_path / "cam0.toml"), *videos, "--board", str(synth_dir / "board.toml"),
                               "--frame", "0", "-o", str(out)]) == 0
    floor = load_calibration(out, true.names)
    for cam in floor.cameras:
        t = true.camera(cam.name)
        assert np.linalg.norm(cam.center_mm - t.center_mm) < 3.0, cam.name
        assert rotation_angle_deg(cam.rotation_matrix, t.rotation_matrix) < 0.3, cam.name
    assert cli_set_floor.main([str(tmp_path / "cam0.toml"), *videos, "--board", str(synth_dir / "board.toml"),
                               "--frame", "99", "-o", str(tmp_path / "x.toml")]) == 2
    assert not (tmp_path / "x.toml").exists()


def test_cameras_that_no_chain_of_shared_views_links_are_refused(detections):
    from dataclasses import replace

    from calibration.solve import CalibrationFailed

    spec, dets = detections
    others = set().union(*({r["framenum"] for r in d.rows} for d in dets if d.name != "cam_ne"))
    ne = next(d for d in dets if d.name == "cam_ne")
    keep = [r for r in ne.rows if r["framenum"] not in others]
    # Give cam_ne views of its own only: its frames no other camera saw, padded to pass the count check.
    dets = [replace(d, rows=keep + [dict(r, framenum=10_000 + i) for i, r in enumerate(d.rows)]) if d.name == "cam_ne"
            else d for d in dets]
    with pytest.raises(CalibrationFailed) as e:
        calibrate_detections(dets, spec, SolveOptions())
    msg = str(e.value)
    assert "never saw the board at the same time" in msg and "cam_ne | cam_nw, cam_sw, cam_se" in msg
    assert "Record again" in msg
