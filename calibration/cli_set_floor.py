"""`ratrig set-floor CALIBRATION SOURCE... --board board.toml --frame N -o OUT`: move a calibration onto the floor.

Frame N of the recordings must show the board lying face up on the floor: its origin becomes the
world origin, its x-axis the corridor axis (x), z points up, millimetres. Use it when the floor
frame was recorded apart from the calibration videos, or to re-level an existing calibration.
(`ratrig calibrate ... --floor-frame N` does the same in one go.)
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from calibration.board import BoardError, load_board
from calibration.detect import BoardDetector, SourceError, check_sources, iter_frames, parse_sources
from calibration.world import WorldFrameError, set_floor
from ratrig.camera import CalibrationError, load_calibration


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ratrig set-floor", description=__doc__.split("\n")[0].strip("` "))
    p.add_argument("calibration", type=Path, help="calibration.toml to move")
    p.add_argument("sources", nargs="+", help="per-camera video or image folder (NAME=PATH to name it)")
    p.add_argument("--board", required=True, type=Path, help="board.toml")
    p.add_argument("--frame", required=True, type=int, help="frame set with the board lying on the floor")
    p.add_argument("-o", "--output", required=True, type=Path, help="calibration.toml to write (may be the input)")
    args = p.parse_args(argv)
    try:
        spec = load_board(args.board)
        sources = parse_sources(args.sources, min_sources=1)
        calib = load_calibration(args.calibration)
        calib.subset([s.name for s in sources])  # every source must be a camera of the calibration
        n_frames, _ = check_sources(sources)
        if args.frame >= n_frames:
            raise SourceError(f"--frame {args.frame}: the recordings have frames 0-{n_frames - 1}")
        detector = BoardDetector(spec)
        views = {}
        for s in sources:
            for i, img in iter_frames(s, args.frame + 1):
                if i == args.frame:
                    corners, ids, _ = detector.detect(img)
                    if corners is not None:
                        views[s.name] = (ids.ravel(), corners.reshape(-1, 2))
        moved = set_floor(calib, spec, views)
    except (BoardError, SourceError, CalibrationError, KeyError) as e:
        print(f"ratrig set-floor: {e}", file=sys.stderr)
        return 2
    except WorldFrameError as e:
        print(f"ratrig set-floor: frame {args.frame}: {e}. Nothing was written.", file=sys.stderr)
        return 1
    meta = dict(moved.metadata, ratrig_world_frame=f"board on the floor in frame {args.frame} (set-floor)")
    replace(moved, metadata=meta).save(args.output)
    print(f"world frame set from frame {args.frame} (board seen by {', '.join(sorted(views))}); wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
