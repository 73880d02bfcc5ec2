"""Scoring detected paw events against exact contact times, and a realistic stand-in for fusion.

Which time is scored: by default the *estimated onset* of each event (``extra["onset_ns"]``, see
`events.paw`), i.e. when the paw touched down; `time="decided"` scores `capture_ns` instead (when
the event could be acted on). `score_touchdowns` reports both: `timing_error_ms_*` on the chosen
time and `decision_delay_ms_median` (decided capture time minus the true touchdown).

Matching, per paw: detections and true touchdowns are paired one-to-one, closest pairs first, when
they are at most `window_s` apart. precision = matched / detected, recall = matched / true.
True contacts that begin at the very first sample (censored: the paw was already down) are not
counted, nor detections or contacts in the first `skip_s` of the session (the detector's warm-up).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ratrig.messages import EventPacket


@dataclass(frozen=True, slots=True)
class TouchdownScore:
    """Accuracy of touchdown detection (all paws pooled, and per paw)."""

    precision: float
    recall: float
    timing_error_ms_median: float  # |detected - true| of matched pairs, on the scored time
    timing_error_ms_p90: float
    signed_error_ms_median: float  # detected - true (negative: early)
    decision_delay_ms_median: float  # decided capture time - true touchdown, matched pairs
    n_detected: int
    n_true: int
    n_matched: int
    time: str
    per_paw: Mapping[str, tuple[float, float, float]]  # paw -> (precision, recall, timing_error_ms_median)

    def summary(self) -> dict[str, float]:
        """The figures the `ratrig demo` summary shows under events.touchdown."""
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "timing_error_ms_median": round(self.timing_error_ms_median, 2),
            "decision_delay_ms_median": round(self.decision_delay_ms_median, 2),
            "n_true": self.n_true,
            "n_detected": self.n_detected,
        }


def match_times(detected_s: np.ndarray, true_s: np.ndarray, window_s: float) -> list[tuple[int, int]]:
    """(D,) and (T,) times, s -> one-to-one pairs (detected index, true index), closest first,
    each at most `window_s` apart.

    Only pairs within the window are candidates (found by a sorted search, not a D x T matrix, so an
    hours-long session scores in O((D + T) log T) time and memory); ties are broken as a row-major
    walk of the D x T matrix would.
    """
    d = np.asarray(detected_s, float).ravel()
    t = np.asarray(true_s, float).ravel()
    if d.size == 0 or t.size == 0:
        return []
    order_t = np.argsort(t, kind="stable")
    ts = t[order_t]
    slack = 1e-9 * max(1.0, float(np.abs(d).max()), float(np.abs(t).max()))  # the exact test follows
    lo = np.searchsorted(ts, d - window_s - slack, side="left")
    hi = np.searchsorted(ts, d + window_s + slack, side="right")
    counts = hi - lo
    di = np.repeat(np.arange(d.size), counts)
    # positions lo[i] .. hi[i]-1 of the sorted times, for every detection i
    pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    ti = order_t[pos]
    diff = np.abs(d[di] - t[ti])
    ok = diff <= window_s
    di, ti, diff = di[ok], ti[ok], diff[ok]
    row_major = np.lexsort((ti, di))
    di, ti, diff = di[row_major], ti[row_major], diff[row_major]
    if np.unique(di).size == di.size and np.unique(ti).size == ti.size:
        return [(int(a), int(b)) for a, b in zip(di, ti)]  # no detection or touchdown has two candidates
    order = np.argsort(diff, kind="stable")
    used_d: set[int] = set()
    used_t: set[int] = set()
    pairs = []
    for k in order:
        a, b = int(di[k]), int(ti[k])
        if a in used_d or b in used_t:
            continue
        used_d.add(a)
        used_t.add(b)
        pairs.append((a, b))
    return pairs


def touchdown_times(
    events: Iterable[EventPacket], t0_ns: int, time: str = "onset", name: str = "touchdown"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Events -> paw -> ((N,) scored times s, (N,) decided times s), both relative to `t0_ns`.

    `time`: "onset" (``extra["onset_ns"]``, falls back to capture_ns) or "decided" (capture_ns).
    """
    if time not in ("onset", "decided"):
        raise ValueError(f"time: expected 'onset' or 'decided', got {time!r}")
    scored: dict[str, list[float]] = {}
    decided: dict[str, list[float]] = {}
    for ev in events:
        if ev.name != name:
            continue
        t_dec = (int(ev.capture_ns) - int(t0_ns)) * 1e-9
        t = t_dec if time == "decided" else (int(ev.extra.get("onset_ns", ev.capture_ns)) - int(t0_ns)) * 1e-9
        scored.setdefault(ev.subject, []).append(t)
        decided.setdefault(ev.subject, []).append(t_dec)
    return {p: (np.array(scored[p]), np.array(decided[p])) for p in scored}


def score_touchdowns(
    events: Iterable[EventPacket],
    contacts: Mapping[str, np.ndarray],
    t0_ns: int,
    window_s: float = 0.1,
    time: str = "onset",
    skip_s: float = 0.0,
    end_s: float | None = None,
) -> TouchdownScore:
    """Detected touchdown events vs exact contacts -> TouchdownScore.

    Args:
        events: EventPackets (others than "touchdown" are ignored).
        contacts: paw -> (M, 2) [touchdown_s, liftoff_s] exact contact intervals, s from the session
            start (the synthetic rig's `Trajectory.contacts`).
        t0_ns: capture time of the session start (time 0 of `contacts`), ns.
        window_s: largest |detected - true| that counts as a match.
        time: "onset" (default) or "decided"; see the module docstring.
        skip_s: ignore true touchdowns and detections before this time (warm-up); contacts that
            start at t <= 0 are censored and never counted.
        end_s: ignore true touchdowns after this time and detections after end_s + window_s (a
            touchdown just before the end may not be decided yet); None = no limit.
    """
    det = touchdown_times(events, t0_ns, time)
    return score_touchdown_times(det, contacts, window_s, time, skip_s, end_s)


