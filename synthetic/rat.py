"""A walking rat with exact ground truth: 3D keypoints and paw contacts.

Model, in four layers, all evaluated by one vectorised function of time (`RatMotion.pose_at`):

1. Route. A planar path through the corridor, parameterised by arc length: straight legs with a
   little lateral wander and tight U-turns at the ends. The neck travels along it; spine, tail base
   and tail follow the same path at fixed arc-length lags ("follow the leader"), so the body bends
   through the turns the way a rat's does.
2. Speed. A state machine on a fine internal grid (default 500 Hz): cruise speeds that change every
   second or two, braking curves before planned pauses and turns, pauses with head scanning and
   sometimes rearing (pitching up about the hips, front paws off the floor).
3. Gait. One phase clock per body side; each paw is in stance while frac(phase + offset) < duty.
   Offsets make a trot: front-left with hind-right, front-right with hind-left. Phase rate is
   speed / stride length of that side, so stride length per side is a parameter (`Lesion`); with
   equal sides the diagonal pairs alternate exactly. When the rat slows to a stop, a paw caught in
   swing finishes it at a minimum rate, so the rat always stands on four paws.
   A paw in stance is fixed on the floor (z = PAW_CONTACT_Z_MM, x/y constant) at the position its
   shoulder/hip anchor has at mid-stance; in swing it moves on a minimum-jerk path with a sine arc
   (height 3-18 mm, growing with step length).
4. Head. Looks a little ahead along the route, plus slow random yaw/pitch (head turns), larger
   during pauses.

Contact times are exact: the phase is piecewise linear between grid samples, and touchdown and
lift-off are solved as the exact crossing times of that function. A contact interval that starts at
the first sample or ends at the last is censored (the paw was already down / is still down).

All lengths mm, times s. Keypoints are `ratrig.skeleton.KEYPOINTS`; extras are EXTRA_NAMES
(spine_1..3 on the body axis, tail_mid, tail_tip).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ratrig.skeleton import KEYPOINTS, PAWS
from synthetic.rig import Corridor

EXTRA_NAMES: tuple[str, ...] = ("spine_1", "spine_2", "spine_3", "tail_mid", "tail_tip")

#: Height of a paw keypoint (centre of the paw) while the paw is on the floor.
PAW_CONTACT_Z_MM = 4.0

# Arc-length lag behind the neck point along the route, and height, of the axial points.
_AXIAL_LAG_MM = {"neck": 0.0, "spine_1": 30.0, "spine_2": 85.0, "spine_3": 140.0, "tail_base": 190.0,
                 "tail_mid": 290.0, "tail_tip": 390.0}
_AXIAL_Z_MM = {"neck": 50.0, "spine_1": 50.0, "spine_2": 54.0, "spine_3": 50.0, "tail_base": 40.0,
               "tail_mid": 12.0, "tail_tip": 4.0}
# Paw anchors: (axial point, forward offset, lateral offset (+ = left)), mm.
_PAW_ANCHOR = {
    "front_left_paw": ("spine_1", 14.0, 16.0),
    "front_right_paw": ("spine_1", 14.0, -16.0),
    "hind_left_paw": ("spine_3", 2.0, 22.0),
    "hind_right_paw": ("spine_3", 2.0, -22.0),
}
_PAW_SIDE = {"front_left_paw": "left", "hind_left_paw": "left",
             "front_right_paw": "right", "hind_right_paw": "right"}
# Trot: front-left in phase with hind-right, front-right with hind-left.
_PAW_OFFSET = {"front_left_paw": 0.0, "hind_right_paw": 0.0, "front_right_paw": 0.5, "hind_left_paw": 0.5}

DUTY_FACTOR = 0.6  # fraction of a stride cycle a paw is on the floor (rat walking trot)
_MIN_SWING_RATE_HZ = 1.6  # cycles/s at which a paw caught in swing finishes it when the rat stops
_NECK_TO_NOSE_MM = 46.0
_LOOKAHEAD_MM = 45.0


@dataclass(frozen=True, slots=True)
class Lesion:
    """One side's stride shortened: stride length on `side` is multiplied by `stride_factor`.

    A shorter stride at the same body speed means more steps on that side, so the two sides'
    clocks drift apart and the strict diagonal pairing of a healthy trot is lost on purpose.
    """

    side: str = "left"
    stride_factor: float = 0.8

    def __post_init__(self) -> None:
        if self.side not in ("left", "right"):
            raise ValueError(f"Lesion.side: expected 'left' or 'right', got {self.side!r}")
        if not (0.3 <= self.stride_factor <= 1.0):
            raise ValueError(f"Lesion.stride_factor: expected 0.3..1.0, got {self.stride_factor!r}")


def _stride_scalar(speed_mm_s: float) -> float:
    return 85.0 + 0.22 * min(max(speed_mm_s, 0.0), 600.0)


def stride_length_mm(speed_mm_s: np.ndarray | float) -> np.ndarray:
    """Healthy stride length at a body speed: (N,) mm/s -> (N,) mm (rats lengthen strides with speed)."""
    return 85.0 + 0.22 * np.clip(np.asarray(speed_mm_s, np.float64), 0.0, 600.0)


# ----------------------------------------------------------------------------------------------
# Route


@dataclass(frozen=True, slots=True)
class _Route:
    s_mm: np.ndarray  # (N,) arc length, increasing
    xy_mm: np.ndarray  # (N, 2)
    turns: tuple[tuple[float, float], ...]  # (s_start, s_end) of each U-turn

    def xy(self, s: np.ndarray) -> np.ndarray:
        """(...,) arc length -> (..., 2) position; extrapolates straight beyond both ends."""
        s = np.asarray(s, np.float64)
        x = np.interp(s, self.s_mm, self.xy_mm[:, 0])
        y = np.interp(s, self.s_mm, self.xy_mm[:, 1])
        out = np.stack([x, y], axis=-1)
        lo, hi = s < self.s_mm[0], s > self.s_mm[-1]
        if lo.any():
            d0 = self.xy_mm[1] - self.xy_mm[0]
            d0 /= np.linalg.norm(d0)
            out[lo] = self.xy_mm[0] + (s[lo] - self.s_mm[0])[:, None] * d0
        if hi.any():
            d1 = self.xy_mm[-1] - self.xy_mm[-2]
            d1 /= np.linalg.norm(d1)
            out[hi] = self.xy_mm[-1] + (s[hi] - self.s_mm[-1])[:, None] * d1
        return out


def _smooth_blend(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _build_route(corridor: Corridor, rng: np.random.Generator, min_length_mm: float, x_start_mm: float
                 ) -> tuple[_Route, float]:
    """Route polyline at 1 mm steps; returns it and the arc length where the neck starts."""
    half_len = corridor.length_mm / 2.0
    half_w = corridor.width_mm / 2.0
    radius = float(np.clip(half_w - 22.0, 10.0, 40.0))
    # The nose reaches about 45 mm beyond the neck along the turn's axis; keep it off the end wall.
    x_turn = half_len - radius - 55.0
    wander = max(0.0, min(5.0, half_w - 31.0))
    pts: list[np.ndarray] = []
    turn_idx: list[tuple[int, int]] = []  # first and last point index of each U-turn
    n_pts = 0
    # Start 450 mm behind the start point so the body and tail lie on the route at t = 0.
    x = x_start_mm - 450.0
    direction = 1.0
    y_entry = 0.0
    length = 0.0
    while length < min_length_mm or not turn_idx:
        turn_left = bool(rng.random() < 0.5)
        # Entering a turn to the left (counter-clockwise seen from above) means being on the
        # right-hand side of the direction of travel.
        y_exit = -radius * direction if turn_left else radius * direction
        x_end = direction * x_turn
        xs = np.arange(x, x_end, direction * 1.0)
        u = np.abs(xs - x) / max(abs(x_end - x), 1.0)
        k = rng.uniform(1.0, 3.0)
        ph = rng.uniform(0, 2 * np.pi)
        base = y_entry + (y_exit - y_entry) * _smooth_blend((u - 0.55) / 0.45)
        ys = base + wander * np.sin(np.pi * u) * np.sin(2 * np.pi * k * u + ph)
        leg = np.stack([xs, ys], axis=1)
        if turn_idx:  # the previous U-turn already ends at this leg's first point
            leg = leg[1:]
        pts.append(leg)
        n_pts += len(leg)
        # U-turn: semicircle around (x_end, 0) from y_exit to -y_exit, bulging towards the end wall.
        n = max(8, int(np.pi * radius))
        theta = np.linspace(0.0, np.pi, n + 1)
        arc = np.stack([x_end + direction * radius * np.sin(theta), y_exit * np.cos(theta)], axis=1)
        pts.append(arc)
        turn_idx.append((n_pts, n_pts + n))
        n_pts += n + 1
        length += abs(x_end - x) + np.pi * radius
        direction = -direction
        x = x_end
        y_entry = -y_exit
    xy = np.concatenate(pts)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    turns = tuple((float(s[i0]), float(s[i1])) for i0, i1 in turn_idx)
    return _Route(s, xy, turns), 450.0


# ----------------------------------------------------------------------------------------------
# Behaviour and gait on the internal grid


@dataclass(frozen=True, slots=True)
class _Rear:
    t0_s: float
    t1_s: float
    pitch_rad: float


@dataclass(frozen=True)
class RatMotion:
    """Everything needed to evaluate the rat at any time in [t_start_s, t_end_s]. Build with `simulate`."""

    corridor: Corridor
    lesion: Lesion | None
    grid_t_s: np.ndarray  # (G,)
    grid_arc_mm: np.ndarray  # (G,) neck arc length along the route
    grid_speed_mm_s: np.ndarray  # (G,)
    grid_phase: dict[str, np.ndarray]  # side -> (G,) cycles
    grid_yaw_rad: np.ndarray  # (G,) head yaw offset
    grid_pitch_rad: np.ndarray  # (G,) head pitch
    route: _Route
    rears: tuple[_Rear, ...]
    pauses: tuple[tuple[float, float], ...]
    stance_xy_mm: dict[str, np.ndarray]  # paw -> (M, 2) stance positions, index = cycle - first_cycle
    first_cycle: dict[str, int]
    t_start_s: float
    t_end_s: float

    # -- scalar fields of time -----------------------------------------------------------------
    def _interp(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.interp(t, self.grid_t_s, y)

    def paw_phase(self, paw: str, t: np.ndarray) -> np.ndarray:
        """(N,) s -> (N,) continuous gait phase of `paw` in cycles (integer = touchdown)."""
        return self._interp(t, self.grid_phase[_PAW_SIDE[paw]]) + _PAW_OFFSET[paw]

    def rear_weight(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) s -> (N,) pitch angle rad and (N,) bool 'front paws lifted for a rear'."""
        pitch = np.zeros_like(t, dtype=np.float64)
        lifted = np.zeros_like(t, dtype=bool)
        for r in self.rears:
            inside = (t > r.t0_s) & (t < r.t1_s)
            if not inside.any():
                continue
            ramp = 0.45
            u = np.minimum((t[inside] - r.t0_s) / ramp, (r.t1_s - t[inside]) / ramp)
            pitch[inside] = r.pitch_rad * _smooth_blend(u)
            lifted |= inside
        return pitch, lifted

    def in_stance(self, t: np.ndarray) -> np.ndarray:
        """(N,) s -> (N, 4) bool, paws in `ratrig.skeleton.PAWS` order."""
        t = np.asarray(t, np.float64)
        _, lifted = self.rear_weight(t)
        out = np.empty((len(t), 4), bool)
        for j, paw in enumerate(PAWS):
            ph = self.paw_phase(paw, t)
            st = (ph - np.floor(ph)) < DUTY_FACTOR
            if paw.startswith("front"):
                st &= ~lifted
            out[:, j] = st
        return out

    # -- geometry -----------------------------------------------------------------------------
    def _axial(self, t: np.ndarray, pitch: np.ndarray) -> dict[str, np.ndarray]:
        """Axial points (neck, spine, tail) before head: name -> (N, 3)."""
        arc = self._interp(t, self.grid_arc_mm)
        speed = self._interp(t, self.grid_speed_mm_s)
        phase = self._interp(t, self.grid_phase["left"])
        # Small vertical bob at twice the stride frequency while walking.
        bob = 1.5 * np.clip(speed / 200.0, 0, 1) * np.cos(4 * np.pi * phase)
        pts = {}
        for name, lag in _AXIAL_LAG_MM.items():
            xy = self.route.xy(arc - lag)
            z = np.full(len(t), _AXIAL_Z_MM[name]) + (bob if name in ("neck", "spine_1", "spine_2") else 0.0)
            pts[name] = np.concatenate([xy, z[:, None]], axis=1)
        if np.any(pitch > 0):
            # Rearing: everything in front of the hips rotates up about a pivot at spine_3.
            pivot = pts["spine_3"]
            fwd = pts["spine_2"] - pivot
            fwd[:, 2] = 0.0
            fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
            for name in ("neck", "spine_1", "spine_2"):
                pts[name] = _pitch_about(pts[name], pivot, fwd, pitch)
        return pts

    def pose_at(self, t_s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Pose at arbitrary times.

        Args:
            t_s: scalar or (N,) times in s, within [t_start_s, t_end_s] (clamped outside).

        Returns:
            keypoints_mm (N, K, 3) in KEYPOINTS order and extra_mm (N, E, 3) in EXTRA_NAMES order;
            without the leading N for a scalar t_s.
        """
        scalar = np.ndim(t_s) == 0
        t = np.clip(np.atleast_1d(np.asarray(t_s, np.float64)), self.t_start_s, self.t_end_s)
        pitch, lifted = self.rear_weight(t)
        ax = self._axial(t, pitch)
        # Head frame: forward towards a look-ahead point on the route, plus yaw / pitch offsets.
        arc = self._interp(t, self.grid_arc_mm)
        ahead = self.route.xy(arc + _LOOKAHEAD_MM)
        neck = ax["neck"]
        base_yaw = np.arctan2(ahead[:, 1] - neck[:, 1], ahead[:, 0] - neck[:, 0])
        yaw0 = base_yaw + self._interp(t, self.grid_yaw_rad)
        hp = self._interp(t, self.grid_pitch_rad) + 0.6 * pitch
        # The corridor is barely wider than the rat: where the head would go through a wall,
        # turn it towards where the route leads (past a U-turn: back down the corridor).
        far = self.route.xy(arc + 3.0 * _LOOKAHEAD_MM)
        yaw_far = np.arctan2(far[:, 1] - neck[:, 1], far[:, 0] - neck[:, 0])
        delta = np.angle(np.exp(1j * (yaw_far - yaw0)))
        lim = self.corridor.width_mm / 2.0 - 3.0
        yaw = yaw0.copy()

        def inside(trial: np.ndarray, rows: np.ndarray) -> np.ndarray:
            head = _head_points(neck[rows], trial, hp[rows])
            return np.all(np.abs(np.stack([h[:, 1] for h in head], axis=1)) <= lim, axis=1)

        outside = np.flatnonzero(~inside(yaw0, np.arange(len(t))))
        for alpha in np.linspace(0.05, 1.0, 20):
            if len(outside) == 0:
                break
            trial = yaw0[outside] + alpha * delta[outside]
            ok = inside(trial, outside)
            yaw[outside[ok]] = trial[ok]
            outside = outside[~ok]
        yaw[outside] = (yaw0 + delta)[outside]
        nose, ear_l, ear_r = _head_points(neck, yaw, hp)
        paws = {paw: self._paw(paw, t, ax, pitch, lifted) for paw in PAWS}
        named = {"nose": nose, "left_ear": ear_l, "right_ear": ear_r, "tail_base": ax["tail_base"], **paws}
        kp = np.stack([named[k] for k in KEYPOINTS], axis=1)
        ex = np.stack([ax[k] for k in EXTRA_NAMES], axis=1)
        if scalar:
            return kp[0], ex[0]
        return kp, ex

    def _anchor_xy(self, paw: str, ax: dict[str, np.ndarray]) -> np.ndarray:
        name, fwd_mm, lat_mm = _PAW_ANCHOR[paw]
        p = ax[name][:, :2]
        nxt = ax["neck"][:, :2] if name == "spine_1" else ax["spine_2"][:, :2]
        d = nxt - p
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        n = np.stack([-d[:, 1], d[:, 0]], axis=1)
        return p + fwd_mm * d + lat_mm * n

    def _paw(self, paw: str, t: np.ndarray, ax: dict[str, np.ndarray], pitch: np.ndarray,
             lifted: np.ndarray) -> np.ndarray:
        ph = self.paw_phase(paw, t)
        k = np.floor(ph).astype(np.int64)
        frac = ph - k
        table = self.stance_xy_mm[paw]
        i0 = np.clip(k - self.first_cycle[paw], 0, len(table) - 1)
        i1 = np.clip(i0 + 1, 0, len(table) - 1)
        p0, p1 = table[i0], table[i1]
        out = np.empty((len(t), 3))
        out[:, :2] = p0
        out[:, 2] = PAW_CONTACT_Z_MM
        sw = frac >= DUTY_FACTOR
        if sw.any():
            u = (frac[sw] - DUTY_FACTOR) / (1.0 - DUTY_FACTOR)
            mj = u ** 3 * (10.0 - 15.0 * u + 6.0 * u * u)
            step = p1[sw] - p0[sw]
            height = np.clip(0.12 * np.linalg.norm(step, axis=1), 3.0, 18.0)
            out[sw, :2] = p0[sw] + mj[:, None] * step
            out[sw, 2] = PAW_CONTACT_Z_MM + height * np.sin(np.pi * u)
        if paw.startswith("front") and lifted.any():
            # During a rear the front paws hang in front of the chest; weight w is 0 at both ends
            # of the rear so the paw leaves and returns to its stance spot exactly.
            i = np.flatnonzero(lifted)
            w = _smooth_blend(np.clip(pitch[i] / 0.25, 0.0, 1.0))
            s1 = ax["spine_1"][i]
            neck = ax["neck"][i]
            d = neck - s1
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            lat = np.stack([-d[:, 1], d[:, 0], np.zeros(len(i))], axis=1)
            lat /= np.maximum(np.linalg.norm(lat, axis=1, keepdims=True), 1e-9)
            side = 1.0 if "left" in paw else -1.0
            hang = s1 + 10.0 * d + side * 13.0 * lat + np.array([0.0, 0.0, -38.0])
            # horizontal offset from the body axis so the paw sits in front of the chest
            flat = ax["spine_2"][i] - ax["spine_3"][i]
            flat[:, 2] = 0
            flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-9)
            hang = hang + 22.0 * flat
            hang[:, 2] = np.maximum(hang[:, 2], PAW_CONTACT_Z_MM + 6.0)
            lim = self.corridor.width_mm / 2.0 - 6.0
            hang[:, 1] = np.clip(hang[:, 1], -lim, lim)
            out[i] = (1 - w[:, None]) * out[i] + w[:, None] * hang
        return out


def _head_points(neck: np.ndarray, yaw: np.ndarray, pitch: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 3) neck, (N,) yaw, (N,) pitch -> nose, left ear, right ear, each (N, 3) mm."""
    fwd = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], axis=1)
    left = np.stack([-np.sin(yaw), np.cos(yaw), np.zeros_like(yaw)], axis=1)
    up = np.stack([fwd[:, 1] * left[:, 2] - fwd[:, 2] * left[:, 1],
                   fwd[:, 2] * left[:, 0] - fwd[:, 0] * left[:, 2],
                   fwd[:, 0] * left[:, 1] - fwd[:, 1] * left[:, 0]], axis=1)  # fwd x left
    nose = neck + _NECK_TO_NOSE_MM * fwd - 6.0 * up
    ear_l = neck + 4.0 * fwd + 15.0 * left + 14.0 * up
    ear_r = neck + 4.0 * fwd - 15.0 * left + 14.0 * up
    return nose, ear_l, ear_r


