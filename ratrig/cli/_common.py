"""Arguments shared by `ratrig demo` and `ratrig run`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from ratrig.config import RigConfig, replace_section


def add_session_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None, metavar="S", help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--headless", action="store_true", help="do not open the viewer")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the summary to this file")
    p.add_argument("--record", default=None, metavar="DIR", help="record the session into a new folder inside DIR")
    p.add_argument("--record-calibration", default=None, metavar="DIR",
                   help="store synchronised calibration videos in DIR (for `ratrig calibrate`)")
    p.add_argument("--run-dir", default=None, metavar="DIR", help="where logs and the effective config go")
    p.add_argument("--model", default=None, metavar="PATH", help="override inference.model")
    p.add_argument("--no-inference", action="store_true", help="cameras only (transport check)")
    p.add_argument("--calibration", default=None, metavar="PATH", help="override calibration.file")
    p.add_argument("--fps", type=float, default=None, help="override every camera's fps")
    p.add_argument("--base-port", type=int, default=None, help="override network.base_port")
    p.add_argument("--role", choices=["all", "cameras", "processing"], default="all",
                   help="run every stage here (default), only the cameras, or every stage but the cameras "
                        "(a rig on several hosts: README 'Several hosts')")
    p.add_argument("--kill-camera", default=None, metavar="NAME@S",
                   help="fault injection: camera NAME dies S seconds into the session (synthetic rig)")
    p.add_argument("-v", "--verbose", action="store_true")


def apply_overrides(rig: RigConfig, args: argparse.Namespace) -> RigConfig:
    """CLI flags override the file."""
    if args.model is not None:
        rig = replace_section(rig, "inference", model=str(Path(args.model).resolve()))
    if args.no_inference:
        rig = replace_section(rig, "inference", model="")
    if args.calibration is not None:
        rig = replace_section(rig, "calibration", file=str(Path(args.calibration).resolve()))
    if args.base_port is not None:
        rig = replace_section(rig, "network", base_port=args.base_port)
    if args.fps is not None:
        rig = dataclasses.replace(rig, cameras=[dataclasses.replace(c, fps=args.fps) for c in rig.cameras])
    if args.kill_camera:
        name, _, secs = args.kill_camera.partition("@")
        if name not in rig.camera_names or not secs:
            raise SystemExit(f"--kill-camera: expected NAME@SECONDS with NAME one of {rig.camera_names}")
        die = dict(rig.synthetic.die_after_s)
        die[name] = float(secs)
        rig = replace_section(rig, "synthetic", die_after_s=die)
    return rig


def viewer_possible(headless: bool) -> bool:
    """False (with a log line) when the viewer was asked for but there is no display to show it on."""
    if headless:
        return False
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        logging.getLogger("ratrig").warning("no display (DISPLAY unset): running headless; "
                                            "attach later with `ratrig view --connect ...`")
        return False
    return True


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)


def print_summary(summary: dict) -> None:
    print(json.dumps(summary, indent=2))
