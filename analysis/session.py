"""The in-memory input of every analysis: one session's 3D poses, its metadata and the apparatus.

Everything downstream works on `PoseSession`, so an analysis never cares whether the poses came
from the live recorder, an Anipose re-processing or a synthetic scenario. The loader
(`analysis.loader`) is the only place that knows file formats.

World frame: millimetres, x along the corridor, y across it, z up = height above the floor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

from analysis.series import fill_short_gaps
from ratrig.skeleton import PAWS

LesionSide = Literal["left", "right", "none"]
TestType = Literal["corridor", "cylinder", "open_walk"]
LESION_SIDES: tuple[str, ...] = ("left", "right", "none")
TEST_TYPES: tuple[str, ...] = ("corridor", "cylinder", "open_walk")

#: Short lab names of the paws (CatWalk's RF/LF/RH/LH), keyed by pipeline keypoint.
PAW_CODES: dict[str, str] = {
    "front_left_paw": "LF",
    "front_right_paw": "RF",
    "hind_left_paw": "LH",
    "hind_right_paw": "RH",
}
PAW_SIDE: dict[str, str] = {p: ("left" if "left" in p else "right") for p in PAWS}
PAW_LIMB: dict[str, str] = {p: ("fore" if p.startswith("front") else "hind") for p in PAWS}


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """What the lab knows about a session. `lesion_side` turns left/right into ipsi/contra."""

    session_id: str = ""
    animal_id: str = ""
    lesion_side: LesionSide = "none"
    test_type: TestType = "open_walk"
    treatment: str = ""
    time_point: str = ""

    def __post_init__(self) -> None:
        if self.lesion_side not in LESION_SIDES:
            raise ValueError(f"SessionMeta.lesion_side: expected one of {LESION_SIDES}, got {self.lesion_side!r}")
        if self.test_type not in TEST_TYPES:
            raise ValueError(f"SessionMeta.test_type: expected one of {TEST_TYPES}, got {self.test_type!r}")

    def laterality(self, side: str) -> str:
        """'left'/'right' -> 'ipsi'/'contra' relative to the lesion; '' without a lesion side."""
        if self.lesion_side == "none":
            return ""
        return "ipsi" if side == self.lesion_side else "contra"


@dataclass(frozen=True, slots=True)
class Apparatus:
    """Apparatus geometry in the world frame, mm.

    Attributes:
        cylinder_center_mm: (x, y) of the cylinder axis.
        cylinder_radius_mm: inner radius of the cylinder.
        pots_mm: (P, 2) corridor pot centres (x, y); empty when there are no pots.
        pot_zone_radius_mm: the nose is "in" a pot when within this horizontal distance of its centre.
    """

    cylinder_center_mm: tuple[float, float] = (0.0, 0.0)
    cylinder_radius_mm: float = 100.0
    pots_mm: tuple[tuple[float, float], ...] = ()
    pot_zone_radius_mm: float = 20.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.cylinder_radius_mm) and self.cylinder_radius_mm > 0):
            raise ValueError(f"Apparatus.cylinder_radius_mm: expected a positive number, got {self.cylinder_radius_mm}")
        if not (np.isfinite(self.pot_zone_radius_mm) and self.pot_zone_radius_mm > 0):
            raise ValueError(f"Apparatus.pot_zone_radius_mm: expected a positive number, got {self.pot_zone_radius_mm}")
        for i, pot in enumerate(self.pots_mm):
            if len(pot) != 2:
                raise ValueError(f"Apparatus.pots_mm[{i}]: expected (x, y) in mm, got {pot!r}")

    @property
    def pots_array_mm(self) -> np.ndarray:
        """(P, 2) pot centres, mm."""
        return np.asarray(self.pots_mm, dtype=float).reshape(-1, 2)


@dataclass(frozen=True, slots=True)
class PoseSession:
    """One session's 3D keypoints.

    Attributes:
        times_s: (T,) frame times, seconds from the start of the session, increasing.
        keypoints_mm: (T, K, 3) world positions, NaN = not reconstructed.
        keypoint_names: (K,) names; the lab's names from `ratrig.skeleton.KEYPOINTS` where they exist.
        error_px: (T, K) reprojection error, or None when the source has none.
        ncams: (T, K) number of cameras used, or None.
        filled: (T, K) True where the position was filled in by a filter/interpolator rather than
            triangulated in that frame, or None when unknown.
        meta: what the lab knows about the session.
        apparatus: apparatus geometry.
        source: where the data came from (a path, or a description), for the report.
        live_touchdowns: paw -> (N,) times (s, same clock as `times_s`) of the touchdowns the live
            event detector emitted during the session, or None when there is no event log.
    """

    times_s: np.ndarray
    keypoints_mm: np.ndarray
    keypoint_names: tuple[str, ...]
    error_px: Union[np.ndarray, None] = None
    ncams: Union[np.ndarray, None] = None
    filled: Union[np.ndarray, None] = None
    meta: SessionMeta = field(default_factory=SessionMeta)
    apparatus: Apparatus = field(default_factory=Apparatus)
    source: str = ""
    live_touchdowns: Union[dict[str, np.ndarray], None] = None

    def __post_init__(self) -> None:
        t = np.asarray(self.times_s)
        kp = np.asarray(self.keypoints_mm)
        if t.ndim != 1:
            raise ValueError(f"PoseSession.times_s: expected shape (T,), got {t.shape}")
        if kp.ndim != 3 or kp.shape[0] != t.shape[0] or kp.shape[2] != 3:
            raise ValueError(f"PoseSession.keypoints_mm: expected shape ({t.shape[0]}, K, 3), got {kp.shape}")
        if kp.shape[1] != len(self.keypoint_names):
            raise ValueError(
                f"PoseSession.keypoint_names: {len(self.keypoint_names)} names for {kp.shape[1]} keypoints"
            )
        if t.size > 1 and not np.all(np.diff(t) > 0):
            raise ValueError("PoseSession.times_s: expected strictly increasing frame times")
        for name in ("error_px", "ncams", "filled"):
            a = getattr(self, name)
            if a is not None and np.shape(a) != kp.shape[:2]:
                raise ValueError(f"PoseSession.{name}: expected shape {kp.shape[:2]}, got {np.shape(a)}")

    @property
    def n_frames(self) -> int:
        return int(self.times_s.shape[0])

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1] - self.times_s[0]) if self.n_frames > 1 else 0.0

    @property
    def frame_period_s(self) -> float:
        """Median frame period, s."""
        return float(np.median(np.diff(self.times_s))) if self.n_frames > 1 else float("nan")

    def has(self, name: str) -> bool:
        return name in self.keypoint_names

    def index(self, name: str) -> int:
        try:
            return self.keypoint_names.index(name)
        except ValueError:
            raise KeyError(
                f"session {self.meta.session_id or self.source!r} has no keypoint {name!r}; "
                f"it has {list(self.keypoint_names)}"
            ) from None

    def kp(self, name: str) -> np.ndarray:
        """(T, 3) positions of one keypoint, mm."""
        return self.keypoints_mm[:, self.index(name), :]


#: Tracking gaps up to this long are interpolated in the trunk points (a lost frame must not make
#: the trunk centre jump from the mean of two points to one of them).
TRUNK_MAX_GAP_S = 0.15


def _filled(session: PoseSession, name: str) -> np.ndarray:
    return fill_short_gaps(session.times_s, session.kp(name), TRUNK_MAX_GAP_S)


def neck_mm(session: PoseSession) -> Union[np.ndarray, None]:
    """(T, 3) neck: midpoint of the ears where both are seen, else the nose; None without either.

    Short tracking gaps of each point are interpolated first.
    """
    neck = None
    if session.has("left_ear") and session.has("right_ear"):
        neck = 0.5 * (_filled(session, "left_ear") + _filled(session, "right_ear"))
    if session.has("nose"):
        nose = _filled(session, "nose")
        neck = nose if neck is None else np.where(np.isfinite(neck), neck, nose)
    return neck


def body_center_mm(session: PoseSession) -> np.ndarray:
    """(T, 3) trunk centre: mean of the tail base and the neck, NaN where either is unseen for long.

    The nose is left out where ears exist: sniffing swings it sideways much more than the trunk moves.
    """
    parts = []
    if session.has("tail_base"):
        parts.append(_filled(session, "tail_base"))
    neck = neck_mm(session)
    if neck is not None:
        parts.append(neck)
    if not parts:
        raise KeyError(f"session {session.meta.session_id!r}: needs tail_base or ears/nose for the body centre")
    return np.mean(np.stack(parts), axis=0)


def body_axis_heading_rad(session: PoseSession) -> np.ndarray:
    """(T,) heading of the body axis (tail base -> neck) in the floor plane, radians, NaN where unseen.

    0 = facing +x, pi/2 = facing +y (counter-clockwise seen from above).
    """
    tail = _filled(session, "tail_base")
    neck = neck_mm(session)
    if neck is None:
        raise KeyError(f"session {session.meta.session_id!r}: needs ears or nose for the body axis")
    d = neck - tail
    return np.arctan2(d[:, 1], d[:, 0])
