"""`ratrig analyze SESSION... [--out DIR]`: the lab's numbers from recorded sessions.

Each SESSION is a ratrig session folder or a pose CSV (Anipose columns). Metadata flags override
what the session stores and apply to every SESSION given; for a batch with different animals use
--meta-table (a CSV with a `session` column holding the folder name or path, plus any of
animal_id, lesion_side, test_type, treatment, time_point).

Writes, per session, OUT/<session_id>/{strides.csv, contacts.csv, session.json, report.html, ...}
and, over all sessions, OUT/group.csv and OUT/group_report.html (see analysis.outputs).
Exit status: 0 all analysed, 1 some sessions failed (the others are still written), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.gait import GaitParams
from analysis.loader import META_KEYS, SessionLoadError, apparatus_from_config, load_session
from analysis.outputs import write_group_csv, write_session_outputs
from analysis.pipeline import AnalysisParams, analyse_session
from analysis.report import group_report, session_report
from analysis.session import LESION_SIDES, TEST_TYPES, Apparatus
from ratrig.config import ConfigError, load_section


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig analyze", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sessions", nargs="+", help="session folders or pose CSV files")
    add_analyze_options(p)
    return p


def add_analyze_options(p: argparse.ArgumentParser) -> None:
    """Every option but the sessions (shared with `ratrig batch analyze`)."""
    p.add_argument("--out", default="analysis-out", help="output folder (default: %(default)s)")
    g = p.add_argument_group("session metadata (overrides what the session stores)")
    g.add_argument("--animal-id")
    g.add_argument("--lesion-side", choices=LESION_SIDES)
    g.add_argument("--test-type", choices=TEST_TYPES)
    g.add_argument("--treatment")
    g.add_argument("--time-point")
    g.add_argument("--meta-table", help="CSV: session, animal_id, lesion_side, test_type, treatment, time_point")
    a = p.add_argument_group("apparatus (overrides the session's rig.toml [apparatus])")
    a.add_argument("--config", help="rig TOML whose [apparatus] section to use")
    a.add_argument("--cylinder-center", nargs=2, type=float, metavar=("X_MM", "Y_MM"))
    a.add_argument("--cylinder-radius", type=float, metavar="MM")
    a.add_argument("--pots", help="corridor pot centres 'x,y;x,y;...' in mm")
    a.add_argument("--pot-zone-radius", type=float, metavar="MM")
    d = p.add_argument_group("data")
    d.add_argument("--result", help="reprocessed result to analyse ('latest' for the newest); default: live poses")
    d.add_argument("--coords", choices=("auto", "filtered", "raw"), default="auto")
    d.add_argument("--fps", type=float, help="frame rate for tables without capture_ns")
    d.add_argument("--reference-speed", type=float, default=GaitParams().reference_speed_mm_s,
                   help="walking speed (mm/s) the speed-normalised values are reported at (default %(default)s)")
    d.add_argument("--no-report", action="store_true", help="write the tables only, no HTML")
    d.add_argument("--no-dyskinesia", action="store_true",
                   help="skip the dyskinesia proxies (analysis.behaviour; 20-min bins, ipsi/contra)")


def _parse_pots(text: str) -> tuple[tuple[float, float], ...]:
    pots = []
    for i, item in enumerate(t for t in text.replace(" ", "").split(";") if t):
        parts = item.split(",")
        if len(parts) != 2:
            raise ValueError(f"--pots: item {i} {item!r}: expected 'x,y' in mm")
        pots.append((float(parts[0]), float(parts[1])))
    return tuple(pots)


def apparatus_from_args(args: argparse.Namespace) -> Apparatus | None:
    """The apparatus given on the command line, or None to use each session's own."""
    flags = (args.cylinder_center, args.cylinder_radius, args.pots, args.pot_zone_radius)
    if args.config is None and all(f is None for f in flags):
        return None
    base = apparatus_from_config(load_section(args.config, "apparatus")) if args.config else Apparatus()
    return Apparatus(
        cylinder_center_mm=tuple(args.cylinder_center) if args.cylinder_center else base.cylinder_center_mm,
        cylinder_radius_mm=args.cylinder_radius if args.cylinder_radius is not None else base.cylinder_radius_mm,
        pots_mm=_parse_pots(args.pots) if args.pots is not None else base.pots_mm,
        pot_zone_radius_mm=args.pot_zone_radius if args.pot_zone_radius is not None else base.pot_zone_radius_mm,
    )


