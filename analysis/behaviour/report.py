"""Dyskinesia proxies in `ratrig analyze`: per 20-minute bin, per region, ipsi vs contra; CSV + figure.

Files written into the session's output folder (atomic writes):

    dyskinesia_proxies.csv   one row per (20-min bin, proxy): region, side, ipsi/contra, mean, p95,
                             valid fraction (see analysis.behaviour.proxies.binned_proxies)
    behaviour_episodes.csv   episodes detected from the proxies: kind, onset_s, offset_s, side,
                             ipsi/contra, peak excess
    behaviour_states.csv     time share of each HMM state per 20-min bin, and the state's mean
                             features (what the state is)

PROXIES, NOT AIMs SCORES: measures from 3D for raters to set beside their scores.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.behaviour.features import REQUIRED_KEYPOINTS
from analysis.behaviour.offline import BehaviourParams, analyse
from analysis.behaviour.proxies import REGION_PROXIES, REGIONS, SIDES, binned_proxies
from ratrig.tomlio import atomic_write_text

BIN_S = 1200.0  # AIMs are scored every 20 minutes
_UNITS = {"axial": "deg", "limb": "mm", "orolingual": "mm", "rotational": "deg/s"}


@dataclass(frozen=True)
class DyskinesiaReport:
    bins: pd.DataFrame
    episodes: pd.DataFrame
    states: pd.DataFrame
    html: str
    summary: dict


def _laterality(side: str, lesion_side: str) -> str:
    if side not in SIDES or lesion_side not in SIDES:
        return ""
    return "ipsi" if side == lesion_side else "contra"


def _figure(times_s: np.ndarray, proxies: dict, lesion_side: str, bin_s: float) -> str:
    from analysis.report import _png  # the report's own PNG encoder

    fig = Figure(figsize=(10, 7.5))
    t_min = (times_s - times_s[0]) / 60.0
    step = max(1, int(round(10.0 / max(float(np.median(np.diff(times_s))), 1e-3))))  # 10-s means
    for r, region in enumerate(REGIONS):
        ax = fig.add_subplot(len(REGIONS), 1, r + 1)
        for name in REGION_PROXIES[region]:
            v = np.asarray(proxies[name], float)
            n = len(v) // step
            if n == 0:
                continue
            with np.errstate(all="ignore"):
                m = np.nanmean(v[: n * step].reshape(n, step), axis=1)
            side = next((s for s in SIDES if f"_{s}_" in name), "")
            lat = _laterality(side, lesion_side)
            label = f"{side} ({lat})" if lat else (side or region)
            ax.plot(t_min[: n * step: step], m, lw=1, label=label,
                    color={"left": "#1f77b4", "right": "#d62728"}.get(side, "#444"))
        for b in np.arange(bin_s / 60.0, t_min[-1], bin_s / 60.0):
            ax.axvline(b, color="#999", lw=0.8, ls="--")
        ax.set_ylabel(f"{region}\n({_UNITS[region]})")
        ax.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("time in session (min); dashed: 20-min bins")
    return _png(fig)


def dyskinesia_report(times_s: np.ndarray, keypoints_mm: np.ndarray, keypoint_names, lesion_side: str,
                      out_dir: str | Path, params: BehaviourParams | None = None, bin_s: float = BIN_S) -> DyskinesiaReport:
    """Compute the proxies of a session and write the CSVs; returns them with an HTML block.

    Raises:
        ValueError: the session lacks keypoints the proxies need, or is shorter than the long window.
    """
    missing = [k for k in REQUIRED_KEYPOINTS if k not in keypoint_names]
    if missing:
        raise ValueError(f"keypoints not tracked: {missing}")
    t = np.asarray(times_s, float)
    if len(t) < 3:
        raise ValueError(f"{len(t)} frames: too short for the proxies")
    fps = 1.0 / float(np.median(np.diff(t)))
    if params is None:
        from analysis.behaviour.features import FeatureParams

        params = BehaviourParams(FeatureParams(fps=fps))
    if t[-1] - t[0] < params.features.long_window_s:
        raise ValueError(f"{t[-1] - t[0]:.1f} s: shorter than the {params.features.long_window_s:g} s window")
    res = analyse(t, keypoints_mm, keypoint_names, params)
    bins = binned_proxies(res.proxies, t, lesion_side, bin_s)
    episodes = pd.DataFrame([{"kind": e.kind, "onset_s": e.onset_s - t[0], "offset_s": e.offset_s - t[0],
                              "side": e.side, "laterality": _laterality(e.side, lesion_side),
                              "peak_excess": e.peak_excess} for e in res.episodes],
                            columns=["kind", "onset_s", "offset_s", "side", "laterality", "peak_excess"])
    state_rows = []
    if res.states is not None:
        idx = np.floor((t - t[0]) / bin_s).astype(int)
        table = res.segmenter.state_table()
        for b in np.unique(idx):
            sel = res.states[idx == b]
            for s in range(res.segmenter.n_states):
                state_rows.append({"bin": int(b), "state": s, "time_share": float(np.mean(sel == s)),
                                   **{f"mean_{k}": float(v) for k, v in table.loc[s].items()}})
    states = pd.DataFrame(state_rows)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "dyskinesia_proxies.csv", bins.to_csv(index=False))
    atomic_write_text(out / "behaviour_episodes.csv", episodes.to_csv(index=False))
    atomic_write_text(out / "behaviour_states.csv", states.to_csv(index=False))
    show = bins.pivot_table(index=["region", "proxy", "laterality"], columns="bin", values="mean", dropna=False)
    show.columns = [f"bin {c} mean" for c in show.columns]
    counts = episodes.groupby(["kind", "laterality"]).size().rename("episodes").reset_index() if len(episodes) else episodes
    summary = {"lesion_side": lesion_side, "bin_s": bin_s, "n_bins": int(bins["bin"].nunique()) if len(bins) else 0,
               "episodes": {k: int((episodes["kind"] == k).sum()) for k in REGIONS},
               "hmm_states": res.segmenter.n_states if res.segmenter is not None else None}
    block = ["<h2>Dyskinesia proxies (not AIMs scores)</h2>",
             "<p>Measures from 3D for raters to compare with their AIMs scores; not checked against raters. "
             "Definitions: analysis/behaviour/README.md. Lesion side: "
             f"<b>{html.escape(lesion_side)}</b> (ipsi = same side as the lesion). Bins of {bin_s / 60:.0f} min. "
             "Files: dyskinesia_proxies.csv, behaviour_episodes.csv, behaviour_states.csv.</p>",
             f"<figure><img src='data:image/png;base64,{_figure(t, res.proxies, lesion_side, bin_s)}'>"
             f"<figcaption>10-s means of each proxy over {len(t)} frames ({(t[-1] - t[0]) / 60:.1f} min).</figcaption></figure>",
             show.to_html(float_format=lambda v: f"{v:.3g}"),
             "<p>Episodes detected from the proxies (threshold over the session median):</p>",
             (counts.to_html(index=False) if len(episodes) else "<p>none</p>")]
    return DyskinesiaReport(bins, episodes, states, "".join(block), summary)


def rig_lesion_side(source: str) -> str:
    """`[behaviour] lesion_side` of the rig.toml stored with a session (searched from the pose table's
    folder up to the session folder), or "none"."""
    from ratrig.config import ConfigError, load_section

    p = Path(source)
    for folder in list(p.parents)[:3]:
        rig = folder / "rig.toml"
        if rig.is_file():
            try:
                return load_section(rig, "behaviour").lesion_side
            except ConfigError:
                return "none"
    return "none"


def session_dyskinesia(session, out_dir: str | Path) -> tuple[str, dict]:
    """A `PoseSession` -> (HTML block, summary) for `ratrig analyze`; the CSVs go to `out_dir`.

    The lesion side is the session's metadata (subject.toml, --lesion-side) or else the rig's
    `[behaviour] lesion_side`. A session the proxies cannot be computed on gets a block that says why.
    """
    lesion = session.meta.lesion_side if session.meta.lesion_side != "none" else rig_lesion_side(session.source)
    try:
        rep = dyskinesia_report(session.times_s, session.keypoints_mm, session.keypoint_names, lesion, out_dir)
    except ValueError as e:
        return (f"<h2>Dyskinesia proxies (not AIMs scores)</h2><p>Not computed: {html.escape(str(e))}</p>",
                {"skipped": str(e)})
    return rep.html, rep.summary
