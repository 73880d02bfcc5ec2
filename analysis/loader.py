"""Reading a session into a `PoseSession`: the one place that knows file formats.

Accepted inputs:

- a ratrig session folder (recorder/FORMAT.md): `session.json` + `pose3d.csv` (live) or
  `reprocessed/<stamp>/pose3d.csv` (`result=`; "latest" picks the newest); `rig.toml` in the folder
  supplies the `[apparatus]` section;
- a pose table on its own: a CSV with Anipose's 3D columns (`{kp}_x`, `_y`, `_z`, `_error`, `_ncams`,
  `_score`, optional filtered `{kp}_fx`, `_fy`, `_fz`, and `capture_ns` or `fnum`), as written by
  the recorder, by reprocessing, or by Anipose itself.

Session metadata (animal id, lesion side, test type, treatment, time point) is read, lowest
priority first, from `session.json` (top level, or its "subject" table), from a `subject.toml` beside
it (written by hand or by a lab script), then from the caller's overrides (the command line).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis.session import LESION_SIDES, TEST_TYPES, Apparatus, PoseSession, SessionMeta
from ratrig.config import ApparatusConfig, ConfigError, load_section
from ratrig.skeleton import KEYPOINTS
from ratrig.tomlio import TOMLDecodeError, read_toml

META_KEYS = ("animal_id", "lesion_side", "test_type", "treatment", "time_point", "session_id")


class SessionLoadError(ValueError):
    """A session that cannot be analysed; the message names the file and what was expected."""


def apparatus_from_config(cfg: ApparatusConfig) -> Apparatus:
    return Apparatus(
        cylinder_center_mm=(float(cfg.cylinder_center_mm[0]), float(cfg.cylinder_center_mm[1])),
        cylinder_radius_mm=float(cfg.cylinder_radius_mm),
        pots_mm=tuple((float(p[0]), float(p[1])) for p in cfg.pots_mm),
        pot_zone_radius_mm=float(cfg.pot_zone_radius_mm),
    )


def keypoints_in_table(columns: list[str]) -> list[str]:
    """Keypoint names with `{kp}_x`, `_y` and `_z` columns; the lab's names first, in their order."""
    cols = set(columns)
    found = [c[:-2] for c in columns if c.endswith("_x") and f"{c[:-2]}_y" in cols and f"{c[:-2]}_z" in cols]
    lab = [k for k in KEYPOINTS if k in found]
    return lab + [k for k in found if k not in lab]


def read_pose_table(path: Path) -> pd.DataFrame:
    """Read a pose CSV; a torn last line (a recorder killed mid-write) is dropped, not fatal."""
    if not path.is_file():
        raise SessionLoadError(f"{path}: pose table not found")
    source: Any = path
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                # the writer was killed mid-line: keep the complete lines only
                f.seek(0)
                data = f.read()
                source = io.BytesIO(data[: data.rfind(b"\n") + 1])
    try:
        return pd.read_csv(source)
    except pd.errors.EmptyDataError:
        raise SessionLoadError(f"{path}: empty pose table (no header)") from None
    except pd.errors.ParserError as e:
        raise SessionLoadError(f"{path}: not a readable CSV pose table ({e})") from None


