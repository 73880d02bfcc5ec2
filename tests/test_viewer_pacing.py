"""The display loop's pacing: 60 ticks a second from a whole-millisecond timer, no catch-up bursts."""
from __future__ import annotations

import pytest

from viewer.app import TickPacer


def run_loop(pacer: TickPacer, seconds: float, work_s, timer_slack_s: float = 0.0) -> list[float]:
    """Simulate the single-shot timer loop: returns the tick start times within `seconds`."""
    now = 0.0
    starts = []
    delay_ms = pacer.next_delay_ms(now)
    while True:
        now += delay_ms / 1000.0 + timer_slack_s  # the timer fires after the (rounded) wait
        if now >= seconds:
            return starts
        starts.append(now)
        now += work_s(len(starts))
        delay_ms = pacer.next_delay_ms(now)


def test_sixty_hz_from_millisecond_waits():
    # A periodic QTimer cannot: 17 ms gives 58.8 Hz, 16 ms 62.5 Hz.
    starts = run_loop(TickPacer(60.0, 0.0), 10.0, lambda i: 0.004)
    assert abs(len(starts) - 600) <= 1
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.0155 and max(gaps) <= 0.0175  # 16 or 17 ms, never bunched up


def test_an_occasional_overrun_keeps_the_rate():
    # Every 5th tick takes 20 ms, more than a period: the next one follows at once, the grid holds.
    starts = run_loop(TickPacer(60.0, 0.0), 10.0, lambda i: 0.020 if i % 5 == 0 else 0.004)
    assert abs(len(starts) - 600) <= 2
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.0125  # the tick after an overrun starts when the overrun ends, not earlier


def test_a_slow_tick_drops_deadlines_instead_of_bursting():
    # Every 10th tick takes 50 ms (a long paint): the loop falls behind, then goes on at 60 Hz.
    starts = run_loop(TickPacer(60.0, 0.0), 5.0, lambda i: 0.050 if i % 10 == 0 else 0.003)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    after_slow = [g for i, g in enumerate(gaps, start=1) if i % 10 == 0]
    others = [g for i, g in enumerate(gaps, start=1) if i % 10 != 0]
    assert all(g >= 0.0499 for g in after_slow)
    # No burst after the stall: the next ticks are still a period apart (not back to back).
    assert min(others) >= 0.0155
    assert len(starts) < 5.0 * 60 * 0.95  # the missed deadlines are gone, not made up


def test_timer_lateness_does_not_lower_the_rate():
    # A timer that always fires 1 ms late (a busy event loop) still gives 60 ticks a second.
    starts = run_loop(TickPacer(60.0, 0.0), 10.0, lambda i: 0.002, timer_slack_s=0.001)
    assert abs(len(starts) - 600) <= 2


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="tick rate"):
        TickPacer(0.0, 0.0)
