"""Real data: the DANNCE markerless_mouse_1 Label3D labels (six real cameras, see tests/data/.../README.md).

Triangulating the 2D labels must reproduce the 3D labels. The labels were made with MATLAB's camera
model, whose intrinsic matrix carries a skew term (up to about -5.9 px); `fusion.triangulate`
honours it, so the 3D labels come back to floating-point precision. The skew-free OpenCV model
(what cv2 and aniposelib use) is checked too, against the required ceilings.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fusion.triangulate import LINEAR, RigGeometry, project, triangulate
from ratrig.camera import Calibration, Camera

MAT = Path(__file__).parent / "data" / "dannce_markerless_mouse_1" / "label3d_dannce.mat"


def load_label3d(path: Path = MAT, keep_skew: bool = True):
    """-> (Calibration, (6, F*22, 2) px labels, (F*22, 3) mm labels)."""
    import scipy.io as sio

    m = sio.loadmat(str(path))
    cams = []
    for i in range(m["params"].shape[0]):
        p = m["params"][i, 0][0, 0]
        K = np.asarray(p["K"], float).T  # MATLAB stores K transposed
        if not keep_skew:
            K[0, 1] = 0.0
        rd = np.asarray(p["RDistort"], float).ravel()
        td = np.asarray(p["TDistort"], float).ravel()
        dist = np.array([rd[0], rd[1], td[0], td[1], rd[2] if rd.size > 2 else 0.0])
        rvec = cv2.Rodrigues(np.asarray(p["r"], float).T)[0].ravel()
        name = str(np.ravel(m["camnames"][0, i])[0])
        cams.append(Camera(name, (1280, 1024), K, dist, rvec, np.asarray(p["t"], float).ravel()))
    labels = m["labelData"]
    p2 = np.stack([labels[i, 0][0, 0]["data_2d"].reshape(-1, 2) for i in range(len(cams))]).astype(float)
    p3 = labels[0, 0][0, 0]["data_3d"].reshape(-1, 3).astype(float)
    return Calibration(tuple(cams)), p2, p3


def test_dannce_labels_triangulate_back_with_skew():
    calib, p2, p3 = load_label3d()
    assert calib.names == tuple(f"Camera{i}" for i in range(1, 7))
    assert abs(calib.cameras[0].matrix[0, 1]) > 5  # the skew is really there
    rig = RigGeometry.from_calibration(calib)
    res = triangulate(rig, p2, options=LINEAR)
    labelled = np.isfinite(p3).all(axis=1)
    assert labelled.sum() == 1715
    # frames without 3D labels have no 2D labels either, and stay NaN
    assert np.isnan(res.points_mm[~labelled]).all()
    err = np.linalg.norm(res.points_mm[labelled] - p3[labelled], axis=1)
    assert np.median(err) <= 0.1 and err.max() <= 0.5  # the required ceilings
    assert err.max() < 1e-6  # what the skew-aware model actually achieves
    assert (res.n_cameras[labelled] == 6).all()
    assert np.nanmax(res.reprojection_error_px) < 1e-6
    # the default (weighted, outlier-rejecting) path gives the same on clean labels
    robust = triangulate(rig, p2)
    assert np.nanmax(np.linalg.norm(robust.points_mm[labelled] - p3[labelled], axis=1)) < 1e-6
    # and projecting the 3D labels gives back the 2D labels
    proj = project(rig, p3[labelled])
    assert np.abs(proj - p2[:, labelled]).max() < 1e-6


def test_dannce_labels_with_opencv_model_without_skew():
    calib, p2, p3 = load_label3d(keep_skew=False)
    res = triangulate(RigGeometry.from_calibration(calib), p2, options=LINEAR)
    labelled = np.isfinite(p3).all(axis=1)
    err = np.linalg.norm(res.points_mm[labelled] - p3[labelled], axis=1)
    # measured: median 0.068 mm, max 0.164 mm -- within the ceilings, but not exact
    assert np.median(err) <= 0.1 and err.max() <= 0.5
    assert err.max() > 1e-3


@pytest.mark.parametrize("drop", [1, 3, 4])
def test_dannce_labels_from_camera_subsets(drop):
    calib, p2, p3 = load_label3d()
    rng = np.random.default_rng(drop)
    labelled = np.isfinite(p3).all(axis=1)
    p2 = p2.copy()
    for n in np.flatnonzero(labelled):
        p2[rng.choice(6, drop, replace=False), n] = np.nan
    res = triangulate(RigGeometry.from_calibration(calib), p2, options=LINEAR)
    assert (res.n_cameras[labelled] == 6 - drop).all()
    err = np.linalg.norm(res.points_mm[labelled] - p3[labelled], axis=1)
    assert err.max() < 1e-6
