"""One monotonic clock for every stage, and one mapping to wall-clock time per process.

`time.monotonic_ns` is CLOCK_MONOTONIC on Linux: one clock shared by every process of the machine,
so timestamps taken in different processes can be subtracted directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


def now_ns() -> int:
    """Monotonic time in ns; the stamp every stage writes into its messages."""
    return time.monotonic_ns()


@dataclass(frozen=True, slots=True)
class TimebaseMapping:
    """Pairs one monotonic reading with one wall-clock reading, taken back to back.

    Used only for export (wall-clock time of a frame); never for latency.
    """

    monotonic_ns: int
    wall_ns: int

    @classmethod
    def now(cls) -> TimebaseMapping:
        # Take the wall clock between two monotonic reads and keep the midpoint, so the pair is
        # consistent to within the duration of one call.
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        return cls(monotonic_ns=(before + after) // 2, wall_ns=wall)

    def to_wall_ns(self, monotonic_ns: int) -> int:
        return self.wall_ns + (monotonic_ns - self.monotonic_ns)
