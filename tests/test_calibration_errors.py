"""Bad calibration input gives a clear error, and a failed calibration overwrites nothing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration import cli_calibrate
from calibration.board import BoardSpec, save_board
from synthetic.charuco import render_calibration_set
from synthetic.rig import default_rig

SENTINEL = "# an earlier, good calibration\n"


@pytest.fixture(scope="module")
def two_cams(tmp_path_factory):
    """12 frame sets of the 10x7 ChArUco board seen by cam_ne and cam_nw."""
    out = tmp_path_factory.mktemp("two_cams")
    render_calibration_set(default_rig().subset(["cam_ne", "cam_nw"]), BoardSpec(), out, n_frames=12, seed=1)
    return out


def _out_dir(tmp_path):
    """An output folder holding a calibration.toml from before; returns the path to pass as -o."""
    out = tmp_path / "rig" / "calibration.toml"
    out.parent.mkdir()
    out.write_text(SENTINEL)
    return out


def _assert_untouched(out):
    assert out.read_text() == SENTINEL
    assert sorted(p.name for p in out.parent.iterdir()) == ["calibration.toml"]


def test_a_video_that_never_shows_the_board(two_cams, tmp_path, capsys):
    blank = tmp_path / "cam_sw.avi"
    w = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (640, 480))
    rng = np.random.default_rng(0)
    for _ in range(12):
        w.write(rng.integers(90, 110, (480, 640, 3), dtype=np.uint8))
    w.release()
    out = _out_dir(tmp_path)
    rc = cli_calibrate.main([str(two_cams / "cam_ne.avi"), str(blank), "--board", str(two_cams / "board.toml"),
                             "-o", str(out), "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "camera 'cam_sw'" in err and "never detected" in err and str(blank) in err
    assert "Nothing was written" in err
    _assert_untouched(out)


@pytest.mark.parametrize(
    "wrong, expect",
    [
        (BoardSpec("charuco", 8, 6, 25.0, 18.75), "marker ids 0-23"),  # fewer squares than printed
        (BoardSpec("charuco", 10, 7, 25.0, 18.75, 5, 50), "4x4 markers"),  # other dictionary
    ],
)
def test_a_board_file_that_does_not_match_the_printed_board(two_cams, tmp_path, capsys, wrong, expect):
    board = tmp_path / "board.toml"
    save_board(wrong, board)
    out = _out_dir(tmp_path)
    rc = cli_calibrate.main([str(two_cams / "cam_ne.avi"), str(two_cams / "cam_nw.avi"), "--board", str(board),
                             "-o", str(out), "--no-progress", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "does not match the printed board" in err and expect in err
    _assert_untouched(out)


def test_image_folders_with_different_frame_counts(two_cams, tmp_path, capsys):
    for name, n in (("left", 12), ("right", 11)):
        d = tmp_path / name
        d.mkdir()
        cap = cv2.VideoCapture(str(two_cams / ("cam_ne.avi" if name == "left" else "cam_nw.avi")))
        for i in range(n):
            ok, frame = cap.read()
            assert ok
            cv2.imwrite(str(d / f"frame{i:03d}.png"), frame)
        cap.release()
    out = _out_dir(tmp_path)
    rc = cli_calibrate.main([str(tmp_path / "left"), str(tmp_path / "right"), "--board", str(two_cams / "board.toml"),
                             "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "left: 12 images" in err and "right: 11 images" in err
    _assert_untouched(out)


def test_a_camera_that_saw_the_board_too_rarely_is_refused_with_advice(two_cams, tmp_path, capsys):
    """12 frame sets: each camera sees the board in fewer than the 10 frames a calibration needs."""
    out = _out_dir(tmp_path)
    rc = cli_calibrate.main([str(two_cams / "cam_ne.avi"), str(two_cams / "cam_nw.avi"),
                             "--board", str(two_cams / "board.toml"), "-o", str(out), "--no-progress",
                             "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "saw the board in only" in err and "need at least 10" in err and "Record again" in err
    _assert_untouched(out)


@pytest.mark.slow
def test_a_bad_verdict_goes_beside_never_over_the_good_file(tmp_path):
    """A calibration that solves but fails the verdict is written as *_rejected.toml only."""
    from calibration.board import BoardSpec
    from synthetic.charuco import render_calibration_set

    src = tmp_path / "src"
    render_calibration_set(default_rig().subset(["cam_ne", "cam_nw"]), BoardSpec(), src, n_frames=30, seed=2)
    out = _out_dir(tmp_path)
    rc = cli_calibrate.main([str(src / "cam_ne.avi"), str(src / "cam_nw.avi"), "--board", str(src / "board.toml"),
                             "-o", str(out), "--no-progress", "--min-frames", "1000"])
    assert rc == 1
    assert out.read_text() == SENTINEL
    rejected = out.with_name("calibration_rejected.toml")
    assert rejected.is_file() and out.with_name("calibration_rejected_report.toml").is_file()


def test_missing_inputs_name_the_file(tmp_path, capsys):
    out = _out_dir(tmp_path)
    rc = cli_calibrate.main([str(tmp_path / "nope.avi"), str(tmp_path / "nope2.avi"),
                             "--board", str(tmp_path / "board.toml"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "board.toml: board file not found" in err
    _assert_untouched(out)
