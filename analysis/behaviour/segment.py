"""Unsupervised segmentation of behaviour features with a Gaussian HMM (hmmlearn), filtered causally.

The model is hmmlearn's `GaussianHMM` (diagonal covariances) fitted by EM on a session's window
features (a few chosen, log-scaled where skewed, standardised). Decoding comes two ways:

- `Segmenter.filter` / `Segmenter.step`: the forward algorithm, one frame at a time, giving
  p(state | frames so far). This is what the live stage can compute, and the offline run uses the
  very same per-frame step so the two agree exactly on the same input.
- `Segmenter.viterbi`: hmmlearn's Viterbi path over the whole session (offline only; it looks ahead,
  so it segments more cleanly and cannot be live).

States are numbered by the model, not named: what a state means is read off its mean features
(`Segmenter.state_table`), or by lining states up with rater scores.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.behaviour.features import FEATURE_NAMES, aligned_copy

#: what the HMM sees: (name, how it is made from the features, log1p-scaled?)
SEGMENT_FEATURES: tuple[tuple[str, bool], ...] = (
    ("bend_deg", False), ("twist_deg", False), ("rotation_deg_s", False),
    ("front_paw_excursion_asymmetry_mm", False),  # left minus right forepaw excursion
    ("front_paw_excursion_mm", True),  # mean of the forepaws
    ("hind_paw_excursion_mm", True),  # mean of the hind paws
    ("nose_oscillation_mm", True), ("speed_mm_s", True), ("nose_height_mm", False),
)
_LOG2PI = np.log(2.0 * np.pi)


def segment_inputs(features: np.ndarray) -> np.ndarray:
    """(T, F) features in FEATURE_NAMES order -> (T, D) unscaled HMM inputs (NaN kept)."""
    f = np.asarray(features, np.float64).reshape(-1, len(FEATURE_NAMES))
    col = {n: f[:, i] for i, n in enumerate(FEATURE_NAMES)}
    fl, fr = col["front_left_paw_excursion_mm"], col["front_right_paw_excursion_mm"]
    col["front_paw_excursion_asymmetry_mm"] = fl - fr
    col["front_paw_excursion_mm"] = 0.5 * (fl + fr)
    col["hind_paw_excursion_mm"] = 0.5 * (col["hind_left_paw_excursion_mm"] + col["hind_right_paw_excursion_mm"])
    cols = []
    for name, log in SEGMENT_FEATURES:
        v = col[name]
        # log1p on an aligned copy: the fit's inputs must not depend on where numpy put the array
        cols.append(np.log1p(aligned_copy(np.maximum(v, 0.0))) if log else v)
    return np.stack(cols, axis=1)


MIN_FRAMES_PER_STATE = 20


def usable_frames(features: np.ndarray) -> np.ndarray:
    """(T, F) features -> (T,) bool: frames with at least one HMM input (what a fit can use)."""
    return np.isfinite(segment_inputs(features)).any(axis=1)


@dataclass(frozen=True)
class Segmenter:
    """A fitted segmentation model. Arrays: mean/scale (D,), startprob (S,), transmat (S, S),
    means (S, D), variances (S, D), all on standardised inputs."""

    mean: np.ndarray
    scale: np.ndarray
    startprob: np.ndarray
    transmat: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def n_states(self) -> int:
        return int(self.startprob.shape[0])

    # -- fitting and storage -----------------------------------------------------------------------
    @classmethod
    def fit(cls, features: np.ndarray, n_states: int = 8, seed: int = 0, n_iter: int = 40) -> "Segmenter":
        """EM fit of a diagonal Gaussian HMM (hmmlearn) on (T, F) features. Deterministic per seed.

        Raises:
            ValueError: fewer usable frames than 20 per state.
        """
        from hmmlearn.hmm import GaussianHMM  # lazy: only fitting needs it

        x = segment_inputs(features)
        ok = np.isfinite(x).any(axis=1)
        if ok.sum() < MIN_FRAMES_PER_STATE * n_states:
            raise ValueError(f"Segmenter.fit: {int(ok.sum())} frames with features, need at least "
                             f"{MIN_FRAMES_PER_STATE * n_states} for {n_states} states")
        mean = np.nanmean(x[ok], axis=0)
        scale = np.nanstd(x[ok], axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
        z = cls._standardise(x[ok], mean, scale)
        model = GaussianHMM(n_components=n_states, covariance_type="diag", n_iter=n_iter, tol=1e-2,
                            random_state=seed, min_covar=1e-3)
        model.fit(z)
        variances = np.array([np.diag(c) for c in model.covars_])
        return cls(mean, scale, np.asarray(model.startprob_, float), np.asarray(model.transmat_, float),
                   np.asarray(model.means_, float), variances)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as .npz atomically (temp file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, mean=self.mean, scale=self.scale, startprob=self.startprob, transmat=self.transmat,
                     means=self.means, variances=self.variances,
                     segment_features=np.array([n for n, _ in SEGMENT_FEATURES]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Segmenter":
        """Read a model written by `save`. Raises ValueError naming the file and what is wrong."""
        try:
            with np.load(path) as d:
                names = [str(n) for n in d["segment_features"]]
                model = cls(*(np.asarray(d[k], float) for k in ("mean", "scale", "startprob", "transmat", "means",
                                                                  "variances")))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a behaviour segmenter (.npz from Segmenter.save): {e}") from None
        expected = [n for n, _ in SEGMENT_FEATURES]
        if names != expected:
            raise ValueError(f"{path}: segmenter was fitted on features {names}, this version uses {expected}")
        s, d = model.means.shape
        if model.transmat.shape != (s, s) or model.variances.shape != (s, d) or model.mean.shape != (d,):
            raise ValueError(f"{path}: inconsistent array shapes in the segmenter")
        return model

    # -- decoding ----------------------------------------------------------------------------------
    @staticmethod
    def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        z = (x - mean) / scale
        return np.where(np.isfinite(z), z, 0.0)  # an unseen feature sits at the session mean

    def log_emission(self, z: np.ndarray) -> np.ndarray:
        """(D,) standardised input -> (S,) log density under each state.

        Sums run in a fixed order with scalar logs: numpy's SIMD reductions and transcendentals can
        differ in the last bit with memory alignment, and the live stage must reproduce the offline
        run exactly (see `analysis.behaviour.features._rows`).
        """
        d = z[None, :] - self.means
        q = np.zeros(self.n_states)
        logdet = np.zeros(self.n_states)
        for j in range(d.shape[1]):
            q += d[:, j] * d[:, j] / self.variances[:, j]
            logdet += np.array([math.log(v) for v in self.variances[:, j]])
        return -0.5 * (q + logdet + z.shape[0] * _LOG2PI)

    def step(self, prev: np.ndarray | None, features: np.ndarray) -> np.ndarray:
        """One forward step: previous posterior (S,) or None at the start, (F,) features -> (S,) posterior."""
        z = self._standardise(segment_inputs(features)[0], self.mean, self.scale)
        log_e = self.log_emission(z)
        if prev is None:
            prior = self.startprob
        else:
            prior = np.zeros(self.n_states)
            for k in range(self.n_states):  # prev @ transmat, in a fixed order
                prior += prev[k] * self.transmat[k]
        log_p = np.array([math.log(max(float(p), 1e-300)) for p in prior]) + log_e
        log_p -= log_p.max()
        p = np.array([math.exp(v) for v in log_p])
        total = 0.0
        for v in p:
            total += v
        return p / total

    def filter(self, features: np.ndarray) -> np.ndarray:
        """(T, F) -> (T, S) causal posteriors, frame by frame with `step` (what the live stage computes)."""
        out = np.empty((len(features), self.n_states))
        prev = None
        for i, f in enumerate(np.asarray(features, np.float64)):
            prev = self.step(prev, f)
            out[i] = prev
        return out

    def viterbi(self, features: np.ndarray) -> np.ndarray:
        """(T, F) -> (T,) most likely state path over the whole session (hmmlearn; offline only)."""
        from hmmlearn.hmm import GaussianHMM

        model = GaussianHMM(n_components=self.n_states, covariance_type="diag", init_params="", params="")
        model.startprob_ = self.startprob
        model.transmat_ = self.transmat
        model.means_ = self.means
        model.covars_ = self.variances
        z = self._standardise(segment_inputs(features), self.mean, self.scale)
        return model.predict(z)

    def state_table(self) -> pd.DataFrame:
        """Mean of each HMM input per state, in the inputs' own units (log1p undone), for reading states."""
        raw = self.means * self.scale + self.mean
        cols = {}
        for j, (name, log) in enumerate(SEGMENT_FEATURES):
            cols[name] = np.expm1(raw[:, j]) if log else raw[:, j]
        return pd.DataFrame(cols, index=pd.RangeIndex(self.n_states, name="state"))
