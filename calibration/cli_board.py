"""`ratrig board OUT.pdf|OUT.png`: a printable calibration board at true size and its board.toml.

    ratrig board board.pdf                                   # 10x7 ChArUco, 25 mm squares, 4x4_50
    ratrig board board.png --squares 8x6 --square-mm 30 --marker-mm 22 --dict 5x5_100
    ratrig board chess.pdf --type checkerboard --squares 9x6 --square-mm 30   # 9x6 inner corners

board.toml is written next to OUT (or where --toml says) and is what `ratrig calibrate --board` reads.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from calibration.board import BoardError, BoardSpec, parse_dictionary, parse_squares, save_board, write_board_pdf, write_board_png


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig board", description=__doc__.split("\n")[0].strip("` "))
    p.add_argument("out", type=Path, help="output file: .pdf (vector page at true scale) or .png (with DPI set)")
    p.add_argument("--type", dest="board_type", choices=("charuco", "checkerboard"), default="charuco")
    p.add_argument("--squares", default="10x7", help="squares (ChArUco) or inner corners (checkerboard), XxY (default 10x7)")
    p.add_argument("--square-mm", type=float, default=25.0, help="square side, mm (default 25)")
    p.add_argument("--marker-mm", type=float, default=None, help="ArUco marker side, mm (default 0.75 x square)")
    p.add_argument("--dict", default="4x4_50", help="ArUco dictionary (default 4x4_50)")
    p.add_argument("--dpi", type=float, default=300.0, help="PNG resolution (default 300)")
    p.add_argument("--toml", type=Path, default=None, help="where to write the board spec (default: board.toml beside OUT)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sx, sy = parse_squares(args.squares)
        bits, n = parse_dictionary(args.dict)
        if args.board_type == "charuco":
            marker = args.marker_mm if args.marker_mm is not None else 0.75 * args.square_mm
            spec = BoardSpec("charuco", sx, sy, args.square_mm, marker, bits, n)
        else:
            spec = BoardSpec("checkerboard", sx, sy, args.square_mm, 0.0)
        suffix = args.out.suffix.lower()
        toml_path = args.toml or args.out.with_name("board.toml")
        if suffix == ".pdf":
            page_w, page_h = write_board_pdf(spec, args.out)
            what = f"PDF page {page_w:g} x {page_h:g} mm"
        elif suffix == ".png":
            w, h = write_board_png(spec, args.out, args.dpi)
            what = f"PNG {w} x {h} px at {args.dpi:g} dpi"
        else:
            raise BoardError(f"{args.out}: output must end in .pdf or .png")
        save_board(spec, toml_path)
    except (BoardError, OSError) as e:
        print(f"ratrig board: {e}", file=sys.stderr)
        return 2
    w_mm, h_mm = spec.printed_size_mm
    print(f"{spec.describe()}; pattern {w_mm:g} x {h_mm:g} mm")
    print(f"wrote {args.out} ({what}) and {toml_path}")
    print("Print at 100 % / actual size and check the 100 mm bar with a ruler; glue the board flat on a rigid plate.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
