"""The offline run: a session's 3D poses -> features, segmentation, proxies, detected episodes.

Two segmentation modes:

- `live_equivalent`: exactly what the live stage does on the same frames in the same order: without a
  saved model it fits the HMM on the features of the first `warmup_s` seconds (longer if those hold
  fewer than 20 usable frames per state; states -1 until then), then filters frame by frame; with a
  model it filters from the first frame. The live test
  checks the stage's messages against this.
- `analyse`: the best offline answer: the HMM fitted on the whole session, Viterbi path.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.behaviour.features import FeatureParams, session_features
from analysis.behaviour.proxies import (DetectedEpisode, DetectionParams, centred_proxies, detect_episodes,
                                        proxies_from_features)
from analysis.behaviour.segment import MIN_FRAMES_PER_STATE, Segmenter, usable_frames


@dataclass(frozen=True, slots=True)
class BehaviourParams:
    features: FeatureParams = field(default_factory=FeatureParams)
    n_states: int = 8
    warmup_s: float = 60.0
    seed: int = 0
    detection: DetectionParams = field(default_factory=DetectionParams)

    @classmethod
    def from_config(cls, cfg, fps: float) -> "BehaviourParams":
        """From a `ratrig.config.BehaviourConfig` and the camera frame rate."""
        return cls(FeatureParams(fps, cfg.window_s, cfg.long_window_s), cfg.n_states, cfg.warmup_s)


def warmup_frames(times_s: np.ndarray, warmup_s: float, usable: np.ndarray | None = None, need: int = 0) -> int:
    """Frames the live stage fits on: those before the first frame that comes at least `warmup_s`
    after the first one and finds at least `need` usable frames (`usable`, (T,) bool) before it.
    len(times_s) when that never happens."""
    t = np.asarray(times_s, np.float64)
    if not len(t):
        return 0
    have = np.concatenate([[0], np.cumsum(usable)])[:-1] if usable is not None else np.full(len(t), need)
    late = np.flatnonzero((t - t[0] >= warmup_s) & (have >= need))
    return int(late[0]) if late.size else len(t)


@dataclass(frozen=True)
class LiveEquivalent:
    features: np.ndarray  # (T, F)
    states: np.ndarray  # (T,) int, -1 before a model exists
    posteriors: np.ndarray  # (T, S), NaN rows before a model exists
    segmenter: Segmenter | None
    fit_frames: int


def live_equivalent(times_s: np.ndarray, keypoints_mm: np.ndarray, keypoint_names: Sequence[str],
                    params: BehaviourParams, segmenter: Segmenter | None = None) -> LiveEquivalent:
    """What the live stage publishes for these frames (see module docstring)."""
    feats = session_features(times_s, keypoints_mm, keypoint_names, params.features)
    n_fit = 0
    if segmenter is None:
        n_fit = warmup_frames(times_s, params.warmup_s, usable_frames(feats), MIN_FRAMES_PER_STATE * params.n_states)
        if n_fit < len(feats):
            segmenter = Segmenter.fit(feats[:n_fit], params.n_states, params.seed)
    n_states = segmenter.n_states if segmenter is not None else params.n_states
    post = np.full((len(feats), n_states), np.nan)
    states = np.full(len(feats), -1, np.int64)
    if segmenter is not None and n_fit < len(feats):
        post[n_fit:] = segmenter.filter(feats[n_fit:])
        states[n_fit:] = np.argmax(post[n_fit:], axis=1)
    return LiveEquivalent(feats, states, post, segmenter, n_fit)


@dataclass(frozen=True)
class BehaviourResult:
    times_s: np.ndarray  # (T,)
    features: np.ndarray  # (T, F), window ending at each frame
    proxies: dict[str, np.ndarray]  # name -> (T,), moved to the window centres
    episodes: list[DetectedEpisode]
    states: np.ndarray | None  # (T,) Viterbi path, None when the session is too short to fit
    segmenter: Segmenter | None


def analyse(times_s: np.ndarray, keypoints_mm: np.ndarray, keypoint_names: Sequence[str],
            params: BehaviourParams = BehaviourParams(), segmenter: Segmenter | None = None) -> BehaviourResult:
    """Offline: features, centred proxies, detected episodes, and a whole-session HMM's Viterbi path."""
    t = np.asarray(times_s, np.float64)
    feats = session_features(t, keypoints_mm, keypoint_names, params.features)
    prox = centred_proxies(proxies_from_features(feats), t, params.features.window_s,
                           params.features.long_window_s)
    episodes = detect_episodes(prox, t, params.detection)
    states = None
    if segmenter is None:
        try:
            segmenter = Segmenter.fit(feats, params.n_states, params.seed)
        except ValueError:
            segmenter = None
    if segmenter is not None:
        states = segmenter.viterbi(feats)
    return BehaviourResult(t, feats, prox, episodes, states, segmenter)
