"""One session through every analysis its test calls for, and the session summary.

Which analyses run:

- quality: always;
- gait: corridor and open-walk sessions with all four paws tracked;
- corridor retrievals: corridor sessions (needs the pots);
- cylinder wall contacts: cylinder sessions;
- rotation: always when the tail base and the neck (ears or nose) are tracked.

An analysis that cannot run on a session records why under its key ("skipped": reason) instead of
failing the whole session, so a group run over many sessions still reports the others.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np

from analysis.corridor import CorridorParams, Retrieval, score_retrievals
from analysis.cylinder import CylinderParams, WallContact, score_wall_contacts
from analysis.gait import GaitParams, GaitResult, analyse_gait
from analysis.quality import floor_from_quality, live_event_agreement, session_quality
from analysis.rotation import rotation_summary
from analysis.session import PoseSession
from ratrig.skeleton import PAWS


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    gait: GaitParams = field(default_factory=GaitParams)
    cylinder: CylinderParams = field(default_factory=CylinderParams)
    corridor: CorridorParams = field(default_factory=CorridorParams)


@dataclass(frozen=True, slots=True)
class SessionResult:
    """Everything one session produced. `summary` is the per-session JSON document."""

    session: PoseSession
    summary: dict
    gait: Union[GaitResult, None] = None
    wall_contacts: tuple[WallContact, ...] = ()
    retrievals: tuple[Retrieval, ...] = ()


def analyse_session(session: PoseSession, params: AnalysisParams = AnalysisParams()) -> SessionResult:
    """A session -> its results (see the module docstring for which analyses run)."""
    meta = session.meta
    summary: dict = {
        "session_id": meta.session_id, "animal_id": meta.animal_id, "lesion_side": meta.lesion_side,
        "test_type": meta.test_type, "treatment": meta.treatment, "time_point": meta.time_point,
        "source": session.source,
        "apparatus": {"cylinder_center_mm": list(session.apparatus.cylinder_center_mm),
                      "cylinder_radius_mm": session.apparatus.cylinder_radius_mm,
                      "pots_mm": [list(p) for p in session.apparatus.pots_mm],
                      "pot_zone_radius_mm": session.apparatus.pot_zone_radius_mm},
    }
    summary["parameters"] = asdict(params)  # every threshold the numbers depend on, for reproducibility
    quality = session_quality(session)
    summary["quality"] = quality
    gait = None
    if meta.test_type in ("corridor", "open_walk"):
        missing = [p for p in PAWS if not session.has(p)]
        if missing:
            summary["gait"] = {"skipped": f"paws not tracked: {missing}"}
        else:
            gait = analyse_gait(session, floor_from_quality(quality), params.gait)
            summary["gait"] = gait.summary
            live = live_event_agreement(session, {p: c.touchdown_s for p, c in gait.contacts.items()})
            if live is not None:
                quality["live_events"] = live
    walls: tuple[WallContact, ...] = ()
    if meta.test_type == "cylinder":
        needed = [k for k in ("front_left_paw", "front_right_paw") if not session.has(k)]
        if needed:
            summary["cylinder"] = {"skipped": f"keypoints not tracked: {needed}"}
        else:
            events, cyl = score_wall_contacts(session, params.cylinder)
            walls = tuple(events)
            summary["cylinder"] = cyl
    retrievals: tuple[Retrieval, ...] = ()
    if meta.test_type == "corridor":
        if not session.has("nose") or not session.has("tail_base"):
            summary["corridor"] = {"skipped": "nose and tail_base must be tracked"}
        elif session.apparatus.pots_array_mm.shape[0] == 0:
            summary["corridor"] = {"skipped": "no pot positions ([apparatus] pots_mm in rig.toml, or --pots)"}
        else:
            events, cor = score_retrievals(session, params.corridor)
            retrievals = tuple(events)
            summary["corridor"] = cor
    if session.has("tail_base") and (session.has("nose") or (session.has("left_ear") and session.has("right_ear"))):
        summary["rotation"] = rotation_summary(session)
    else:
        summary["rotation"] = {"skipped": "tail_base and ears or nose must be tracked"}
    return SessionResult(session, _jsonable(summary), gait, walls, retrievals)


def _jsonable(x):
    """NaN/inf -> None and numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if np.isfinite(v) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x
