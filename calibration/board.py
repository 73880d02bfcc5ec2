"""Calibration board: the spec in `board.toml`, aniposelib's board object, and drawing it at true size.

`board.toml` uses the keys of Anipose's `[calibration]` section, so the same table can be pasted into an
Anipose project config::

    [calibration]
    board_type = "charuco"            # or "checkerboard"
    board_size = [10, 7]              # squares (ChArUco) or inner corners (checkerboard), x by y
    board_square_side_length = 25.0   # mm
    board_marker_length = 18.75       # mm, ChArUco only
    board_marker_bits = 4             # ChArUco only
    board_marker_dict_number = 50     # ChArUco only

Board frame (what "board origin" and "board x-axis" mean everywhere in ratrig): the origin is the first
inner corner (ChArUco corner id 0, the inner corner nearest the top-left of the printed board), x runs
along the long printed edge to the right, y runs down the printed page, z goes into the board. Object
points are the inner corners in aniposelib's order (x fastest), spaced by the square side, in mm.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.tomlio import TOMLDecodeError, read_toml, write_toml

BOARD_TYPES = ("charuco", "checkerboard")
# (bits, dictionary size) pairs OpenCV predefines; aniposelib accepts the same.
ARUCO_DICTS = {(b, n): f"DICT_{b}X{b}_{n}" for b in (4, 5, 6, 7) for n in (50, 100, 250, 1000)}


class BoardError(ValueError):
    """A board spec that cannot be used; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """A printed calibration board.

    Attributes:
        board_type: "charuco" or "checkerboard".
        squares_x, squares_y: ChArUco: number of squares along x and y. Checkerboard: number of
            inner corners along x and y (OpenCV's pattern size, as aniposelib and Anipose use it).
        square_mm: side of one square, mm.
        marker_mm: side of one ArUco marker, mm (ChArUco only; 0 for checkerboards).
        marker_bits, dict_size: ArUco dictionary, e.g. 4 and 50 for DICT_4X4_50 (ChArUco only).
    """

    board_type: str = "charuco"
    squares_x: int = 10
    squares_y: int = 7
    square_mm: float = 25.0
    marker_mm: float = 18.75
    marker_bits: int = 4
    dict_size: int = 50

    def __post_init__(self) -> None:
        validate_spec(self)

    @property
    def corners_xy(self) -> tuple[int, int]:
        """Inner corners along (x, y)."""
        if self.board_type == "charuco":
            return self.squares_x - 1, self.squares_y - 1
        return self.squares_x, self.squares_y

    @property
    def n_corners(self) -> int:
        nx, ny = self.corners_xy
        return nx * ny

    @property
    def n_markers(self) -> int:
        """ArUco markers on a ChArUco board (half the squares); 0 for a checkerboard."""
        if self.board_type != "charuco":
            return 0
        return (self.squares_x * self.squares_y) // 2

    @property
    def printed_size_mm(self) -> tuple[float, float]:
        """(width, height) of the printed pattern, mm (a checkerboard has one square more than corners)."""
        if self.board_type == "charuco":
            return self.squares_x * self.square_mm, self.squares_y * self.square_mm
        return (self.squares_x + 1) * self.square_mm, (self.squares_y + 1) * self.square_mm

    @property
    def dictionary_name(self) -> str:
        return ARUCO_DICTS[(self.marker_bits, self.dict_size)]

    def object_points_mm(self) -> np.ndarray:
        """(K, 3) inner corners in the board frame, mm, in corner-id order (x fastest)."""
        nx, ny = self.corners_xy
        grid = np.mgrid[0:nx, 0:ny].T.reshape(-1, 2).astype(np.float64)
        return np.hstack([grid * self.square_mm, np.zeros((len(grid), 1))])

    def describe(self) -> str:
        if self.board_type == "charuco":
            return (
                f"ChArUco {self.squares_x}x{self.squares_y} squares, square {self.square_mm:g} mm, "
                f"marker {self.marker_mm:g} mm, {self.dictionary_name}"
            )
        return (
            f"checkerboard {self.squares_x}x{self.squares_y} inner corners, square {self.square_mm:g} mm"
        )

    def to_toml_dict(self) -> dict[str, Any]:
        table: dict[str, Any] = {
            "board_type": self.board_type,
            "board_size": [self.squares_x, self.squares_y],
            "board_square_side_length": float(self.square_mm),
        }
        if self.board_type == "charuco":
            table.update(
                board_marker_length=float(self.marker_mm),
                board_marker_bits=self.marker_bits,
                board_marker_dict_number=self.dict_size,
            )
        return {"calibration": table}

    def to_aniposelib(self) -> Any:
        """aniposelib's `CharucoBoard` / `Checkerboard` in mm."""
        from aniposelib.boards import CharucoBoard, Checkerboard

        if self.board_type == "charuco":
            return CharucoBoard(
                self.squares_x,
                self.squares_y,
                square_length=self.square_mm,
                marker_length=self.marker_mm,
                marker_bits=self.marker_bits,
                dict_size=self.dict_size,
            )
        return Checkerboard(self.squares_x, self.squares_y, square_length=self.square_mm)


