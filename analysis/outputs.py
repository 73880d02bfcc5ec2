"""Files the lab keeps: per-stride CSV, per-session JSON, event CSVs and the group CSV.

Layout of `ratrig analyze ... --out OUT`::

    OUT/<session_id>/strides.csv        one row per stride (gait sessions)
    OUT/<session_id>/contacts.csv       every detected paw contact (touchdown, liftoff), whole session
    OUT/<session_id>/wall_contacts.csv  scored cylinder placements (cylinder sessions)
    OUT/<session_id>/retrievals.csv     pot visits (corridor sessions)
    OUT/<session_id>/session.json       the session summary (quality, gait, tests, rotation)
    OUT/<session_id>/report.html        figures with the numbers they rest on
    OUT/group.csv                       one row per session, the numbers the lab reports
    OUT/group_report.html               group comparisons across time points

Every write is atomic (temp file + rename).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from analysis.gait import LIMB_MEASURES, PHASE_PAIRS, SPEED_NORMALISED
from analysis.pipeline import SessionResult
from ratrig.skeleton import PAWS
from ratrig.tomlio import atomic_write_text


def contacts_table(result: SessionResult) -> pd.DataFrame:
    rows = []
    if result.gait is not None:
        bouts = result.gait.bouts
        for paw in PAWS:
            c = result.gait.contacts[paw]
            b = bouts.bout_of_time(c.touchdown_s)
            for k in range(c.n):
                rows.append({"paw": paw, "touchdown_s": c.touchdown_s[k], "liftoff_s": c.liftoff_s[k],
                             "first_frame": int(c.first_frame[k]), "last_frame": int(c.last_frame[k]),
                             "bout": int(b[k])})
    cols = ["paw", "touchdown_s", "liftoff_s", "first_frame", "last_frame", "bout"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["touchdown_s", "paw"], kind="stable").reset_index(drop=True)


def write_session_outputs(result: SessionResult, out_dir: str | Path) -> dict[str, Path]:
    """Write a session's CSVs and JSON into `out_dir` (created). Returns name -> path written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    meta_cols = {"session_id": result.session.meta.session_id, "animal_id": result.session.meta.animal_id}
    if result.gait is not None:
        strides = result.gait.strides.copy()
        for k, v in reversed(list(meta_cols.items())):
            strides.insert(0, k, v)
        written["strides"] = out / "strides.csv"
        atomic_write_text(written["strides"], strides.to_csv(index=False, float_format="%.6g"))
        written["contacts"] = out / "contacts.csv"
        atomic_write_text(written["contacts"], contacts_table(result).to_csv(index=False, float_format="%.6g"))
    if result.session.meta.test_type == "cylinder" and "skipped" not in result.summary.get("cylinder", {}):
        df = pd.DataFrame([asdict(e) for e in result.wall_contacts],
                          columns=["time_s", "end_s", "limb", "laterality", "x_mm", "y_mm", "z_mm"])
        written["wall_contacts"] = out / "wall_contacts.csv"
        atomic_write_text(written["wall_contacts"], df.to_csv(index=False, float_format="%.6g"))
    if result.session.meta.test_type == "corridor" and "skipped" not in result.summary.get("corridor", {}):
        df = pd.DataFrame([asdict(e) for e in result.retrievals],
                          columns=["time_s", "end_s", "pot", "side", "laterality"])
        written["retrievals"] = out / "retrievals.csv"
        atomic_write_text(written["retrievals"], df.to_csv(index=False, float_format="%.6g"))
    written["session"] = out / "session.json"
    atomic_write_text(written["session"], json.dumps(result.summary, indent=2, allow_nan=False))
    return written


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def group_row(summary: dict) -> dict:
    """A session summary -> one flat row of the group table (ipsi/contra names where a lesion side
    is known, left/right otherwise)."""
    row = {k: summary.get(k) for k in ("session_id", "animal_id", "lesion_side", "test_type", "treatment",
                                        "time_point")}
    q = summary.get("quality", {})
    row["duration_s"] = q.get("duration_s")
    row["n_frames"] = q.get("n_frames")
    pv = q.get("paw_valid_fraction", {})
    row["paw_valid_fraction_min"] = min(pv.values()) if pv else None
    row["floor_tilt_deg"] = _get(q, "floor", "tilt_deg")
    g = summary.get("gait") or {}
    if g and "skipped" not in g:
        row.update({"n_bouts": g.get("n_bouts"), "n_strides": g.get("n_strides"), "walking_s": g.get("walking_s"),
                    "speed_mm_s": g.get("mean_speed_mm_s"), "cadence_steps_per_s": g.get("cadence_steps_per_s"),
                    "regularity_index_pct": g.get("regularity_index_pct")})
        lesion = summary.get("lesion_side")
        for paw, entry in g.get("paws", {}).items():
            side = "left" if "left" in paw else "right"
            limb = "fore" if paw.startswith("front") else "hind"
            name = side if lesion in (None, "none") else ("ipsi" if side == lesion else "contra")
            row[f"{limb}_{name}_n_strides"] = entry.get("n_strides")
            for m in LIMB_MEASURES + tuple(f"{m}_at_ref_speed" for m in SPEED_NORMALISED):
                row[f"{limb}_{name}_{m}"] = _get(entry, m, "median")
        for limb in ("fore", "hind"):
            for m, v in _get(g, "asymmetry", limb, default={}).items():
                row[f"asym_{limb}_{m}"] = v.get("index")
        for name in PHASE_PAIRS:
            row[f"phase_{name}"] = _get(g, "phases", name, "mean_phase")
    c = summary.get("cylinder") or {}
    if c and "skipped" not in c:
        for k in ("n_contacts", "left", "right", "both", "ipsi", "contra", "contralateral_use_pct",
                  "right_use_pct", "n_rears"):
            if k in c:
                row[f"cylinder_{k}"] = c[k]
    r = summary.get("corridor") or {}
    if r and "skipped" not in r:
        for k in ("n_retrievals", "left", "right", "ipsi", "contra", "side_bias_index", "ipsilateral_pct",
                  "latency_first_s", "latency_first_ipsi_s", "latency_first_contra_s", "side_bias_index_right"):
            if k in r:
                row[f"corridor_{k}"] = r[k]
    rot = summary.get("rotation") or {}
    if rot and "skipped" not in rot:
        for k in ("left_turns", "right_turns", "ipsi_turns", "contra_turns", "net_ipsi_turns",
                  "net_ipsi_turns_per_min", "turns_per_min"):
            if k in rot:
                row[f"rotation_{k}"] = rot[k]
    return row


def group_table(summaries: list[dict]) -> pd.DataFrame:
    """Session summaries -> the group table, one row per session, sorted by animal and time point."""
    df = pd.DataFrame([group_row(s) for s in summaries])
    if len(df):
        df = df.sort_values(["animal_id", "time_point", "session_id"], kind="stable").reset_index(drop=True)
    return df


def write_group_csv(summaries: list[dict], path: str | Path) -> pd.DataFrame:
    df = group_table(summaries)
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
    return df
