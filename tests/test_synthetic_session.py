"""A written synthetic session: the ground truth, projected through the WRITTEN calibration.toml,
lands on the rat in the WRITTEN videos."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from ratrig.camera import load_calibration
from ratrig.skeleton import KEYPOINTS, PAWS
from synthetic.cli_session import main as cli_main
from synthetic.rat import simulate
from synthetic.render import Renderer
from synthetic.rig import CAMERA_NAMES, Corridor, default_rig
from synthetic.session import load_session, write_session

# Writing and decoding 4 lossless videos takes 10-30 s on a busy 2-core box.
pytestmark = pytest.mark.slow

SEED = 3
FPS = 20.0
DURATION_S = 2.0


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_session")
    manifest = write_session(out, DURATION_S, FPS, SEED)
    return out, manifest


def _read_video(path):
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return np.array(frames)


def _pink(px: np.ndarray) -> np.ndarray:
    """(..., 3) BGR -> bool: the rat's pink (paws, ears, nose tip), not white fur, not floor."""
    b, g, r = (px[..., i].astype(int) for i in range(3))
    return (r - g > 45) & (r > 100)


def test_files_and_manifest(session):
    out, manifest = session
    n = int(DURATION_S * FPS)
    assert manifest["n_frames"] == n
    assert manifest["camera_names"] == list(CAMERA_NAMES)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    for name in CAMERA_NAMES:
        assert (out / manifest["files"]["videos"][name]).is_file()
        with open(out / manifest["files"]["timestamps"][name]) as f:
            rows = list(csv.DictReader(f))
        assert [int(r["frame_index"]) for r in rows] == list(range(n))
        ns = np.array([int(r["capture_ns"]) for r in rows])
        np.testing.assert_allclose(np.diff(ns), 1e9 / FPS, atol=1)
    _, arrays = load_session(out)
    assert arrays["keypoints_mm"].shape == (n, len(KEYPOINTS), 3)
    assert arrays["visibility"].shape == (4, n, len(KEYPOINTS))
    with open(out / "keypoints_3d.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    np.testing.assert_allclose(float(rows[7]["hind_left_paw_y_mm"]),
                               arrays["keypoints_mm"][7, KEYPOINTS.index("hind_left_paw"), 1], atol=1e-3)
    contacts = json.loads((out / "paw_contacts.json").read_text())
    assert {c["paw"] for c in contacts} == set(PAWS)
    with open(out / "paw_contacts.csv") as f:
        assert len(list(csv.DictReader(f))) == len(contacts)
    assert manifest["video_codec"]["lossless"] is True


def test_videos_round_trip_bit_exact(session):
    out, manifest = session
    _, gt = load_session(out)
    tr = simulate(DURATION_S, FPS, SEED)
    np.testing.assert_array_equal(tr.keypoints_mm, gt["keypoints_mm"])
    renderer = Renderer(default_rig(), Corridor(), seed=SEED)
    frames = _read_video(out / manifest["files"]["videos"]["cam_sw"])
    assert frames.shape == (manifest["n_frames"], 480, 640, 3)
    for fi in (0, 17, len(frames) - 1):
        img = renderer.render("cam_sw", tr.keypoints_mm[fi], tr.extra_mm[fi], t_s=float(tr.times_s[fi]))
        assert np.array_equal(frames[fi], img), f"frame {fi} changed through the video file"


def test_ground_truth_projects_onto_the_rendered_rat(session):
    out, manifest = session
    calib = load_calibration(out / "calibration.toml", expected_names=CAMERA_NAMES)
    _, gt = load_session(out)
    kp = gt["keypoints_mm"]
    vis = gt["visibility"]
    renderer = Renderer(calib, Corridor(), seed=SEED)
    n_visible = n_on_rat = 0
    paw_hits = paw_total = 0
    nose_hits = nose_total = 0
    hidden_pink = hidden_total = 0
    paw_offsets_px = []
    for ci, cam in enumerate(calib.cameras):
        frames = _read_video(out / manifest["files"]["videos"][cam.name])
        bg = renderer.background(ci).astype(int)
        for fi, frame in enumerate(frames):
            rat = np.any(np.abs(frame.astype(int) - bg) > 10, axis=2)
            rat = cv2.dilate(rat.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            pink = _pink(frame)
            uv = cam.project(kp[fi])  # through the WRITTEN calibration
            for k, name in enumerate(KEYPOINTS):
                u, v = np.round(uv[k]).astype(int)
                if not (0 <= u < 640 and 0 <= v < 480):
                    assert not vis[ci, fi, k]
                    continue
                patch = frame[max(0, v - 1):v + 2, max(0, u - 1):u + 2].reshape(-1, 3)
                if vis[ci, fi, k]:
                    n_visible += 1
                    n_on_rat += bool(rat[v, u])
                    if name in PAWS:
                        paw_total += 1
                        paw_hits += bool(_pink(patch).any())
                        if 6 <= u < 634 and 6 <= v < 474:
                            # Sub-pixel check: the pink blob around the projection is centred on it.
                            yy, xx = np.nonzero(pink[v - 6:v + 7, u - 6:u + 7])
                            if len(xx):
                                paw_offsets_px.append(np.hypot(xx.mean() + u - 6 - uv[k, 0],
                                                               yy.mean() + v - 6 - uv[k, 1]))
                    if name == "nose":
                        nose_total += 1
                        nose_hits += bool(_pink(patch).any())
                elif name in PAWS and rat[v, u]:
                    hidden_total += 1
                    hidden_pink += bool(_pink(frame[v, u]))
    assert n_visible > 300
    assert n_on_rat == n_visible, f"{n_visible - n_on_rat} visible keypoints project off the rat"
    assert paw_total > 100 and paw_hits / paw_total > 0.95, (paw_hits, paw_total)
    assert nose_total > 40 and nose_hits / nose_total > 0.9, (nose_hits, nose_total)
    # A calibration off by 1 px moves these to ~1 px (measured); the true one gives ~0.1 px.
    assert len(paw_offsets_px) > 100
    assert np.median(paw_offsets_px) < 0.5 and np.percentile(paw_offsets_px, 90) < 0.8, \
        (np.median(paw_offsets_px), np.percentile(paw_offsets_px, 90))
    # Paws flagged hidden by the body are covered by fur in the picture.
    assert hidden_total > 20 and hidden_pink / hidden_total < 0.1, (hidden_pink, hidden_total)


def test_written_calibration_is_the_true_one(session):
    out, _ = session
    written = load_calibration(out / "calibration.toml", expected_names=CAMERA_NAMES)
    true = default_rig()
    pts = np.random.default_rng(0).uniform([-400, -35, 0], [400, 35, 150], (50, 3))
    np.testing.assert_allclose(written.project(pts), true.project(pts), atol=1e-6)


def test_cli_writes_a_session(tmp_path, capsys):
    assert cli_main([str(tmp_path / "s"), "--duration", "0.2", "--fps", "10", "--seed", "4", "--codec", "mjpg"]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["n_frames"] == 2 and manifest["video_codec"]["fourcc"] == "MJPG"
    assert (tmp_path / "s" / "cam_ne.avi").is_file()
    assert cli_main([str(tmp_path / "t"), "--duration", "-1"]) == 2
    assert "--duration" in capsys.readouterr().err