def pose_session_from_table(
    df: pd.DataFrame,
    file: str,
    keypoints: list[str] | None = None,
    fps: float | None = None,
    coords: Literal["auto", "filtered", "raw"] = "auto",
    meta: SessionMeta = SessionMeta(),
    apparatus: Apparatus = Apparatus(),
) -> PoseSession:
    """An Anipose-style 3D table -> PoseSession.

    `coords`: "filtered" uses `{kp}_fx/_fy/_fz` (gap-filled, smoothed), "raw" the triangulated
    `{kp}_x/_y/_z`; "auto" uses filtered where the table has any, else raw. Frames where the raw
    position is missing but the filtered one exists are marked `filled`.
    """
    if len(df) == 0:
        raise SessionLoadError(f"{file}: pose table has no rows")
    names = keypoints if keypoints else keypoints_in_table(list(df.columns))
    names = [k for k in names if f"{k}_x" in df.columns]
    if not names:
        raise SessionLoadError(f"{file}: no keypoint columns ({{name}}_x, _y, _z) found")
    if "capture_ns" in df.columns and df["capture_ns"].notna().all() and df["capture_ns"].nunique() > 1:
        ns = df["capture_ns"].to_numpy(np.int64)
        times = (ns - ns.min()) / 1e9
    elif "fnum" in df.columns or fps:
        if not fps:
            raise SessionLoadError(f"{file}: no capture_ns column and no frame rate; give --fps")
        fnum = df["fnum"].to_numpy(np.float64) if "fnum" in df.columns else np.arange(len(df), dtype=float)
        times = (fnum - fnum.min()) / float(fps)
    else:
        raise SessionLoadError(f"{file}: expected a capture_ns or fnum column (or give --fps)")

    def col(name: str) -> np.ndarray:
        return pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64) if name in df.columns else np.full(len(df), np.nan)

    raw = np.stack([np.stack([col(f"{k}_x"), col(f"{k}_y"), col(f"{k}_z")], -1) for k in names], 1)
    filt = np.stack([np.stack([col(f"{k}_fx"), col(f"{k}_fy"), col(f"{k}_fz")], -1) for k in names], 1)
    has_filtered = bool(np.isfinite(filt).any())
    if coords == "filtered" and not has_filtered:
        raise SessionLoadError(f"{file}: coords='filtered' but the table has no {{kp}}_fx/_fy/_fz values")
    use_filtered = coords == "filtered" or (coords == "auto" and has_filtered)
    if use_filtered:
        kp = filt
        filled = ~np.all(np.isfinite(raw), axis=2) & np.all(np.isfinite(filt), axis=2)
    else:
        kp = raw
        filled = np.zeros(raw.shape[:2], dtype=bool)
    error = np.stack([col(f"{k}_error") for k in names], 1)
    ncams = np.stack([col(f"{k}_ncams") for k in names], 1)
    # time order, one row per time (a re-sent frame set must not create a zero-length step)
    order = np.argsort(times, kind="stable")
    times = times[order]
    keep = np.r_[True, np.diff(times) > 0]
    sel = order[keep]
    return PoseSession(
        times_s=times[keep], keypoints_mm=kp[sel], keypoint_names=tuple(names),
        error_px=error[sel] if np.isfinite(error).any() else None,
        ncams=ncams[sel] if np.isfinite(ncams).any() else None,
        filled=filled[sel], meta=meta, apparatus=apparatus, source=file,
    )


def read_subject(folder: Path, session_json: dict[str, Any] | None) -> dict[str, Any]:
    """Metadata stored with a session: session.json (top level or "subject"), then subject.toml."""
    found: dict[str, Any] = {}
    if session_json:
        for src in (session_json, session_json.get("subject") or {}):
            if isinstance(src, dict):
                found.update({k: src[k] for k in META_KEYS if k in src and src[k] is not None})
    sidecar = folder / "subject.toml"
    if sidecar.is_file():
        try:
            data = read_toml(sidecar)
        except TOMLDecodeError as e:
            raise SessionLoadError(f"{sidecar}: not valid TOML: {e}") from None
        data = data.get("subject", data)
        unknown = [k for k in data if k not in META_KEYS]
        if unknown:
            raise SessionLoadError(f"{sidecar}: unknown key {unknown[0]!r}; expected some of {list(META_KEYS)}")
        found.update(data)
    return found


def make_meta(values: dict[str, Any], where: str) -> SessionMeta:
    """Validated SessionMeta from a dict of strings; errors name `where` and the key."""
    v = {k: str(values[k]) for k in META_KEYS if k in values and values[k] is not None}
    if "lesion_side" in v:
        v["lesion_side"] = v["lesion_side"].lower()
        if v["lesion_side"] in ("", "sham", "no"):
            v["lesion_side"] = "none"
        if v["lesion_side"] not in LESION_SIDES:
            raise SessionLoadError(f"{where}: lesion_side: expected one of {LESION_SIDES}, got {values['lesion_side']!r}")
    if "test_type" in v:
        v["test_type"] = v["test_type"].lower().replace("-", "_").replace(" ", "_")
        if v["test_type"] not in TEST_TYPES:
            raise SessionLoadError(f"{where}: test_type: expected one of {TEST_TYPES}, got {values['test_type']!r}")
    return SessionMeta(**v)


