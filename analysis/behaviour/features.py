"""Behaviour features from 3D keypoints over sliding windows: one batched kernel, live and offline.

`window_features` takes windows of frames ending at the frame they describe (causal: the live stage
has nothing later) and returns one feature vector per window. The offline path
(`session_features`) cuts a whole session into such windows and calls the same kernel in chunks;
the live stage (`analysis.behaviour.process`) keeps the last frames in a ring buffer and calls it on
one window per frame set. Same kernel, same numbers.

Body frame, per frame: the neck is the ear midpoint, the body axis runs tail base -> neck in the
floor plane (`forward`), `left` is forward turned 90 degrees counter-clockwise seen from above, z is
up. Signed angles are positive towards the rat's left.

Features (FEATURE_NAMES; window = `window_s`, long window = `long_window_s`):

``bend_deg``            mean signed horizontal angle between the body axis and the head (neck ->
                        nose) over the long window; + = head turned to the left
``curvature_per_m``     mean signed curvature of the circle through tail base, neck and nose in
                        the floor plane (Menger curvature), 1/m
``head_tail_angle_deg`` mean 3D angle at the neck between nose and tail base (180 = straight)
``twist_deg``           mean roll of the ear line about the body axis over the long window; + =
                        right ear up (the head rolled towards the left)
``yaw_rate_deg_s``      net heading change of the body axis over the window / its duration
``rotation_deg_s``      the same over the long window (a corridor U-turn adds 180 deg)
``<paw>_excursion_mm``  per paw, sqrt(var(lateral) + var(vertical)) of the paw in the body frame
                        (front paws relative to the neck, hind paws to the tail base) over the
                        window; fore-aft stepping is left out
``<paw>_freq_hz``       per paw, the dominant frequency (1.5-15 Hz) of lateral + vertical paw motion
                        over the window (FFT of the detrended signal; NaN when too few frames)
``nose_jitter_mm``      RMS of the second difference of the nose in the head frame over the window
``ear_jitter_mm``       the same for the ears relative to their midpoint (mean of both ears)
``nose_oscillation_mm`` amplitude of the strongest 5-14 Hz oscillation of the nose in the head frame
                        over the long window, above the band's median (the white-noise floor
                        of tracking error): FFT peak minus median, scaled to mm of amplitude
``speed_mm_s``          horizontal speed of the body centre (mean of tail base and neck) over the window
``nose_height_mm``      mean nose height above the floor

A keypoint unseen (NaN) in a frame is left out of that frame's terms; a feature with no usable
frame in its window is NaN.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ratrig.skeleton import PAWS

REQUIRED_KEYPOINTS: tuple[str, ...] = ("nose", "left_ear", "right_ear", "tail_base", *PAWS)
_PAW_FEATURES = tuple(f"{p}_{s}" for p in PAWS for s in ("excursion_mm", "freq_hz"))
FEATURE_NAMES: tuple[str, ...] = (
    "bend_deg", "curvature_per_m", "head_tail_angle_deg", "twist_deg", "yaw_rate_deg_s", "rotation_deg_s",
    *_PAW_FEATURES, "nose_jitter_mm", "ear_jitter_mm", "nose_oscillation_mm", "speed_mm_s", "nose_height_mm",
)
_ORAL_BAND_HZ = (5.0, 14.0)
_FREQ_BAND_HZ = (1.5, 15.0)


@dataclass(frozen=True, slots=True)
class FeatureParams:
    """Window lengths of the features, s; `fps` turns them into frames."""

    fps: float = 30.0
    window_s: float = 1.0
    long_window_s: float = 3.0

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.window_s > 0 and self.long_window_s > 0):
            raise ValueError(f"FeatureParams: expected fps, window_s, long_window_s > 0, got {self}")

    @property
    def window_frames(self) -> int:
        return max(3, int(round(self.window_s * self.fps)))

    @property
    def long_frames(self) -> int:
        return max(self.window_frames, int(round(self.long_window_s * self.fps)))


def keypoint_order(names: Sequence[str]) -> np.ndarray:
    """Indices of REQUIRED_KEYPOINTS in `names` (-1 where absent)."""
    names = list(names)
    return np.array([names.index(k) if k in names else -1 for k in REQUIRED_KEYPOINTS], np.int64)


def take_keypoints(points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(..., K, 3) in the source order -> (..., 8, 3) in REQUIRED_KEYPOINTS order, NaN for absent ones."""
    pts = np.asarray(points, np.float64)
    out = np.full(pts.shape[:-2] + (len(order), 3), np.nan)
    ok = order >= 0
    out[..., ok, :] = pts[..., order[ok], :]
    return out


