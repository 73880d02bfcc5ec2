"""`ratrig triangulate`: a lab's DeepLabCut / SLEAP 2D files + an Anipose calibration -> a 3D session folder.

Real data: the DANNCE six-camera labels written out as DeepLabCut .h5 files come back as the 3D labels;
DeepLabCut's stereo example (OpenCV's checkerboard pairs, Bouguet's calibration) gives the board's
30 mm squares. The same numbers as the live FusionPipeline; aniposelib / anipose on the same input agree.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fusion.triangulate import TriangulationOptions
from ratrig.camera import Calibration, Camera
from recorder.triangulate import TriangulateError, TriangulateOptions, load_keypoint_map, main, triangulate_files
from synthetic.rig import default_rig
from synthetic.tracks2d import rat_tracks_2d, write_dlc_files

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
FPS = 100.0


def read_pose3d(out: Path):
    from recorder.session import open_session

    return open_session(out, repair=False).pose3d()


# ---------------------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def dannce(tmp_path_factory):
    """The DANNCE labels as a lab would hand them over: calibration.toml + one DLC .h5 per camera."""
    import scipy.io as sio

    from recorder.export import dlc_dataframe, write_dlc_h5
    from test_fusion_dannce import MAT, load_label3d

    root = tmp_path_factory.mktemp("dannce")
    calib, p2, p3 = load_label3d()
    calib.save(root / "calibration.toml")
    frames = sio.loadmat(str(MAT))["labelData"][0, 0][0, 0]["data_frame"].ravel().astype(np.int64)
    kps = [f"landmark_{i:02d}" for i in range(22)]
    (root / "pose-2d").mkdir()
    for c, cam in enumerate(calib.names):
        pts = np.concatenate([p2[c].reshape(81, 22, 2), np.ones((81, 22, 1))], axis=2)
        df = dlc_dataframe(pts, kps, "DLC_resnet50_label3dSep1shuffle1_1")
        df.index = frames  # the labelled video frames: not 0..80
        write_dlc_h5(df, root / "pose-2d" / f"{cam}DLC_resnet50_label3dSep1shuffle1_1.h5")
    return root, calib, p3.reshape(81, 22, 3), frames, kps


@pytest.mark.slow
def test_dannce_labels_come_back_through_dlc_files(dannce, tmp_path, capsys):
    root, calib, p3, frames, kps = dannce
    out = tmp_path / "tri"
    rc = main(["--calibration", str(root / "calibration.toml"), "--pose", str(root / "pose-2d"), "-o", str(out),
               "--fps", "100", "--no-progress", "--nwb"])
    assert rc == 0, capsys.readouterr().err
    pose = read_pose3d(out)
    assert pose.raw_mm.shape == (81, 22, 3)
    # frames matched by the files' frame numbers, kept in the output, never renumbered
    assert (pose.frame_indices["Camera1"] == frames).all()
    labelled = np.isfinite(p3).all(axis=2)
    assert labelled.sum() == 1715 and np.isnan(pose.raw_mm[~labelled]).all()
    err = np.linalg.norm(pose.raw_mm[labelled] - p3[labelled], axis=1)
    assert np.median(err) <= 0.1 and err.max() < 1e-6  # the ceiling; what the skew-aware model gives
    assert (pose.ncams[labelled] == 6).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 81 and summary["reprojection_error_px"]["p95"] < 1e-6
    assert summary["coverage"]["landmark_00"] == 1.0 and summary["coverage"]["landmark_17"] < 0.8
    assert summary["cameras"]["Camera1"]["missing_frames"] == int(frames[-1] - frames[0] + 1 - 81)
    # Anipose pose-3d CSV, DeepLabCut-style 3D h5 and NWB hold the same points
    ani = pd.read_csv(out / "pose-3d.csv")
    assert np.allclose(ani["landmark_05_z"], pose.raw_mm[:, 5, 2], equal_nan=True)
    assert {"landmark_05_error", "landmark_05_ncams", "landmark_05_score", "M_00", "fnum"} <= set(ani.columns)
    dlc = pd.read_hdf(out / "pose3d_dlc.h5", "df_with_missing")
    assert np.allclose(dlc.loc[:, ("ratrig_triangulate", "landmark_03", "y")], pose.raw_mm[:, 3, 1], equal_nan=True)
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(out / "pose3d.nwb"), "r") as io:
        series = io.read().processing["behavior"]["PoseEstimation3D"].pose_estimation_series["landmark_03"]
        assert np.allclose(series.data[:] * 1000.0, pose.raw_mm[:, 3], equal_nan=True)


def _bouguet_camera(name: str, mat: dict, rvec: np.ndarray, tvec: np.ndarray) -> Camera:
    fc, cc = mat["fc"].ravel(), mat["cc"].ravel()
    k = np.array([[fc[0], 0.0, cc[0]], [0.0, fc[1], cc[1]], [0.0, 0.0, 1.0]])
    return Camera(name, (640, 480), k, mat["kc"].ravel().astype(float), np.asarray(rvec, float), np.asarray(tvec, float))


def test_dlc_stereo_example_checkerboard_through_dlc_csv_and_h5(tmp_path):
    """OpenCV's 14 stereo pairs (DeepLabCut's stereo example): board corners as DLC tracks (left .csv,
    right .h5), Bouguet's independent calibration; the triangulated board has its 30 mm squares."""
    import cv2

    from recorder.export import dlc_dataframe, write_dlc_h5
    from test_calibration_stereo import DATA as STEREO
    from test_calibration_stereo import bouguet, bouguet_stereo

    r, t = bouguet_stereo()
    calib = Calibration((_bouguet_camera("left", bouguet("left"), np.zeros(3), np.zeros(3)),
                         _bouguet_camera("right", bouguet("right"), cv2.Rodrigues(r)[0].ravel(), t)))
    calib.save(tmp_path / "calibration.toml")
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    kps = [f"corner_{i:02d}" for i in range(54)]
    px = {}
    for side in ("left", "right"):
        rows = []
        for i in range(1, 15):
            img = cv2.imread(str(STEREO / side / f"{side}{i:02d}.jpg"), cv2.IMREAD_GRAYSCALE)
            ok, corners = cv2.findChessboardCorners(img, (9, 6))
            assert ok
            rows.append(cv2.cornerSubPix(img, corners, (11, 11), (-1, -1), crit).reshape(54, 2))
        px[side] = np.asarray(rows, np.float64)
        df = dlc_dataframe(np.concatenate([px[side], np.ones((14, 54, 1))], axis=2), kps, "DLC_stereo")
        df.index = np.arange(1, 15)  # image numbers
        if side == "left":
            df.to_csv(tmp_path / "left.csv")
        else:
            write_dlc_h5(df, tmp_path / "right.h5")
    out = tmp_path / "out"
    assert main(["--calibration", str(tmp_path / "calibration.toml"), "--pose", f"left={tmp_path / 'left.csv'}",
                 "--pose", f"right={tmp_path / 'right.h5'}", "-o", str(out), "--no-progress", "--no-kalman"]) == 0
    pose = read_pose3d(out)
    x = pose.raw_mm  # (14, 54, 3)
    assert np.isfinite(x).all() and (pose.frame_indices["left"] == np.arange(1, 15)).all()
    # an independent triangulation of the same 2D: OpenCV's undistortion (iterated to convergence) + DLT
    und = [cv2.undistortPointsIter(px[s].reshape(-1, 1, 2), c.matrix, c.dist, None, None,
                                   (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)).reshape(-1, 2)
           for s, c in zip(("left", "right"), calib.cameras)]
    h = cv2.triangulatePoints(calib.cameras[0].extrinsic, calib.cameras[1].extrinsic, und[0].T, und[1].T)
    ref = (h[:3] / h[3]).T.reshape(14, 54, 3)
    assert np.abs(x - ref).max() < 1e-3
    # the board: 9x6 corners, 30 mm apart -- the rigid best fit of the true board to each image's points
    grid = np.concatenate([np.stack(np.meshgrid(np.arange(9), np.arange(6)), -1).reshape(-1, 2) * 30.0,
                           np.zeros((54, 1))], axis=1)
    resid, spacing = [], []
    for img in x:
        a, b = grid - grid.mean(0), img - img.mean(0)
        u, _, vt = np.linalg.svd(a.T @ b)
        rot = (u @ vt).T
        resid.append(np.linalg.norm(b - a @ rot.T, axis=1))
        spacing.append(np.linalg.norm(np.diff(img.reshape(6, 9, 3), axis=1), axis=-1).ravel())
    resid, spacing = np.concatenate(resid), np.concatenate(spacing)
    # measured: residual median 0.35 mm at ~370 mm depth with a 100 mm baseline; square 30.012 mm
    assert np.median(resid) < 0.5 and abs(np.median(spacing) - 30.0) < 0.05
    assert json.loads((out / "summary.json").read_text())["reprojection_error_px"]["p50"] < 0.1


