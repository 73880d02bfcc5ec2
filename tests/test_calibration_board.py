"""The board: board.toml round trip and validation, printable PDF/PNG at true size that the detector reads."""
from __future__ import annotations

import re
import struct

import cv2
import numpy as np
import pytest

from calibration import cli_board
from calibration.board import BoardError, BoardSpec, load_board, render_board, save_board, write_board_pdf
from calibration.detect import BoardDetector


def test_default_board_is_the_labs_10x7_charuco(tmp_path):
    spec = BoardSpec()
    assert (spec.board_type, spec.squares_x, spec.squares_y, spec.marker_bits, spec.dict_size) == ("charuco", 10, 7, 4, 50)
    assert spec.n_corners == 54 and spec.n_markers == 35
    save_board(spec, tmp_path / "board.toml")
    assert load_board(tmp_path / "board.toml") == spec
    text = (tmp_path / "board.toml").read_text()
    assert "[calibration]" in text and "board_marker_dict_number = 50" in text  # Anipose's keys


@pytest.mark.parametrize(
    "toml, expected",
    [
        ('[calibration]\nboard_type = "charuco"\nboard_size = [10, 7]\n', "missing key 'board_square_side_length'"),
        ('[calibration]\nboard_type = "circles"\nboard_size = [10, 7]\nboard_square_side_length = 25\n', "board_type must be one of"),
        ('[calibration]\nboard_type = "charuco"\nboard_size = [12, 10]\nboard_square_side_length = 25\n'
         "board_marker_length = 18\nboard_marker_bits = 4\nboard_marker_dict_number = 50\n", "needs 60 markers"),
        ('[calibration]\nboard_type = "charuco"\nboard_size = [10, 7]\nboard_square_side_length = 25\n'
         "board_marker_length = 30\nboard_marker_bits = 4\nboard_marker_dict_number = 50\n", "smaller than the square"),
        ('[calibration]\nboard_type = "checkerboard"\nboard_size = [9, 6]\nboard_square_side_length = "30"\n', "must be a number"),
        ("[other]\n", "missing [calibration] table"),
    ],
)
def test_bad_board_files_are_named(tmp_path, toml, expected):
    p = tmp_path / "board.toml"
    p.write_text(toml)
    with pytest.raises(BoardError) as e:
        load_board(p)
    assert expected in str(e.value) and str(p) in str(e.value)


def test_rendered_board_is_detected_whole_with_corners_where_the_spec_says():
    spec = BoardSpec()
    px_per_mm = 3.0
    img = render_board(spec, px_per_mm, margin_mm=10)
    corners, ids, markers = BoardDetector(spec).detect(img)
    assert len(ids) == 54 and sorted(set(markers.tolist())) == list(range(35))
    # Board frame: origin at the first inner corner, one square in from the pattern's top-left.
    expect = (spec.object_points_mm()[ids.ravel(), :2] + 10 + spec.square_mm) * px_per_mm - 0.5
    np.testing.assert_allclose(corners.reshape(-1, 2), expect, atol=0.15)


def test_pdf_page_is_the_board_at_true_size(tmp_path):
    spec = BoardSpec()
    page_w, page_h = write_board_pdf(spec, tmp_path / "board.pdf", margin_mm=20)
    assert (page_w, page_h) == (290.0, 215.0)
    data = (tmp_path / "board.pdf").read_bytes()
    box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    assert box, "no MediaBox"
    assert float(box.group(1)) == pytest.approx(290 / 25.4 * 72, abs=0.01)
    assert float(box.group(2)) == pytest.approx(215 / 25.4 * 72, abs=0.01)


def test_cli_writes_png_with_dpi_and_board_toml(tmp_path, capsys):
    out = tmp_path / "b.png"
    assert cli_board.main([str(out), "--squares", "8x6", "--square-mm", "30", "--dict", "5x5_100", "--dpi", "150"]) == 0
    spec = load_board(tmp_path / "board.toml")
    assert (spec.squares_x, spec.squares_y, spec.square_mm, spec.marker_mm, spec.marker_bits, spec.dict_size) == (8, 6, 30.0, 22.5, 5, 100)
    data = out.read_bytes()
    i = data.index(b"pHYs")
    ppm_x, ppm_y, unit = struct.unpack(">IIB", data[i + 4 : i + 13])
    assert unit == 1 and ppm_x == ppm_y == round(150 / 0.0254)
    img = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert img.shape == (round((180 + 20) * 150 / 25.4), round((240 + 20) * 150 / 25.4))
    corners, ids, _ = BoardDetector(spec).detect(img)
    assert len(ids) == 35
    assert "wrote" in capsys.readouterr().out


def test_cli_checkerboard_pdf(tmp_path):
    assert cli_board.main([str(tmp_path / "c.pdf"), "--type", "checkerboard", "--squares", "9x6", "--square-mm", "30"]) == 0
    spec = load_board(tmp_path / "board.toml")
    assert spec.board_type == "checkerboard" and spec.n_corners == 54
    corners, ids, _ = BoardDetector(spec).detect(render_board(spec, 2.0, margin_mm=15))
    assert len(ids) == 54


@pytest.mark.parametrize("args, expected", [(["x.pdf", "--squares", "10by7"], "--squares"),
                                           (["x.pdf", "--dict", "9x9_50"], "--dict"),
                                           (["x.svg"], "must end in .pdf or .png")])
def test_cli_bad_arguments(tmp_path, capsys, args, expected):
    args = [str(tmp_path / args[0]), *args[1:]]
    assert cli_board.main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "board.toml").exists()
