"""`ratrig synth session OUT --duration S` and `ratrig synth calibration OUT`: synthetic data on disk."""
from __future__ import annotations

import sys

SUBCOMMANDS = {
    "session": ("synthetic.cli_session", "a recorded-like session: videos, timestamps, 3D truth, contacts, calibration"),
    "calibration": ("synthetic.charuco", "ChArUco calibration videos of the four virtual cameras, board.toml, truth"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        lines = ["usage: ratrig synth {session,calibration} OUT [options]", ""]
        lines += [f"  {k:<12} {v[1]}" for k, v in SUBCOMMANDS.items()]
        print("\n".join(lines), file=sys.stderr if argv else sys.stdout)
        return 0 if not argv else 2
    import importlib

    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
