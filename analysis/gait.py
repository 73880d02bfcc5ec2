"""Gait on straight walking bouts: strides, CatWalk-style parameters, coordination and asymmetry.

Definitions (CatWalk XT's, as tabulated e.g. by Wang et al. 2012, BMC Neurosci 13:142, Table 1):

- stride (step cycle): touchdown of a paw to its next touchdown; stride length: distance between the
  two successive prints of that paw; stance: time in contact; swing: time off the floor;
  duty factor (duty cycle): stance / (stance + swing); swing speed: stride length / swing duration.
- cadence: paw placements per second of walking.
- base of support: distance between the fore paws (or the hind paws), measured across the walking
  direction, between a print and the opposite paw's print nearest in time.
- print position: distance between a hind print and the previous print of the fore paw on the same side.
- step sequence patterns: the order in which the four paws are placed. Normal patterns in rats:
  alternate Aa RF-RH-LF-LH, Ab LF-RH-RF-LH; cruciate Ca RF-LF-RH-LH, Cb LF-RF-LH-RH;
  rotary Ra RF-LF-LH-RH, Rb LF-RF-RH-LH. Regularity index = 4 x (normal patterns) / (paw placements)
  x 100 %. Placements at most one frame apart are simultaneous at the camera's resolution and
  are ordered fore before hind.
- inter-limb phase: when a paw touches down within another paw's step cycle, as a fraction of it.

Without a glass floor a print's position is the mean paw position over its stance. Strides are only
taken where both touchdowns fall inside one straight walking bout and the paw is seen throughout.

Asymmetry index of a per-limb measure: (contra - ipsi) / (contra + ipsi) of the per-paw medians,
fore and hind separately (or (right - left) / (right + left) when no lesion side is given).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bouts import BoutParams, Bouts, straight_walking_bouts, trunk_kinematics
from analysis.contacts import (ContactParams, PawContacts, TrackCleanParams, clean_paw_track, detect_contacts,
                               fill_short_gaps)
from analysis.quality import FloorPlane
from analysis.session import PAW_CODES, PAW_LIMB, PAW_SIDE, PoseSession
from ratrig.skeleton import PAWS

NORMAL_PATTERNS: dict[str, tuple[str, str, str, str]] = {
    "Aa": ("RF", "RH", "LF", "LH"),
    "Ab": ("LF", "RH", "RF", "LH"),
    "Ca": ("RF", "LF", "RH", "LH"),
    "Cb": ("LF", "RF", "LH", "RH"),
    "Ra": ("RF", "LF", "LH", "RH"),
    "Rb": ("LF", "RF", "RH", "LH"),
}
_PATTERN_OF: dict[tuple[str, ...], str] = {v: k for k, v in NORMAL_PATTERNS.items()}

#: Per-limb measures that get medians, asymmetry indices and speed-normalised versions.
LIMB_MEASURES: tuple[str, ...] = (
    "stride_length_mm", "stride_duration_s", "stance_s", "swing_s", "duty_factor",
    "stance_swing_ratio", "swing_speed_mm_s", "base_of_support_mm",
)
SPEED_NORMALISED: tuple[str, ...] = ("stride_length_mm", "stride_duration_s", "stance_s", "swing_s",
                                     "duty_factor", "swing_speed_mm_s")
PHASE_PAIRS: dict[str, tuple[str, str]] = {
    "fore_left_right": ("front_left_paw", "front_right_paw"),
    "hind_left_right": ("hind_left_paw", "hind_right_paw"),
    "left_fore_hind": ("front_left_paw", "hind_left_paw"),
    "right_fore_hind": ("front_right_paw", "hind_right_paw"),
    "diagonal_LF_RH": ("front_left_paw", "hind_right_paw"),
    "diagonal_RF_LH": ("front_right_paw", "hind_left_paw"),
}


@dataclass(frozen=True, slots=True)
class GaitParams:
    clean: TrackCleanParams = field(default_factory=TrackCleanParams)
    contacts: ContactParams = field(default_factory=ContactParams)
    bouts: BoutParams = field(default_factory=BoutParams)
    max_stride_s: float = 1.5  # longer "strides" are pauses
    reference_speed_mm_s: float = 300.0  # speed the speed-normalised values are reported at
    min_strides_speed_fit: int = 12


@dataclass(frozen=True, slots=True)
class GaitResult:
    """Everything the gait analysis found.

    Attributes:
        contacts: paw -> its stances over the whole session (also outside bouts).
        bouts: straight walking bouts.
        strides: one row per stride (see `stride_table`).
        summary: JSON-ready session summary (see `gait_summary`).
    """

    contacts: dict[str, PawContacts]
    bouts: Bouts
    strides: pd.DataFrame
    summary: dict


def paw_tracks_mm(session: PoseSession, params: TrackCleanParams = TrackCleanParams(),
                  floor: FloorPlane | None = None) -> dict[str, np.ndarray]:
    """Paw -> (T, 3) cleaned track (outliers dropped, holes bridged, zero-phase smoothed; see
    `clean_paw_track`), using the session's reprojection errors where it has them and heights above
    `floor` (or above z = 0 without one) to drop positions under the floor."""
    out = {}
    for paw in PAWS:
        err = session.error_px[:, session.index(paw)] if session.error_px is not None else None
        raw = session.kp(paw)
        height = floor.height_mm(raw) if floor is not None else raw[:, 2]
        out[paw] = clean_paw_track(session.times_s, raw, err, params, height)
    return out


def paw_heights_mm(session: PoseSession, floor: FloorPlane | None,
                   tracks: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Paw -> (T,) height above the floor plane (or above z = 0 without a fit), mm; of `tracks`
    (paw -> (T, 3)) when given, else of the session's raw paws."""
    out = {}
    for paw in PAWS:
        p = tracks[paw] if tracks is not None else session.kp(paw)
        out[paw] = floor.height_mm(p) if floor is not None else p[:, 2].copy()
    return out


