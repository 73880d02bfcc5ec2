"""Camera panel geometry: cells of the 2 x 2 grid and the letterboxed frame inside a cell."""
from __future__ import annotations

from viewer.panels import grid_cells, letterbox


def test_grid_cells_two_columns_with_spacing():
    cells = grid_cells((702, 502), 4, spacing_px=2)
    assert cells == [(0, 0, 350, 250), (352, 0, 350, 250), (0, 252, 350, 250), (352, 252, 350, 250)]
    assert grid_cells((300, 200), 1) == [(0, 0, 300, 200)]
    three = grid_cells((702, 502), 3, spacing_px=2)
    assert len(three) == 3 and three[2] == (0, 252, 350, 250)


def test_letterbox_keeps_the_aspect_and_centres():
    # A 4:3 frame in a wide cell: full height, centred horizontally.
    assert letterbox((10, 20, 400, 240), (640, 480)) == (10 + (400 - 320) // 2, 20, 320, 240)
    # In a tall cell: full width, centred vertically.
    x, y, w, h = letterbox((0, 0, 320, 400), (640, 480))
    assert (x, w, h) == (0, 320, 240) and y == (400 - 240) // 2
    # Never empty, however small the cell.
    assert letterbox((0, 0, 1, 1), (640, 480))[2:] == (1, 1)
