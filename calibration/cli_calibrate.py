"""`ratrig calibrate SOURCE... --board board.toml -o calibration.toml`: calibrate the rig from board recordings.

    ratrig calibrate calib/cam_ne.avi calib/cam_nw.avi calib/cam_sw.avi calib/cam_se.avi \\
        --board board.toml -o calibration.toml --floor-frame 0
    ratrig calibrate left=imgs/L right=imgs/R --board board.toml -o calibration.toml

A SOURCE is a video or a folder of images (one per synchronised frame set); the camera is named by the
file stem / folder name, or explicitly as NAME=PATH. Writes, only when the calibration is good:
    calibration.toml            Anipose format (cameras in the order given)
    calibration_report.toml     per-camera error, frames and corners per camera and per pair, verdict
    calibration_report.png      camera positions in 3D and error per camera
A calibration that fails the checks is never written over an existing file: a degenerate one is
refused (nothing written), one with a bad verdict goes to calibration_rejected.toml beside the report.

Exit status: 0 good; 1 calibration refused or not good; 2 bad input (files, board, arguments).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from calibration.board import BoardError, BoardSpec, load_board
from calibration.detect import (
    CameraDetections,
    SourceError,
    check_sources,
    detect_all,
    diagnose_unseen,
    parse_sources,
)
from calibration.report import build_report, format_report, write_report
from calibration.solve import (
    CalibrationFailed,
    SolveOptions,
    board_mismatch_problems,
    calibrate_detections,
    reprojection_errors,
    to_camera_group,
)
from calibration.world import WorldFrameError, set_floor


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ratrig calibrate",
        description="Calibrate cameras from synchronised recordings of a calibration board (aniposelib).",
    )
    p.add_argument("sources", nargs="+", help="per-camera video or image folder; NAME=PATH to name the camera")
    p.add_argument("--board", required=True, type=Path, help="board.toml (from `ratrig board`)")
    p.add_argument("-o", "--output", required=True, type=Path, help="calibration.toml to write")
    p.add_argument("--floor-frame", type=int, default=None,
                   help="frame set in which the board lies face up on the floor: defines the world frame "
                        "(origin = board origin, x = board x-axis = corridor, z up, mm)")
    p.add_argument("--every", type=int, default=1, help="detect in every N-th frame (default 1)")
    p.add_argument("--workers", type=int, default=2, help="detection processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first attempt (default 0)")
    p.add_argument("--retries", type=int, default=3, help="attempts with further seeds after a degenerate result")
    p.add_argument("--max-error-px", type=float, default=1.0,
                   help="reprojection error above which a calibration is rejected (default 1.0 px)")
    p.add_argument("--min-frames", type=int, default=20,
                   help="frames with the board each camera needs for a good verdict (default 20)")
    p.add_argument("--max-frames", type=int, default=150, help="frame sets used in the bundle adjustment (default 150)")
    p.add_argument("--fix-principal-point", action="store_true", help="keep the principal point at the image centre")
    p.add_argument("--aniposelib-bundle-adjust", action="store_true",
                   help="from the second attempt on, also run aniposelib's own bundle adjustment (slow) "
                        "before the joint refinement")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def floor_views(detections: Sequence[CameraDetections], frame: int) -> dict[str, tuple]:
    """Camera name -> (ids (K,), corners (K, 2)) of the board in `frame`, for cameras that saw it there."""
    views = {}
    for d in detections:
        for r in d.rows:
            if r["framenum"] == frame:
                views[d.name] = (r["ids"].ravel(), r["corners"].reshape(-1, 2))
    return views


def run_calibration(
    sources_args: Sequence[str],
    board_path: Path,
    options: SolveOptions,
    *,
    floor_frame: int | None = None,
    every: int = 1,
    workers: int = 2,
    min_frames: int = 20,
    progress: bool = True,
    log=print,
):
    """The pipeline without the writing: returns (calibration, report).

    Raises:
        BoardError, SourceError: bad input. CalibrationFailed: refused. WorldFrameError: bad floor frame.
    """
    spec: BoardSpec = load_board(board_path)
    sources = parse_sources(sources_args)
    n_frames, sizes = check_sources(sources)
    if floor_frame is not None and not 0 <= floor_frame < n_frames:
        raise SourceError(f"--floor-frame {floor_frame}: the recordings have frames 0-{n_frames - 1}")
    if every < 1:
        raise SourceError(f"--every must be >= 1, got {every}")
    log(f"board: {spec.describe()}")
    log(f"{len(sources)} cameras, {n_frames} frames each: " + ", ".join(f"{s.name} ({s.path})" for s in sources))
    t0 = time.perf_counter()
    detections = detect_all(sources, spec, n_frames, every=every, workers=workers, progress=progress,
                            must_detect=() if floor_frame is None else (floor_frame,))
    log(f"detection: {time.perf_counter() - t0:.1f} s; board frames per camera: "
        + ", ".join(f"{d.name} {d.n_board_frames}" for d in detections))
    mismatch = board_mismatch_problems(detections, spec)
    if mismatch:
        raise CalibrationFailed(mismatch)
    unseen = [(s, d) for s, d in zip(sources, detections) if d.n_board_frames == 0]
    if unseen:
        problems = []
        for s, d in unseen:
            why = diagnose_unseen(s, spec, n_frames)
            problems.append(
                f"camera {d.name!r}: the board ({spec.describe()}) was never detected in {d.path} "
                f"({d.n_frames} frames). " + (why or "Check that this camera filmed the board, in focus and lit, "
                                                   "and that --board names the board that was printed.")
            )
        raise CalibrationFailed(problems)
    t0 = time.perf_counter()
    result = calibrate_detections(detections, spec, options)
    log(f"bundle adjustment: {time.perf_counter() - t0:.1f} s (seed {result.seed})")
    calib = result.calibration
    world = "first camera"
    if floor_frame is not None:
        views = floor_views(detections, floor_frame)
        if not views:
            raise WorldFrameError(
                f"--floor-frame {floor_frame}: no camera detected the board in that frame; pick a frame "
                "where the board lies flat on the floor in view of at least one camera"
            )
        calib = set_floor(calib, spec, views)
        world = f"board on the floor in frame {floor_frame} (seen by {', '.join(sorted(views))})"
    rows = list(result.rows)
    errors = reprojection_errors(to_camera_group(calib), rows, spec.to_aniposelib())
    report = build_report(
        calib,
        rows,
        [d.n_board_frames for d in detections],
        result.frames_used,
        errors,
        seed=result.seed,
        world_frame=world,
        error_threshold_px=options.max_error_px,
        min_frames=min_frames,
        rejected_attempts=result.rejected,
    )
    metadata = {
        "ratrig_board": spec.describe(),
        "ratrig_seed": result.seed,
        "ratrig_error_median_px": report.error_median_px,
        "ratrig_world_frame": world,
    }
    return replace(calib, metadata=metadata), report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = SolveOptions(
        seed=args.seed,
        retries=args.retries,
        max_error_px=args.max_error_px,
        max_frame_sets=args.max_frames,
        fix_principal_point=args.fix_principal_point,
        aniposelib_bundle_adjust=args.aniposelib_bundle_adjust,
    )
    try:
        calib, report = run_calibration(
            args.sources,
            args.board,
            options,
            floor_frame=args.floor_frame,
            every=args.every,
            workers=args.workers,
            min_frames=args.min_frames,
            progress=not args.no_progress,
        )
    except (BoardError, SourceError) as e:
        print(f"ratrig calibrate: {e}", file=sys.stderr)
        return 2
    except (CalibrationFailed, WorldFrameError) as e:
        print(f"ratrig calibrate: {e}\nNothing was written.", file=sys.stderr)
        return 1
    print(format_report(report))
    if report.good:
        write_report(report, calib, args.output)
        calib.save(args.output)  # last: its presence means everything before it was written
        print(f"wrote {args.output} and its report")
        return 0
    rejected = args.output.with_name(args.output.stem + "_rejected.toml")
    write_report(report, calib, rejected)
    calib.save(rejected)
    print(f"{args.output} was NOT written; the rejected calibration and its report are in {rejected}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
