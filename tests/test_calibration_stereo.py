"""Real data: the OpenCV/DeepLabCut 9x6 checkerboard stereo pair, against the Bouguet toolbox's results.

tests/data/dlc_stereo_example/ (LGPL-3.0, from DeepLabCut's examples/stereo_example.zip; see its README):
14 left/right image pairs and the Bouguet toolbox's independent calibration of each camera
(Calib_Results_left.mat / _right.mat). The stereo pose is derived from Bouguet's per-image extrinsics
(median over the 14 pairs). Tolerances: focal length 1 %, baseline 1 mm (1 %), relative rotation 0.3 deg.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from calibration import cli_calibrate
from calibration.world import relative_pose, rotation_angle_deg
from ratrig.camera import load_calibration
from ratrig.tomlio import read_toml

DATA = Path(__file__).parent / "data" / "dlc_stereo_example"


def bouguet(side: str) -> dict:
    return scipy.io.loadmat(str(DATA / f"Calib_Results_{side}.mat"))


def bouguet_stereo() -> tuple[np.ndarray, np.ndarray]:
    """(R, t): X_right = R X_left + t, mm, median over the image pairs of Bouguet's per-image extrinsics."""
    left, right = bouguet("left"), bouguet("right")
    rs, ts = [], []
    for k in range(1, int(left["n_ima"].ravel()[0]) + 1):
        rl = cv2.Rodrigues(left[f"omc_{k}"].astype(np.float64))[0]
        rr = cv2.Rodrigues(right[f"omc_{k}"].astype(np.float64))[0]
        tl, tr = left[f"Tc_{k}"].ravel(), right[f"Tc_{k}"].ravel()
        r = rr @ rl.T
        rs.append(cv2.Rodrigues(r)[0].ravel())
        ts.append(tr - r @ tl)
    return cv2.Rodrigues(np.median(rs, axis=0))[0], np.median(ts, axis=0)


@pytest.fixture(scope="module")
def stereo_calibration(tmp_path_factory):
    out = tmp_path_factory.mktemp("stereo") / "calibration.toml"
    rc = cli_calibrate.main([f"left={DATA / 'left'}", f"right={DATA / 'right'}", "--board", str(DATA / "board.toml"),
                             "-o", str(out), "--no-progress", "--min-frames", "10"])
    assert rc == 0
    return load_calibration(out, ["left", "right"]), read_toml(out.with_name("calibration_report.toml"))


def test_focal_lengths_match_bouguet(stereo_calibration):
    calib, report = stereo_calibration
    for cam in calib.cameras:
        fc = bouguet(cam.name)["fc"].ravel()
        assert abs(cam.matrix[0, 0] / fc.mean() - 1) < 0.01, (cam.name, cam.matrix[0, 0], fc)
    assert report["good"] and report["error_median_px"] < 0.3


def test_stereo_baseline_and_rotation_match_bouguet(stereo_calibration):
    calib, _ = stereo_calibration
    r, t = relative_pose(calib.camera("left"), calib.camera("right"))
    r_ref, t_ref = bouguet_stereo()
    assert abs(np.linalg.norm(t_ref) - 99.9) < 0.5  # the reference itself, as the data README states
    assert abs(np.linalg.norm(t) - np.linalg.norm(t_ref)) < 1.0, (t, t_ref)
    assert np.linalg.norm(t - t_ref) < 2.0, (t, t_ref)
    assert rotation_angle_deg(r, r_ref) < 0.3
