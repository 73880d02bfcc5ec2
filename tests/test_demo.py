"""`ratrig demo` end to end: every stage as a real process over real sockets, the summary contract."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import PYTHON, REPO, free_base_port, pid_alive


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_summary(tmp_path):
    out = tmp_path / "summary.json"
    res = subprocess.run(
        [PYTHON, "-m", "ratrig", "demo", "--headless", "--duration", "12", "--fps", "15",
         "--base-port", str(free_base_port()), "--json", str(out), "--run-dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-4000:]
    s = json.loads(out.read_text())
    assert json.loads(res.stdout) == s  # printed and written alike
    assert s["problems"] == []
    for name, cam in s["cameras"].items():
        assert cam["captured"] >= 0.9 * 12 * 15, (name, cam)
        assert cam["received"] >= 0.99 * cam["captured"], (name, cam)
        assert cam["inferred"] > 0 and cam["inferred"] + cam["skipped"] == cam["received"], (name, cam)
    for key in ("transport", "capture_to_2d", "capture_to_3d", "capture_to_event"):
        lat = s["latency_ms"][key]
        assert 0 < lat["p50"] <= lat["p99"], (key, lat)
    assert s["latency_ms"]["transport"]["p50"] < s["latency_ms"]["capture_to_2d"]["p50"]
    assert s["fusion"]["frame_sets"] > 0.3 * 12 * 15
    acc = s["accuracy"]
    assert acc["pose2d_error_px"]["median"] < 8
    assert acc["pose3d_error_mm"]["raw"]["median"] < 25
    assert acc["pose3d_error_mm"]["filtered"]["median"] < 25
    # coverage of the keypoint-moments the truth shows in >= 2 cameras, and the old all-keypoint figure
    assert acc["pose3d_coverage"]["n"] > 0 and 0.3 < acc["pose3d_coverage"]["filtered"] <= 1.0  # 0.69 with half the moments skipped
    assert acc["pose3d_coverage"]["raw"] >= acc["pose3d_coverage_all_keypoints"]["raw"]
    assert "touchdown" in s["events"] and s["events"]["counts"]["touchdown"] > 0
    assert s["model"]["engine"] == "tensorflow" and len(s["model"]["sha256"]) == 64
    assert {p["state"] for p in s["processes"].values()} == {"stopped"}
    assert not [p["pid"] for p in s["processes"].values() if pid_alive(p["pid"])]


def test_demo_refuses_a_missing_model_before_any_camera_starts(tmp_path):
    res = subprocess.run(
        [PYTHON, "-m", "ratrig", "demo", "--headless", "--duration", "5", "--model", str(tmp_path / "nope"),
         "--base-port", str(free_base_port()), "--run-dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert str(tmp_path / "nope") in res.stderr
    assert not (tmp_path / "run" / "logs").exists()  # no process was started
