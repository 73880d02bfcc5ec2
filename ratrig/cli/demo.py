"""`ratrig demo`: the synthetic rig through every stage that exists, then a JSON summary.

    ratrig demo [--duration S] [--headless] [--json PATH] [--record DIR] ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ratrig.cli._common import add_session_args, apply_overrides, print_summary, setup_logging, viewer_possible
from ratrig.cli._session import SessionError, SessionOptions, run_session
from ratrig.config import ConfigError, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic.toml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ratrig demo", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="synthetic rig config (default: %(default)s)")
    add_session_args(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    try:
        rig = apply_overrides(load_config(args.config), args)
    except ConfigError as e:
        print(f"ratrig demo: {e}", file=sys.stderr)
        return 2
    if not all(c.source_kind == "synthetic" for c in rig.cameras):
        print(f"ratrig demo: {args.config} has non-synthetic cameras; use `ratrig run`", file=sys.stderr)
        return 2
    opts = SessionOptions(duration_s=args.duration, headless=not viewer_possible(args.headless), json_path=args.json,
                          record_dir=args.record, record_calibration_dir=args.record_calibration,
                          run_dir=args.run_dir, role=args.role, synthetic_truth=True)
    try:
        summary = run_session(rig, opts)
    except (SessionError, ValueError) as e:
        print(f"ratrig demo: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