def validate_spec(spec: BoardSpec, where: str = "board") -> None:
    """Raise BoardError if `spec` cannot describe a printable, detectable board."""
    if spec.board_type not in BOARD_TYPES:
        raise BoardError(f"{where}: board_type must be one of {list(BOARD_TYPES)}, got {spec.board_type!r}")
    for key in ("squares_x", "squares_y"):
        v = getattr(spec, key)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 3:
            raise BoardError(f"{where}: board_size entries must be integers >= 3, got {key} = {v!r}")
    if not (np.isfinite(spec.square_mm) and spec.square_mm > 0):
        raise BoardError(f"{where}: board_square_side_length must be a positive length in mm, got {spec.square_mm!r}")
    if spec.board_type == "charuco":
        if not (np.isfinite(spec.marker_mm) and 0 < spec.marker_mm < spec.square_mm):
            raise BoardError(
                f"{where}: board_marker_length must be > 0 and smaller than the square "
                f"({spec.square_mm:g} mm), got {spec.marker_mm!r}"
            )
        if (spec.marker_bits, spec.dict_size) not in ARUCO_DICTS:
            raise BoardError(
                f"{where}: no ArUco dictionary with {spec.marker_bits} bits and {spec.dict_size} markers; "
                f"bits must be 4-7 and board_marker_dict_number one of 50, 100, 250, 1000"
            )
        n_markers = (spec.squares_x * spec.squares_y) // 2
        if n_markers > spec.dict_size:
            raise BoardError(
                f"{where}: a {spec.squares_x}x{spec.squares_y} ChArUco board needs {n_markers} markers but "
                f"the dictionary {spec.marker_bits}x{spec.marker_bits}_{spec.dict_size} has only {spec.dict_size}"
            )


