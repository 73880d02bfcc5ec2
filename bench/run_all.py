"""Run every benchmark in this folder, one after the other, printing their figures.

    python bench/run_all.py [NAME...]     e.g. python bench/run_all.py transport fusion
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(s.stem == f"bench_{a}" for a in argv)]
    failed = []
    for script in scripts:
        print(f"\n===== {script.name} =====", flush=True)
        t = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"----- {script.name}: exit {rc}, {time.monotonic() - t:.0f} s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