def _stance_means(paw_mm: np.ndarray, c: PawContacts) -> np.ndarray:
    """(T, 3), contacts -> (M, 2) mean xy over each stance (NaN frames left out)."""
    xy = paw_mm[:, :2]
    ok = np.all(np.isfinite(xy), axis=1)
    csum = np.r_[np.zeros((1, 2)), np.cumsum(np.where(ok[:, None], xy, 0.0), axis=0)]
    ccount = np.r_[0, np.cumsum(ok)]
    n = ccount[c.last_frame + 1] - ccount[c.first_frame]
    s = csum[c.last_frame + 1] - csum[c.first_frame]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n[:, None] > 0, s / np.maximum(n, 1)[:, None], np.nan)


def _nearest(sorted_t: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the nearest element of `sorted_t` to each `t` (-1 when `sorted_t` is empty)."""
    if sorted_t.size == 0:
        return np.full(t.shape, -1)
    j = np.clip(np.searchsorted(sorted_t, t), 1, sorted_t.size - 1) if sorted_t.size > 1 else np.zeros(t.shape, int)
    if sorted_t.size == 1:
        return j
    left = sorted_t[j - 1]
    return np.where(np.abs(t - left) <= np.abs(sorted_t[j] - t), j - 1, j)


def stride_table(session: PoseSession, contacts: dict[str, PawContacts], bouts: Bouts,
                 kin: dict[str, np.ndarray], params: GaitParams,
                 tracks: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Contacts and bouts -> one row per stride inside a bout (columns documented in the module).

    Prints are measured on `tracks` (paw -> (T, 3), the cleaned tracks) when given, else on the raw paws.
    """
    t = session.times_s
    track = tracks if tracks is not None else {p: session.kp(p) for p in PAWS}
    center = kin["center_mm"][:, :2]
    prints = {p: _stance_means(track[p], contacts[p]) for p in PAWS}
    td = {p: contacts[p].touchdown_s for p in PAWS}
    bout_of = {p: bouts.bout_of_time(td[p]) for p in PAWS}
    rows = []
    for paw in PAWS:
        c = contacts[paw]
        if c.n < 2:
            continue
        i = np.arange(c.n - 1)
        td0, td1, lo0 = c.touchdown_s[i], c.touchdown_s[i + 1], c.liftoff_s[i]
        b0, b1 = bout_of[paw][i], bout_of[paw][i + 1]
        dur = td1 - td0
        keep = (b0 >= 0) & (b0 == b1) & (dur <= params.max_stride_s)
        # the paw must be seen throughout the stride (gaps short enough to be interpolated aside)
        seen = fill_short_gaps(t, track[paw], params.contacts.max_fill_ms / 1000.0)
        finite = np.all(np.isfinite(seen), axis=1)
        cnan = np.r_[0, np.cumsum(~finite)]
        keep &= (cnan[c.first_frame[i + 1] + 1] - cnan[c.first_frame[i]]) == 0
        i = i[keep]
        if i.size == 0:
            continue
        td0, td1, lo0, b = c.touchdown_s[i], c.touchdown_s[i + 1], c.liftoff_s[i], bout_of[paw][i]
        dur = td1 - td0
        stance = lo0 - td0
        swing = td1 - lo0
        p0, p1 = prints[paw][i], prints[paw][i + 1]
        direction = bouts.direction[b]
        perp = np.c_[-direction[:, 1], direction[:, 0]]
        length = np.hypot(*(p1 - p0).T)
        f0, f1 = c.first_frame[i], c.first_frame[i + 1]
        body_speed = np.hypot(*(center[f1] - center[f0]).T) / dur
        side, limb = PAW_SIDE[paw], PAW_LIMB[paw]
        row = {
            "paw": paw, "paw_code": PAW_CODES[paw], "side": side, "limb": limb,
            "laterality": session.meta.laterality(side), "bout": b,
            "touchdown_s": td0, "liftoff_s": lo0, "next_touchdown_s": td1,
            "stride_duration_s": dur, "stance_s": stance, "swing_s": swing,
            "duty_factor": stance / dur,
            "stance_swing_ratio": np.where(swing > 0, stance / np.where(swing > 0, swing, 1), np.nan),
            "stride_length_mm": length,
            "swing_speed_mm_s": np.where(swing > 0, length / np.where(swing > 0, swing, 1), np.nan),
            "stride_frequency_hz": 1.0 / dur,
            "body_speed_mm_s": body_speed,
            "print_x_mm": p0[:, 0], "print_y_mm": p0[:, 1],
        }
        # base of support: the opposite paw of the same girdle, nearest touchdown in the same bout
        other = {"front_left_paw": "front_right_paw", "front_right_paw": "front_left_paw",
                 "hind_left_paw": "hind_right_paw", "hind_right_paw": "hind_left_paw"}[paw]
        j = _nearest(td[other], td0)
        ok = (j >= 0)
        jj = np.where(ok, j, 0)
        if td[other].size:
            ok &= (bout_of[other][jj] == b) & (np.abs(td[other][jj] - td0) <= dur)
            d = prints[other][jj] - p0
            row["base_of_support_mm"] = np.where(ok, np.abs(np.sum(d * perp, axis=1)), np.nan)
        else:
            row["base_of_support_mm"] = np.full(i.size, np.nan)
        # print position: hind print vs the previous print of the fore paw on the same side
        if limb == "hind":
            fore = "front_left_paw" if side == "left" else "front_right_paw"
            j = np.searchsorted(td[fore], td0, side="right") - 1
            ok = j >= 0
            jj = np.where(ok, j, 0)
            if td[fore].size:
                ok &= (bout_of[fore][jj] == b) & (td0 - td[fore][jj] <= dur)
                d = p0 - prints[fore][jj]
                row["print_position_mm"] = np.where(ok, np.hypot(*d.T), np.nan)
                row["print_position_along_mm"] = np.where(ok, np.sum(d * direction, axis=1), np.nan)
            else:
                row["print_position_mm"] = row["print_position_along_mm"] = np.full(i.size, np.nan)
        else:
            row["print_position_mm"] = row["print_position_along_mm"] = np.full(i.size, np.nan)
        # phase of every other paw's touchdown within this step cycle
        for q in PAWS:
            if q == paw:
                continue
            j = np.searchsorted(td[q], td0, side="left")
            jj = np.minimum(j, max(td[q].size - 1, 0))
            ok = (j < td[q].size) & (td[q][jj] < td1) if td[q].size else np.zeros(i.size, bool)
            row[f"phase_{PAW_CODES[q]}"] = np.where(ok, (td[q][jj] - td0) / dur, np.nan) if td[q].size else np.nan
        rows.append(pd.DataFrame(row))
    cols = ["paw", "paw_code", "side", "limb", "laterality", "bout", "touchdown_s", "liftoff_s",
            "next_touchdown_s", "stride_duration_s", "stance_s", "swing_s", "duty_factor",
            "stance_swing_ratio", "stride_length_mm", "swing_speed_mm_s", "stride_frequency_hz",
            "body_speed_mm_s", "print_x_mm", "print_y_mm", "base_of_support_mm", "print_position_mm",
            "print_position_along_mm"] + [f"phase_{PAW_CODES[q]}" for q in PAWS]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    df = pd.concat(rows, ignore_index=True)
    for q in PAWS:
        if f"phase_{PAW_CODES[q]}" not in df:
            df[f"phase_{PAW_CODES[q]}"] = np.nan
    df = df[cols].sort_values(["touchdown_s", "paw"], kind="stable").reset_index(drop=True)
    return add_speed_normalised(df, params)


def add_speed_normalised(df: pd.DataFrame, params: GaitParams) -> pd.DataFrame:
    """Adds `{measure}_at_ref_speed`: each stride's value moved along the session's pooled linear
    fit of the measure against trunk speed to `params.reference_speed_mm_s`.

    Stride length, durations and duty factor all change with speed; this takes walking speed out of
    comparisons between sides, animals and time points. Too few strides or too narrow a speed range
    for a fit (fewer than `min_strides_speed_fit`, or speed spread < 5 % of its mean): NaN.
    """
    df = df.copy()
    speed = df["body_speed_mm_s"].to_numpy(dtype=float)
    for m in SPEED_NORMALISED:
        y = df[m].to_numpy(dtype=float)
        ok = np.isfinite(y) & np.isfinite(speed)
        col = np.full(len(df), np.nan)
        if ok.sum() >= params.min_strides_speed_fit and np.std(speed[ok]) > 0.05 * abs(np.mean(speed[ok])):
            slope = np.polyfit(speed[ok], y[ok], 1)[0]
            col = y + slope * (params.reference_speed_mm_s - speed)
        df[f"{m}_at_ref_speed"] = col
    return df


def step_sequence(codes: list[str]) -> tuple[dict[str, int], int]:
    """Paw codes in touchdown order -> (count per normal pattern, placements counted).

    Patterns are matched greedily in non-overlapping groups of four. Placements before the first and
    after the last matched pattern are not counted: a bout's ends cut a continuous walk at arbitrary
    points and would otherwise lower the index of a perfectly regular walk.
    """
    counts = {k: 0 for k in NORMAL_PATTERNS}
    i, first, last = 0, None, None
    while i + 4 <= len(codes):
        name = _PATTERN_OF.get(tuple(codes[i:i + 4]))
        if name is not None:
            counts[name] += 1
            first = i if first is None else first
            last = i + 3
            i += 4
        else:
            i += 1
    placements = 0 if first is None else last - first + 1
    return counts, placements


def _circular_mean_phase(phases: np.ndarray) -> tuple[float, float]:
    """(N,) phases in [0, 1) -> (mean phase in [0, 1), resultant length R in [0, 1])."""
    ph = phases[np.isfinite(phases)]
    if ph.size == 0:
        return float("nan"), float("nan")
    z = np.mean(np.exp(2j * np.pi * ph))
    return float((np.angle(z) / (2 * np.pi)) % 1.0), float(np.abs(z))


def asymmetry_index(contra: float, ipsi: float) -> float:
    """(contra - ipsi) / (contra + ipsi); NaN when undefined."""
    den = contra + ipsi
    if not np.isfinite(den) or den == 0:
        return float("nan")
    return float((contra - ipsi) / den)


def gait_summary(session: PoseSession, contacts: dict[str, PawContacts], bouts: Bouts,
                 strides: pd.DataFrame) -> dict:
    """Per-paw medians, cadence, step sequence, regularity, phases and asymmetry (JSON-ready)."""
    out: dict = {"n_bouts": bouts.n, "walking_s": bouts.total_s, "n_strides": int(len(strides)),
                 "mean_speed_mm_s": float(np.average(bouts.speed_mm_s, weights=bouts.end_s - bouts.start_s))
                 if bouts.n else None}
    # placements inside bouts: for cadence and step sequences
    events = []
    for paw in PAWS:
        b = bouts.bout_of_time(contacts[paw].touchdown_s)
        for tt, bb in zip(contacts[paw].touchdown_s[b >= 0], b[b >= 0]):
            events.append((bb, tt, 0 if PAW_LIMB[paw] == "fore" else 1, PAW_CODES[paw]))
    events.sort()
    # placements at most one frame apart (a trot's diagonal pair) are simultaneous at this frame rate:
    # their order is below the camera's resolution, so they are ordered fore before hind
    tie_s = session.frame_period_s * 1.01 if session.n_frames > 1 else 0.0
    cluster, first_t, last_b = 0, -np.inf, -1
    keyed = []
    for b, tt, limb_rank, code in events:
        if b != last_b or tt - first_t > tie_s:
            cluster, first_t = cluster + 1, tt
        keyed.append((cluster, limb_rank, tt, b, code))
        last_b = b
    keyed.sort()
    events = [(b, tt, limb_rank, code) for _, limb_rank, tt, b, code in keyed]
    out["n_placements"] = len(events)
    out["cadence_steps_per_s"] = len(events) / bouts.total_s if bouts.n and bouts.total_s > 0 else None
    totals = {k: 0 for k in NORMAL_PATTERNS}
    placements = 0
    for b in range(bouts.n):
        codes = [e[3] for e in events if e[0] == b]
        counts, n = step_sequence(codes)
        placements += n
        for k, v in counts.items():
            totals[k] += v
    nssp = sum(totals.values())
    out["step_sequence_patterns"] = totals
    out["regularity_index_pct"] = 100.0 * 4 * nssp / placements if placements else None
    out["regularity_placements"] = placements
    paws: dict = {}
    measures = LIMB_MEASURES + tuple(f"{m}_at_ref_speed" for m in SPEED_NORMALISED) + ("print_position_mm",)
    for paw in PAWS:
        s = strides[strides["paw"] == paw]
        entry = {"n_strides": int(len(s)), "n_contacts": contacts[paw].n,
                 "laterality": session.meta.laterality(PAW_SIDE[paw])}
        for m in measures:
            v = s[m].to_numpy(dtype=float) if m in s else np.zeros(0)
            v = v[np.isfinite(v)]
            entry[m] = {"median": float(np.median(v)) if v.size else None,
                        "mean": float(np.mean(v)) if v.size else None,
                        "sd": float(np.std(v, ddof=1)) if v.size > 1 else None, "n": int(v.size)}
        paws[paw] = entry
    out["paws"] = paws
    phases = {}
    for name, (a, q) in PHASE_PAIRS.items():
        s = strides[strides["paw"] == a]
        ph = s[f"phase_{PAW_CODES[q]}"].to_numpy(dtype=float) if len(s) else np.zeros(0)
        mean, r = _circular_mean_phase(ph)
        phases[name] = {"anchor": a, "target": q, "mean_phase": mean, "concentration_R": r,
                        "n": int(np.isfinite(ph).sum())}
    out["phases"] = phases
    lesion = session.meta.lesion_side
    conv = "(contra - ipsi) / (contra + ipsi)" if lesion != "none" else "(right - left) / (right + left)"
    asym: dict = {"convention": conv, "fore": {}, "hind": {}}
    for limb, (lp, rp) in {"fore": ("front_left_paw", "front_right_paw"),
                           "hind": ("hind_left_paw", "hind_right_paw")}.items():
        contra_p, ipsi_p = (rp, lp) if lesion in ("left", "none") else (lp, rp)
        for m in LIMB_MEASURES + tuple(f"{m}_at_ref_speed" for m in SPEED_NORMALISED):
            c, i = paws[contra_p][m]["median"], paws[ipsi_p][m]["median"]
            asym[limb][m] = {
                "index": asymmetry_index(c, i) if c is not None and i is not None else None,
                "n_strides": [paws[contra_p][m]["n"], paws[ipsi_p][m]["n"]],
            }
    out["asymmetry"] = asym
    return out


def analyse_gait(session: PoseSession, floor: FloorPlane | None, params: GaitParams = GaitParams()) -> GaitResult:
    """A session -> contacts, straight walking bouts, the stride table and the gait summary."""
    missing = [p for p in PAWS if not session.has(p)]
    if missing:
        raise KeyError(f"gait analysis needs all four paws; session {session.meta.session_id!r} lacks {missing}")
    tracks = paw_tracks_mm(session, params.clean, floor)
    heights = paw_heights_mm(session, floor, tracks)
    contacts = {p: detect_contacts(session.times_s, tracks[p], heights[p], params.contacts) for p in PAWS}
    kin = trunk_kinematics(session, params.bouts.smooth_s)
    bouts = straight_walking_bouts(session, params.bouts, kin)
    strides = stride_table(session, contacts, bouts, kin, params, tracks)
    return GaitResult(contacts, bouts, strides, gait_summary(session, contacts, bouts, strides))