def parse_squares(text: str) -> tuple[int, int]:
    """'10x7' -> (10, 7)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise BoardError(f"--squares: expected WIDTHxHEIGHT such as 10x7, got {text!r}") from None
    return x, y


def parse_dictionary(text: str) -> tuple[int, int]:
    """'4x4_50', 'DICT_4X4_50' or '4_50' -> (4, 50)."""
    t = text.upper().removeprefix("DICT_")
    try:
        bits_part, n_part = t.split("_")
        bits = int(bits_part.split("X")[0])
        n = int(n_part)
    except ValueError:
        raise BoardError(f"--dict: expected a dictionary such as 4x4_50 or DICT_5X5_100, got {text!r}") from None
    if (bits, n) not in ARUCO_DICTS:
        raise BoardError(f"--dict: {text!r} is not one of OpenCV's predefined ArUco dictionaries")
    return bits, n


def board_from_toml_dict(data: dict[str, Any], where: str) -> BoardSpec:
    """Build a spec from a parsed board.toml (or an Anipose config with a [calibration] table)."""
    table = data.get("calibration")
    if not isinstance(table, dict):
        raise BoardError(f"{where}: missing [calibration] table with the board description")
    for key in ("board_type", "board_size", "board_square_side_length"):
        if key not in table:
            raise BoardError(f"{where}: [calibration] is missing key {key!r}")
    board_type = str(table["board_type"]).lower()
    size = table["board_size"]
    if not (isinstance(size, list) and len(size) == 2):
        raise BoardError(f"{where}: [calibration].board_size must be [x, y], got {size!r}")
    kwargs: dict[str, Any] = {
        "board_type": board_type,
        "squares_x": size[0],
        "squares_y": size[1],
        "square_mm": _number(table["board_square_side_length"], where, "board_square_side_length"),
    }
    if board_type == "charuco":
        for key in ("board_marker_length", "board_marker_bits", "board_marker_dict_number"):
            if key not in table:
                raise BoardError(f"{where}: [calibration] is missing key {key!r} (needed for a ChArUco board)")
        kwargs.update(
            marker_mm=_number(table["board_marker_length"], where, "board_marker_length"),
            marker_bits=table["board_marker_bits"],
            dict_size=table["board_marker_dict_number"],
        )
    else:
        kwargs["marker_mm"] = 0.0
    try:
        return BoardSpec(**kwargs)
    except BoardError as e:
        raise BoardError(f"{where}: {str(e).removeprefix('board: ')}") from None


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BoardError(f"{where}: [calibration].{key} must be a number (mm), got {value!r}")
    return float(value)


def load_board(path: str | os.PathLike[str]) -> BoardSpec:
    """Read and validate a board.toml. Raises BoardError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise BoardError(f"{path}: board file not found (make one with `ratrig board board.pdf`)")
    try:
        data = read_toml(path)
    except (TOMLDecodeError, UnicodeDecodeError) as e:
        raise BoardError(f"{path}: not valid TOML ({e})") from None
    return board_from_toml_dict(data, str(path))


def save_board(spec: BoardSpec, path: str | os.PathLike[str]) -> None:
    """Write board.toml atomically."""
    write_toml(path, spec.to_toml_dict())


