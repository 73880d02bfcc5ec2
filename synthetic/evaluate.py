"""Live evaluation against the synthetic rig's ground truth (`ratrig demo`'s accuracy keys).

    python -m synthetic.evaluate --config RIG.toml

Subscribes to the 2D keypoints of every inference worker, the 3D poses of fusion and the events,
compares them with the truth of the same moment (frame k of the shared tick schedule) and publishes
the running figures as stats/evaluator:

    accuracy.pose2d_error_px.{median, p95, n}           visible keypoints with a finite prediction,
                                                        on every 6th moment (visibility costs ~0.7 ms a view)
    accuracy.pose3d_error_mm.{raw, filtered}.{median, p95, n}
    accuracy.pose3d_coverage.{raw, filtered, n}         fraction with a 3D estimate of the keypoint-moments
                                                        the ground truth shows in >= 2 cameras (the issue's
                                                        coverage; on the same every-6th-moment subsample,
                                                        reusing the 2D visibility)
    accuracy.pose3d_coverage_seen_by_1.{raw, filtered, n}   the same for keypoints seen by exactly 1 camera
    accuracy.pose3d_coverage_seen_by_0.{raw, filtered, n}   ... and by none (hidden from every camera)
    accuracy.pose3d_coverage_all_keypoints.{raw, filtered}  fraction of ALL keypoint-moments (every moment)
                                                            with a 3D estimate, whether seen or not
    events.touchdown.{precision, recall, timing_error_ms_median, n_true, n_detected}

Percentiles cover the whole run to 0.1 % relative accuracy (a DDSketch per figure), so the evaluator's
memory does not grow with the session; touchdowns are kept as two int64 times each.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import OrderedDict
from typing import Any

import numpy as np
import zmq

from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, load_config
from ratrig.messages import EventPacket, Keypoints2DPacket, Pose3DPacket, StatsPacket
from ratrig.stats import install_stop_handlers
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_all, send_packet

log = logging.getLogger("ratrig.evaluate")


class Samples:
    """A growing sample (e.g. event times of a whole run) in one numpy buffer that doubles when full:
    8 bytes a value (a list of Python ints takes ~40)."""

    def __init__(self, dtype: Any = np.float64) -> None:
        self._buf = np.empty(256, dtype)
        self.n = 0

    def extend(self, values: Any) -> None:
        v = np.asarray(values, self._buf.dtype).ravel()
        need = self.n + v.size
        if need > self._buf.size:
            grown = np.empty(max(need, 2 * self._buf.size), self._buf.dtype)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n:need] = v
        self.n = need

    def __len__(self) -> int:
        return self.n

    def values(self) -> np.ndarray:
        return self._buf[: self.n]


#: relative accuracy of the run-long error percentiles (0.1 %: 2.840 mm is reported as 2.837-2.843)
QUANTILE_RELATIVE_ACCURACY = 1e-3


class Quantiles:
    """Percentiles of every error of a run in bounded memory: a DDSketch (DataDog's quantile sketch)
    with relative accuracy `QUANTILE_RELATIVE_ACCURACY`. Its size depends on the range of the values
    (a few thousand log-spaced bins), not on how many there are, so an hours-long demo does not grow."""

    def __init__(self) -> None:
        from ddsketch import DDSketch

        self._sketch = DDSketch(relative_accuracy=QUANTILE_RELATIVE_ACCURACY)

    def extend(self, values: Any) -> None:
        add = self._sketch.add
        for v in np.asarray(values, float).ravel().tolist():
            add(v)

    def __len__(self) -> int:
        return int(self._sketch.count)

    def quantile(self, q: float) -> float:
        return float(self._sketch.get_quantile_value(q))


def _pct(values: Quantiles) -> dict[str, float] | None:
    if not len(values):
        return None
    return {"median": round(values.quantile(0.5), 3), "p95": round(values.quantile(0.95), 3), "n": len(values)}


#: rows of the truth whose visibility the evaluator keeps (2D and 3D of a moment arrive well within this)
VIS_CACHE_ROWS = 256


class Evaluator:
    """Accumulates errors of live outputs against the truth (pure; fed packets)."""

    def __init__(self, truth: Any, renderer: Any, keypoints: list[str], every_2d: int = 2) -> None:
        self.truth = truth
        self.renderer = renderer
        self.keypoints = list(keypoints)
        self.every_2d = max(1, int(every_2d))  # 2D errors on moments k with k % every_2d == 0
        self.err2d = Quantiles()
        self.err3d_raw = Quantiles()
        self.err3d_filt = Quantiles()
        self.n3d = {"raw": 0, "filtered": 0, "total": 0}
        # keypoint-moments by how many cameras the truth shows them in (0, 1, >= 2): [raw, filtered, total]
        self.cov_by_seen = np.zeros((3, 3), np.int64)
        # touchdowns: paw -> (onset ns, decided capture ns); a few numbers per event, not the packets
        self.touchdowns: dict[str, tuple[Samples, Samples]] = {}
        self.t0_ns: int | None = None
        self.fps = truth.trajectory.fps
        self.max_frame = -1
        self._vis_cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()  # bounded, oldest first

    def _true(self, names: tuple[str, ...], frame_index: int) -> np.ndarray:
        kp = self.truth.keypoints_mm(frame_index)
        order = [self.truth.trajectory.keypoint_names.index(n) for n in names]
        return kp[order]

    def _visibility(self, camera: str, k: int, names: tuple[str, ...]) -> np.ndarray:
        """(K,) bool: the truth shows keypoints `names` in `camera` at moment k (cached per camera and row)."""
        key = (camera, self.truth.row(k))
        full = self._vis_cache.get(key)
        if full is None:
            full = np.asarray(self.renderer.visibility(camera, self.truth.keypoints_mm(k), self.truth.extra_mm(k)), bool)
            self._vis_cache[key] = full
            if len(self._vis_cache) > VIS_CACHE_ROWS * len(self.truth.calibration.names):
                self._vis_cache.popitem(last=False)  # an hours-long session must not grow it
        return full[[self.truth.trajectory.keypoint_names.index(n) for n in names]]

    def seen_by(self, k: int, names: tuple[str, ...]) -> np.ndarray:
        """(K,) number of the truth's cameras that show each keypoint at moment k."""
        return np.sum([self._visibility(c, k, names) for c in self.truth.calibration.names], axis=0)

    def add_pose2d(self, p: Keypoints2DPacket) -> None:
        k = p.frame_index
        self.max_frame = max(self.max_frame, k)
        if k % self.every_2d:
            return  # a fixed subsample of moments keeps the evaluator's CPU cost small
        cam = self.truth.calibration.camera(p.camera)
        truth_mm = self._true(p.keypoint_names, k)
        truth_px = cam.project(truth_mm)
        vis = self._visibility(p.camera, k, p.keypoint_names)
        pred = np.asarray(p.keypoints, float)[:, :2]
        err = np.linalg.norm(pred - truth_px, axis=1)
        ok = vis & np.isfinite(err)
        self.err2d.extend(err[ok])

    def add_pose3d(self, p: Pose3DPacket) -> None:
        if not p.frame_indices:
            return
        k = int(np.median(list(p.frame_indices.values())))
        truth = self._true(p.keypoint_names, k)
        raw_err = np.linalg.norm(np.asarray(p.raw_mm) - truth, axis=1)
        if p.predicted_ahead_ms:
            t = self.truth.row(k) / self.fps + p.predicted_ahead_ms / 1e3
            kp_future, _ = self.truth.trajectory.pose_at(t)
            order = [self.truth.trajectory.keypoint_names.index(n) for n in p.keypoint_names]
            filt_truth = np.asarray(kp_future)[order]
        else:
            filt_truth = truth
        filt_err = np.linalg.norm(np.asarray(p.filtered_mm) - filt_truth, axis=1)
        self.err3d_raw.extend(raw_err[np.isfinite(raw_err)])
        self.err3d_filt.extend(filt_err[np.isfinite(filt_err)])
        self.n3d["raw"] += int(np.isfinite(raw_err).sum())
        self.n3d["filtered"] += int(np.isfinite(filt_err).sum())
        self.n3d["total"] += len(raw_err)
        if k % self.every_2d == 0:  # the 2D subsample: its visibility is cached (or is computed once here)
            cls = np.minimum(self.seen_by(k, p.keypoint_names), 2)
            for found, col in ((np.isfinite(raw_err), 0), (np.isfinite(filt_err), 1), (np.ones_like(cls, bool), 2)):
                self.cov_by_seen[:, col] += np.bincount(cls[found], minlength=3)

    def add_event(self, e: EventPacket) -> None:
        if e.name == "touchdown":
            onset, decided = self.touchdowns.setdefault(e.subject, (Samples(np.int64), Samples(np.int64)))
            onset.extend([int(e.extra.get("onset_ns", e.capture_ns))])
            decided.extend([int(e.capture_ns)])

    def touchdown_accuracy(self) -> dict[str, Any] | None:
        """Touchdowns against the exact contacts, scored on the estimated onset (events.accuracy)."""
        if self.t0_ns is None or self.max_frame < 0:
            return None
        from events.accuracy import score_touchdown_times  # the events stage's matcher

        t_end = min(self.max_frame / self.fps, self.truth.trajectory.duration_s)
        det = {paw: ((onset.values() - self.t0_ns) * 1e-9, (decided.values() - self.t0_ns) * 1e-9)
               for paw, (onset, decided) in self.touchdowns.items()}
        score = score_touchdown_times(det, self.truth.trajectory.contacts, skip_s=1.0, end_s=t_end - 0.5)
        return score.summary()

    def report(self) -> dict[str, Any]:
        acc: dict[str, Any] = {}
        if len(self.err2d):
            acc["pose2d_error_px"] = _pct(self.err2d)
        if self.n3d["total"]:
            acc["pose3d_error_mm"] = {"raw": _pct(self.err3d_raw), "filtered": _pct(self.err3d_filt)}
            for key, row in (("pose3d_coverage", 2), ("pose3d_coverage_seen_by_1", 1), ("pose3d_coverage_seen_by_0", 0)):
                raw, filt, total = (int(v) for v in self.cov_by_seen[row])
                if total:
                    acc[key] = {"raw": round(raw / total, 4), "filtered": round(filt / total, 4), "n": total}
            acc["pose3d_coverage_all_keypoints"] = {
                k: round(self.n3d[k] / self.n3d["total"], 4) for k in ("raw", "filtered")}
        out: dict[str, Any] = {"accuracy": acc}
        try:
            td = self.touchdown_accuracy() if self.touchdowns else None
        except ImportError:
            td = None
        if td is not None:
            out["events"] = {"touchdown": td}
        return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m synthetic.evaluate")
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    try:
        rig = load_config(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    from synthetic.live import SyntheticTruth, corridor_of
    from synthetic.render import Renderer

    truth = SyntheticTruth.from_rig_config(rig)
    renderer = Renderer(truth.calibration, corridor_of(rig), seed=rig.synthetic.seed)
    # 2D errors on every 6th moment: ~5,000 keypoints a minute, and the evaluator (the synthetic
    # rig's yardstick, not a product stage) leaves the CPU to the pipeline it measures
    ev = Evaluator(truth, renderer, rig.keypoints, every_2d=6)
    eps = Endpoints(rig)
    ctx = zmq.Context()
    sources = [eps.connect(f"inference/{j}") for j in range(len(rig.worker_groups()))]
    sources += [eps.connect("fusion"), eps.connect("events")]
    sources += [eps.connect(f"camera/{c}") for c in rig.camera_names]
    sub = make_sub(ctx, sources, [b"pose2d/", b"pose3d", b"event/", b"stats/camera/"], rcvhwm=100_000)
    pub = make_pub(ctx, eps.bind("evaluator"))
    stop = [False]
    install_stop_handlers(stop)
    counters = ReceiveCounters()
    last = 0

    def publish(final: bool = False) -> None:
        stats = dict(ev.report(), ready=True, final=final)
        send_packet(pub, StatsPacket("evaluator", now_ns(), stats), block=False)

    while not stop[0]:
        if sub.poll(100):
            for pkt in recv_all(sub, counters):
                if isinstance(pkt, Keypoints2DPacket):
                    ev.add_pose2d(pkt)
                elif isinstance(pkt, Pose3DPacket):
                    ev.add_pose3d(pkt)
                elif isinstance(pkt, EventPacket):
                    ev.add_event(pkt)
                elif isinstance(pkt, StatsPacket) and ev.t0_ns is None and pkt.stats.get("t0_ns") is not None:
                    ev.t0_ns = int(pkt.stats["t0_ns"])  # cameras report it once the shared start is known
        if now_ns() - last > 1_000_000_000:
            publish()
            last = now_ns()
    publish(final=True)
    pub.setsockopt(zmq.LINGER, 1000)
    pub.close()
    sub.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
