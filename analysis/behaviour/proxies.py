"""Dyskinesia proxies from behaviour features, episode detection, and 20-minute bins.

PROXIES, NOT AIMs SCORES. The abnormal involuntary movement scale (axial, limb, orolingual,
rotational, each 0-4 in 1-min observations every 20 min) is a rater's judgement; these are measures
from 3D that a rater can set beside it. Nothing here has been checked against raters yet.

Per frame (from `analysis.behaviour.features`, window ending at the frame; offline tables put each
value at its window's centre):

``axial_<side>_deg``          sustained roll of the head towards <side> over the long window:
                              max(0, s * twist_deg), s = +1 left, -1 right. The lateral bend
                              (`bend_deg`) is kept as a feature but left out of the proxy: head
                              scanning and tight turns bend the neck as far as a dyskinetic twist
                              (on the synthetic rig its 95th percentile at baseline is 73 deg over 3 s)
``limb_<side>_mm``            how much more the forepaw on <side> moves sideways and up (in the body
                              frame) than the other forepaw: max(0, excursion(<side>) - excursion(other)),
                              from `front_<paw>_excursion_mm`; movements of both forelimbs cancel
``orolingual_mm``             5-14 Hz nose oscillation amplitude in the head frame (`nose_oscillation_mm`)
``rotation_<side>_deg_s``     net body-axis rotation towards <side> over the long window

Ipsi/contra: with a lesion side, <side> becomes ipsi (same side as the lesion) or contra.

Episode detection (no truth used): a proxy's excess over its own session median (the rat's usual
level; episodes must fill well under half of the session) above the kind's threshold, in runs at
least `min_duration_s` long; runs closer than `merge_gap_s` are merged. For the two-sided proxies the
larger side counts. The thresholds (`DetectionParams`) were set on synthetic seed 1 and are
measured on other seeds by `bench/bench_behaviour.py`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.behaviour.features import FEATURE_NAMES

SIDES = ("left", "right")
PROXY_NAMES: tuple[str, ...] = ("axial_left_deg", "axial_right_deg", "limb_left_mm", "limb_right_mm",
                                "orolingual_mm", "rotation_left_deg_s", "rotation_right_deg_s")
REGIONS: tuple[str, ...] = ("axial", "limb", "orolingual", "rotational")
#: region -> its proxy columns (one per side, or one)
REGION_PROXIES: Mapping[str, tuple[str, ...]] = {
    "axial": ("axial_left_deg", "axial_right_deg"),
    "limb": ("limb_left_mm", "limb_right_mm"),
    "orolingual": ("orolingual_mm",),
    "rotational": ("rotation_left_deg_s", "rotation_right_deg_s"),
}


def proxies_from_features(features: np.ndarray) -> dict[str, np.ndarray]:
    """(T, F) features (FEATURE_NAMES order) -> proxy name -> (T,) values (NaN where not computable)."""
    f = np.asarray(features, np.float64)
    col = {n: f[:, i] for i, n in enumerate(FEATURE_NAMES)}
    out: dict[str, np.ndarray] = {}
    for side, s in (("left", 1.0), ("right", -1.0)):
        out[f"axial_{side}_deg"] = np.maximum(0.0, s * col["twist_deg"])
        other = "right" if side == "left" else "left"
        out[f"limb_{side}_mm"] = np.maximum(0.0, col[f"front_{side}_paw_excursion_mm"]
                                            - col[f"front_{other}_paw_excursion_mm"])
        out[f"rotation_{side}_deg_s"] = np.maximum(0.0, s * col["rotation_deg_s"])
    out["orolingual_mm"] = col["nose_oscillation_mm"].copy()
    return {k: out[k] for k in PROXY_NAMES}


def centred(values: np.ndarray, times_s: np.ndarray, lag_s: float) -> np.ndarray:
    """Move causal window values to their window centre: (T,) -> (T,) value at times_s[i] is the one of
    the window ending lag_s later (NaN at the end)."""
    t = np.asarray(times_s, np.float64)
    return np.interp(t + lag_s, t, values, left=np.nan, right=np.nan)


def centred_proxies(proxies: Mapping[str, np.ndarray], times_s: np.ndarray, window_s: float,
                    long_window_s: float) -> dict[str, np.ndarray]:
    """Every proxy moved to its window's centre: half the long window (axial, orolingual,
    rotational), half the short window (limb)."""
    out = {}
    for k, v in proxies.items():
        long = not k.startswith("limb")
        out[k] = centred(v, times_s, 0.5 * (long_window_s if long else window_s))
    return out


@dataclass(frozen=True, slots=True)
class DetectionParams:
    """Threshold on the excess over the session median, per region, in the proxy's unit; run lengths s."""

    threshold: Mapping[str, float] = field(default_factory=lambda: {
        "axial": 8.0, "limb": 6.0, "orolingual": 2.5, "rotational": 90.0})
    min_duration_s: Mapping[str, float] = field(default_factory=lambda: {
        "axial": 2.0, "limb": 2.0, "orolingual": 2.0, "rotational": 2.0})
    merge_gap_s: float = 1.0


@dataclass(frozen=True, slots=True)
class DetectedEpisode:
    kind: str
    onset_s: float
    offset_s: float
    side: str  # "left", "right" or "" (orolingual)
    peak_excess: float


