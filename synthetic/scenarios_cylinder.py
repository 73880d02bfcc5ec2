"""Synthetic cylinder test: a rat rearing against a cylinder wall with a known paw-use record.

A kinematic body (trunk position, heading, rearing pitch, fore paw targets) is evaluated on the
frame grid and turned into the lab's eight keypoints (`ratrig.skeleton.KEYPOINTS`). The plan is a
sequence of episodes:

- "rear": walk to a wall point, pitch up, place the left, the right or both fore paws on the wall
  (a "both" placement lands both paws within 40 ms), optionally place the second paw later
  ("left_then_right": two separate placements 0.6 s apart), hold, come down;
- "turn": walk a full circle (or several) in one direction around a small circle in the cylinder;
- "explore": wander a little on the floor.

Ground truth: every wall placement (time, limb) and the number of full body-axis turns each way.
No gait: paws slide with the body on the floor; the cylinder test does not look at floor steps.
All lengths mm, times s; world frame of the project (z up, floor z = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ratrig.skeleton import KEYPOINTS

BODY_LENGTH_MM = 150.0  # tail base to neck, on the floor
PAW_FLOOR_Z_MM = 4.0


def _smooth(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def body_keypoints(center_xy: np.ndarray, heading: np.ndarray, pitch: np.ndarray,
                   head_yaw: np.ndarray | None = None, head_drop: np.ndarray | None = None,
                   fore_left: np.ndarray | None = None, fore_right: np.ndarray | None = None) -> np.ndarray:
    """Kinematic rat -> (T, 8, 3) keypoints in `KEYPOINTS` order.

    Args:
        center_xy: (T, 2) hip-to-neck midpoint on the floor projection when not rearing.
        heading: (T,) body axis direction, rad (0 = +x, counter-clockwise).
        pitch: (T,) body pitch about the hips, rad (0 = on all fours, ~1.2 = rearing).
        head_yaw: (T,) head turn relative to the body axis, rad (+ = to the left).
        head_drop: (T,) nose lowered by this many mm (into a pot).
        fore_left, fore_right: (T, 3) fore paw positions to use instead of the default ones
            (NaN rows: default).
    """
    n = heading.shape[0]
    u = np.c_[np.cos(heading), np.sin(heading)]
    lat = np.c_[-u[:, 1], u[:, 0]]  # to the rat's left
    half = BODY_LENGTH_MM / 2.0
    hip = center_xy - half * u
    tail = np.c_[hip, np.full(n, 40.0)]
    reach = BODY_LENGTH_MM * np.cos(pitch)
    neck = np.c_[hip + reach[:, None] * u, 50.0 + BODY_LENGTH_MM * np.sin(pitch)]
    yaw = np.zeros(n) if head_yaw is None else head_yaw
    hu = np.c_[np.cos(heading + yaw), np.sin(heading + yaw)]
    hl = np.c_[-hu[:, 1], hu[:, 0]]
    nose = np.c_[neck[:, :2] + 45.0 * np.cos(pitch)[:, None] * hu, neck[:, 2] + 45.0 * np.sin(pitch) - 12.0]
    if head_drop is not None:
        nose[:, 2] -= head_drop
    ear_l = np.c_[neck[:, :2] + 15.0 * hl + 5.0 * hu, neck[:, 2] + 12.0]
    ear_r = np.c_[neck[:, :2] - 15.0 * hl + 5.0 * hu, neck[:, 2] + 12.0]
    # fore paws: under the shoulders on the floor, tucked to the chest as the body pitches up
    shoulder = hip + (0.85 * reach)[:, None] * u
    rear = _smooth(pitch / 0.6)[:, None]
    chest_z = 50.0 + 0.8 * BODY_LENGTH_MM * np.sin(pitch) - 30.0
    fl_floor = np.c_[shoulder + 16.0 * lat, np.full(n, PAW_FLOOR_Z_MM)]
    fr_floor = np.c_[shoulder - 16.0 * lat, np.full(n, PAW_FLOOR_Z_MM)]
    fl_chest = np.c_[shoulder + 12.0 * lat + 10.0 * u, chest_z]
    fr_chest = np.c_[shoulder - 12.0 * lat + 10.0 * u, chest_z]
    fl = (1 - rear) * fl_floor + rear * fl_chest
    fr = (1 - rear) * fr_floor + rear * fr_chest
    if fore_left is not None:
        fl = np.where(np.isfinite(fore_left), fore_left, fl)
    if fore_right is not None:
        fr = np.where(np.isfinite(fore_right), fore_right, fr)
    hl_paw = np.c_[hip + 20.0 * u + 22.0 * lat, np.full(n, PAW_FLOOR_Z_MM)]
    hr_paw = np.c_[hip + 20.0 * u - 22.0 * lat, np.full(n, PAW_FLOOR_Z_MM)]
    parts = {"nose": nose, "left_ear": ear_l, "right_ear": ear_r, "tail_base": tail,
             "front_left_paw": fl, "front_right_paw": fr, "hind_left_paw": hl_paw, "hind_right_paw": hr_paw}
    return np.stack([parts[k] for k in KEYPOINTS], axis=1)


@dataclass(frozen=True, slots=True)
class CylinderScenario:
    """A synthetic cylinder session and its truth.

    Attributes:
        times_s: (T,); keypoints_mm: (T, 8, 3) in `keypoint_names` order.
        center_mm, radius_mm: the cylinder.
        placements: truth wall placements, (time_s, limb) with limb 'left', 'right' or 'both'.
        left_turns, right_turns: full body-axis turns each way (counter-clockwise = left).
    """

    times_s: np.ndarray
    keypoints_mm: np.ndarray
    keypoint_names: tuple[str, ...]
    center_mm: tuple[float, float]
    radius_mm: float
    placements: tuple[tuple[float, str], ...]
    left_turns: int
    right_turns: int

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for _, limb in self.placements if limb == k) for k in ("left", "right", "both")}


def simulate_cylinder(
    episodes: list[tuple],
    fps: float = 30.0,
    seed: int = 0,
    center_mm: tuple[float, float] = (0.0, 0.0),
    radius_mm: float = 100.0,
) -> CylinderScenario:
    """Evaluate a plan of episodes.

    Args:
        episodes: list of tuples:
            ("rear", wall_angle_rad, kind, hold_s) with kind 'left', 'right', 'both' or
            'left_then_right' / 'right_then_left'; the wall angle is taken relative to the rat's
            current reference heading and must lie within +-pi/3 of it;
            ("turn", n_turns) with integer n_turns > 0 counter-clockwise (left), < 0 clockwise;
            ("explore", seconds).
        fps: frame rate.
        seed: random seed for the small wander and timing jitter.
        center_mm, radius_mm: the cylinder (radius at least 90 mm: the rat must fit).

    Headings outside turn episodes stay within pi/3 of a reference heading that only turn episodes
    move (by whole turns), and each turn episode starts slightly ahead of the reference and ends
    slightly beyond its last full turn, so the 360-degree rule counts exactly the planned turns.
    """
    if radius_mm < 90.0:
        raise ValueError(f"simulate_cylinder: radius_mm must be >= 90 for a rat, got {radius_mm}")
    rng = np.random.default_rng(seed)
    home = np.array(center_mm, float)
    fine_hz = 600.0
    seg_t, seg_c, seg_h, seg_p, paw_l, paw_r = [], [], [], [], [], []
    placements: list[tuple[float, str]] = []
    state = {"t": 0.0, "c": home.copy(), "h": 0.0, "ref": 0.0}
    left_turns = right_turns = 0

    def emit(duration: float, c_of, h_of, p_of, fl_of=None, fr_of=None) -> None:
        n = max(2, int(round(duration * fine_hz)))
        u = np.arange(n) / n
        seg_t.append(state["t"] + u * duration)
        seg_c.append(c_of(u))
        seg_h.append(h_of(u))
        seg_p.append(p_of(u))
        nanp = np.full((n, 3), np.nan)
        paw_l.append(fl_of(u) if fl_of else nanp)
        paw_r.append(fr_of(u) if fr_of else nanp)
        state["t"] += duration

    def move_to(target: np.ndarray, heading_to: float, duration: float, pitch_of=None) -> None:
        c0, h0 = state["c"].copy(), state["h"]
        dh = heading_to - h0
        emit(duration, lambda u: c0 + _smooth(u)[:, None] * (target - c0), lambda u: h0 + _smooth(u) * dh,
             pitch_of or (lambda u: np.zeros_like(u)))
        state["c"], state["h"] = np.array(target, float), heading_to

    def free_heading() -> float:
        return state["ref"] + rng.uniform(-np.pi / 3, np.pi / 3)

    for ep in episodes:
        kind = ep[0]
        if kind == "explore":
            move_to(home + rng.uniform(-20, 20, 2), free_heading(), float(ep[1]))
        elif kind == "turn":
            n_turns = int(ep[1])
            if n_turns == 0:
                raise ValueError("simulate_cylinder: a turn episode needs n_turns != 0")
            sgn = float(np.sign(n_turns))
            r0 = 25.0
            h0 = state["ref"] + 0.2 * sgn
            a0 = h0 - sgn * np.pi / 2  # the rat's angle on the small circle, heading tangent to it
            move_to(home + r0 * np.array([np.cos(a0), np.sin(a0)]), h0, 0.8)
            total = 2 * np.pi * n_turns + 0.4 * sgn
            emit(2.2 * abs(n_turns), lambda u: home + r0 * np.c_[np.cos(a0 + total * u), np.sin(a0 + total * u)],
                 lambda u: h0 + total * u, lambda u: np.zeros_like(u))
            state["c"] = home + r0 * np.array([np.cos(a0 + total), np.sin(a0 + total)])
            state["h"] = h0 + total
            state["ref"] += 2 * np.pi * n_turns
            if n_turns > 0:
                left_turns += n_turns
            else:
                right_turns -= n_turns
            move_to(home + rng.uniform(-15, 15, 2), state["ref"] + 0.3 * sgn, 0.8)
        elif kind == "rear":
            _, rel_angle, limb, hold = ep
            if abs(rel_angle) > np.pi / 3 + 1e-9:
                raise ValueError(f"simulate_cylinder: rear wall angle must be within pi/3, got {rel_angle}")
            angle = state["ref"] + float(rel_angle)
            wall_dir = np.array([np.cos(angle), np.sin(angle)])
            # on all fours the fore paws stay well inside the wall; stepping up moves the hips forward
            c_floor = home + (radius_mm - 95.0) * wall_dir
            c_up = home + (radius_mm - 21.0) * wall_dir
            move_to(c_floor, angle, 1.0)
            pitch_up = 1.15
            side_off = 16.0 / radius_mm
            wall_h = 130.0 + rng.uniform(-10, 10)
            lp = np.r_[home + radius_mm * np.array([np.cos(angle + side_off), np.sin(angle + side_off)]), wall_h]
            rp = np.r_[home + radius_mm * np.array([np.cos(angle - side_off), np.sin(angle - side_off)]), wall_h]
            up_s, reach_s = 0.5, 0.15
            # rise in place, then step up to the wall (paws tucked, far from it), place, step back
            move_to(c_floor, angle, up_s, lambda u: pitch_up * _smooth(u))
            move_to(c_up, angle, 0.4, lambda u: np.full(u.size, pitch_up))
            t_top = state["t"]
            if limb == "both":
                sched = {"left": 0.15, "right": 0.15 + rng.uniform(0.0, 0.04)}
                truth = [(0.15, "both")]
            elif limb in ("left", "right"):
                sched = {limb: 0.15}
                truth = [(0.15, limb)]
            elif limb in ("left_then_right", "right_then_left"):
                first, second = limb.split("_then_")
                sched = {first: 0.15, second: 0.75}
                truth = [(0.15, first), (0.75, second)]
            else:
                raise ValueError(f"simulate_cylinder: unknown rear kind {limb!r}")
            hold = max(float(hold), max(sched.values()) + 0.5)
            uvec = wall_dir
            hip = c_up - BODY_LENGTH_MM / 2 * uvec
            shoulder = hip + 0.85 * BODY_LENGTH_MM * np.cos(pitch_up) * uvec
            chest_z = 50.0 + 0.8 * BODY_LENGTH_MM * np.sin(pitch_up) - 30.0

            def paw_path(side: str, target: np.ndarray, t_on: float):
                lat = np.array([-uvec[1], uvec[0]]) * (1.0 if side == "left" else -1.0)
                chest = np.r_[shoulder + 12.0 * lat + 10.0 * uvec, chest_z]

                def f(u: np.ndarray) -> np.ndarray:
                    tt = u * (hold + 0.4)
                    w_in = _smooth((tt - (t_on - reach_s)) / reach_s)
                    w_out = 1.0 - _smooth((tt - hold) / 0.2)
                    w = np.minimum(w_in, w_out)[:, None]
                    return (1 - w) * chest + w * target
                return f

            fl = paw_path("left", lp, sched["left"]) if "left" in sched else None
            fr = paw_path("right", rp, sched["right"]) if "right" in sched else None
            emit(hold + 0.4, lambda u: np.repeat(c_up[None], u.size, 0), lambda u: np.full(u.size, angle),
                 lambda u: np.full(u.size, pitch_up), fl, fr)
            placements.extend((t_top + t_rel, lab) for t_rel, lab in truth)
            move_to(c_floor, angle, 0.4, lambda u: np.full(u.size, pitch_up))
            move_to(c_floor, angle, up_s, lambda u: pitch_up * (1 - _smooth(u)))
            move_to(home + rng.uniform(-15, 15, 2), free_heading(), 1.0)
        else:
            raise ValueError(f"simulate_cylinder: unknown episode {kind!r}")
    emit(0.5, lambda u: np.repeat(state["c"][None], u.size, 0), lambda u: np.full(u.size, state["h"]),
         lambda u: np.zeros_like(u))
    ft = np.concatenate(seg_t)
    fc, fh, fp = np.concatenate(seg_c), np.concatenate(seg_h), np.concatenate(seg_p)
    fl_all, fr_all = np.concatenate(paw_l), np.concatenate(paw_r)
    times = np.arange(0.0, ft[-1], 1.0 / fps)
    idx = np.clip(np.searchsorted(ft, times, side="right") - 1, 0, ft.size - 1)
    kp = body_keypoints(fc[idx], fh[idx], fp[idx], fore_left=fl_all[idx], fore_right=fr_all[idx])
    return CylinderScenario(times, kp, KEYPOINTS, (float(center_mm[0]), float(center_mm[1])), float(radius_mm),
                            tuple(placements), left_turns, right_turns)


def default_plan(seed: int = 0, n_rears: int = 20, p_left: float = 0.5, p_both: float = 0.2) -> list[tuple]:
    """A 2-3 minute cylinder session: rears with a given paw-use mix, some turning, some wandering.

    `p_left` is the share of single-paw placements made with the left paw; `p_both` the share of
    rears with both paws. About one rear in six places the two paws one after the other.
    """
    rng = np.random.default_rng(seed)
    plan: list[tuple] = [("explore", 1.0)]
    for i in range(n_rears):
        r = rng.random()
        if r < p_both:
            kind = "both"
        elif r < p_both + 0.15:
            kind = "left_then_right" if rng.random() < 0.5 else "right_then_left"
        else:
            kind = "left" if rng.random() < p_left else "right"
        plan.append(("rear", rng.uniform(-np.pi / 3, np.pi / 3), kind, rng.uniform(0.6, 1.5)))
        if i % 5 == 2:
            plan.append(("turn", int(rng.choice([-1, 1, 2]))))
        if i % 4 == 1:
            plan.append(("explore", rng.uniform(0.5, 2.0)))
    return plan