def render_board(spec: BoardSpec, px_per_mm: float, margin_mm: float = 0.0) -> np.ndarray:
    """The board pattern as a uint8 grayscale image, (H, W), at `px_per_mm`, white margin around it.

    The pattern's top-left corner sits at (margin_mm, margin_mm); pixel centres are at (i + 0.5) / px_per_mm.
    """
    import cv2

    w_mm, h_mm = spec.printed_size_mm
    w_px = int(round((w_mm + 2 * margin_mm) * px_per_mm))
    h_px = int(round((h_mm + 2 * margin_mm) * px_per_mm))
    m_px = int(round(margin_mm * px_per_mm))
    pw, ph = w_px - 2 * m_px, h_px - 2 * m_px
    if spec.board_type == "charuco":
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary_name))
        board = cv2.aruco.CharucoBoard(
            (spec.squares_x, spec.squares_y), spec.square_mm, spec.marker_mm, dictionary
        )
        pattern = board.generateImage((pw, ph), marginSize=0, borderBits=1)
    else:
        nx, ny = spec.squares_x + 1, spec.squares_y + 1
        yy, xx = np.mgrid[0:ph, 0:pw]
        col = np.minimum((xx * nx) // pw, nx - 1)
        row = np.minimum((yy * ny) // ph, ny - 1)
        # Black top-left square, as OpenCV's findChessboardCorners examples print it.
        pattern = np.where((col + row) % 2 == 0, 0, 255).astype(np.uint8)
    out = np.full((h_px, w_px), 255, np.uint8)
    out[m_px : m_px + ph, m_px : m_px + pw] = pattern
    return out


def write_board_png(spec: BoardSpec, path: str | os.PathLike[str], dpi: float = 300.0) -> tuple[int, int]:
    """Write the board as a PNG at `dpi` (pixel density stored in the file), 10 mm white margin.

    Returns (width, height) in px.
    """
    import cv2

    from ratrig.tomlio import atomic_write_bytes

    px_per_mm = dpi / 25.4
    img = render_board(spec, px_per_mm, margin_mm=10.0)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    data = _png_with_dpi(buf.tobytes(), dpi)
    atomic_write_bytes(path, data)
    return img.shape[1], img.shape[0]


def _png_with_dpi(png: bytes, dpi: float) -> bytes:
    """Insert a pHYs chunk (pixels per metre) after IHDR so printers use the true scale."""
    import struct
    import zlib

    ppm = int(round(dpi / 0.0254))
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature + IHDR length, type, data, crc
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def board_figure(spec: BoardSpec, margin_mm: float = 15.0) -> Any:
    """A matplotlib Figure of the printable page: page size = pattern + margins (inches = mm / 25.4),
    the pattern at its physical size, a 100 mm check bar and the dimensions in the margin."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    w_mm, h_mm = spec.printed_size_mm
    page_w, page_h = w_mm + 2 * margin_mm, h_mm + 2 * margin_mm
    fig = Figure(figsize=(page_w / 25.4, page_h / 25.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, page_w)
    ax.set_ylim(page_h, 0)  # y down, mm from the top-left of the page
    ax.axis("off")
    # 20 px per mm is far finer than any printer needs and keeps marker edges exact for 0.05 mm steps.
    pattern = render_board(spec, px_per_mm=20.0)
    ax.imshow(
        pattern,
        cmap="gray",
        vmin=0,
        vmax=255,
        interpolation="nearest",
        extent=(margin_mm, margin_mm + w_mm, margin_mm + h_mm, margin_mm),
    )
    small = dict(fontsize=7, family="monospace")
    ax.text(
        margin_mm,
        margin_mm * 0.35,
        f"ratrig calibration board: {spec.describe()}. Print at 100 % (actual size, no scaling).",
        va="center",
        **small,
    )
    ax.text(
        margin_mm,
        margin_mm * 0.7,
        f"Pattern {w_mm:g} x {h_mm:g} mm. Check with a ruler: the bar below must measure 100 mm.",
        va="center",
        **small,
    )
    # A 100 mm scale bar in the bottom margin to check the print.
    y_bar = margin_mm + h_mm + margin_mm * 0.45
    ax.plot([margin_mm, margin_mm + 100], [y_bar, y_bar], color="black", lw=1.0)
    for x in (margin_mm, margin_mm + 100):
        ax.plot([x, x], [y_bar - 1.5, y_bar + 1.5], color="black", lw=1.0)
    ax.text(margin_mm + 102, y_bar, "100 mm", va="center", **small)
    # World-frame hint: origin at the first inner corner, x along the long edge (corridor axis).
    ox, oy = margin_mm + spec.square_mm, margin_mm  # first inner corner is one square in, on both kinds
    ax.annotate(
        "",
        xy=(ox + 2 * spec.square_mm, oy - margin_mm * 0.1),
        xytext=(ox, oy - margin_mm * 0.1),
        arrowprops=dict(arrowstyle="->", lw=0.8),
    )
    ax.text(
        margin_mm + w_mm,
        margin_mm + h_mm + margin_mm * 0.8,
        "world origin = first inner corner (top left); x (corridor axis) -> along this edge; lay face up for --floor-frame",
        ha="right",
        va="center",
        fontsize=6,
        family="monospace",
    )
    return fig


def write_board_pdf(spec: BoardSpec, path: str | os.PathLike[str], margin_mm: float = 15.0) -> tuple[float, float]:
    """Write the board as a one-page PDF at true scale (page = board + margins), dimensions in the margin.

    Printing at 100 % ("actual size") gives the stated square side; the default 15 mm margins keep
    the default 10x7 x 25 mm board on one A4 landscape page (280 x 205 mm).
    Returns the page size (width, height) in mm.
    """
    import io

    from ratrig.tomlio import atomic_write_bytes

    fig = board_figure(spec, margin_mm)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    atomic_write_bytes(path, buf.getvalue())
    w_mm, h_mm = spec.printed_size_mm
    return w_mm + 2 * margin_mm, h_mm + 2 * margin_mm
