"""CalibrationRecorder: frames arriving per camera become synchronised videos, frame set by frame set."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.capture import CalibrationRecorder, CaptureError, read_frame_sets
from calibration.detect import Source, check_sources


def _frame(k: int) -> np.ndarray:
    return np.full((48, 64, 3), 10 * k, np.uint8)


def _levels(path) -> list[int]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(int(round(f.mean())))


def test_frames_are_grouped_by_capture_time_and_a_lonely_frame_is_dropped(tmp_path):
    period = 33_333_333
    rec = CalibrationRecorder(tmp_path, ["a", "b"], fps=30, size=(64, 48))
    for k in range(10):
        rec.add("a", _frame(k), k * period)
        if k != 3:  # camera b lost frame 3 upstream
            rec.add("b", _frame(k), k * period + 2_000_000)  # 2 ms later: same frame set
    summary = rec.close()
    assert summary["frame_sets"] == 9
    assert summary["dropped"] == {"a": 1, "b": 0}
    levels_a, levels_b = _levels(tmp_path / "a.avi"), _levels(tmp_path / "b.avi")
    assert levels_a == levels_b == [10 * k for k in range(10) if k != 3]  # FFV1 is lossless
    times = read_frame_sets(tmp_path / "frame_sets.csv")
    assert times.shape == (9, 2) and np.all(times[:, 1] - times[:, 0] == 2_000_000)
    n, sizes = check_sources([Source("a", tmp_path / "a.avi"), Source("b", tmp_path / "b.avi")])
    assert n == 9 and sizes == {"a": (64, 48), "b": (64, 48)}


def test_without_timestamps_frames_pair_in_arrival_order(tmp_path):
    with CalibrationRecorder(tmp_path, ["a", "b"], fps=30, size=(64, 48)) as rec:
        for k in range(4):
            rec.add("a", _frame(k))
        for k in range(3):
            rec.add("b", cv2.cvtColor(_frame(k), cv2.COLOR_BGR2GRAY))  # mono frames are accepted
    assert rec.frame_sets == 3 and rec.dropped == {"a": 1, "b": 0}
    assert _levels(tmp_path / "b.avi") == [0, 10, 20]


def test_bad_input_is_refused(tmp_path):
    rec = CalibrationRecorder(tmp_path, ["a"], fps=30, size=(64, 48))
    with pytest.raises(CaptureError, match="unknown camera 'z'"):
        rec.add("z", _frame(0))
    with pytest.raises(CaptureError, match="expected a 64x48 uint8 image"):
        rec.add("a", np.zeros((48, 65, 3), np.uint8))
    rec.close()
    with pytest.raises(CaptureError, match="already exists"):
        CalibrationRecorder(tmp_path, ["a"], fps=30, size=(64, 48))


def test_capture_process_records_live_cameras_in_sync(tmp_path):
    """Real camera processes publish over ZeroMQ; `python -m calibration.capture` writes one video each."""
    import subprocess
    import time

    from tests.helpers import PYTHON, REPO, video_rig_toml

    rig_path = video_rig_toml(tmp_path, 2, n_frames=30, fps=20.0, loop=False)
    out = tmp_path / "calib_videos"
    rec = subprocess.Popen([PYTHON, "-m", "calibration.capture", "--config", str(rig_path), "--out", str(out),
                            "--duration-s", "6"], cwd=REPO)
    t0 = time.monotonic_ns() + 2_000_000_000  # both cameras tick on one schedule from t0
    cams = [subprocess.Popen([PYTHON, "-m", "acquisition.capture", "--config", str(rig_path), "--camera", f"cam{i}",
                              "--t0-ns", str(t0)], cwd=REPO) for i in range(2)]
    try:
        assert all(c.wait(30) == 0 for c in cams)
        assert rec.wait(30) == 0
    finally:
        for p in [*cams, rec]:
            if p.poll() is None:
                p.kill()
    levels = [_levels(out / f"cam{i}.avi") for i in range(2)]
    assert len(levels[0]) == len(levels[1]) == 30
    # frame k of each source video has brightness k; MJPG sources are lossy by a level or two
    assert all(abs(a - k) <= 2 and abs(b - k) <= 2 for k, (a, b) in enumerate(zip(*levels)))
    assert read_frame_sets(out / "frame_sets.csv").shape == (30, 2)
