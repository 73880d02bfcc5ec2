"""Scripted abnormal involuntary movements on top of the synthetic rat, with known timing and size.

A yardstick for `analysis.behaviour`: episodes of four kinds, each with an exact onset, duration,
intensity (0..1, a scale of the scripted amplitude, not an AIMs score) and side, laid on the 3D
truth of a walking rat (`synthetic.rat.simulate`). Kinds, loosely after the AIMs scale's regions:

``axial``       the head and neck turn sideways and roll (twist) towards `side`, held, with a slow
                0.7 Hz wobble: yaw up to 55 deg and roll up to 40 deg about a point 30 mm behind the
                ears (intensity 1).
``limb``        the forelimb on `side` makes rhythmic movements (3-5 Hz): up to 24 mm up and
                sideways, 10 mm fore-aft, in the body frame, over whatever the gait does.
``orolingual``  the nose oscillates at 6-8 Hz relative to the head, up to 6 mm (jaw movements
                seen as nose motion; there is no jaw keypoint).
``rotational``  the whole body turns about its centre towards `side` (left = counter-clockwise seen
                from above) by a whole number of turns, so the pose is continuous at the end;
                mean rate = intensity x 360 deg/s.

Every episode ramps in and out over `RAMP_S` (0.25 s); its onset is where the ramp starts. Paw
contact truth (`in_stance`, `contacts`) is not updated (a moving forelimb is not on the floor):
use it only outside limb episodes. Pure functions on arrays; nothing is rendered here (render the
returned keypoints with `synthetic.render` if images are wanted).

Side convention: `side` is where the movement goes; for a lesioned rat it is contralateral to the
lesion (`contralateral("left") == "right"`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPISODE_KINDS: tuple[str, ...] = ("axial", "limb", "orolingual", "rotational")
RAMP_S = 0.25
_AXIAL_YAW_DEG, _AXIAL_ROLL_DEG, _AXIAL_PIVOT_BEHIND_EARS_MM = 55.0, 40.0, 30.0
_LIMB_AMPLITUDE_MM = 24.0
_OROLINGUAL_AMPLITUDE_MM = 6.0
_ROTATION_MAX_REV_S = 1.0


@dataclass(frozen=True, slots=True)
class Episode:
    """One scripted abnormal movement. Times s from the session start; intensity 0..1."""

    kind: str
    onset_s: float
    duration_s: float
    intensity: float
    side: str
    frequency_hz: float = 0.0  # limb / orolingual rhythm; 0 for the others

    def __post_init__(self) -> None:
        if self.kind not in EPISODE_KINDS:
            raise ValueError(f"Episode.kind: expected one of {EPISODE_KINDS}, got {self.kind!r}")
        if self.side not in ("left", "right"):
            raise ValueError(f"Episode.side: expected 'left' or 'right', got {self.side!r}")
        if not (0.0 < self.intensity <= 1.0):
            raise ValueError(f"Episode.intensity: expected 0 < intensity <= 1, got {self.intensity!r}")
        if not (self.duration_s > 2 * RAMP_S and self.onset_s >= 0):
            raise ValueError(f"Episode: expected onset_s >= 0 and duration_s > {2 * RAMP_S}, got "
                             f"{self.onset_s!r}, {self.duration_s!r}")

    @property
    def offset_s(self) -> float:
        return self.onset_s + self.duration_s


def contralateral(side: str) -> str:
    """'left' -> 'right' and back."""
    if side not in ("left", "right"):
        raise ValueError(f"contralateral: expected 'left' or 'right', got {side!r}")
    return "right" if side == "left" else "left"


def _rotation_turns(intensity: float, duration_s: float) -> tuple[int, float]:
    """Whole turns and the duration (s) that make the mean rate exactly intensity x max rate."""
    rate = intensity * _ROTATION_MAX_REV_S
    n = max(1, int(round(rate * duration_s)))
    return n, n / rate


def script_episodes(duration_s: float, seed: int, *, side: str = "right", kinds: Sequence[str] = EPISODE_KINDS,
                    duration_range_s: tuple[float, float] = (5.0, 12.0), gap_range_s: tuple[float, float] = (8.0, 20.0),
                    intensity_range: tuple[float, float] = (0.25, 1.0), start_s: float = 10.0) -> tuple[Episode, ...]:
    """Non-overlapping episodes filling a session, kinds in shuffled rounds, intensities spread evenly.

    Each round holds one episode of every kind in random order; the intensities of one kind are a
    shuffled even spread over `intensity_range`, so every kind covers the whole range. Baseline
    gaps of `gap_range_s` separate episodes (rotational durations are adjusted to whole turns).

    Returns:
        Episodes in time order, all ending before `duration_s - 2`.
    """
    for k in kinds:
        if k not in EPISODE_KINDS:
            raise ValueError(f"script_episodes: unknown kind {k!r}; expected some of {EPISODE_KINDS}")
    rng = np.random.default_rng(seed)
    mean_len = np.mean(duration_range_s) + np.mean(gap_range_s)
    per_kind = max(1, int((duration_s - start_s) / mean_len / max(len(kinds), 1)) + 1)
    lo, hi = intensity_range
    intens = {k: list(rng.permutation(np.linspace(lo, hi, per_kind))) for k in kinds}
    out: list[Episode] = []
    t = float(start_s)
    for _ in range(per_kind):
        for k in rng.permutation(list(kinds)):
            k = str(k)
            dur = float(rng.uniform(*duration_range_s))
            inten = float(intens[k].pop())
            freq = 0.0
            if k == "rotational":
                _, dur = _rotation_turns(inten, dur)
            elif k == "limb":
                freq = float(rng.uniform(3.0, 5.0))
            elif k == "orolingual":
                freq = float(rng.uniform(6.0, 8.0))
            if t + dur > duration_s - 2.0:
                return tuple(out)
            out.append(Episode(k, round(t, 3), dur, inten, side, freq))
            t += dur + float(rng.uniform(*gap_range_s))
    return tuple(out)


def envelope(times_s: np.ndarray, episode: Episode) -> np.ndarray:
    """(T,) s -> (T,) 0..1: smooth ramp up over RAMP_S from the onset, down over RAMP_S to the offset."""
    t = np.asarray(times_s, np.float64)
    up = np.clip((t - episode.onset_s) / RAMP_S, 0.0, 1.0)
    down = np.clip((episode.offset_s - t) / RAMP_S, 0.0, 1.0)
    u = np.minimum(up, down)
    return u * u * (3.0 - 2.0 * u)


def labels_at(times_s: np.ndarray, episodes: Sequence[Episode]) -> np.ndarray:
    """(T,) s -> (T,) object array: the kind of the episode running at each time, '' for baseline."""
    out = np.full(len(times_s), "", dtype=object)
    for ep in episodes:
        out[(times_s >= ep.onset_s) & (times_s < ep.offset_s)] = ep.kind
    return out


def _body_frame(kp: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T, K, 3) -> ear midpoint (T, 3), tail base (T, 3), forward (T, 3) and left (T, 3) unit vectors (horizontal)."""
    ears = 0.5 * (kp[:, names.index("left_ear")] + kp[:, names.index("right_ear")])
    tail = kp[:, names.index("tail_base")]
    fwd = ears - tail
    fwd[:, 2] = 0.0
    fwd /= np.maximum(np.linalg.norm(fwd, axis=1, keepdims=True), 1e-9)
    left = np.stack([-fwd[:, 1], fwd[:, 0], np.zeros(len(fwd))], axis=1)
    return ears, tail, fwd, left


