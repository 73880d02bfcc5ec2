"""Synthetic corridor test: a rat walking a corridor lined with sugar pots, with known retrievals.

The corridor is `synthetic.rig.Corridor` (default 1500 x 70 mm). Pots sit just outside both long
walls (`pots_per_side` per wall, evenly along the central part), as in the lateralised corridor task
(Dowd et al. 2005). The rat walks legs end to end, turning round at each end; on a leg it stops at
planned pots and turns its head into them (a retrieval), and sometimes only glances towards a pot
without reaching it (a sniff, which must not count).

Ground truth: every retrieval as (time the nose reaches the pot, pot index, side of the pot
relative to the rat: 'left'/'right'). The same pot wall is on the rat's left walking one way and on
its right walking back. Body keypoints come from `synthetic.scenarios_cylinder.body_keypoints`;
paws slide with the body (no gait here). All lengths mm, times s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ratrig.skeleton import KEYPOINTS
from synthetic.rig import Corridor
from synthetic.scenarios_cylinder import BODY_LENGTH_MM, _smooth, body_keypoints

POT_WALL_OFFSET_MM = 8.0  # pot centre beyond the inner wall face


@dataclass(frozen=True, slots=True)
class CorridorScenario:
    """A synthetic corridor session and its truth.

    Attributes:
        times_s: (T,); keypoints_mm: (T, 8, 3) in `keypoint_names` order.
        pots_mm: (P, 2) pot centres; pots 0..n-1 on the +y wall, n..2n-1 on the -y wall.
        pot_zone_radius_mm: the zone the scenario's retrievals reach into (and sniffs stay out of).
        retrievals: (time_s, pot, side relative to the rat).
        n_sniffs: glances that stop short of the zone.
    """

    times_s: np.ndarray
    keypoints_mm: np.ndarray
    keypoint_names: tuple[str, ...]
    corridor: Corridor
    pots_mm: np.ndarray
    pot_zone_radius_mm: float
    retrievals: tuple[tuple[float, int, str], ...]
    n_sniffs: int

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for _, _, side in self.retrievals if side == s) for s in ("left", "right")}


def pot_positions(corridor: Corridor, pots_per_side: int = 10) -> np.ndarray:
    """(2 * pots_per_side, 2) pot centres: first the +y wall, then the -y wall, each along +x."""
    span = corridor.length_mm - 420.0
    xs = np.linspace(-span / 2, span / 2, pots_per_side)
    y = corridor.width_mm / 2 + POT_WALL_OFFSET_MM
    return np.r_[np.c_[xs, np.full(pots_per_side, y)], np.c_[xs, np.full(pots_per_side, -y)]]


def simulate_corridor(
    legs: list[list[tuple[int, str]]],
    fps: float = 30.0,
    seed: int = 0,
    corridor: Corridor | None = None,
    pots_per_side: int = 10,
    speed_mm_s: float = 250.0,
    pot_zone_radius_mm: float = 20.0,
) -> CorridorScenario:
    """Walk the planned legs.

    Args:
        legs: one list per leg (the first leg walks towards +x, then alternating); each item is
            (pot index, "retrieve" or "sniff"). Items are visited in the order the rat passes the pots.
        fps: frame rate. seed: random seed (wander, hold times).
        corridor: geometry (default `Corridor()`).
        pots_per_side: pots along each wall.
        speed_mm_s: walking speed between stops.
        pot_zone_radius_mm: zone radius the analysis will use; retrievals put the nose well inside
            it, sniffs stop at least 6 mm outside it plus the exit margin.
    """
    corridor = corridor or Corridor()
    rng = np.random.default_rng(seed)
    pots = pot_positions(corridor, pots_per_side)
    fine_hz = 600.0
    seg: dict[str, list[np.ndarray]] = {"t": [], "x": [], "y": [], "h": [], "yaw": [], "drop": []}
    state = {"t": 0.0, "x": -corridor.length_mm / 2 + 60.0, "h": 0.0}
    retrievals: list[tuple[float, int, str]] = []
    n_sniffs = 0

    def emit(duration: float, x_of, h_of, yaw_of=None, drop_of=None) -> None:
        n = max(2, int(round(duration * fine_hz)))
        u = np.arange(n) / n
        seg["t"].append(state["t"] + u * duration)
        seg["x"].append(x_of(u))
        seg["y"].append(2.0 * np.sin(2 * np.pi * (state["t"] + u * duration) * 0.7))
        seg["h"].append(h_of(u))
        seg["yaw"].append(yaw_of(u) if yaw_of else np.zeros(n))
        seg["drop"].append(drop_of(u) if drop_of else np.zeros(n))
        state["t"] += duration

    def walk_to(x_target: float) -> None:
        x0, h = state["x"], state["h"]
        dur = max(0.3, abs(x_target - x0) / speed_mm_s)
        emit(dur, lambda u: x0 + _smooth(u) * (x_target - x0), lambda u: np.full(u.size, h))
        state["x"] = x_target

    emit(0.5, lambda u: np.full(u.size, state["x"]), lambda u: np.zeros(u.size))
    half_body = BODY_LENGTH_MM / 2
    for li, leg in enumerate(legs):
        direction = 1.0 if li % 2 == 0 else -1.0
        ordered = sorted(leg, key=lambda item: direction * pots[item[0]][0])
        for pot, action in ordered:
            if action not in ("retrieve", "sniff"):
                raise ValueError(f"simulate_corridor: unknown action {action!r}")
            px, py = pots[pot]
            # side of the pot relative to the rat: +y wall is on the left walking towards +x
            side = "left" if (py > 0) == (direction > 0) else "right"
            sgn = 1.0 if side == "left" else -1.0
            if action == "retrieve":
                yaw, along, drop = 1.25, 45.0 * np.cos(1.25), 12.0
            else:
                yaw, along, drop = 0.35, 45.0 * np.cos(0.35), 0.0
            # stop with the neck beside the pot, minus how far the turned head reaches forward
            x_stop = px - direction * (half_body + along)
            if direction * (x_stop - state["x"]) < 0:
                raise ValueError(f"simulate_corridor: pot {pot} is behind the rat on leg {li}")
            walk_to(x_stop)
            hold = rng.uniform(0.5, 1.0) if action == "retrieve" else 0.4
            turn_s = 0.3
            h = state["h"]
            t_start = state["t"]
            emit(hold + 2 * turn_s, lambda u: np.full(u.size, x_stop), lambda u: np.full(u.size, h),
                 lambda u: sgn * yaw * np.minimum(_smooth(u * (hold + 2 * turn_s) / turn_s),
                                                  _smooth((hold + 2 * turn_s) * (1 - u) / turn_s)),
                 lambda u: drop * np.minimum(_smooth(u * (hold + 2 * turn_s) / turn_s),
                                             _smooth((hold + 2 * turn_s) * (1 - u) / turn_s)))
            if action == "retrieve":
                retrievals.append((t_start + turn_s, int(pot), side))
            else:
                n_sniffs += 1
        # walk to the end and turn round (alternating turning direction)
        x_end = direction * (corridor.length_mm / 2 - 60.0)
        walk_to(x_end)
        h0 = state["h"]
        turn = np.pi if rng.random() < 0.5 else -np.pi
        emit(1.2, lambda u: np.full(u.size, x_end), lambda u: h0 + _smooth(u) * turn)
        state["h"] = h0 + turn
    emit(0.5, lambda u: np.full(u.size, state["x"]), lambda u: np.full(u.size, state["h"]))
    ft = np.concatenate(seg["t"])
    times = np.arange(0.0, ft[-1], 1.0 / fps)
    idx = np.clip(np.searchsorted(ft, times, side="right") - 1, 0, ft.size - 1)
    arr = {k: np.concatenate(v)[idx] for k, v in seg.items() if k != "t"}
    center = np.c_[arr["x"], arr["y"]]
    kp = body_keypoints(center, arr["h"], np.zeros(times.size), head_yaw=arr["yaw"], head_drop=arr["drop"])
    return CorridorScenario(times, kp, KEYPOINTS, corridor, pots, float(pot_zone_radius_mm),
                            tuple(retrievals), n_sniffs)


def default_legs(seed: int = 0, n_legs: int = 4, p_left: float = 0.5, per_leg: int = 5,
                 pots_per_side: int = 10) -> list[list[tuple[int, str]]]:
    """Random legs: `per_leg` retrievals per leg at distinct pot positions along the corridor, the
    pot on the rat's left with probability `p_left`, and one sniff per leg."""
    rng = np.random.default_rng(seed)
    legs = []
    for li in range(n_legs):
        direction = 1.0 if li % 2 == 0 else -1.0
        slots = rng.choice(pots_per_side, size=min(per_leg + 1, pots_per_side), replace=False)
        items = []
        for k, slot in enumerate(slots):
            left = rng.random() < p_left
            plus_y_wall = left == (direction > 0)
            pot = int(slot) if plus_y_wall else int(slot) + pots_per_side
            items.append((pot, "sniff" if k == len(slots) - 1 else "retrieve"))
        legs.append(items)
    return legs