def score_touchdown_times(
    det: Mapping[str, tuple[np.ndarray, np.ndarray]],
    contacts: Mapping[str, np.ndarray],
    window_s: float = 0.1,
    time: str = "onset",
    skip_s: float = 0.0,
    end_s: float | None = None,
) -> TouchdownScore:
    """`score_touchdowns` on detections already reduced to times: paw -> ((N,) scored times s,
    (N,) decided times s), both from the session start (what `touchdown_times` returns); a live scorer
    keeps these few numbers per event instead of the packets."""
    n_det = n_true = n_match = 0
    errors: list[float] = []
    signed: list[float] = []
    delays: list[float] = []
    per_paw = {}
    paws = sorted(set(contacts) | set(det))
    for paw in paws:
        c = np.asarray(contacts.get(paw, np.zeros((0, 2))), float).reshape(-1, 2)
        true = c[:, 0]
        true = true[(true > 0.0) & (true >= skip_s)]
        if end_s is not None:
            true = true[true <= end_s]
        d, dec = det.get(paw, (np.zeros(0), np.zeros(0)))
        keep = d >= skip_s
        if end_s is not None:
            keep &= d <= end_s + window_s
        d, dec = d[keep], dec[keep]
        pairs = match_times(d, true, window_s)
        e = [abs(d[i] - true[j]) * 1e3 for i, j in pairs]
        errors += e
        signed += [(d[i] - true[j]) * 1e3 for i, j in pairs]
        delays += [(dec[i] - true[j]) * 1e3 for i, j in pairs]
        n_det += len(d)
        n_true += len(true)
        n_match += len(pairs)
        per_paw[paw] = (
            len(pairs) / len(d) if len(d) else float("nan"),
            len(pairs) / len(true) if len(true) else float("nan"),
            float(np.median(e)) if e else float("nan"),
        )
    nan = float("nan")
    return TouchdownScore(
        precision=n_match / n_det if n_det else nan,
        recall=n_match / n_true if n_true else nan,
        timing_error_ms_median=float(np.median(errors)) if errors else nan,
        timing_error_ms_p90=float(np.percentile(errors, 90)) if errors else nan,
        signed_error_ms_median=float(np.median(signed)) if signed else nan,
        decision_delay_ms_median=float(np.median(delays)) if delays else nan,
        n_detected=n_det,
        n_true=n_true,
        n_matched=n_match,
        time=time,
        per_paw=per_paw,
    )


def kalman_smooth_online(
    points_mm: np.ndarray, fps: float, accel_noise_mm_s2: float = 3000.0, measurement_sigma_mm: float = 3.0
) -> np.ndarray:
    """Causal constant-velocity Kalman filter per coordinate: (T, ..., 3) -> same shape, mm.

    A stand-in for the fusion stage's filter (same model: white acceleration noise, position
    measurements) for scoring the detector before the live pipeline exists; it has the real
    filter's lag. NaN measurements coast.
    """
    z = np.asarray(points_mm, float)
    flat = z.reshape(z.shape[0], -1)
    dt = 1.0 / fps
    q = accel_noise_mm_s2 ** 2
    r = measurement_sigma_mm ** 2
    n = flat.shape[1]
    x = np.full(n, np.nan)
    v = np.zeros(n)
    p00 = np.full(n, r)
    p01 = np.zeros(n)
    p11 = np.full(n, 300.0 ** 2)
    out = np.empty_like(flat)
    for k in range(flat.shape[0]):
        # predict
        x = x + v * dt
        p00 = p00 + dt * (2 * p01 + dt * p11) + q * dt ** 4 / 4
        p01 = p01 + dt * p11 + q * dt ** 3 / 2
        p11 = p11 + q * dt ** 2
        m = flat[k]
        seen = np.isfinite(m)
        start = seen & ~np.isfinite(x)
        x[start] = m[start]
        v[start] = 0.0
        p00[start], p01[start], p11[start] = r, 0.0, 300.0 ** 2
        upd = seen & ~start
        s = p00 + r
        k0 = p00 / s
        k1 = p01 / s
        y = np.where(upd, m - np.where(np.isfinite(x), x, 0.0), 0.0)
        x = np.where(upd, x + k0 * y, x)
        v = np.where(upd, v + k1 * y, v)
        n00 = (1 - k0) * p00
        n01 = (1 - k0) * p01
        n11 = p11 - k1 * p01
        p00, p01, p11 = np.where(upd, n00, p00), np.where(upd, n01, p01), np.where(upd, n11, p11)
        out[k] = x
    return out.reshape(z.shape)


def degrade(points_mm: np.ndarray, fps: float, noise_mm: float, seed: int = 0, **kalman) -> np.ndarray:
    """Exact (T, K, 3) points -> Gaussian jitter of `noise_mm` per coordinate, then the online
    Kalman filter: what the fusion stage would hand the detector."""
    rng = np.random.default_rng(seed)
    noisy = np.asarray(points_mm, float) + rng.normal(0.0, noise_mm, np.shape(points_mm))
    return kalman_smooth_online(noisy, fps, measurement_sigma_mm=max(noise_mm, 0.5), **kalman)