def region_excess(proxies: Mapping[str, np.ndarray], region: str) -> tuple[np.ndarray, np.ndarray]:
    """(T,) excess of the region's proxy over its session median (larger side), (T,) side index (0 left, 1 right)."""
    cols = REGION_PROXIES[region]
    ex = []
    for c in cols:
        v = np.asarray(proxies[c], np.float64)
        med = np.nanmedian(v) if np.isfinite(v).any() else 0.0
        ex.append(v - med)
    ex = np.stack(ex, axis=1)
    filled = np.where(np.isfinite(ex), ex, -np.inf)
    side = np.argmax(filled, axis=1)
    best = filled[np.arange(len(filled)), side]
    return np.where(np.isfinite(best), best, np.nan), side


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(T,) bool -> [(first, last + 1)] of each run of True."""
    m = np.concatenate([[False], mask, [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def detect_episodes(proxies: Mapping[str, np.ndarray], times_s: np.ndarray,
                    params: DetectionParams = DetectionParams()) -> list[DetectedEpisode]:
    """Centred proxies (T,) per name -> detected episodes of every region, in time order."""
    t = np.asarray(times_s, np.float64)
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    out: list[DetectedEpisode] = []
    for region in REGIONS:
        ex, side = region_excess(proxies, region)
        runs = true_runs(np.nan_to_num(ex, nan=-np.inf) > params.threshold[region])
        merged: list[list[int]] = []
        for a, b in runs:
            if merged and (t[a] - t[merged[-1][1] - 1]) <= params.merge_gap_s:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        for a, b in merged:
            if (b - a) * dt < params.min_duration_s[region]:
                continue
            seg = ex[a:b]
            k = a + int(np.nanargmax(seg))
            sd = "" if len(REGION_PROXIES[region]) == 1 else SIDES[int(np.bincount(side[a:b]).argmax())]
            out.append(DetectedEpisode(region, float(t[a]), float(t[b - 1] + dt), sd, float(ex[k])))
    return sorted(out, key=lambda e: e.onset_s)


@dataclass(frozen=True, slots=True)
class MatchScore:
    kind: str
    n_true: int
    n_detected: int
    n_matched: int
    precision: float
    recall: float
    f1: float
    onset_error_s_median: float
    onset_errors_s: tuple[float, ...]


def match_episodes(truth: Sequence, detected: Sequence[DetectedEpisode], kind: str) -> MatchScore:
    """One-to-one matching of detected to scripted episodes of one kind by overlap (largest first).

    `truth` items need kind, onset_s, offset_s. A detection matches a scripted episode it overlaps;
    each is used once. Onset error = detected onset - scripted onset, s.
    """
    tr = [e for e in truth if e.kind == kind]
    de = [e for e in detected if e.kind == kind]
    pairs = []
    for i, a in enumerate(tr):
        for j, b in enumerate(de):
            ov = min(a.offset_s, b.offset_s) - max(a.onset_s, b.onset_s)
            if ov > 0:
                pairs.append((ov, i, j))
    used_t, used_d, errs = set(), set(), []
    for ov, i, j in sorted(pairs, reverse=True):
        if i in used_t or j in used_d:
            continue
        used_t.add(i)
        used_d.add(j)
        errs.append(de[j].onset_s - tr[i].onset_s)
    m = len(errs)
    p = m / len(de) if de else float("nan")
    r = m / len(tr) if tr else float("nan")
    f1 = 2 * m / (len(de) + len(tr)) if (de or tr) else float("nan")
    med = float(np.median(np.abs(errs))) if errs else float("nan")
    return MatchScore(kind, len(tr), len(de), m, p, r, f1, med, tuple(float(e) for e in errs))


def episode_proxy_means(proxies: Mapping[str, np.ndarray], times_s: np.ndarray, episodes: Sequence) -> np.ndarray:
    """(E,) mean excess of each episode's region proxy (its side where two-sided) over its interval."""
    t = np.asarray(times_s, np.float64)
    out = np.full(len(episodes), np.nan)
    for i, ep in enumerate(episodes):
        cols = REGION_PROXIES[ep.kind]
        name = cols[0] if len(cols) == 1 else cols[SIDES.index(ep.side)]
        v = np.asarray(proxies[name], np.float64)
        inside = (t >= ep.onset_s) & (t < ep.offset_s)
        if inside.any():
            out[i] = np.nanmean(v[inside]) - np.nanmedian(v)
    return out


def binned_proxies(proxies: Mapping[str, np.ndarray], times_s: np.ndarray, lesion_side: str = "none",
                   bin_s: float = 1200.0) -> pd.DataFrame:
    """Per bin (default 20 min, the AIMs observation interval), per region and side: mean and 95th
    percentile of each proxy, the fraction of frames it was computable, and ipsi/contra labels.

    Returns:
        One row per (bin, proxy): bin, bin_start_s, bin_end_s, region, proxy, side, laterality
        ('ipsi'/'contra'/'' ), mean, p95, valid_fraction, n_frames.
    """
    t = np.asarray(times_s, np.float64)
    t0 = float(t[0]) if len(t) else 0.0
    idx = np.floor((t - t0) / bin_s).astype(np.int64) if len(t) else np.zeros(0, np.int64)
    rows = []
    for b in np.unique(idx):
        sel = idx == b
        for region, cols in REGION_PROXIES.items():
            for name in cols:
                v = np.asarray(proxies[name], np.float64)[sel]
                ok = np.isfinite(v)
                side = next((s for s in SIDES if f"_{s}_" in name), "")
                lat = "" if not side or lesion_side not in SIDES else ("ipsi" if side == lesion_side else "contra")
                rows.append({"bin": int(b), "bin_start_s": t0 + b * bin_s, "bin_end_s": t0 + (b + 1) * bin_s,
                             "region": region, "proxy": name, "side": side, "laterality": lat,
                             "mean": float(np.mean(v[ok])) if ok.any() else np.nan,
                             "p95": float(np.percentile(v[ok], 95)) if ok.any() else np.nan,
                             "valid_fraction": float(ok.mean()) if len(v) else np.nan, "n_frames": int(sel.sum())})
    return pd.DataFrame(rows)
