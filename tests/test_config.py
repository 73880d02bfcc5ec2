"""Config validation: each error names the file, the key and what was expected."""
from __future__ import annotations

from pathlib import Path

import pytest

from ratrig.config import ConfigError, Endpoints, load_config, save_config

from tests.helpers import REPO

CAM = '[[cameras]]\nname = "{name}"\nsource = "synthetic"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


def error_of(path: Path, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, **kw)
    return str(e.value)


def test_shipped_configs_load():
    rig = load_config(REPO / "configs" / "synthetic.toml")
    assert rig.camera_names == ["cam_ne", "cam_nw", "cam_sw", "cam_se"]
    assert Path(rig.inference.model).is_absolute()
    lab = load_config(REPO / "configs" / "corridor-4cam.toml")
    assert [c.source_kind for c in lab.cameras] == ["device"] * 4


def test_unknown_key(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + "[fusion]\ntolerence_ms = 3\n")
    msg = error_of(p)
    assert str(p) in msg and "fusion.tolerence_ms: unknown key" in msg and "tolerance_ms" in msg


def test_wrong_type(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + 'fps = "thirty"\n')
    msg = error_of(p)
    assert msg == f"{p}: cameras[0].fps: expected a number, got 'thirty'"


def test_bool_is_not_a_number(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + "width = true\n")
    assert "cameras[0].width: expected an integer, got True" in error_of(p)


def test_missing_cameras(tmp_path):
    p = write(tmp_path, 'name = "x"\n')
    assert error_of(p) == f"{p}: cameras: missing; expected at least one [[cameras]] table"


def test_missing_camera_key(tmp_path):
    p = write(tmp_path, '[[cameras]]\nname = "a"\n')
    assert "cameras[0].source: missing; expected a string" in error_of(p)


def test_duplicate_camera(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + CAM.format(name="a"))
    assert "camera names must be unique, ['a'] appear more than once" in error_of(p)


def test_worker_names_unknown_camera(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + '[inference]\nworkers = [["a", "b"]]\n')
    assert "inference.workers[0]: unknown camera 'b'; cameras are ['a']" in error_of(p)


def test_port_clash(tmp_path):
    # 41 cameras need ports base+1..base+41, which runs into the first worker's port base+40
    cams = "".join(CAM.format(name=f"c{i}") for i in range(41))
    p = write(tmp_path, cams)
    assert "network.base_port: endpoints clash on ports" in error_of(p)


def test_port_out_of_range(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + "[network]\nbase_port = 80\n")
    assert "network.base_port: expected a port in 1024..65000, got 80" in error_of(p)


def test_unreachable_device(tmp_path):
    p = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "device:97"\n')
    load_config(p)  # reading the config alone does not need the camera
    assert "cameras[0].source: camera device /dev/video97 does not exist" in error_of(p, check_sources=True)


def test_missing_video_file(tmp_path):
    p = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "video:nope.mp4"\n')
    msg = error_of(p, check_sources=True)
    assert "cameras[0].source: video file" in msg and "nope.mp4" in msg and "not found" in msg


def test_bad_source_kind(tmp_path):
    p = write(tmp_path, '[[cameras]]\nname = "a"\nsource = "usb0"\n')
    assert "cameras[0].source: expected 'synthetic', 'device:N' or 'video:PATH', got 'usb0'" in error_of(p)


def test_literal_choices(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + '[synthetic]\nwalls = "glass"\n')
    assert "synthetic.walls: expected one of 'clear', 'opaque', got 'glass'" in error_of(p)


def test_invalid_toml_and_missing_file(tmp_path):
    p = write(tmp_path, "name = \n")
    assert error_of(p).startswith(f"{p}: not valid TOML")
    assert error_of(tmp_path / "none.toml") == f"{tmp_path / 'none.toml'}: config file not found"


def test_relative_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "rig.toml"
    p.write_text(CAM.format(name="a") + '[inference]\nmodel = "m/model"\n[calibration]\nfile = "cal.toml"\n')
    rig = load_config(p)
    assert rig.inference.model == str((tmp_path / "sub" / "m" / "model").resolve())
    assert rig.calibration.file == str((tmp_path / "sub" / "cal.toml").resolve())


def test_save_round_trip(tmp_path):
    rig = load_config(REPO / "configs" / "synthetic.toml")
    out = tmp_path / "copy.toml"
    save_config(rig, out)
    again = load_config(out)
    assert again.cameras == rig.cameras and again.inference == rig.inference and again.fusion == rig.fusion


def test_endpoints_bind_loopback_by_default(tmp_path):
    rig = load_config(write(tmp_path, CAM.format(name="a") + CAM.format(name="b")))
    eps = Endpoints(rig)
    assert eps.bind("camera/a") == "tcp://127.0.0.1:5551"
    assert all(v.startswith("tcp://127.0.0.1:") for v in eps.directory().values())
    assert len(set(eps.all_ports())) == len(eps.all_ports())


def test_fusion_keypoint_motion_and_max_sigma(tmp_path):
    p = write(tmp_path, CAM.format(name="a") + "[fusion.keypoint_motion.tail]\nprocess_noise = 3000\n")
    msg = error_of(p)
    assert str(p) in msg and "fusion.keypoint_motion.tail" in msg and "nose" in msg
    p = write(tmp_path, CAM.format(name="a") + "[fusion.keypoint_motion.nose]\nprocess_nosie = 3000\n")
    msg = error_of(p)
    assert "fusion.keypoint_motion.nose" in msg and "process_nosie" in msg and "velocity_time_constant_ms" in msg
    p = write(tmp_path, CAM.format(name="a") + "[fusion.keypoint_motion.nose]\nprocess_noise = -1\n")
    assert "fusion.keypoint_motion.nose.process_noise: expected a number > 0" in error_of(p)
    p = write(tmp_path, CAM.format(name="a") + "[fusion]\nmax_sigma_mm = 0\n")
    assert "fusion.max_sigma_mm: expected a number > 0" in error_of(p)
    p = write(tmp_path, CAM.format(name="a") + "[fusion]\nmax_sigma_mm = inf\n[fusion.keypoint_motion.nose]\n"
                        "velocity_time_constant_ms = inf\n")
    rig = load_config(p)
    from fusion.process import options_from_config

    opts = options_from_config(rig)
    assert opts.kalman.report_max_sigma_mm == float("inf")
    assert opts.keypoint_motion == {"nose": (rig.fusion.process_noise, float("inf"))}
