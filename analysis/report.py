"""HTML reports with embedded PNG figures (matplotlib Agg, no display needed).

Every figure's caption says how many strides, contacts, bouts, events or sessions it rests on.
Figures are built on `matplotlib.figure.Figure` directly (no pyplot state), so reports can be made
from any thread or process.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.pipeline import SessionResult
from analysis.session import PAW_CODES, PAW_SIDE, body_axis_heading_rad
from ratrig.skeleton import PAWS
from ratrig.tomlio import atomic_write_text

PAW_COLORS = {"front_left_paw": "#1f77b4", "hind_left_paw": "#6baed6",
              "front_right_paw": "#d62728", "hind_right_paw": "#fc9272"}
LIMB_COLORS = {"left": "#1f77b4", "right": "#d62728", "both": "#7f7f7f"}


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _side_label(paw: str, lesion: str) -> str:
    side = PAW_SIDE[paw]
    lat = "" if lesion == "none" else (" (ipsi)" if side == lesion else " (contra)")
    return f"{PAW_CODES[paw]}{lat}"


def fig_quality(result: SessionResult) -> tuple[str, str]:
    q = result.summary["quality"]
    names = list(q["keypoints"])
    valid = [q["keypoints"][n]["valid_fraction"] for n in names]
    filled = [q["keypoints"][n].get("filled_fraction") or 0.0 for n in names]
    fig = Figure(figsize=(7, 2.8))
    ax = fig.add_subplot(1, 2, 1)
    y = np.arange(len(names))
    ax.barh(y, np.array(valid) - np.array(filled), color="#4c72b0", label="triangulated")
    ax.barh(y, filled, left=np.array(valid) - np.array(filled), color="#dd8452", label="gap-filled")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of frames")
    ax.legend(fontsize=7, loc="lower right")
    ax2 = fig.add_subplot(1, 2, 2)
    err = [q["keypoints"][n].get("reprojection_error_px_median") for n in names]
    if any(e is not None for e in err):
        ax2.barh(y, [e if e is not None else 0 for e in err], color="#55a868")
        ax2.set_yticks(y, [""] * len(names))
        ax2.set_xlabel("median reprojection error, px")
    else:
        ax2.text(0.5, 0.5, "no reprojection errors in this source", ha="center", va="center", fontsize=8)
        ax2.set_axis_off()
    floor = q.get("floor")
    fl = (f"floor plane tilt {floor['tilt_deg']:.2f} deg, offset {floor['offset_mm']:.1f} mm, "
          f"RMS {floor['rms_mm']:.1f} mm over {floor['n_points']} paw points") if floor else "no floor fit (too few paw points)"
    return _png(fig), f"Tracking quality over {q['n_frames']} frames ({q['duration_s']:.1f} s). {fl}."


def fig_step_diagram(result: SessionResult, max_bouts: int = 3) -> tuple[str, str] | None:
    g = result.gait
    if g is None or g.bouts.n == 0:
        return None
    order = np.argsort(-(g.bouts.end_s - g.bouts.start_s))[:max_bouts]
    order = np.sort(order)
    fig = Figure(figsize=(8, 1.2 + 1.1 * len(order)))
    n_contacts = 0
    lesion = result.session.meta.lesion_side
    for row, b in enumerate(order):
        ax = fig.add_subplot(len(order), 1, row + 1)
        t0, t1 = g.bouts.start_s[b], g.bouts.end_s[b]
        for k, paw in enumerate(PAWS):
            c = g.contacts[paw]
            sel = (c.liftoff_s > t0) & (c.touchdown_s < t1)
            n_contacts += int(sel.sum())
            spans = [(a - t0, d - a) for a, d in zip(c.touchdown_s[sel], c.liftoff_s[sel])]
            ax.broken_barh(spans, (k - 0.4, 0.8), color=PAW_COLORS[paw])
        ax.set_yticks(range(4), [_side_label(p, lesion) for p in PAWS], fontsize=7)
        ax.set_xlim(0, t1 - t0)
        ax.invert_yaxis()
        ax.set_title(f"bout {b}: {t0:.1f}-{t1:.1f} s, {g.bouts.speed_mm_s[b]:.0f} mm/s", fontsize=8)
    fig.axes[-1].set_xlabel("time in bout, s (bars = stance)")
    fig.tight_layout()
    return _png(fig), (f"Step diagram (footfall timeline) of the {len(order)} longest straight walking bouts of "
                       f"{g.bouts.n}; {n_contacts} contacts shown.")


def fig_paw_placement(result: SessionResult) -> tuple[str, str] | None:
    g = result.gait
    if g is None or len(g.strides) == 0:
        return None
    s = g.strides
    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot(1, 1, 1)
    lesion = result.session.meta.lesion_side
    for paw in PAWS:
        d = s[s["paw"] == paw]
        ax.scatter(d["print_x_mm"], d["print_y_mm"], s=8, color=PAW_COLORS[paw],
                   marker="o" if paw.startswith("front") else "s", label=f"{_side_label(paw, lesion)} (n={len(d)})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x along corridor, mm")
    ax.set_ylabel("y across, mm")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _png(fig), f"Paw placement map: {len(s)} prints (stance mean positions) from {g.bouts.n} straight bouts."


def fig_distributions(result: SessionResult) -> tuple[str, str] | None:
    g = result.gait
    if g is None or len(g.strides) == 0:
        return None
    s = g.strides
    measures = [("stride_length_mm", "stride length, mm"), ("stance_s", "stance, s"), ("swing_s", "swing, s"),
                ("duty_factor", "duty factor"), ("swing_speed_mm_s", "swing speed, mm/s"),
                ("base_of_support_mm", "base of support, mm")]
    lesion = result.session.meta.lesion_side
    fig = Figure(figsize=(9, 5))
    for i, (m, label) in enumerate(measures):
        ax = fig.add_subplot(2, 3, i + 1)
        data, names, colors = [], [], []
        for paw in PAWS:
            v = s.loc[s["paw"] == paw, m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            data.append(v if v.size else np.array([np.nan]))
            names.append(f"{_side_label(paw, lesion)}\nn={v.size}")
            colors.append(PAW_COLORS[paw])
        bp = ax.boxplot(data, patch_artist=True, showfliers=False, widths=0.6)
        for patch, c in zip(bp["boxes"], colors):
            patch.set_facecolor(c)
            patch.set_alpha(0.6)
        ax.set_xticks(range(1, 5), names, fontsize=6)
        ax.set_title(label, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    a = result.summary["gait"]["asymmetry"]
    ai = a["fore"]["stride_length_mm"]["index"], a["hind"]["stride_length_mm"]["index"]
    fmt = lambda v: "n/a" if v is None else f"{v:+.3f}"  # noqa: E731
    return _png(fig), (f"Stride parameters per paw, left vs right ({len(s)} strides). Stride length asymmetry "
                       f"{a['convention']}: fore {fmt(ai[0])}, hind {fmt(ai[1])}.")


def fig_cylinder(result: SessionResult) -> tuple[str, str] | None:
    if result.session.meta.test_type != "cylinder" or "skipped" in result.summary.get("cylinder", {}):
        return None
    app = result.session.apparatus
    c = result.summary["cylinder"]
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot(1, 2, 1)
    th = np.linspace(0, 2 * np.pi, 200)
    cx, cy = app.cylinder_center_mm
    ax.plot(cx + app.cylinder_radius_mm * np.cos(th), cy + app.cylinder_radius_mm * np.sin(th), "k-", lw=1)
    for e in result.wall_contacts:
        ax.scatter(e.x_mm, e.y_mm, color=LIMB_COLORS[e.limb], s=18)
    ax.set_aspect("equal")
    ax.set_title("wall placements (top view)", fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    lesion = result.session.meta.lesion_side
    if lesion != "none":
        labels, vals = ["ipsi", "contra", "both"], [c["ipsi"], c["contra"], c["both"]]
        cols = [LIMB_COLORS[lesion], LIMB_COLORS["right" if lesion == "left" else "left"], LIMB_COLORS["both"]]
    else:
        labels, vals, cols = ["left", "right", "both"], [c["left"], c["right"], c["both"]], [LIMB_COLORS[k] for k in ("left", "right", "both")]
    ax2.bar(labels, vals, color=cols)
    ax2.set_ylabel("wall placements")
    fig.tight_layout()
    pct = c.get("contralateral_use_pct")
    cap = f"Cylinder test: {c['n_contacts']} forelimb wall placements in {c['n_rears']} rears"
    cap += f"; contralateral use {pct:.1f} %." if pct is not None else "."
    return _png(fig), cap


def fig_corridor(result: SessionResult) -> tuple[str, str] | None:
    if result.session.meta.test_type != "corridor" or "skipped" in result.summary.get("corridor", {}):
        return None
    app = result.session.apparatus
    r = result.summary["corridor"]
    s = result.session
    fig = Figure(figsize=(9, 3))
    ax = fig.add_subplot(1, 1, 1)
    nose = s.kp("nose")
    step = max(1, s.n_frames // 20000)
    ax.plot(nose[::step, 0], nose[::step, 1], color="0.75", lw=0.5)
    pots = app.pots_array_mm
    th = np.linspace(0, 2 * np.pi, 40)
    for p in pots:
        ax.plot(p[0] + app.pot_zone_radius_mm * np.cos(th), p[1] + app.pot_zone_radius_mm * np.sin(th), "k-", lw=0.6)
    for e in result.retrievals:
        p = pots[e.pot]
        ax.scatter(p[0], p[1], color=LIMB_COLORS[e.side], s=25, alpha=0.7)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x, mm")
    ax.set_ylabel("y, mm")
    if "ipsi" in r:
        cap = (f"Corridor test: {r['n_retrievals']} retrievals, {r['ipsi']} ipsilateral / {r['contra']} contralateral, "
               f"side-bias index {r['side_bias_index'] if r['side_bias_index'] is not None else float('nan'):+.2f}")
    else:
        cap = f"Corridor test: {r['n_retrievals']} retrievals, {r['left']} on the rat's left / {r['right']} right"
    lat = r.get("latency_first_s")
    cap += f"; first retrieval after {lat:.1f} s." if lat is not None else "; no retrieval."
    return _png(fig), cap + " Blue: pot on the rat's left when visited, red: right."


def fig_rotation(result: SessionResult) -> tuple[str, str] | None:
    rot = result.summary.get("rotation", {})
    if "skipped" in rot:
        return None
    s = result.session
    heading = body_axis_heading_rad(s)
    ok = np.isfinite(heading)
    if ok.sum() < 2:
        return None
    turns = np.unwrap(heading[ok]) / (2 * np.pi)
    fig = Figure(figsize=(7, 2.2))
    ax = fig.add_subplot(1, 1, 1)
    step = max(1, turns.size // 20000)
    ax.plot(s.times_s[ok][::step], turns[::step] - turns[0], lw=0.8)
    ax.set_xlabel("time, s")
    ax.set_ylabel("cumulative turns (+ = left)")
    cap = f"Body-axis rotation: {rot['left_turns']} full left and {rot['right_turns']} full right turns"
    if "net_ipsi_turns" in rot:
        cap += f", net {rot['net_ipsi_turns']:+d} ipsilateral"
    return _png(fig), cap + f" over {s.duration_s:.0f} s."


def _html(title: str, blocks: list[str]) -> str:
    style = ("body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}"
             "figure{margin:1.2em 0}figcaption{font-size:0.9em;color:#444}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{''.join(blocks)}</body></html>")


def _figure_block(png_caption: tuple[str, str] | None) -> str:
    if png_caption is None:
        return ""
    png, cap = png_caption
    return f"<figure><img src='data:image/png;base64,{png}'><figcaption>{html.escape(cap)}</figcaption></figure>"


def _key_numbers(summary: dict) -> pd.DataFrame:
    from analysis.outputs import group_row

    row = group_row(summary)
    return pd.DataFrame({"value": row}).dropna()


def session_report(result: SessionResult, path: str | Path, extra_blocks: tuple[str, ...] = ()) -> Path:
    """Write the session's HTML report to `path`. Returns the path.

    `extra_blocks`: HTML sections added before the key numbers (e.g. the dyskinesia proxies).
    """
    m = result.session.meta
    title = f"ratrig session {m.session_id}"
    info = (f"<p>animal <b>{html.escape(m.animal_id or '?')}</b>, lesion side <b>{m.lesion_side}</b>, "
            f"test <b>{m.test_type}</b>, treatment <b>{html.escape(m.treatment or '-')}</b>, "
            f"time point <b>{html.escape(m.time_point or '-')}</b>; source {html.escape(result.session.source)}</p>")
    blocks = [info, "<h2>Quality</h2>", _figure_block(fig_quality(result))]
    live = result.summary["quality"].get("live_events")
    if live:
        table = pd.DataFrame(live).T
        blocks.append("<p>Live paw events (events.jsonl) against the offline touchdowns: matched within two "
                      "frames, and the live detector's median delay.</p>"
                      + table.to_html(float_format=lambda v: f"{v:.3g}"))
    g = result.summary.get("gait")
    if g:
        blocks.append("<h2>Gait (straight walking bouts only)</h2>")
        if "skipped" in g:
            blocks.append(f"<p>Gait not analysed: {html.escape(g['skipped'])}</p>")
        else:
            ri = g.get("regularity_index_pct")
            blocks.append(
                f"<p>{g['n_bouts']} bouts, {g['walking_s']:.1f} s of straight walking, {g['n_strides']} strides, "
                f"{g['n_placements']} paw placements; regularity index "
                f"{'n/a' if ri is None else f'{ri:.1f} %'} over {g['regularity_placements']} placements; "
                f"step sequence patterns {html.escape(json.dumps(g['step_sequence_patterns']))}.</p>")
            for fig in (fig_step_diagram(result), fig_paw_placement(result), fig_distributions(result)):
                blocks.append(_figure_block(fig))
    for key, fn, head in (("cylinder", fig_cylinder, "Cylinder test"), ("corridor", fig_corridor, "Corridor test")):
        sec = result.summary.get(key)
        if sec:
            blocks.append(f"<h2>{head}</h2>")
            blocks.append(f"<p>Not scored: {html.escape(sec['skipped'])}</p>" if "skipped" in sec else _figure_block(fn(result)))
    blocks.append("<h2>Rotation</h2>")
    blocks.append(_figure_block(fig_rotation(result)) or f"<p>{html.escape(str(result.summary.get('rotation')))}</p>")
    blocks.extend(extra_blocks)
    blocks.append("<h2>Key numbers</h2>" + _key_numbers(result.summary).to_html(float_format=lambda v: f"{v:.4g}"))
    path = Path(path)
    atomic_write_text(path, _html(title, blocks))
    return path


#: Group-comparison metrics: (column, label). Columns missing from a group table are skipped.
GROUP_METRICS: tuple[tuple[str, str], ...] = (
    ("asym_fore_stride_length_mm", "fore stride length asymmetry"),
    ("asym_hind_stride_length_mm", "hind stride length asymmetry"),
    ("asym_fore_stance_swing_ratio", "fore stance/swing asymmetry"),
    ("asym_hind_stance_swing_ratio", "hind stance/swing asymmetry"),
    ("regularity_index_pct", "regularity index, %"),
    ("speed_mm_s", "walking speed, mm/s"),
    ("cylinder_contralateral_use_pct", "cylinder: contralateral use, %"),
    ("corridor_side_bias_index", "corridor: side-bias index"),
    ("rotation_net_ipsi_turns_per_min", "net ipsilateral turns/min"),
)


def fig_group_metric(df: pd.DataFrame, column: str, label: str) -> tuple[str, str] | None:
    d = df[["animal_id", "treatment", "time_point", column]].dropna(subset=[column]).copy()
    if d.empty:
        return None
    d["time_point"] = d["time_point"].fillna("").astype(str).replace("", "(none)")
    d["animal_id"] = d["animal_id"].fillna("").astype(str).replace("", "(unknown)")
    points = sorted(d["time_point"].unique(), key=_time_key)
    x_of = {p: i for i, p in enumerate(points)}
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot(1, 1, 1)
    cols = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    counts = []
    for gi, (treat, dt) in enumerate(d.groupby(d["treatment"].fillna("").astype(str))):
        c = cols[gi % len(cols)]
        for _, da in dt.groupby("animal_id"):
            da = da.assign(x=da["time_point"].astype(str).map(x_of)).sort_values("x")
            ax.plot(da["x"], da[column], color=c, alpha=0.25, lw=0.8, marker=".")
        agg = dt.groupby(dt["time_point"].astype(str))[column].agg(["mean", "sem", "count"])
        xs = [x_of[p] for p in agg.index]
        ax.errorbar(np.array(xs) + 0.05 * gi, agg["mean"], yerr=agg["sem"].fillna(0), color=c, marker="o",
                    capsize=3, lw=2, label=f"{treat or 'all'}")
        counts.append(f"{treat or 'all'}: " + ", ".join(f"{p} n={int(n)}" for p, n in zip(agg.index, agg["count"])))
    ax.set_xticks(range(len(points)), points)
    ax.set_ylabel(label, fontsize=8)
    ax.legend(fontsize=7)
    return _png(fig), f"{label}, mean +- SEM per time point and treatment, animals as thin lines ({'; '.join(counts)} sessions)."


def _time_key(p: str) -> tuple:
    """Order time points naturally: 'baseline'/'pre' first, then by the first number in the name."""
    import re

    low = p.lower()
    if low in ("", "(none)", "baseline", "pre", "pre-lesion", "prelesion"):
        return (0, 0.0, low)
    m = re.search(r"-?\d+(\.\d+)?", low)
    return (1, float(m.group()) if m else float("inf"), low)


def group_report(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the group HTML report (group comparisons across time points) to `path`."""
    blocks = [f"<p>{len(df)} sessions, {df['animal_id'].nunique() if len(df) else 0} animals.</p>"]
    for column, label in GROUP_METRICS:
        if column in df.columns:
            blocks.append(_figure_block(fig_group_metric(df, column, label)))
    show = [c for c in ("session_id", "animal_id", "lesion_side", "test_type", "treatment", "time_point",
                        "n_strides", "asym_fore_stride_length_mm", "asym_hind_stride_length_mm",
                        "cylinder_contralateral_use_pct", "corridor_side_bias_index",
                        "rotation_net_ipsi_turns") if c in df.columns]
    blocks.append("<h2>Sessions</h2>" + df[show].to_html(index=False, float_format=lambda v: f"{v:.4g}"))
    path = Path(path)
    atomic_write_text(path, _html("ratrig group report", blocks))
    return path
