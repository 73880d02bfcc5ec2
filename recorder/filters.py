"""Offline 2D filters for reprocessing, after Anipose's `filter_pose` (anipose, not aniposelib).

aniposelib 0.8.0 provides triangulation and its spatio-temporal optimisation but no 2D filters:
Anipose's median and Viterbi filters live in the `anipose` package (anipose/filter_pose.py). Both
are re-implemented here on plain arrays:

* `median_filter`: a point whose distance from the running median of its own track exceeds
  `offset_threshold_px`, or whose likelihood is below `score_threshold`, is removed (NaN, score 0).
* `viterbi_filter`: for each keypoint the most probable path through per-frame candidates (this
  frame's detection and the detections of the previous `n_back` frames, whose likelihood decays with
  age) or a "not visible" state, with a Gaussian motion prior of `sigma_px` per frame. It fills short
  dropouts with a recent detection and removes isolated jumps that the motion prior finds unlikely.

Shapes: points (N, K, 3) = x px, y px, likelihood per frame and keypoint; NaN = no detection.
"""
from __future__ import annotations

import numpy as np
from scipy.signal import medfilt


def _interp_nan(v: np.ndarray) -> np.ndarray:
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return v.copy()
    idx = np.arange(len(v))
    return np.interp(idx, idx[ok], v[ok])


def median_filter(points: np.ndarray, size: int = 7, offset_threshold_px: float = 15.0,
                  score_threshold: float = 0.2) -> np.ndarray:
    """(N, K, 3) -> (N, K, 3) with outliers of each track removed (NaN, likelihood 0)."""
    if size % 2 == 0 or size < 1:
        raise ValueError(f"median_filter: size must be an odd number >= 1, got {size}")
    out = np.array(points, np.float64, copy=True)
    n, k, _ = out.shape
    for j in range(k):
        x, y, s = out[:, j, 0], out[:, j, 1], np.nan_to_num(out[:, j, 2])
        bad = ~np.isfinite(x) | ~np.isfinite(y) | (s < score_threshold)
        xi, yi = x.copy(), y.copy()
        xi[bad], yi[bad] = np.nan, np.nan
        xi, yi = _interp_nan(xi), _interp_nan(yi)
        if not np.isfinite(xi).all():
            out[bad, j, :2] = np.nan
            out[bad, j, 2] = 0.0
            continue
        xm, ym = medfilt(xi, size), medfilt(yi, size)
        err = np.hypot(xi - xm, yi - ym)
        bad |= err > offset_threshold_px
        out[bad, j, :2] = np.nan
        out[bad, j, 2] = 0.0
    return out


def viterbi_filter(points: np.ndarray, n_back: int = 3, sigma_px: float = 10.0, score_threshold: float = 0.1,
                   age_decay: float = 0.5, p_missing: float = 0.05, p_switch: float = 0.05) -> np.ndarray:
    """(N, K, 3) -> (N, K, 3): most probable track per keypoint (NaN where "not visible" wins).

    Candidates at frame t are the detections of frames t - n_back .. t with likelihood >=
    `score_threshold`; a detection `a` frames old has emission likelihood * age_decay**a. Moving
    between candidates costs a Gaussian log-likelihood of the distance (sigma_px per frame elapsed);
    entering or leaving "not visible" costs log(p_switch); staying there emits log(p_missing).
    """
    pts = np.asarray(points, np.float64)
    n, k, _ = pts.shape
    out = np.full_like(pts, np.nan)
    out[:, :, 2] = 0.0
    log_sw, log_miss = np.log(p_switch), np.log(p_missing)
    for j in range(k):
        xy, sc = pts[:, j, :2], np.nan_to_num(pts[:, j, 2])
        good = np.isfinite(xy).all(axis=1) & (sc >= score_threshold)
        cand_xy, cand_em, cand_src = [], [], []
        for t in range(n):
            srcs = [t - a for a in range(n_back + 1) if t - a >= 0 and good[t - a]]
            cand_xy.append(np.array([xy[s] for s in srcs]).reshape(-1, 2))
            cand_em.append(np.array([np.log(sc[s]) + (t - s) * np.log(age_decay) for s in srcs]))
            cand_src.append(np.array(srcs, np.int64))
        # state 0 = not visible, states 1.. = candidates
        score_prev = np.concatenate([[log_miss], cand_em[0]]) if n else np.zeros(0)
        back: list[np.ndarray] = [np.zeros(len(score_prev), np.int64)]
        for t in range(1, n):
            m = len(cand_xy[t])
            trans = np.full((len(score_prev), m + 1), -np.inf)
            trans[0, 0] = 0.0
            trans[0, 1:] = log_sw
            trans[1:, 0] = log_sw
            if m and len(cand_xy[t - 1]):
                d2 = ((cand_xy[t - 1][:, None, :] - cand_xy[t][None, :, :]) ** 2).sum(-1)
                trans[1:, 1:] = -d2 / (2 * sigma_px**2)
            emit = np.concatenate([[log_miss], cand_em[t]])
            total = score_prev[:, None] + trans
            back.append(np.argmax(total, axis=0))
            score_prev = total[back[-1], np.arange(m + 1)] + emit
        if n == 0:
            continue
        state = int(np.argmax(score_prev))
        for t in range(n - 1, -1, -1):
            if state > 0:
                src = cand_src[t][state - 1]
                out[t, j, :2] = xy[src]
                out[t, j, 2] = sc[src] * age_decay ** (t - src)
            state = int(back[t][state])
    return out
