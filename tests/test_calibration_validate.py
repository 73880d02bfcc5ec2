"""Every error message of ratrig.camera.load_calibration, on files that break one rule each."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tomli_w

from ratrig.camera import CalibrationError, load_calibration
from synthetic.rig import default_rig


def _good() -> dict:
    return default_rig().subset(["cam_ne", "cam_nw"]).to_dict()


def _write(tmp_path, data) -> str:
    p = tmp_path / "calibration.toml"
    p.write_text(data if isinstance(data, str) else tomli_w.dumps(data))
    return str(p)


def test_a_good_file_loads_in_the_requested_order(tmp_path):
    calib = load_calibration(_write(tmp_path, _good()), ["cam_nw", "cam_ne"])
    assert calib.names == ("cam_nw", "cam_ne")
    ref = default_rig().camera("cam_ne")
    np.testing.assert_allclose(calib.camera("cam_ne").center_mm, ref.center_mm, atol=1e-9)


def _broken(mutate):
    d = _good()
    mutate(d)
    return d


@pytest.mark.parametrize(
    "data, expected",
    [
        ("[cam_0\nname = ", "not valid TOML"),
        ({"metadata": {}}, "no [cam_N] tables"),
        (_broken(lambda d: d["cam_1"].pop("translation")), "[cam_1]: missing key 'translation'"),
        (_broken(lambda d: d["cam_0"].update(matrix=[[1.0, 0.0], [0.0, 1.0]])), "[cam_0].matrix: expected shape (3, 3), got (2, 2)"),
        (_broken(lambda d: d["cam_0"].update(rotation=[0.1, 0.2])), "[cam_0].rotation: expected shape (3,), got (2,)"),
        (_broken(lambda d: d["cam_1"].update(translation=[0.0, math.nan, 1.0])), "[cam_1].translation: contains non-finite values"),
        (_broken(lambda d: d["cam_0"].update(matrix=[[math.inf, 0, 320], [0, 600, 240], [0, 0, 1]])), "[cam_0].matrix: contains non-finite values"),
        (_broken(lambda d: d["cam_0"].update(matrix=[[-600.0, 0, 320], [0, 600, 240], [0, 0, 1]])), "focal lengths must be positive"),
        (_broken(lambda d: d["cam_0"].update(distortions=[0.1, 0.2, 0.3])), "[cam_0].distortions: expected 4, 5 or 8 finite numbers"),
        (_broken(lambda d: d["cam_0"].update(size=[640, 0])), "[cam_0].size: expected positive [width, height]"),
        (_broken(lambda d: d["cam_0"].update(name="")), "[cam_0].name: expected a non-empty string"),
        (_broken(lambda d: d["cam_0"].update(fisheye=True)), "fisheye cameras are not supported"),
        (_broken(lambda d: d["cam_1"].update(name="cam_ne")), "camera names appear more than once: ['cam_ne']"),
        (_broken(lambda d: d.update(cam_1="not a table")), "[cam_1]: expected a table, got str"),
    ],
)
def test_each_broken_rule_is_named(tmp_path, data, expected):
    path = _write(tmp_path, data)
    with pytest.raises(CalibrationError) as e:
        load_calibration(path)
    assert expected in str(e.value)
    assert path in str(e.value)  # every message names the file


def test_missing_file(tmp_path):
    with pytest.raises(CalibrationError, match="calibration file not found"):
        load_calibration(tmp_path / "nope.toml")


def test_rig_cameras_missing_from_the_file(tmp_path):
    path = _write(tmp_path, _good())
    with pytest.raises(CalibrationError) as e:
        load_calibration(path, ["cam_ne", "cam_sw", "cam_se"])
    msg = str(e.value)
    assert "cameras ['cam_sw', 'cam_se'] of the rig config are not in the calibration" in msg
    assert "it has ['cam_ne', 'cam_nw']" in msg


def test_a_calibration_written_by_ratrig_calibrate_reads_in_aniposelib(tmp_path):
    from aniposelib.cameras import CameraGroup

    calib = default_rig()
    p = tmp_path / "calibration.toml"
    calib.save(p)
    group = CameraGroup.load(str(p))
    assert group.get_names() == list(calib.names)
    pts = np.array([[10.0, -5.0, 30.0], [100.0, 20.0, 0.0]])
    projected = np.asarray(group.project(pts)).reshape(len(calib.cameras), -1, 2)
    np.testing.assert_allclose(projected, calib.project(pts), atol=1e-6)
