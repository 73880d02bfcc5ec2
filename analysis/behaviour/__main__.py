"""`python -m analysis.behaviour fit|run ...` (see analysis.behaviour.cli)."""
from __future__ import annotations

import sys

from analysis.behaviour.cli import main

if __name__ == "__main__":
    sys.exit(main())
