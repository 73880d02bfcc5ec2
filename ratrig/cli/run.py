"""`ratrig run CONFIG.toml`: run a user's rig (real cameras or video files), then a JSON summary.

    ratrig run CONFIG.toml [--duration S] [--headless] [--json PATH] [--record DIR]
                           [--record-calibration DIR] [--check]
"""
from __future__ import annotations

import argparse
import sys

from ratrig.camera import CalibrationError, load_calibration
from ratrig.cli._common import add_session_args, apply_overrides, print_summary, setup_logging, viewer_possible
from ratrig.cli._session import SessionError, SessionOptions, check_events, check_model, run_session
from ratrig.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ratrig run", description=__doc__.splitlines()[0])
    p.add_argument("config", help="rig TOML file (see configs/corridor-4cam.toml)")
    p.add_argument("--check", action="store_true", help="validate config, cameras, calibration and model, then exit")
    add_session_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        rig = apply_overrides(load_config(args.config, check_sources=True), args)
        if rig.calibration.file:
            load_calibration(rig.calibration.file, rig.camera_names)
    except (ConfigError, CalibrationError) as e:
        print(f"ratrig run: {e}", file=sys.stderr)
        return 2
    if args.check:
        try:
            check_events(rig)
        except SessionError as e:
            print(f"ratrig run: {e}", file=sys.stderr)
            return 2
        if rig.inference.model:
            try:
                info = check_model(rig)
            except SessionError as e:
                print(f"ratrig run: {e}", file=sys.stderr)
                return 2
            print(f"model: {info['path']} ({info['engine']}, sha256 {info['sha256'][:12]}..., "
                  f"bodyparts {info['bodyparts']})")
        print(f"{args.config}: OK ({len(rig.cameras)} cameras)")
        return 0
    synthetic = all(c.source_kind == "synthetic" for c in rig.cameras)
    opts = SessionOptions(duration_s=args.duration, headless=not viewer_possible(args.headless), json_path=args.json,
                          record_dir=args.record, record_calibration_dir=args.record_calibration,
                          run_dir=args.run_dir, role=args.role, synthetic_truth=synthetic)
    try:
        summary = run_session(rig, opts)
    except (SessionError, ValueError) as e:
        print(f"ratrig run: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
