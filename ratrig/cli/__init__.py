"""The `ratrig` command: one entry point, one module per command, imported only when used.

`ratrig.cli` is the composition root: unlike the rest of the shared package it may import stages
(lazily, per command), because starting them is its job.
"""
from __future__ import annotations

import importlib
import sys

#: command -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("ratrig.cli.demo", "run the synthetic rig through every stage and print a JSON summary"),
    "run": ("ratrig.cli.run", "run a rig from its TOML config (real cameras or video files)"),
    "synth": ("ratrig.cli.synth", "write synthetic data: `synth session OUT` or `synth calibration OUT`"),
    "board": ("calibration.cli_board", "draw a printable calibration board (PDF/PNG) and its board.toml"),
    "calibrate": ("calibration.cli_calibrate", "calibrate the cameras from board videos or image folders"),
    "set-floor": ("calibration.cli_set_floor", "put the world origin and axes on a board lying on the floor"),
    "view": ("viewer.app", "open the live viewer on a running session or a recorded one"),
    "replay": ("recorder.replay", "stream a recorded session through the live pipeline"),
    "reprocess": ("recorder.reprocess", "rerun 2D inference and offline 3D on a recorded session"),
    "export": ("recorder.export", "export a session to Anipose, DeepLabCut or NWB"),
    "triangulate": ("recorder.triangulate", "3D poses from DeepLabCut/SLEAP 2D files and a calibration (no cameras)"),
    "analyze": ("analysis.cli", "gait, corridor, cylinder and rotation reports from sessions"),
    "batch": ("ratrig.cli.batch", "reprocess, analyze or triangulate many sessions on Dask (local or cluster)"),
    "doctor": ("ratrig.doctor", "check the installation (one OpenCV, numpy<2, imports)"),
    "keys": ("ratrig.cli.keys", "make CurveZMQ key pairs for authenticated multi-host sessions"),
}


def usage() -> str:
    lines = ["usage: ratrig COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`ratrig COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from ratrig import __version__

        print(f"ratrig {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        print(f"ratrig: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(argv[1:]) or 0)
