"""A tiny stage for tests/test_supervisor_standby.py: `python -m tests.standby_stage --log FILE`.

It supports `--standby` the way fusion and the recorder do (`ratrig.standby`) and appends one line
per step to FILE: `standby PID`, `run PID`, `standby-stop PID`, `stop PID`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from ratrig.standby import wait_for_takeover


def note(path: str, what: str) -> None:
    with open(path, "a") as f:
        f.write(f"{what} {os.getpid()}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--log", required=True)
    p.add_argument("--standby", action="store_true")
    p.add_argument("--exit-after-s", type=float, default=None, help="exit with --exit-code after this long running")
    p.add_argument("--exit-code", type=int, default=0)
    args = p.parse_args(argv)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    if args.standby:
        note(args.log, "standby")
        if not wait_for_takeover(lambda: bool(stopped)):
            note(args.log, "standby-stop")
            return 0
    note(args.log, "run")
    t0 = time.monotonic()
    while not stopped:
        if args.exit_after_s is not None and time.monotonic() - t0 >= args.exit_after_s:
            return args.exit_code
        time.sleep(0.02)
    note(args.log, "stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