def _pitch_about(p: np.ndarray, pivot: np.ndarray, fwd: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Rotate (N,3) points about `pivot` in the vertical plane containing horizontal `fwd`, by `pitch` up."""
    v = p - pivot
    a = np.sum(v * fwd, axis=1)  # horizontal forward component
    z = v[:, 2]
    lateral = v - a[:, None] * fwd
    lateral[:, 2] = 0.0
    c, s = np.cos(pitch), np.sin(pitch)
    a2 = a * c - z * s
    z2 = a * s + z * c
    out = pivot + lateral + a2[:, None] * fwd
    out[:, 2] = pivot[:, 2] + z2
    return out


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, n: int, f_lo: float, f_hi: float) -> np.ndarray:
    """Sum of n sines with random frequency/phase: (G,) s -> (G,), roughly unit amplitude."""
    out = np.zeros_like(t)
    for _ in range(n):
        out += np.sin(2 * np.pi * rng.uniform(f_lo, f_hi) * t + rng.uniform(0, 2 * np.pi))
    return out / np.sqrt(n / 2.0)


def _crossings(t: np.ndarray, y: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Exact times where the non-decreasing piecewise-linear y(t) first reaches each level."""
    level = np.atleast_1d(level)
    idx = np.searchsorted(y, level, side="left")
    out = np.full(len(level), np.nan)
    ok = (idx > 0) & (idx < len(y))
    i = idx[ok]
    y0, y1 = y[i - 1], y[i]
    frac = np.where(y1 > y0, (level[ok] - y0) / np.where(y1 > y0, y1 - y0, 1.0), 1.0)
    out[ok] = t[i - 1] + frac * (t[i] - t[i - 1])
    at_start = idx == 0
    out[at_start] = t[0]
    return out


def _plan_motion(duration_s: float, seed: int, corridor: Corridor, lesion: Lesion | None,
                 internal_hz: float) -> RatMotion:
    """Route, speed, gait clocks, rears and head motion on the internal grid; see module docstring."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / internal_hz
    t_pre = 1.0
    grid_t = np.arange(-t_pre, duration_s + 0.25 + dt, dt)
    g = len(grid_t)
    x_start = float(rng.uniform(-250.0, 100.0))
    route, arc0 = _build_route(corridor, rng, min_length_mm=arc_budget(duration_s), x_start_mm=x_start)

    # Speed state machine on the grid.
    accel = 1400.0  # mm/s^2
    v_turn = 110.0
    arc = np.empty(g)
    speed = np.empty(g)
    pauses: list[tuple[float, float]] = []
    rears: list[_Rear] = []
    # Planned pause spots along the route (arc length), with duration and whether to rear.
    pause_plan: list[tuple[float, float, bool]] = []
    s_cursor = arc0 + 150.0
    for (ts0, _ts1) in route.turns:
        while True:
            s_cursor += rng.uniform(250.0, 700.0)
            if s_cursor > ts0 - 60.0:
                break
            if rng.random() < 0.45:
                rear = bool(rng.random() < 0.1)
                pause_plan.append((s_cursor, rng.uniform(1.6, 3.0) if rear else rng.uniform(0.4, 1.4), rear))
        if rng.random() < 0.6:  # often stop before turning round, sometimes rear at the end
            rear = bool(rng.random() < 0.3)
            pause_plan.append((ts0 - 5.0, rng.uniform(1.6, 3.0) if rear else rng.uniform(0.5, 1.5), rear))
        s_cursor = _ts1
    pause_plan.sort()
    s = arc0
    v = 0.0
    cruise = float(rng.uniform(180.0, 360.0))
    next_cruise_t = float(grid_t[0] + rng.uniform(0.8, 2.0))
    pause_i = 0
    turn_i = 0
    turns = route.turns
    dv_max = accel * dt
    brake = 2.0 * accel * 0.8  # plan braking with 80 % of the available deceleration
    in_pause_until = 0.3  # begin standing still for a moment
    times = grid_t.tolist()
    arc_l = [0.0] * g
    speed_l = [0.0] * g
    for i, t in enumerate(times):
        if t >= next_cruise_t:
            cruise = min(420.0, max(140.0, cruise + float(rng.normal(0, 70.0))))
            next_cruise_t = t + float(rng.uniform(0.8, 2.0))
        if t < in_pause_until:
            target = 0.0
        else:
            target = cruise
            # brake for the next planned pause and for the next turn
            while pause_i < len(pause_plan) and pause_plan[pause_i][0] < s - 1.0:
                pause_i += 1
            if pause_i < len(pause_plan):
                d = pause_plan[pause_i][0] - s
                target = min(target, math.sqrt(max(0.0, brake * d)))
                if d <= 1.0 and v < 15.0:
                    _ps, pdur, prear = pause_plan[pause_i]
                    in_pause_until = t + pdur
                    pauses.append((t, t + pdur))
                    if prear:
                        rears.append(_Rear(t + 0.45, t + pdur - 0.1, float(rng.uniform(0.7, 1.05))))
                    pause_i += 1
                    target = 0.0
            while turn_i < len(turns) and turns[turn_i][1] < s:
                turn_i += 1
            if turn_i < len(turns) and turns[turn_i][0] <= s + 400.0:
                ts0 = turns[turn_i][0]
                if s < ts0:
                    target = min(target, math.sqrt(v_turn * v_turn + brake * (ts0 - s)))
                else:
                    target = min(target, v_turn)
        v = max(0.0, v + min(dv_max, max(-dv_max, target - v)))
        arc_l[i] = s
        speed_l[i] = v
        s += v * dt
    arc = np.array(arc_l)
    speed = np.array(speed_l)

    # Gait clocks, one per side, integrated together so that a rear can check all four paws.
    factor = {"left": 1.0, "right": 1.0}
    if lesion is not None:
        factor[lesion.side] = lesion.stride_factor
    phase_l = {"left": [0.0] * g, "right": [0.0] * g}
    p = {"left": 0.05, "right": 0.05}  # both sides start in double support (all paws down)
    candidates = sorted(rears, key=lambda r: r.t0_s)
    rears = []
    active: _Rear | None = None
    ci = 0
    sides = ("left", "right")
    for i, t in enumerate(times):
        for side in sides:
            phase_l[side][i] = p[side]
        if active is not None and t > active.t1_s:
            active = None
        while ci < len(candidates) and candidates[ci].t0_s <= t:
            cand = candidates[ci]
            ci += 1
            all_down = all(((p[sd] + off) % 1.0) < DUTY_FACTOR for sd in sides for off in (0.0, 0.5))
            if all_down and active is None and t <= cand.t0_s + dt:
                active = cand
                rears.append(cand)
        if active is not None:
            continue
        v = speed_l[i]
        for side in sides:
            ps = p[side]
            rate = v / (_stride_scalar(v) * factor[side])
            if rate < _MIN_SWING_RATE_HZ and ((ps % 1.0) >= DUTY_FACTOR or ((ps + 0.5) % 1.0) >= DUTY_FACTOR):
                rate = _MIN_SWING_RATE_HZ  # finish a swing caught by the stop
            p[side] = ps + rate * dt
    phases = {side: np.array(phase_l[side]) for side in sides}

    yaw_noise = _smooth_noise(rng, grid_t, 4, 0.1, 0.5)
    pitch_noise = _smooth_noise(rng, grid_t, 3, 0.1, 0.4)
    paused = np.zeros(g, bool)
    for p0, p1 in pauses:
        paused |= (grid_t >= p0) & (grid_t <= p1)
    pause_w = np.convolve(paused.astype(float), np.ones(int(0.3 * internal_hz)) / int(0.3 * internal_hz), "same")
    yaw_amp = np.radians(8.0) + np.radians(27.0) * pause_w
    yaw = yaw_amp * yaw_noise
    pitch = np.radians(-8.0) + np.radians(8.0) * pitch_noise + np.radians(6.0) * pause_w

    motion = RatMotion(
        corridor=corridor, lesion=lesion, grid_t_s=grid_t, grid_arc_mm=arc, grid_speed_mm_s=speed,
        grid_phase=phases, grid_yaw_rad=yaw, grid_pitch_rad=pitch, route=route, rears=tuple(rears),
        pauses=tuple(pauses), stance_xy_mm={}, first_cycle={}, t_start_s=float(grid_t[0]),
        t_end_s=float(grid_t[-1]),
    )
    # Stance positions: where the paw's anchor is at the mid-stance of each cycle.
    no_pitch = np.zeros(g)
    ax = motion._axial(grid_t, no_pitch)
    lim = corridor.width_mm / 2.0 - 6.0
    tables: dict[str, np.ndarray] = {}
    firsts: dict[str, int] = {}
    for paw in PAWS:
        ph = motion.paw_phase(paw, grid_t)
        k0 = int(np.floor(ph[0]))
        k1 = int(np.floor(ph[-1])) + 1
        cycles = np.arange(k0, k1 + 1)
        t_mid = _crossings(grid_t, ph, cycles + DUTY_FACTOR / 2.0)
        t_mid = np.where(np.isnan(t_mid), grid_t[-1], t_mid)
        anchor = motion._anchor_xy(paw, ax)
        xy = np.stack([np.interp(t_mid, grid_t, anchor[:, 0]), np.interp(t_mid, grid_t, anchor[:, 1])], axis=1)
        xy[:, 1] = np.clip(xy[:, 1], -lim, lim)  # paws stay inside the corridor
        tables[paw] = xy
        firsts[paw] = k0
    return replace(motion, stance_xy_mm=tables, first_cycle=firsts)


def arc_budget(duration_s: float) -> float:
    """Route length, mm, that certainly covers `duration_s` of walking (upper bound on speed)."""
    return 450.0 * (duration_s + 2.0) + 2000.0


# ----------------------------------------------------------------------------------------------
# Public result


@dataclass(frozen=True)
class Trajectory:
    """A simulated session sampled at `fps`, plus the continuous motion for any other time.

    Shapes: T frames, K = len(KEYPOINTS), E = len(EXTRA_NAMES). Positions mm, world frame.
    """

    times_s: np.ndarray  # (T,)
    keypoints_mm: np.ndarray  # (T, K, 3)
    keypoint_names: tuple[str, ...]
    extra_mm: np.ndarray  # (T, E, 3)
    extra_names: tuple[str, ...]
    contacts: dict[str, np.ndarray]  # paw -> (M, 2) [touchdown_s, liftoff_s], clipped to the session
    in_stance: np.ndarray  # (T, 4) bool, PAWS order
    paw_names: tuple[str, ...]
    body_speed_mm_s: np.ndarray  # (T,) speed of the neck along the route
    pauses_s: np.ndarray  # (P, 2) [start, end]
    rears_s: np.ndarray  # (R, 2) [start, end] (front paws off the floor)
    lesion: Lesion | None
    seed: int
    duration_s: float
    fps: float
    motion: RatMotion = field(repr=False)

    def pose_at(self, t_s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (…, K, 3) and extras (…, E, 3) in mm at any time(s) in s (clamped to the session)."""
        t = np.clip(np.asarray(t_s, np.float64), 0.0, self.duration_s + 0.2)
        return self.motion.pose_at(t)

    def in_stance_at(self, t_s: np.ndarray) -> np.ndarray:
        """(N,) s -> (N, 4) bool, PAWS order."""
        return self.motion.in_stance(np.atleast_1d(np.asarray(t_s, np.float64)))


def contact_intervals(motion: RatMotion, paw: str, t0_s: float, t1_s: float) -> np.ndarray:
    """Exact stance intervals of `paw` clipped to [t0_s, t1_s]: (M, 2) [touchdown_s, liftoff_s]."""
    t = motion.grid_t_s
    ph = motion.paw_phase(paw, t)
    k0 = int(np.floor(ph[0])) - 1
    k1 = int(np.floor(ph[-1])) + 1
    cycles = np.arange(k0, k1 + 1)
    td = _crossings(t, ph, cycles.astype(float))
    lo = _crossings(t, ph, cycles + DUTY_FACTOR)
    # Phase never reached that level: the event is after the grid end.
    td = np.where(np.isnan(td) & (cycles > ph[-1]), np.inf, td)
    lo = np.where(np.isnan(lo) & (cycles + DUTY_FACTOR > ph[-1]), np.inf, lo)
    # crossings below the start value return t[0]: the paw was already in that state
    intervals = np.stack([td, lo], axis=1)
    intervals = intervals[np.isfinite(intervals[:, 0]) | np.isfinite(intervals[:, 1])]
    if paw.startswith("front") and motion.rears:
        # Rears cut front-paw stances: lift-off at the rear's start, touchdown at its end.
        cut = []
        for a, b in intervals:
            pieces = [(a, b)]
            for r in motion.rears:
                nxt = []
                for pa, pb in pieces:
                    if pb <= r.t0_s or pa >= r.t1_s:
                        nxt.append((pa, pb))
                        continue
                    if pa < r.t0_s:
                        nxt.append((pa, r.t0_s))
                    if pb > r.t1_s:
                        nxt.append((r.t1_s, pb))
                pieces = nxt
            cut.extend(pieces)
        intervals = np.array(cut, float).reshape(-1, 2)
    intervals = np.clip(intervals, t0_s, t1_s)
    intervals = intervals[intervals[:, 1] > intervals[:, 0]]
    return intervals


def simulate(
    duration_s: float,
    fps: float,
    seed: int,
    scenario: str = "corridor",
    lesion: Lesion | None = None,
    corridor: Corridor | None = None,
    internal_hz: float = 500.0,
) -> Trajectory:
    """Simulate a rat walking the corridor. Deterministic per (arguments, seed).

    Args:
        duration_s: session length, s (> 0).
        fps: frame rate of the sampled arrays (times_s = arange(T) / fps).
        seed: random seed; same seed, same rat.
        scenario: only "corridor" (the rat walks up and down the corridor of `corridor`).
        lesion: None for a healthy rat, or a `Lesion` shortening one side's stride.
        corridor: geometry (default `Corridor()`).
        internal_hz: rate of the internal motion grid; contact times are exact regardless.

    Returns:
        Trajectory; `trajectory.pose_at(t)` evaluates the same motion at any time.
    """
    if scenario != "corridor":
        raise ValueError(f"simulate: unknown scenario {scenario!r}; available: 'corridor'")
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"simulate: duration_s must be > 0, got {duration_s!r}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"simulate: fps must be > 0, got {fps!r}")
    corridor = corridor or Corridor()
    motion = _plan_motion(float(duration_s), int(seed), corridor, lesion, float(internal_hz))
    n = int(np.floor(duration_s * fps + 1e-9))
    times = np.arange(n) / fps
    kp, ex = motion.pose_at(times)
    stance = motion.in_stance(times)
    end = float(times[-1]) if n else 0.0
    contacts = {paw: contact_intervals(motion, paw, 0.0, end) for paw in PAWS}
    return Trajectory(
        times_s=times, keypoints_mm=kp, keypoint_names=KEYPOINTS, extra_mm=ex, extra_names=EXTRA_NAMES,
        contacts=contacts, in_stance=stance, paw_names=PAWS,
        body_speed_mm_s=np.interp(times, motion.grid_t_s, motion.grid_speed_mm_s),
        pauses_s=np.array(motion.pauses, float).reshape(-1, 2),
        rears_s=np.array([(r.t0_s, r.t1_s) for r in motion.rears], float).reshape(-1, 2),
        lesion=lesion, seed=int(seed), duration_s=float(duration_s), fps=float(fps), motion=motion,
    )