def meta_table(path: str | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    f = Path(path)
    if not f.is_file():
        raise ValueError(f"--meta-table {f}: file not found")
    df = pd.read_csv(f, dtype=str).fillna("")
    if "session" not in df.columns:
        raise ValueError(f"{f}: expected a 'session' column (session folder name or path)")
    unknown = [c for c in df.columns if c != "session" and c not in META_KEYS]
    if unknown:
        raise ValueError(f"{f}: unknown column {unknown[0]!r}; expected session and some of {list(META_KEYS)}")
    return {str(r["session"]): {k: v for k, v in r.items() if k != "session" and v != ""} for _, r in df.iterrows()}


def meta_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The metadata given on the command line (None = not given)."""
    return {"animal_id": args.animal_id, "lesion_side": args.lesion_side, "test_type": args.test_type,
            "treatment": args.treatment, "time_point": args.time_point}


def session_overrides(path: str, table: dict[str, dict[str, Any]], flags: dict[str, Any]) -> dict[str, Any]:
    """Metadata overrides of one SESSION argument: its --meta-table row, then the flags."""
    p = Path(path)
    overrides = dict(table.get(str(path), table.get(p.name, table.get(p.stem, {}))))
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return overrides


def analyse_path(path: str, overrides: dict[str, Any], apparatus: Apparatus | None, args: argparse.Namespace,
                 params: AnalysisParams):  # -> (PoseSession, SessionResult)
    """Load and analyse one SESSION argument. Raises SessionLoadError, ConfigError, KeyError, ValueError."""
    session = load_session(Path(path), overrides, apparatus, args.result, args.coords, args.fps)
    return session, analyse_session(session, params)


def write_session(result, folder: Path, report: bool, dyskinesia: bool = True) -> None:
    """One session's tables, summary and (if `report`) HTML report into `folder`; with `dyskinesia`,
    the dyskinesia proxies per 20-min bin too (analysis.behaviour.report: CSVs, report section)."""
    blocks: tuple[str, ...] = ()
    if dyskinesia:
        from analysis.behaviour.report import session_dyskinesia

        block, result.summary["dyskinesia_proxies"] = session_dyskinesia(result.session, folder)
        blocks = (block,)
    write_session_outputs(result, folder)
    if report:
        session_report(result, folder / "report.html", blocks)


def write_group(summaries: list[dict], out: Path, report: bool) -> None:
    """OUT/group.csv and (if `report`) OUT/group_report.html from the session summaries."""
    df = write_group_csv(summaries, out / "group.csv")
    if report:
        group_report(df, out / "group_report.html")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        apparatus = apparatus_from_args(args)
        table = meta_table(args.meta_table)
    except (ConfigError, ValueError) as e:
        print(f"ratrig analyze: {e}", file=sys.stderr)
        return 2
    params = params_from_args(args)
    flags = meta_flags(args)
    out = Path(args.out)
    summaries, failed, seen = [], 0, set()
    for path in args.sessions:
        p = Path(path)
        overrides = session_overrides(path, table, flags)
        t0 = time.perf_counter()
        try:
            session, result = analyse_path(path, overrides, apparatus, args, params)
        except (SessionLoadError, ConfigError, KeyError, ValueError) as e:
            print(f"ratrig analyze: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        sid = session.meta.session_id or p.stem
        if sid in seen:
            sid = f"{sid}_{len(seen)}"
        seen.add(sid)
        folder = out / sid
        write_session(result, folder, not args.no_report, not args.no_dyskinesia)
        summaries.append(result.summary)
        print(f"{path}: {session.n_frames} frames, {one_line(result.summary)} -> {folder} "
              f"({time.perf_counter() - t0:.1f} s)")
    if summaries:
        write_group(summaries, out, not args.no_report)
        print(f"group: {len(summaries)} sessions -> {out / 'group.csv'}")
    return 1 if failed else 0


def params_from_args(args: argparse.Namespace) -> AnalysisParams:
    return AnalysisParams(gait=GaitParams(reference_speed_mm_s=args.reference_speed))


def one_line(summary: dict) -> str:
    """A session summary in a few words for the console."""
    parts = []
    g = summary.get("gait") or {}
    if "n_strides" in g:
        parts.append(f"{g['n_bouts']} bouts, {g['n_strides']} strides")
    c = summary.get("cylinder") or {}
    if "n_contacts" in c:
        parts.append(f"{c['n_contacts']} wall contacts")
    r = summary.get("corridor") or {}
    if "n_retrievals" in r:
        parts.append(f"{r['n_retrievals']} retrievals")
    rot = summary.get("rotation") or {}
    if "left_turns" in rot:
        parts.append(f"turns L{rot['left_turns']}/R{rot['right_turns']}")
    return ", ".join(parts) or "no analyses"


if __name__ == "__main__":
    sys.exit(main())
