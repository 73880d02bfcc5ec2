"""`ratrig export --to keypoint-moseq`: the layout keypoint-MoSeq's "anipose" loader reads.

keypoint-moseq is not installed here (it pulls jax-moseq and numpy 2); the test checks the files
against the loader's documented format: bodyparts found by the header pattern
``<bp>_x,<bp>_y,<bp>_z``, ``<bp>_score`` as confidence, the frame number last, one file per
recording named after it; and the project options against `setup_project`'s config rules.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from behaviour_helpers import write_pose_session
from ratrig.skeleton import KEYPOINTS
from recorder.export import main as export_main


@pytest.fixture()
def session(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(40) / 30.0
    kps = rng.normal(0, 50, (40, len(KEYPOINTS), 3))
    kps[3, 2] = np.nan  # right ear not triangulated in frame 3
    return write_pose_session(tmp_path / "rat07-day3", t, kps), kps


def _documented_anipose_loader(path):
    """keypoint-MoSeq's documented anipose format: bodyparts from the header pattern, score columns."""
    header = path.read_text().splitlines()[0]
    bodyparts = re.findall(r"(?P<string>\w+)_x,(?P=string)_y,(?P=string)_z", header)
    df = pd.read_csv(path)
    coords = np.stack([df[[f"{bp}_x", f"{bp}_y", f"{bp}_z"]].to_numpy() for bp in bodyparts], axis=1)
    conf = df[[f"{bp}_score" for bp in bodyparts]].to_numpy()
    return coords, conf, bodyparts, header.split(",")


def test_export_is_loadable_as_keypoint_moseq_anipose_format(session, tmp_path):
    sess, kps = session
    out = tmp_path / "kpms"
    assert export_main([str(sess.path), "--to", "keypoint-moseq", str(out)]) == 0
    files = sorted((out / "keypoints").glob("*.csv"))
    assert [f.stem for f in files] == ["rat07-day3"]  # the recording is named after the file
    coords, conf, bodyparts, columns = _documented_anipose_loader(files[0])
    assert bodyparts == list(KEYPOINTS)
    assert columns[-1] == "fnum"
    np.testing.assert_allclose(coords, kps, equal_nan=True)
    assert conf.shape == (40, len(KEYPOINTS))
    assert conf[3, 2] == 0.0 and np.all(conf[np.isfinite(kps).all(-1)] == pytest.approx(0.9))
    assert np.all((conf >= 0) & (conf <= 1))


def test_project_options_satisfy_setup_project_rules(session, tmp_path):
    sess, _ = session
    out = tmp_path / "kpms"
    assert export_main([str(sess.path), "--to", "keypoint-moseq", str(out)]) == 0
    opts = json.loads((out / "project_options.json").read_text())
    assert opts["bodyparts"] == list(KEYPOINTS)
    # keypoint_moseq.io.check_config_validity's rules
    assert set(opts["use_bodyparts"]) <= set(opts["bodyparts"])
    assert all(bp in opts["bodyparts"] for edge in opts["skeleton"] for bp in edge) and opts["skeleton"]
    assert set(opts["anterior_bodyparts"]) <= set(opts["use_bodyparts"]) and "nose" in opts["anterior_bodyparts"]
    assert opts["posterior_bodyparts"] == ["tail_base"]
    assert opts["fps"] == 30.0


def test_export_of_a_session_without_poses_names_the_file(tmp_path, capsys, caplog):
    sess = write_pose_session(tmp_path / "empty", np.zeros(0), np.zeros((0, len(KEYPOINTS), 3)))
    assert export_main([str(sess.path), "--to", "keypoint-moseq", str(tmp_path / "o")]) == 1
    assert "pose3d.csv: no 3D poses to export" in caplog.text
