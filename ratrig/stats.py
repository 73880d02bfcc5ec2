"""Counters every stage keeps and publishes: latency percentiles, rates, stop signals."""
from __future__ import annotations

import signal
import time
from collections import deque
from typing import Any

import numpy as np


class LatencyWindow:
    """Latency samples in ms; percentiles over the last `maxlen` samples (the whole run for demos)."""

    def __init__(self, maxlen: int = 200_000) -> None:
        self._samples: deque[float] = deque(maxlen=maxlen)
        self.count = 0

    def add(self, ms: float) -> None:
        self._samples.append(float(ms))
        self.count += 1

    def summary(self) -> dict[str, float] | None:
        """{"p50", "p99", "max", "n"} or None when empty (a stage that saw nothing reports nothing)."""
        if not self._samples:
            return None
        a = np.fromiter(self._samples, float)
        return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                "max": round(float(a.max()), 3), "n": int(self.count)}

    def values(self) -> np.ndarray:
        return np.fromiter(self._samples, float)


class RateMeter:
    """Events per second over the whole run (from the first tick) and over a recent window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.count = 0
        self._recent: deque[float] = deque()
        self.window_s = window_s

    def tick(self) -> None:
        t = time.monotonic()
        if self.first is None:
            self.first = t
        self.last = t
        self.count += 1
        self._recent.append(t)
        while self._recent and t - self._recent[0] > self.window_s:
            self._recent.popleft()

    def rate(self) -> float:
        """Mean rate from the first to the last tick."""
        if self.first is None or self.last is None or self.count < 2 or self.last <= self.first:
            return 0.0
        return round((self.count - 1) / (self.last - self.first), 3)

    def recent_rate(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        return round((len(self._recent) - 1) / (self._recent[-1] - self._recent[0]), 3)


def install_stop_handlers(stop: list[bool]) -> None:
    """SIGTERM and SIGINT set stop[0] = True; the stage's loop checks it and shuts down cleanly."""

    def handler(signum: int, frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