def _rotate(points: np.ndarray, pivot: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of (T, 3) points about per-frame unit `axis` (T, 3) through `pivot` by `angle` (T,) rad."""
    v = points - pivot
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    cross = np.cross(axis, v)
    dot = np.sum(axis * v, axis=1, keepdims=True)
    return pivot + v * c + cross * s + axis * dot * (1.0 - c)


def apply_episodes(times_s: np.ndarray, keypoints_mm: np.ndarray, keypoint_names: Sequence[str],
                   episodes: Sequence[Episode], extra_mm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Lay the episodes on a pose sequence.

    Args:
        times_s: (T,) s.
        keypoints_mm: (T, K, 3) world mm with at least nose, ears, tail base and the paws.
        keypoint_names: (K,) names (`ratrig.skeleton.KEYPOINTS`).
        episodes: scripted episodes (may overlap; applied in order).
        extra_mm: optional (T, E, 3) extra body points (spine, tail), turned with the body in
            rotational episodes.

    Returns:
        New (T, K, 3) keypoints and (T, E, 3) extras (None if none given); inputs are not changed.
    """
    names = list(keypoint_names)
    kp = np.array(keypoints_mm, np.float64, copy=True)
    ex = None if extra_mm is None else np.array(extra_mm, np.float64, copy=True)
    t = np.asarray(times_s, np.float64)
    z = np.zeros((len(t), 3))
    z[:, 2] = 1.0
    for ep in episodes:
        env = envelope(t, ep)
        on = env > 0
        if not on.any():
            continue
        sgn = 1.0 if ep.side == "left" else -1.0
        ears, tail, fwd, left = _body_frame(kp, names)
        if ep.kind == "axial":
            wobble = 0.8 + 0.2 * np.sin(2 * np.pi * 0.7 * (t - ep.onset_s))
            yaw = sgn * env * ep.intensity * math.radians(_AXIAL_YAW_DEG) * wobble
            roll = sgn * env * ep.intensity * math.radians(_AXIAL_ROLL_DEG) * wobble
            pivot = ears - _AXIAL_PIVOT_BEHIND_EARS_MM * fwd
            for name in ("nose", "left_ear", "right_ear"):
                k = names.index(name)
                # roll about the body axis (left ear up for a twist to the right), then yaw about the vertical
                p = _rotate(kp[:, k], pivot, fwd, -roll)
                kp[:, k] = np.where(on[:, None], _rotate(p, pivot, z, yaw), kp[:, k])
        elif ep.kind == "limb":
            k = names.index(f"front_{ep.side}_paw")
            ph = 2 * np.pi * ep.frequency_hz * (t - ep.onset_s)
            a = env * ep.intensity * _LIMB_AMPLITUDE_MM
            up = a * (0.55 + 0.45 * np.sin(ph))
            side = a * 0.8 * np.sin(ph + 0.9) * sgn
            fore = a * 0.4 * np.sin(ph + 2.1)
            kp[:, k] += up[:, None] * z + side[:, None] * left + fore[:, None] * fwd
        elif ep.kind == "orolingual":
            k = names.index("nose")
            ph = 2 * np.pi * ep.frequency_hz * (t - ep.onset_s)
            a = env * ep.intensity * _OROLINGUAL_AMPLITUDE_MM
            kp[:, k] += (a * np.sin(ph))[:, None] * z + (a * 0.6 * np.sin(ph + 1.2))[:, None] * fwd
        else:  # rotational: whole turns, so the pose is continuous when the episode ends
            n_turns, _ = _rotation_turns(ep.intensity, ep.duration_s)
            u = np.clip((t - ep.onset_s) / ep.duration_s, 0.0, 1.0)
            phi = sgn * 2 * np.pi * n_turns * u * u * (3.0 - 2.0 * u)
            centre = 0.5 * (ears + tail)
            for k in range(kp.shape[1]):
                kp[:, k] = np.where(on[:, None], _rotate(kp[:, k], centre, z, phi), kp[:, k])
            if ex is not None:
                for k in range(ex.shape[1]):
                    ex[:, k] = np.where(on[:, None], _rotate(ex[:, k], centre, z, phi), ex[:, k])
    return kp, ex


def rotation_rate_deg_s(episode: Episode) -> float:
    """Mean scripted rotation rate of a rotational episode, deg/s (signed: + = counter-clockwise)."""
    n_turns, _ = _rotation_turns(episode.intensity, episode.duration_s)
    return (1.0 if episode.side == "left" else -1.0) * 360.0 * n_turns / episode.duration_s


def with_episodes(trajectory, episodes: Sequence[Episode]):
    """A `synthetic.rat.Trajectory` with the episodes laid on its sampled keypoints and extras.

    `pose_at` of the result still evaluates the unmodified walk (the episodes live on the samples).
    """
    kp, ex = apply_episodes(trajectory.times_s, trajectory.keypoints_mm, trajectory.keypoint_names, episodes,
                            trajectory.extra_mm)
    return dataclasses.replace(trajectory, keypoints_mm=kp, extra_mm=ex)


def noisy_observation(keypoints_mm: np.ndarray, seed: int, sigma_mm: float = 3.0, dropout: float = 0.03) -> np.ndarray:
    """Truth -> what a tracker might deliver: i.i.d. Gaussian noise `sigma_mm` per coordinate and a
    fraction `dropout` of keypoints missing (NaN) in runs of 1-5 frames. (T, K, 3) -> (T, K, 3).

    A stand-in for fusion's error for benchmarks over many minutes (the live demo measured a median
    3D error of about 2.8 mm); it is not the output of the rendered cameras and the model.
    """
    rng = np.random.default_rng(seed)
    out = np.asarray(keypoints_mm, np.float64) + rng.normal(0.0, sigma_mm, np.shape(keypoints_mm))
    T, K = out.shape[:2]
    n_runs = int(dropout * T * K / 3.0)
    starts = rng.integers(0, T, n_runs)
    lens = rng.integers(1, 6, n_runs)
    ks = rng.integers(0, K, n_runs)
    for s, n, k in zip(starts, lens, ks):
        out[s:s + n, k] = np.nan
    return out
