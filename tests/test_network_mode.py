"""A rig on two "hosts": `ratrig run --role cameras` on one address and `--role processing` on another
(two loopback addresses here; `bench/netmode.py` does the same across two network namespaces), with
CurveZMQ keys. The processing host gets every camera's frames; a processing host whose client key is
not on the cameras' list gets none."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from ratrig.cli.keys import main as keys_main

from tests.helpers import PYTHON, REPO, free_base_port, video_rig_toml

CAMERA_HOST, PROCESSING_HOST = "127.0.0.2", "127.0.0.3"


def two_host_rig(tmp_path, client: str) -> "Path":  # noqa: F821
    """A 2-camera video rig whose cameras bind CAMERA_HOST and the rest PROCESSING_HOST, this host
    using `client`'s key pair; only the key 'gpu-box' and the camera host's own are allowed in."""
    path = video_rig_toml(tmp_path, 2, n_frames=600)
    network = (f'[network]\nbase_port = {free_base_port()}\nhost = "{PROCESSING_HOST}"\n'
               f'connect_host = "{PROCESSING_HOST}"\ncamera_host = "{CAMERA_HOST}"\n'
               f'server_secret_key = "keys/server.key_secret"\nclient_secret_key = "keys/{client}.key_secret"\n'
               f'allowed_client_keys = ["keys/gpu-box.key", "keys/camera-pc.key"]')
    text, n = re.subn(r"\[network\]\nbase_port = \d+", network, path.read_text())
    assert n == 1
    path.write_text(text)
    return path


def run_role(config, role: str, seconds: float, tmp_path, tag: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-m", "ratrig", "run", str(config), "--role", role, "--headless",
                             "--duration", str(seconds), "--json", str(tmp_path / f"{tag}.json"),
                             "--run-dir", str(tmp_path / f"run-{tag}")],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_cameras_on_one_host_processing_on_another_with_keys(tmp_path):
    keys = tmp_path / "keys"
    assert keys_main([str(keys), "server", "camera-pc", "gpu-box", "intruder"]) == 0
    good = two_host_rig(tmp_path, "gpu-box")
    cams_cfg = tmp_path / "cams.toml"
    cams_cfg.write_text(good.read_text().replace("keys/gpu-box.key_secret", "keys/camera-pc.key_secret"))
    intruder = tmp_path / "intruder.toml"
    intruder.write_text(good.read_text().replace("keys/gpu-box.key_secret", "keys/intruder.key_secret")
                        .replace(f'host = "{PROCESSING_HOST}"\nconnect_host = "{PROCESSING_HOST}"',
                                 'host = "127.0.0.4"\nconnect_host = "127.0.0.4"')
                        .replace('"keys/gpu-box.key", ', '"keys/intruder.key", '))  # its own list: not the cameras'
    processing = run_role(good, "processing", 14, tmp_path, "processing")
    rogue = run_role(intruder, "processing", 14, tmp_path, "intruder")
    time.sleep(4)  # the processing sides start their probes first
    cameras = run_role(cams_cfg, "cameras", 8, tmp_path, "cameras")
    for p in (cameras, processing, rogue):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    s = json.loads((tmp_path / "processing.json").read_text())
    bad = json.loads((tmp_path / "intruder.json").read_text())
    cam_side = json.loads((tmp_path / "cameras.json").read_text())
    assert set(cam_side["processes"]) == {"camera/cam0", "camera/cam1"}
    assert "camera/cam0" not in s["processes"] and "probe" in s["processes"]
    for cam in ("cam0", "cam1"):
        captured = cam_side["cameras"][cam]["captured"]
        assert captured > 100
        # the processing host's probe took the frames over the wire from the camera host's address
        assert s["cameras"][cam]["received"] >= 0.9 * captured, s["cameras"][cam]
        # the intruder's probe ran and reported, and got nothing (nor did it see the cameras' stats)
        assert bad["cameras"][cam]["received"] == 0, bad["cameras"][cam]
        assert "captured" not in bad["cameras"][cam]
    assert bad["processes"]["probe"]["state"] == "stopped"