def load_session(
    path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    apparatus: Apparatus | None = None,
    result: str | None = None,
    coords: Literal["auto", "filtered", "raw"] = "auto",
    fps: float | None = None,
) -> PoseSession:
    """A session folder or a pose CSV -> PoseSession.

    Args:
        path: a ratrig session folder, any folder holding pose3d.csv, or a pose CSV.
        overrides: metadata that wins over what is stored (keys of `SessionMeta`; None values ignored).
        apparatus: geometry that wins over the session's rig.toml [apparatus] section.
        result: a reprocessed result name in the session, "latest", or None for the live poses.
        coords: see `pose_session_from_table`.
        fps: frame rate for tables without capture_ns (default: the session's camera rate).

    Raises:
        SessionLoadError: naming the file and what was expected.
    """
    path = Path(path)
    session_json: dict[str, Any] | None = None
    if path.is_dir():
        folder = path
        sj = folder / "session.json"
        if sj.is_file():
            try:
                session_json = json.loads(sj.read_text())
            except json.JSONDecodeError as e:
                raise SessionLoadError(f"{sj}: not valid JSON ({e})") from None
            if session_json.get("format") != "ratrig-session":
                raise SessionLoadError(f"{sj}: 'format' is {session_json.get('format')!r}, expected 'ratrig-session'")
        if result is None:
            table = folder / "pose3d.csv"
        else:
            rdir = folder / "reprocessed"
            names = sorted(p.name for p in rdir.iterdir() if p.is_dir() and not p.name.startswith(".")) if rdir.is_dir() else []
            if result == "latest":
                if not names:
                    raise SessionLoadError(f"{rdir}: no reprocessed results in this session")
                result = names[-1]
            if result not in names:
                raise SessionLoadError(f"{rdir / result}: no such reprocessed result (has {names})")
            table = rdir / result / "pose3d.csv"
        if not table.is_file():
            raise SessionLoadError(f"{table}: not found; is {folder} a session folder with 3D poses?")
        session_id = folder.name
    elif path.is_file():
        folder, table, session_id = path.parent, path, path.stem
    else:
        raise SessionLoadError(f"{path}: no such session folder or pose table")
    values: dict[str, Any] = {"session_id": session_id}
    values.update(read_subject(folder, session_json) if path.is_dir() else {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    meta = make_meta(values, str(folder / "subject.toml") if path.is_dir() else str(path))
    if apparatus is None:
        rig = folder / "rig.toml"
        if path.is_dir() and rig.is_file():
            try:
                apparatus = apparatus_from_config(load_section(rig, "apparatus"))
            except ConfigError as e:
                raise SessionLoadError(str(e)) from None
        else:
            apparatus = Apparatus()
    if fps is None and session_json:
        rates = list((session_json.get("camera_fps") or {}).values())
        fps = float(rates[0]) if rates else None
    keypoints = list(session_json["keypoints"]) if session_json and isinstance(session_json.get("keypoints"), list) else None
    df = read_pose_table(table)
    session = pose_session_from_table(df, str(table), keypoints, fps, coords, meta, apparatus)
    events = folder / "events.jsonl"
    if path.is_dir() and events.is_file() and "capture_ns" in df.columns and df["capture_ns"].notna().all():
        origin_ns = int(df["capture_ns"].min())
        session = dataclasses.replace(session, live_touchdowns=read_live_touchdowns(events, origin_ns))
    return session


def read_live_touchdowns(path: Path, origin_ns: int) -> dict[str, np.ndarray]:
    """events.jsonl -> paw -> (N,) sorted touchdown times, s after `origin_ns`.

    Lines that are not JSON objects (a torn last line) are skipped; events other than touchdowns
    are ignored.
    """
    out: dict[str, list[float]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(e, dict) and e.get("name") == "touchdown" and isinstance(e.get("capture_ns"), int):
                out.setdefault(str(e.get("subject")), []).append((e["capture_ns"] - origin_ns) / 1e9)
    return {k: np.sort(np.asarray(v, dtype=float)) for k, v in out.items()}
