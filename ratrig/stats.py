"""Counters every stage keeps and publishes: latency percentiles, rates, stop signals."""
from __future__ import annotations

import signal
import time
from collections import deque
from typing import Any

import numpy as np


class LatencyWindow:
    """Latency samples in ms; exact percentiles over the last `maxlen` samples.

    The samples live in a fixed numpy ring (8 bytes each, allocated on first use), so a stage that
    runs for hours neither grows nor spends more time on each `summary()` than in its first minutes
    (a deque of Python floats grew ~32 bytes per sample and its summary cost grew with the run, which
    showed as rising latency in a 30-minute soak). The default window of 10,000 samples is the whole
    run of a demo (11 minutes at 15 fps) and the last minutes of a longer session.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen: expected >= 1, got {maxlen}")
        self.maxlen = int(maxlen)
        self._ring: np.ndarray | None = None
        self.count = 0

    def add(self, ms: float) -> None:
        if self._ring is None:
            self._ring = np.empty(self.maxlen)
        self._ring[self.count % self.maxlen] = ms
        self.count += 1

    def summary(self) -> dict[str, float] | None:
        """{"p50", "p99", "max", "n"} or None when empty (a stage that saw nothing reports nothing);
        n counts every sample, the percentiles and max cover the window."""
        if not self.count:
            return None
        a = self.values()
        return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                "max": round(float(a.max()), 3), "n": int(self.count)}

    def values(self) -> np.ndarray:
        """The samples in the window, oldest first (a copy)."""
        if self._ring is None:
            return np.empty(0)
        n = self.count
        if n <= self.maxlen:
            return self._ring[:n].copy()
        i = n % self.maxlen
        return np.concatenate([self._ring[i:], self._ring[:i]])


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
