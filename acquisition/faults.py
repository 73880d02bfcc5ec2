"""Faults on demand for tests and demos: dropped frames, timestamp jitter, a camera that dies.

Applied by the capture loop to any source, so the same faults can be injected into a video file or
a synthetic camera. Deterministic per seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class CameraDied(RuntimeError):
    """Raised by the fault injector when a camera is scheduled to die."""


@dataclass
class FaultInjector:
    drop_prob: float = 0.0
    jitter_ms: float = 0.0
    die_after_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    @property
    def active(self) -> bool:
        return self.drop_prob > 0 or self.jitter_ms > 0 or self.die_after_s is not None

    def check_alive(self, elapsed_s: float) -> None:
        if self.die_after_s is not None and elapsed_s >= self.die_after_s:
            raise CameraDied(f"fault injection: camera dies after {self.die_after_s} s")

    def drop(self) -> bool:
        return self.drop_prob > 0 and bool(self._rng.random() < self.drop_prob)

    def jitter_ns(self) -> int:
        if self.jitter_ms <= 0:
            return 0
        return int(self._rng.normal(0.0, self.jitter_ms) * 1e6)