_DEG = 180.0 / math.pi


def _rows(fn, *arrays: np.ndarray) -> np.ndarray:
    """An element-wise transcendental (arctan2, arccos, sin, cos) applied one window row at a time.

    numpy evaluates these with SIMD code for the bulk of an array and scalar code for the leftover
    elements (which depend on the length and the alignment), whose last bits can differ; applied
    per row on an aligned copy, an element takes the same path whether its window comes alone
    (live) or inside a batch (offline). (N, R) arrays -> (N, R).
    """
    out = np.empty(np.broadcast_shapes(*(a.shape for a in arrays)))
    for i in range(out.shape[0]):
        out[i] = fn(*(aligned_copy(a[i]) for a in arrays))
    return out


def aligned_copy(a: np.ndarray) -> np.ndarray:
    """A contiguous copy of `a` starting on a 64-byte boundary: where the SIMD code begins and the
    scalar code takes over depends on the array's alignment too."""
    buf = np.empty(a.size + 8)
    off = (-buf.ctypes.data % 64) // 8
    out = buf[off:off + a.size].reshape(a.shape)
    out[...] = a
    return out


def _nansum_count(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of the finite values along axis 1, added one window position after the other.

    numpy's own reductions pick their summation order by memory alignment, so one window (live)
    and the same window inside a batch (offline) could differ in the last bit. A cumulative sum
    cannot reorder: element i is element i-1 plus value i, whatever the layout.
    """
    ok = np.isfinite(a)
    if a.shape[1] == 0:
        return np.zeros(a.shape[:1] + a.shape[2:]), np.zeros(a.shape[:1] + a.shape[2:])
    total = np.cumsum(np.where(ok, a, 0.0), axis=1)[:, -1]
    return total, ok.sum(axis=1).astype(np.float64)


def _nanmean(a: np.ndarray, axis: int = 1) -> np.ndarray:
    """Mean of the finite values along axis 1 (NaN where none), in a fixed order (see _nansum_count)."""
    assert axis == 1
    total, count = _nansum_count(a)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _nanvar(a: np.ndarray) -> np.ndarray:
    """Population variance of the finite values along axis 1, in a fixed order."""
    m = _nanmean(a, 1)
    d = a - m[:, None]
    return _nanmean(d * d, 1)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product over the last axis (2 or 3 long), written out element by element: numpy's
    reductions may sum in a different order for a batch than for one window, and the live stage
    must reproduce the offline numbers bit for bit."""
    out = a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]
    return out + a[..., 2] * b[..., 2] if a.shape[-1] == 3 else out


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(_dot(a, a))


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _net_heading_rate(heading: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(N, W) heading rad, (N, W) s -> (N,) deg/s: summed wrapped steps between seen frames / span."""
    d = _wrap(np.diff(heading, axis=1))
    total, _ = _nansum_count(d)
    seen = np.isfinite(heading)
    t_first = np.where(seen, times, np.inf).min(axis=1)
    t_last = np.where(seen, times, -np.inf).max(axis=1)
    span = t_last - t_first
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = total * _DEG / span
    return np.where((seen.sum(axis=1) >= 2) & (span > 0), rate, np.nan)


def _dominant_freq(signal: np.ndarray, fps: float) -> np.ndarray:
    """(N, W) -> (N,) Hz of the largest FFT peak in the band; NaN with fewer than 6 seen frames."""
    n_seen = np.isfinite(signal).sum(axis=1)
    x = signal - _nanmean(signal, 1)[:, None]
    x = np.where(np.isfinite(x), x, 0.0)
    w = x.shape[1]
    x = x - np.linspace(-0.5, 0.5, w)[None, :] * (x[:, -1:] - x[:, :1])  # crude detrend: end points
    spec = np.abs(np.fft.rfft(x * np.hanning(w)[None, :], axis=1))
    freqs = np.fft.rfftfreq(w, 1.0 / fps)
    band = (freqs >= _FREQ_BAND_HZ[0]) & (freqs <= _FREQ_BAND_HZ[1])
    if not band.any():
        return np.full(len(x), np.nan)
    f = freqs[band][np.argmax(spec[:, band], axis=1)]
    return np.where(n_seen >= 6, f, np.nan)


def _band_oscillation(win: np.ndarray, heading: np.ndarray, fps: float) -> np.ndarray:
    """(N, R, 8, 3), (N, R) -> (N,) mm: nose oscillation amplitude in _ORAL_BAND_HZ above the floor."""
    nose, neck = win[:, :, 0], 0.5 * (win[:, :, 1] + win[:, :, 2])
    head = nose - neck
    c, s = _rows(np.cos, heading), _rows(np.sin, heading)
    rel = np.stack([head[..., 0] * c + head[..., 1] * s, -head[..., 0] * s + head[..., 1] * c, head[..., 2]], -1)
    n_seen = np.isfinite(rel).all(axis=-1).sum(axis=1)
    rel = rel - _nanmean(rel, 1)[:, None, :]
    rel = np.where(np.isfinite(rel), rel, 0.0)
    r = rel.shape[1]
    han = np.hanning(r)
    spec = np.abs(np.fft.rfft(rel * han[None, :, None], axis=1))  # (N, r//2+1, 3)
    mag = np.sqrt(_dot(spec, spec))
    freqs = np.fft.rfftfreq(r, 1.0 / fps)
    band = (freqs >= _ORAL_BAND_HZ[0]) & (freqs <= min(_ORAL_BAND_HZ[1], fps / 2))
    if band.sum() < 3:
        return np.full(len(rel), np.nan)
    m = mag[:, band]
    amp = (m.max(axis=1) - np.median(m, axis=1)) * 2.0 / han.sum()
    return np.where(n_seen >= r // 2, amp, np.nan)


def window_features(windows_mm: np.ndarray, times_s: np.ndarray, params: FeatureParams) -> np.ndarray:
    """The batched kernel: windows of frames -> one feature vector per window.

    Args:
        windows_mm: (N, R, 8, 3) world mm in REQUIRED_KEYPOINTS order, R = params.long_frames
            frames ending at the described frame (rotation, bend, twist and nose oscillation use
            all R, the other features the last window_frames); NaN = unseen or before the session
            started.
        times_s: (N, R) frame times, s (NaN before the session started).
        params: window lengths.

    Returns:
        (N, F) float64 in FEATURE_NAMES order.
    """
    win = np.asarray(windows_mm, np.float64)
    times = np.asarray(times_s, np.float64)
    n, r = win.shape[:2]
    w = params.window_frames
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}

    nose, lear, rear, tail = win[:, :, 0], win[:, :, 1], win[:, :, 2], win[:, :, 3]
    neck = 0.5 * (lear + rear)
    axis = neck - tail
    heading = _rows(np.arctan2, axis[..., 1], axis[..., 0])  # (N, R)
    out[:, col["rotation_deg_s"]] = _net_heading_rate(heading, times)
    # sustained bend and twist over the long window: head scanning swings both ways and averages out
    head_l = nose - neck
    out[:, col["bend_deg"]] = _nanmean(_wrap(_rows(np.arctan2, head_l[..., 1], head_l[..., 0]) - heading), 1) * _DEG
    ear_l = rear - lear
    out[:, col["twist_deg"]] = _nanmean(_rows(np.arctan2, ear_l[..., 2], _norm(ear_l[..., :2])), 1) * _DEG

    # everything else over the short window
    nose, lear, rear, tail, neck, axis = (a[:, r - w:] for a in (nose, lear, rear, tail, neck, axis))
    heading_w, times_w = heading[:, r - w:], times[:, r - w:]
    out[:, col["yaw_rate_deg_s"]] = _net_heading_rate(heading_w, times_w)
    fwd = axis.copy()
    fwd[..., 2] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        fwd /= _norm(fwd)[..., None]
    left = np.stack([-fwd[..., 1], fwd[..., 0], np.zeros(fwd.shape[:-1])], axis=-1)
    head = nose - neck
    # Menger curvature in the floor plane: 2 sin(angle at the neck between tail and nose) / |tail - nose|
    a2, b2 = axis[..., :2], head[..., :2]
    cross = a2[..., 0] * b2[..., 1] - a2[..., 1] * b2[..., 0]
    chord = _norm((nose - tail)[..., :2])
    with np.errstate(invalid="ignore", divide="ignore"):
        curv = 2.0 * cross / (_norm(a2) * _norm(b2) * chord) * 1000.0
        cos_ht = -_dot(axis, head) / (_norm(axis) * _norm(head))
    out[:, col["curvature_per_m"]] = _nanmean(curv, 1)
    out[:, col["head_tail_angle_deg"]] = _nanmean(_rows(np.arccos, np.clip(cos_ht, -1.0, 1.0)), 1) * _DEG

    for j, paw in enumerate(PAWS):
        anchor = neck if paw.startswith("front") else tail
        rel = win[:, r - w:, 4 + j] - anchor
        lat = _dot(rel, left)
        up = rel[..., 2]
        exc = np.sqrt(_nanvar(lat) + _nanvar(up))
        seen = (np.isfinite(lat) & np.isfinite(up)).sum(axis=1)
        out[:, col[f"{paw}_excursion_mm"]] = np.where(seen >= 3, exc, np.nan)
        out[:, col[f"{paw}_freq_hz"]] = _dominant_freq(lat + up, params.fps)

    def jitter(rel: np.ndarray) -> np.ndarray:
        d2 = rel[:, 2:] - 2.0 * rel[:, 1:-1] + rel[:, :-2]
        return np.sqrt(_nanmean(_dot(d2, d2), 1))

    # head frame: forward, left, up of the body axis; jitter is invariant to the frame's rotation
    # only up to its slow turning, which the second difference removes
    nose_rel = np.stack([_dot(head, fwd), _dot(head, left), head[..., 2]], axis=-1)
    out[:, col["nose_jitter_mm"]] = jitter(nose_rel)
    ears = []
    for e in (lear, rear):
        rel = e - neck
        ears.append(jitter(np.stack([_dot(rel, fwd), _dot(rel, left), rel[..., 2]], axis=-1)))
    out[:, col["ear_jitter_mm"]] = _nanmean(np.stack(ears, 1), 1)
    out[:, col["nose_oscillation_mm"]] = _band_oscillation(win, heading, params.fps)
    centre = 0.5 * (neck + tail)
    seen = np.isfinite(centre).all(axis=-1) & np.isfinite(times_w)
    first = np.argmax(seen, axis=1)
    last = w - 1 - np.argmax(seen[:, ::-1], axis=1)
    rows = np.arange(n)
    dist = _norm((centre[rows, last] - centre[rows, first])[:, :2])
    span = times_w[rows, last] - times_w[rows, first]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, col["speed_mm_s"]] = np.where(seen.any(axis=1) & (span > 0), dist / span, np.nan)
    out[:, col["nose_height_mm"]] = _nanmean(nose[..., 2], 1)
    return out


def sliding_windows(points: np.ndarray, times_s: np.ndarray, length: int, start: int, stop: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `length` frames ending at frames start..stop-1, NaN-padded before frame 0.

    (T, 8, 3), (T,) -> (stop - start, length, 8, 3), (stop - start, length).
    """
    pad = length - 1
    pts = np.concatenate([np.full((pad,) + points.shape[1:], np.nan), points], axis=0)
    t = np.concatenate([np.full(pad, np.nan), times_s])
    idx = np.arange(start, stop)[:, None] + np.arange(length)[None, :]
    return pts[idx], t[idx]


def session_features(times_s: np.ndarray, keypoints_mm: np.ndarray, keypoint_names: Sequence[str],
                     params: FeatureParams, chunk: int = 2000) -> np.ndarray:
    """A whole session -> (T, F) features of the window ending at each frame (offline path).

    Args:
        times_s: (T,) frame times, s.
        keypoints_mm: (T, K, 3) world mm, NaN = unseen.
        keypoint_names: (K,) names; REQUIRED_KEYPOINTS that are absent give NaN features.
        params: window lengths.
        chunk: windows per kernel call (memory: chunk x long_frames x 8 x 3 doubles).
    """
    pts = take_keypoints(keypoints_mm, keypoint_order(keypoint_names))
    t = np.asarray(times_s, np.float64)
    out = np.empty((len(t), len(FEATURE_NAMES)))
    r = params.long_frames
    for s in range(0, len(t), chunk):
        e = min(len(t), s + chunk)
        win, tw = sliding_windows(pts, t, r, s, e)
        out[s:e] = window_features(win, tw, params)
    return out


class FeatureWindow:
    """The live side of the kernel: a ring buffer of the last frames, one feature vector per frame."""

    def __init__(self, params: FeatureParams, keypoint_names: Sequence[str]) -> None:
        self.params = params
        self.order = keypoint_order(keypoint_names)
        r = params.long_frames
        self._pts = np.full((r, len(REQUIRED_KEYPOINTS), 3), np.nan)
        self._t = np.full(r, np.nan)
        self.n_frames = 0

    def push(self, t_s: float, keypoints_mm: np.ndarray) -> np.ndarray:
        """One frame, (K, 3) mm in the names' order -> (F,) features of the window ending at it."""
        self._pts = np.roll(self._pts, -1, axis=0)
        self._t = np.roll(self._t, -1)
        self._pts[-1] = take_keypoints(np.asarray(keypoints_mm, np.float64)[None], self.order)[0]
        self._t[-1] = float(t_s)
        self.n_frames += 1
        return window_features(self._pts[None], self._t[None], self.params)[0]