# ---------------------------------------------------------------------------------------------------
# the live pipeline's numbers, aniposelib's numbers


@pytest.fixture(scope="module")
def rat(tmp_path_factory):
    """A 4-camera synthetic walk with noise, dropouts, wrong detections and left/right swaps, as DLC files."""
    root = tmp_path_factory.mktemp("rat")
    calib = default_rig()
    calib.save(root / "calibration.toml")
    truth, pts, names = rat_tracks_2d(calib, 300, FPS, seed=4, noise_px=0.6, drop_rate=0.05,
                                      outlier_rate=0.03, swap_rate=0.03)
    pts = pts.astype(np.float32).astype(np.float64)  # what a Keypoints2DPacket carries
    files = write_dlc_files(pts, calib.names, names, root / "pose", csv=("cam_sw",))
    return root, calib, truth, pts, names, files


def test_same_numbers_as_the_live_fusion_pipeline(rat, tmp_path):
    from fusion.kalman import KalmanOptions
    from fusion.process import FusionOptions, FusionPipeline
    from fusion.sync import SyncOptions
    from ratrig.messages import Keypoints2DPacket

    root, calib, truth, pts, names, files = rat
    out = tmp_path / "out"
    summary = triangulate_files(root / "calibration.toml", files, out, TriangulateOptions(fps=FPS))
    pose = read_pose3d(out)
    period = int(round(1e9 / FPS))
    pipe = FusionPipeline(calib, names, FusionOptions(sync=SyncOptions(frame_period_ns=period),
                                                      triangulation=TriangulationOptions(), kalman=KalmanOptions()))
    live = []
    for i in range(pts.shape[1]):
        for c, cam in enumerate(calib.names):
            live += pipe.add(Keypoints2DPacket(cam, i, i * period, names, pts[c, i].astype(np.float32)), i * period)
    live += pipe.flush(pts.shape[1] * period)
    assert [p.frame_set_index for p in live] == list(range(300))
    raw = np.stack([p.raw_mm for p in live])
    filt = np.stack([p.filtered_mm for p in live])
    assert np.allclose(pose.raw_mm, raw, atol=1e-6, rtol=0, equal_nan=True)  # 12 digits in the CSV
    assert np.allclose(pose.filtered_mm, filt, atol=1e-6, rtol=0, equal_nan=True)
    assert np.array_equal(pose.ncams, np.stack([p.n_cameras for p in live]))
    # the data exercised the outlier search (views dropped) and the filter
    usable = (np.isfinite(pts[..., 0]) & (pts[..., 2] >= 0.5)).sum(axis=0)
    assert (pose.ncams < usable).sum() > 50
    assert np.isfinite(pose.filtered_mm).mean() > 0.95
    err = np.linalg.norm(pose.filtered_mm - truth, axis=-1)
    assert np.nanmedian(err) < 2.0
    assert summary["frames"] == 300 and summary["coverage"]["nose"] > 0.95


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Noise only, every view certain (likelihood 1): no outlier rejection, no weighting differences."""
    root = tmp_path_factory.mktemp("clean")
    calib = default_rig()
    (root / "calib").mkdir()
    calib.save(root / "calib" / "calibration.toml")
    truth, pts, names = rat_tracks_2d(calib, 400, FPS, seed=7, noise_px=0.7, drop_rate=0.1)
    pts[..., 2] = np.where(np.isfinite(pts[..., 0]), 1.0, np.nan)
    files = write_dlc_files(pts, calib.names, names, root / "pose")
    return root, calib, pts, names, files


@pytest.mark.parametrize("opencv_undistort", [pytest.param(False, marks=pytest.mark.slow), True],
                         ids=["converged", "opencv-5-iterations"])
def test_agrees_with_aniposelib_and_anipose(clean, tmp_path, opencv_undistort):
    import warnings

    from aniposelib.cameras import CameraGroup

    root, calib, pts, names, files = clean
    tri = TriangulationOptions(outlier_threshold_px=math.inf,
                               **({"undistort_max_iter": 5, "undistort_tol": 0.0} if opencv_undistort else {}))
    out = tmp_path / "out"
    triangulate_files(root / "calib" / "calibration.toml", files, out, TriangulateOptions(fps=FPS, triangulation=tri, kalman=False))
    ours = read_pose3d(out).raw_mm.reshape(-1, 3)
    cg = CameraGroup.load(str(root / "calib" / "calibration.toml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = cg.triangulate(pts[..., :2].reshape(4, -1, 2).copy())
    both = np.isfinite(ref[:, 0])
    assert np.array_equal(both, np.isfinite(ours[:, 0]))  # the same points triangulated (>= 2 views)
    diff = np.linalg.norm(ours[both] - ref[both], axis=1)
    if opencv_undistort:
        # cv2.undistortPoints stops after 5 iterations; with the same 5, the results are the same
        # (measured: max 5e-10 mm)
        assert diff.max() < 1e-6
    else:
        # ratrig iterates the undistortion to convergence: near the image corners (k1 = -0.1) that
        # moves a point against aniposelib's 5 OpenCV iterations (measured here: median 2e-7 mm, max
        # 0.004 mm; over 2,000 frames of another walk the max was 0.0125 mm)
        assert np.percentile(diff, 99) < 0.01 and np.median(diff) < 1e-4 and diff.max() < 0.05
        from anipose.triangulate import triangulate as anipose_triangulate

        config = {"triangulation": {"score_threshold": 0.5, "optim": False, "ransac": False}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            anipose_triangulate(config, str(root / "calib"), str(root), str(root / "pose"),
                                {c: str(p) for c, p in files.items()}, str(tmp_path / "anipose.csv"))
        ani = pd.read_csv(tmp_path / "anipose.csv")
        a = np.stack([ani[[f"{k}_x", f"{k}_y", f"{k}_z"]].to_numpy() for k in names], axis=1).reshape(-1, 3)
        d2 = np.linalg.norm(ours[both] - a[both], axis=1)
        assert np.percentile(d2, 99) < 0.01 and np.isnan(a[~both]).all()


# ---------------------------------------------------------------------------------------------------
# inputs of every kind


def _sleap_analysis(path: Path, tracks: np.ndarray, scores: np.ndarray | None, nodes, track_names) -> Path:
    """A SLEAP analysis .h5 as `sleap-convert --format analysis` writes it: tracks (n_tracks, 2, n_nodes, n_frames)."""
    import h5py

    with h5py.File(path, "w") as f:
        f["tracks"] = tracks
        f["node_names"] = np.array([n.encode() for n in nodes])
        f["track_names"] = np.array([n.encode() for n in track_names])
        if scores is not None:
            f["point_scores"] = scores
    return path


def test_sleap_multi_animal_dlc_and_uneven_files(rat, tmp_path):
    """SLEAP analysis (two tracks), multi-animal DLC, gaps, different lengths, a keypoint one file lacks."""
    from fusion.triangulate import RigGeometry, triangulate
    from recorder.export import dlc_dataframe, write_dlc_h5

    root, calib, truth, pts, names, _ = rat
    n = 120
    d = tmp_path / "in"
    d.mkdir()
    # cam_ne: SLEAP, the rat is track "rat", a decoy "other" beside it
    xy = pts[0, :n, :, :2]
    tr = np.stack([xy + 500.0, xy]).transpose(0, 3, 2, 1)  # (2, 2, K, n)
    sc = np.stack([np.full((len(names), n), 0.9), np.nan_to_num(pts[0, :n, :, 2]).T])
    files = {"cam_ne": _sleap_analysis(d / "ne.analysis.h5", tr, sc, names, ["other", "rat"])}
    # cam_nw: multi-animal DLC (individuals rat, other)
    cols = pd.MultiIndex.from_product([["DLC_ma"], ["other", "rat"], list(names), ["x", "y", "likelihood"]],
                                      names=["scorer", "individuals", "bodyparts", "coords"])
    other = pts[1, :n].copy()
    other[..., :2] += 300.0
    pd.DataFrame(np.concatenate([other.reshape(n, -1), pts[1, :n].reshape(n, -1)], axis=1), columns=cols).to_hdf(
        d / "nw.h5", key="df_with_missing", format="table", mode="w")
    files["cam_nw"] = d / "nw.h5"
    # cam_sw: only frames 0..89, and frames 40..49 missing; cam_se: no nose column
    keep = np.r_[0:40, 50:90]
    df = dlc_dataframe(pts[2, keep], names, "DLC_x")
    df.index = keep
    write_dlc_h5(df, d / "sw.h5")
    files["cam_sw"] = d / "sw.h5"
    no_nose = [k for k in names if k != "nose"]
    write_dlc_h5(dlc_dataframe(pts[3, :n, 1:], no_nose, "DLC_x"), d / "se.h5")
    files["cam_se"] = d / "se.h5"

    with pytest.raises(TriangulateError, match=r"ne\.analysis\.h5.*\['other', 'rat'\].*--individual"):
        triangulate_files(root / "calibration.toml", files, tmp_path / "o1", TriangulateOptions(fps=FPS))
    with pytest.raises(TriangulateError, match=r"no track 'mouse'.*\['other', 'rat'\]"):
        triangulate_files(root / "calibration.toml", files, tmp_path / "o1", TriangulateOptions(fps=FPS, individual="mouse"))
    assert not (tmp_path / "o1").exists()
    out = tmp_path / "o2"
    opts = TriangulateOptions(fps=FPS, individual="rat", kalman=False,
                              triangulation=TriangulationOptions(outlier_threshold_px=math.inf))
    summary = triangulate_files(root / "calibration.toml", files, out, opts)
    pose = read_pose3d(out)
    assert pose.raw_mm.shape == (n, len(names), 3)
    # each frame set holds the views of its own frame number: compare with the kernel on the same views
    expect = pts[:, :n].copy()
    expect[2, 90:] = np.nan
    expect[2, 40:50] = np.nan
    expect[3, :, 0] = np.nan
    rig = RigGeometry.from_calibration(calib)
    ref = triangulate(rig, expect[..., :2].reshape(4, -1, 2), expect[..., 2].reshape(4, -1), opts.triangulation)
    assert np.allclose(pose.raw_mm.reshape(-1, 3), ref.points_mm, atol=1e-6, equal_nan=True)
    assert (pose.frame_indices["cam_sw"][40:50] == -1).all() and (pose.frame_indices["cam_sw"][90:] == -1).all()
    cams = summary["cameras"]
    assert cams["cam_ne"]["format"] == "SLEAP" and cams["cam_ne"]["individual"] == "rat"
    assert cams["cam_sw"]["missing_frames"] == 10 and cams["cam_sw"]["frame_sets_without_this_camera"] == 40
    assert cams["cam_se"]["keypoints_absent"] == ["nose"]
    assert any("different numbers of rows" in w for w in summary["warnings"])


def test_timestamps_match_frames_by_capture_time(rat, tmp_path):
    """cam_nw lost frames 10..19 and its file simply has fewer rows (0..N-11): only its timestamps place them."""
    from recorder.export import dlc_dataframe, write_dlc_h5

    root, calib, truth, pts, names, _ = rat
    n, period = 100, int(1e9 / FPS)
    d = tmp_path / "in"
    d.mkdir()
    files, stamps = {}, {}
    for c, cam in enumerate(calib.names):
        rows = np.r_[0:10, 20:n] if cam == "cam_nw" else np.arange(n)
        write_dlc_h5(dlc_dataframe(pts[c, rows], names, "DLC_x"), d / f"{cam}.h5")  # index 0..len-1
        files[cam] = d / f"{cam}.h5"
        jitter = (c - 1.5) * 1e-4  # cameras not exactly together: 0.15 ms apart
        if cam == "cam_ne":  # a frame table (ratrig's frames.csv layout): frame_index, capture_ns
            lines = ["frame_index,capture_ns"] + [f"{r},{r * period + 12_500_000_000 + int(jitter * 1e9)}" for r in rows]
            (d / f"{cam}.csv").write_text("\n".join(lines) + "\n")
            stamps[cam] = d / f"{cam}.csv"
        else:  # one line per video frame, seconds
            (d / f"{cam}.txt").write_text("\n".join(f"{(r * period) / 1e9 + 12.5 + jitter:.9f}" for r in rows) + "\n")
            stamps[cam] = d / f"{cam}.txt"
    out = tmp_path / "out"
    summary = triangulate_files(root / "calibration.toml", files, out,
                                TriangulateOptions(fps=FPS, timestamps=stamps, kalman=False))
    pose = read_pose3d(out)
    assert summary["matched_by"] == "timestamps" and len(pose.fnum) == n
    assert (pose.frame_indices["cam_nw"][10:20] == -1).all() and pose.frame_indices["cam_nw"][20] == 10
    err = np.linalg.norm(pose.raw_mm - truth[:n], axis=-1)
    assert np.nanmedian(err) < 2.0  # shifted rows would put cam_nw 10 frames (~tens of mm) off
    # a timestamp file shorter than its video: named, nothing written
    (d / "short.txt").write_text("\n".join(f"{r / FPS:.6f}" for r in range(50)) + "\n")
    with pytest.raises(TriangulateError, match=r"camera cam_sw: its timestamp file has 50 lines, but .*cam_sw\.h5 goes up to frame 99"):
        triangulate_files(root / "calibration.toml", files, tmp_path / "short", TriangulateOptions(
            fps=FPS, timestamps={**stamps, "cam_sw": d / "short.txt"}, kalman=False))
    assert not (tmp_path / "short").exists()
    # by frame number instead, the same files are wrongly aligned from frame 10 on: that is why timestamps exist
    by_index = triangulate_files(root / "calibration.toml", files, tmp_path / "idx", TriangulateOptions(fps=FPS, kalman=False))
    assert any("different numbers of rows" in w for w in by_index["warnings"])


# ---------------------------------------------------------------------------------------------------
# errors: one message naming the file and what was expected; nothing left under the final name


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


def _error_case(case: str, rat, tmp_path: Path) -> tuple[list[str], str]:
    root, calib, truth, pts, names, files = rat
    args = ["--calibration", str(root / "calibration.toml"), "--fps", "100", "--no-progress"]
    files = dict(files)
    if case == "truncated-h5":
        bad = tmp_path / "cam_nw_trunc.h5"
        data = files["cam_nw"].read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        files["cam_nw"] = bad
        expect = "cam_nw_trunc.h5: not a readable HDF5 file"
    elif case == "wrong-keypoints":
        args += ["--keypoints", ",".join(k for k in names if k != "tail_base") + ",tail"]
        expect = f"{files['cam_ne'].name}: keypoint 'tail_base' is not a rig keypoint"
    elif case == "3-camera-calibration":
        Calibration(calib.cameras[:3]).save(tmp_path / "cal3.toml")
        args[1] = str(tmp_path / "cal3.toml")
        expect = f"{files['cam_se'].name}: camera 'cam_se' is not in the calibration"
    elif case == "nan-only-camera":
        from recorder.export import dlc_dataframe, write_dlc_h5

        empty = np.full_like(pts[2], np.nan)
        write_dlc_h5(dlc_dataframe(empty, names, "DLC_x"), tmp_path / "cam_sw_empty.h5")
        files["cam_sw"] = tmp_path / "cam_sw_empty.h5"
        expect = "cam_sw_empty.h5: every keypoint of every frame is NaN; expected 2D positions"
    else:
        raise AssertionError(case)
    for cam, path in files.items():
        args += ["--pose", f"{cam}={path}"]
    return args, expect


@pytest.mark.parametrize("case", ["truncated-h5", "wrong-keypoints", "3-camera-calibration", "nan-only-camera"])
def test_bad_input_gives_one_message_and_no_output(case, rat, tmp_path, capsys):
    args, expect = _error_case(case, rat, tmp_path)
    out = tmp_path / "result"
    assert main(args + ["-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err, err
    assert len(err.splitlines()) == 1 and err.startswith("ratrig triangulate: ")
    assert _leftovers(tmp_path, "result") == []


def test_a_failure_while_writing_leaves_nothing_under_the_final_name(rat, tmp_path, monkeypatch):
    import recorder.export

    root, calib, truth, pts, names, files = rat

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(recorder.export, "anipose_pose3d_table", boom)
    with pytest.raises(OSError, match="disk full"):
        triangulate_files(root / "calibration.toml", files, tmp_path / "result", TriangulateOptions(fps=FPS))
    assert _leftovers(tmp_path, "result") == []
    # an existing result is never touched without overwrite
    (tmp_path / "result").mkdir()
    with pytest.raises(TriangulateError, match="exists"):
        triangulate_files(root / "calibration.toml", files, tmp_path / "result", TriangulateOptions(fps=FPS))


def test_keypoint_map_and_folder_matching(rat, tmp_path):
    root, calib, truth, pts, names, files = rat
    folder = tmp_path / "pose"
    folder.mkdir()
    for cam, p in files.items():
        shutil.copy(p, folder / p.name)
        if p.suffix == ".h5":  # DeepLabCut's save_as_csv: the same table as .csv beside it
            pd.read_hdf(p).to_csv(folder / f"{p.stem}.csv")
    (tmp_path / "map.toml").write_text('[keypoints]\nnose = "snout"\ntail_base = ""\n')
    out = tmp_path / "out"
    rig_kps = ["snout"] + [k for k in names if k not in ("nose", "tail_base")]
    assert main(["--calibration", str(root / "calibration.toml"), "--pose", str(folder), "-o", str(out), "--fps", "100",
                 "--keypoints", ",".join(rig_kps), "--keypoint-map", str(tmp_path / "map.toml"), "--no-progress"]) == 0
    meta = json.loads((out / "session.json").read_text())
    assert meta["keypoints"] == rig_kps and meta["cameras"] == list(calib.names)
    assert not any("keypoint" in w for w in meta["warnings"]), meta["warnings"]
    # a rig keypoint no file has, a map entry no file uses: said, not fatal
    (tmp_path / "map2.toml").write_text('[keypoints]\nnose = "snout"\ntail_base = ""\nsnoot = "snout"\n')
    s2 = triangulate_files(root / "calibration.toml", folder, tmp_path / "o2", TriangulateOptions(
        fps=FPS, keypoints=tuple(rig_kps) + ("tail_tip",), keypoint_map=load_keypoint_map(tmp_path / "map2.toml")))
    assert "keypoint map: ['snoot'] are in none of the pose files" in s2["warnings"]
    assert "rig keypoints ['tail_tip'] are in none of the pose files (NaN throughout)" in s2["warnings"]
    assert s2["coverage"]["tail_tip"] == 0.0
    pose = read_pose3d(out)
    assert np.nanmedian(np.linalg.norm(pose.raw_mm[:, 0] - truth[:, 0], axis=-1)) < 2.0  # snout = the nose
    assert {Path(p).suffix for p in s2["inputs"]["poses"].values()} == {".h5", ".csv"}  # cam_sw is a .csv only
    # two different tables for one camera: named, not guessed
    shutil.copy(files["cam_ne"], folder / "cam_ne_filtered.h5")
    with pytest.raises(TriangulateError, match=r"camera 'cam_ne' matches two files"):
        triangulate_files(root / "calibration.toml", folder, tmp_path / "o4", TriangulateOptions(fps=FPS))
    (folder / "cam_ne_filtered.h5").unlink()
    # a file that names no calibration camera
    shutil.copy(files["cam_ne"], folder / "cam_top_DLC.h5")
    with pytest.raises(TriangulateError, match=r"cam_top_DLC\.h5: the file name contains none of the calibration's cameras"):
        triangulate_files(root / "calibration.toml", folder, tmp_path / "o3", TriangulateOptions(fps=FPS))


# ---------------------------------------------------------------------------------------------------
# the output is a session: analysis and the viewer open it


@pytest.mark.slow
def test_output_opens_in_analyze_and_viewer_replay(rat, tmp_path):
    from analysis.cli import main as analyze_main
    from analysis.loader import load_session
    from viewer.model import ViewState
    from viewer.replay import ReplaySource

    root, calib, truth, pts, names, files = rat
    out = tmp_path / "rat07"
    triangulate_files(root / "calibration.toml", files, out, TriangulateOptions(fps=FPS))
    pose = read_pose3d(out)
    ps = load_session(out)
    assert ps.keypoint_names == tuple(names) and len(ps.times_s) == 300
    assert np.allclose(ps.times_s[-1], 2.99) and np.allclose(ps.keypoints_mm, pose.filtered_mm, equal_nan=True)
    assert analyze_main([str(out), "--test-type", "corridor", "--out", str(tmp_path / "analysis")]) == 0
    report = json.loads((tmp_path / "analysis" / "rat07" / "session.json").read_text())
    assert report["test_type"] == "corridor"
    src = ReplaySource(out, frames=False)
    state = ViewState()
    src.feed(state, src.end_ns)
    assert state.pose is not None and state.pose.frame_set_index == 299
    assert np.allclose(state.pose.filtered_mm, pose.filtered_mm[-1], equal_nan=True)
    assert set(src.pose2d) == set(calib.names)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (Debian package xvfb)")
def test_viewer_renders_the_triangulated_session(rat, tmp_path):
    from ratrig.skeleton import KEYPOINTS
    from viewer.model import keypoint_colors
    from viewer_stream import colour_near, gl_project, visible

    root, calib, truth, pts, names, files = rat
    out = tmp_path / "session"
    triangulate_files(root / "calibration.toml", files, out, TriangulateOptions(fps=FPS))
    last = read_pose3d(out).filtered_mm[-1]
    png, layout_path = tmp_path / "shot.png", tmp_path / "layout.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", sys.executable, "-m", "ratrig", "view", "--replay",
           str(out), "--screenshot", str(png), "--duration", "4", "--layout-json", str(layout_path)]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    import cv2

    img = cv2.imread(str(png))[:, :, ::-1]
    px, depth = gl_project(last, json.loads(layout_path.read_text()))
    colours = keypoint_colors(KEYPOINTS)
    checked = visible(px, depth, 9.0)
    assert len(checked) >= 4
    missing = [KEYPOINTS[i] for i in checked if not colour_near(img, px[i], colours[i])]
    assert not missing, missing


# ---------------------------------------------------------------------------------------------------
# rig config, 2D filters, reader details


def test_rig_config_gives_keypoints_fps_and_the_fusion_settings(rat, tmp_path):
    """--config: the rig's keypoints, frame rate and [fusion] settings (per-keypoint motion models),
    with the numbers FusionPipeline gives under that config."""
    import dataclasses

    from fusion.process import FusionPipeline, options_from_config
    from ratrig.config import load_config
    from ratrig.messages import Keypoints2DPacket

    root, calib, truth, pts, names, files = rat
    cfg = REPO / "configs" / "synthetic.toml"
    rig = load_config(cfg)
    out = tmp_path / "out"
    assert main(["--calibration", str(root / "calibration.toml"), *[f"--pose={c}={p}" for c, p in files.items()],
                 "-o", str(out), "--config", str(cfg), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fps"] == 30.0 and summary["keypoints"] == list(rig.keypoints)
    assert (out / "rig.toml").read_text() == cfg.read_text()
    assert summary["options"]["kalman"]["accel_noise_mm_s2"] == rig.fusion.process_noise
    options = dataclasses.replace(options_from_config(rig), predict_ahead_ms=0.0)
    pipe = FusionPipeline(calib, rig.keypoints, options)
    period = int(round(1e9 / 30.0))
    live = []
    for i in range(pts.shape[1]):
        for c, cam in enumerate(calib.names):
            live += pipe.add(Keypoints2DPacket(cam, i, i * period, names, pts[c, i].astype(np.float32)), i * period)
    live += pipe.flush(pts.shape[1] * period)
    pose = read_pose3d(out)
    assert len(live) == len(pose.fnum) == 300
    assert np.allclose(pose.filtered_mm, np.stack([p.filtered_mm for p in live]), atol=1e-6, rtol=0, equal_nan=True)
    # the head's constant-velocity model really is in use: without it the filter gives other numbers
    plain = dataclasses.replace(options, keypoint_motion={})
    pipe2 = FusionPipeline(calib, rig.keypoints, plain)
    other = []
    for i in range(pts.shape[1]):
        for c, cam in enumerate(calib.names):
            other += pipe2.add(Keypoints2DPacket(cam, i, i * period, names, pts[c, i].astype(np.float32)), i * period)
    other += pipe2.flush(pts.shape[1] * period)
    assert not np.allclose(pose.filtered_mm[:, 0], np.stack([p.filtered_mm for p in other])[:, 0], atol=1e-3, equal_nan=True)


def test_median_filter_of_reprocess_removes_2d_jumps(rat, tmp_path):
    """--filter median (recorder.filters, as `ratrig reprocess`): with the outlier search off, the 2D
    filter alone removes most wrong detections."""
    root, calib, truth, pts, names, files = rat
    no_search = TriangulationOptions(outlier_threshold_px=math.inf)
    errs = {}
    for filt in ("none", "median"):
        out = tmp_path / filt
        triangulate_files(root / "calibration.toml", files, out,
                          TriangulateOptions(fps=FPS, filter_2d=filt, kalman=False, triangulation=no_search))
        e = np.linalg.norm(read_pose3d(out).raw_mm - truth, axis=-1)
        errs[filt] = np.nanpercentile(e, 95)
        if filt == "median":
            p2 = pd.read_csv(out / "pose2d" / "cam_ne.csv")  # the 2D actually used is what the folder holds
            assert p2["nose_x"].isna().sum() > np.isnan(pts[0, :, 0, 0]).sum()
    assert errs["median"] < 0.5 * errs["none"], errs


def test_reader_details(tmp_path):
    """DLC CSV multi-animal, a labelled-data index (image paths), SLEAP labels without scores, foreign files."""
    from recorder.export import dlc_dataframe
    from recorder.posefiles import PoseFileError, read_pose_file, read_timestamps

    rng = np.random.default_rng(0)
    cols = pd.MultiIndex.from_product([["sc"], ["r1", "r2"], ["a", "b"], ["x", "y", "likelihood"]],
                                      names=["scorer", "individuals", "bodyparts", "coords"])
    ma = pd.DataFrame(rng.random((6, 12)), columns=cols, index=np.arange(100, 106))
    ma.to_csv(tmp_path / "ma.csv")
    t = read_pose_file(tmp_path / "ma.csv", individual="r2")
    assert t.keypoints == ("a", "b") and (t.frame_index == np.arange(100, 106)).all()
    assert np.allclose(t.points.reshape(6, -1), ma.xs("r2", axis=1, level="individuals").to_numpy())
    df = dlc_dataframe(rng.random((3, 2, 3)), ["a", "b"], "sc")
    df.index = ["labeled-data/v/img007.png", "labeled-data/v/img012.png", "labeled-data/v/img013.png"]
    df.to_csv(tmp_path / "labels.csv")
    t = read_pose_file(tmp_path / "labels.csv")
    assert (t.frame_index == [0, 1, 2]).all() and "position" in t.index_note
    tracks = rng.random((1, 2, 2, 5)) * 100
    tracks[0, :, 1, 3] = np.nan
    _sleap_analysis(tmp_path / "user.analysis.h5", tracks, None, ["a", "b"], [])
    t = read_pose_file(tmp_path / "user.analysis.h5")
    assert t.source_software == "SLEAP" and t.points.shape == (5, 2, 3)
    assert np.isnan(t.points[3, 1]).all() and (t.points[[0, 1, 2, 4], 1, 2] == 1.0).all()
    assert np.allclose(t.points[:, 0, :2], tracks[0, :, 0, :].T)
    scores = np.full((1, 2, 5), 0.7)
    scores[0, :, 2] = np.nan  # frame 2 was labelled by hand, the others predicted
    _sleap_analysis(tmp_path / "mixed.analysis.h5", tracks, scores, ["a", "b"], ["rat"])
    t = read_pose_file(tmp_path / "mixed.analysis.h5")
    assert (t.points[2, :, 2] == 1.0).all() and np.allclose(t.points[[0, 1, 4], :, 2], 0.7) and t.individual == "rat"
    (tmp_path / "notes.csv").write_text("hello,world\n1,2\n")
    with pytest.raises(PoseFileError, match=r"notes\.csv: expected DeepLabCut CSV header rows"):
        read_pose_file(tmp_path / "notes.csv")
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(PoseFileError, match=r"other\.h5: .*DeepLabCut"):
        read_pose_file(tmp_path / "other.h5")
    (tmp_path / "ts.csv").write_text("frame_index,capture_ns\n0,100\n1,90\n")
    with pytest.raises(PoseFileError, match=r"ts\.csv: timestamps must increase \(data row 2 \(line 3\)\)"):
        read_timestamps(tmp_path / "ts.csv")


def test_frames_one_camera_alone_saw_are_skipped_by_the_filter_as_live(rat, tmp_path):
    """Frames 100..109 exist only in cam_ne's file, frames 200..204 in cam_ne's and cam_nw's: the live
    synchroniser emits no frame set of one view, so the filter skips those moments offline too."""
    from fusion.kalman import KalmanOptions
    from fusion.process import FusionOptions, FusionPipeline
    from fusion.sync import SyncOptions
    from ratrig.messages import Keypoints2DPacket
    from recorder.export import dlc_dataframe, write_dlc_h5

    root, calib, truth, pts, names, _ = rat
    has = np.ones((4, 300), bool)
    has[1:, 100:110] = False
    has[2:, 200:205] = False
    files = {}
    for c, cam in enumerate(calib.names):
        rows = np.flatnonzero(has[c])
        df = dlc_dataframe(pts[c, rows], names, "DLC_x")
        df.index = rows
        write_dlc_h5(df, tmp_path / f"{cam}.h5")
        files[cam] = tmp_path / f"{cam}.h5"
    out = tmp_path / "out"
    triangulate_files(root / "calibration.toml", files, out, TriangulateOptions(fps=FPS))
    pose = read_pose3d(out)
    period = int(round(1e9 / FPS))
    pipe = FusionPipeline(calib, names, FusionOptions(sync=SyncOptions(frame_period_ns=period),
                                                      triangulation=TriangulationOptions(), kalman=KalmanOptions()))
    live = []
    for i in range(300):
        # cam_ne last: a camera coming back after 10 silent frames is then waited for (the live
        # synchroniser otherwise releases cam_ne's view alone, and drops it, before the others arrive)
        for c in (1, 2, 3, 0):
            cam = calib.names[c]
            if has[c, i]:
                live += pipe.add(Keypoints2DPacket(cam, i, i * period, names, pts[c, i].astype(np.float32)), i * period)
        live += pipe.poll(i * period + period // 2)
    live += pipe.flush(300 * period)
    got = {p.frame_indices["cam_ne"]: p for p in live}
    alone = np.arange(100, 110)
    assert not set(alone) & set(got), sorted(set(range(300)) - set(got))
    assert len(got) == 290, sorted(set(range(300)) - set(got) - set(alone))
    assert np.isnan(pose.filtered_mm[alone]).all() and np.isnan(pose.raw_mm[alone]).all()
    rest = np.array(sorted(got))
    assert np.allclose(pose.filtered_mm[rest], np.stack([got[i].filtered_mm for i in rest]), atol=1e-6, equal_nan=True)
    assert np.isfinite(pose.raw_mm[200:205]).any()  # two views still triangulate


def test_export_of_a_triangulated_session(rat, tmp_path):
    """`ratrig export OUT --to dlc|anipose` on a folder without video: the 2D comes back as it went in."""
    from recorder.export import main as export_main
    from recorder.posefiles import read_pose_file

    root, calib, truth, pts, names, files = rat
    out = tmp_path / "tri"
    triangulate_files(root / "calibration.toml", files, out, TriangulateOptions(fps=FPS))
    assert export_main([str(out), "--to", "dlc", str(tmp_path / "dlc")]) == 0
    back = read_pose_file(next((tmp_path / "dlc").glob("cam_nw*.h5")))
    seen = np.isfinite(pts[1, :, :, 0])
    assert np.allclose(back.points[..., :2][seen], pts[1, ..., :2][seen], atol=1e-6)
    assert export_main([str(out), "--to", "anipose", str(tmp_path / "ani"), "--no-videos"]) == 0
    ani = pd.read_csv(tmp_path / "ani" / "tri" / "pose-3d" / "trial.csv")
    assert np.allclose(ani["nose_x"], read_pose3d(out).raw_mm[:, 0, 0], atol=1e-6, equal_nan=True)
