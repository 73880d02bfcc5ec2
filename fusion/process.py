"""The fusion process: 2D keypoints of every camera in, 3D poses out.

    SUB pose2d/<camera> (inference workers) -> FrameSynchronizer -> triangulate -> KalmanFilter3D
    -> PUB pose3d (Pose3DPacket) and stats/fusion (StatsPacket)

`FusionPipeline` is the socket-free core (used by this process, and usable by replay and tests);
`main(argv)` wires it to ZeroMQ. This module imports no Qt, TensorFlow or torch.

Latency: every Pose3DPacket carries the frame set's capture time (`capture_ns`, on the shared
monotonic clock, see `ratrig.clock`) and per-stage stamps in `stamps_ns`:

    <upstream stage>   the latest value of that stamp among the views (e.g. when the slowest
                       camera's inference finished)
    fusion_first_in    arrival of the frame set's first view
    fusion_last_in     arrival of its last view
    fusion_set         when the synchroniser released the frame set
    fusion_triangulated, fusion_filtered, fusion_published
                       (prediction, triangulation and filter run as one compiled call, `fuse_kernel`:
                       fusion_triangulated marks its end; fusion_filtered after the floor points)

so a subscriber computes end-to-end latency as ``now_ns() - capture_ns`` and each stage's share
from the stamps. `filtered_mm` is the Kalman estimate extrapolated `predicted_ahead_ms` past the
capture time (0 = the estimate at capture time); `raw_mm` is the triangulation of this frame set.
"""
from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from fusion.floor import floor_points
from fusion.kalman import KalmanFilter3D, KalmanOptions, kalman_step_kernel, predict_kernel
from fusion.sync import FrameSet, FrameSynchronizer, SyncOptions
from fusion.triangulate import (
    RigGeometry,
    TriangulationOptions,
    triangulate_kernel,
)
from ratrig.camera import Calibration
from ratrig.clock import now_ns
from ratrig.messages import Keypoints2DPacket, Pose3DPacket, StatsPacket

log = logging.getLogger("fusion")

PROCESS_NAME = "fusion"


#: fuse_kernel's scalar settings, in the order of its `scalars` array
_SCALARS = (
    "min_likelihood", "weighted", "outlier_px", "max_error_px", "exhaustive_max", "greedy_k", "prior_ambiguity_mm",
    "max_iter", "tol", "meas_var0", "mm_per_px", "min_score", "init_vel_var", "gate2", "reinit_after",
    "max_coast_s", "max_speed", "two_view_factor", "report_max_var", "t_s", "dt", "lead_s",
)
_T_S, _DT, _LEAD_S = (_SCALARS.index(n) for n in ("t_s", "dt", "lead_s"))


@njit(cache=True, error_model="numpy")
def fuse_kernel(
    kmat, kinv, dist, ext, xyl, scalars, pos, vel, cov, active, last_update_s, rejections, cand, cand_t_s,
    accel_var, tau, gated_total, raw_xyz, raw_err, raw_n, raw_score, estimate,
):  # pragma: no cover - compiled
    """One frame set in one compiled call: the filter's prediction (the prior), `triangulate_kernel`
    (raw and prior-tracked), `kalman_step_kernel` on the tracked measurement, then the vague
    estimates set to NaN (`KalmanFilter3D.finish`). The same kernels as
    `KalmanFilter3D.predict_position`, `triangulate_tracked` and `KalmanFilter3D.step`, without
    round trips through Python (see their docstrings for the arguments).

    xyl (C, K, 3): x px, y px, likelihood per camera and keypoint (NaN = no view), as
    `FusionPipeline.frame_set_xyl` builds it. scalars (len(_SCALARS),) float64: the triangulation
    and filter settings, this step's time, dt and lead (report_max_var < 0: report every estimate).
    Writes raw_* (this frame set's triangulation; raw_n any integer dtype) and estimate (K, 3): the
    filter's estimate at the capture time, or predicted lead_s ahead when lead_s > 0. Few arguments
    on purpose: each costs Python ~0.13 us to pass, and scratch arrays are allocated here instead.
    """
    n_cams, n_kp = xyl.shape[0], xyl.shape[1]
    points_px = np.empty((n_cams, n_kp, 2))
    likelihood = np.empty((n_cams, n_kp))
    for c in range(n_cams):
        for k in range(n_kp):
            points_px[c, k, 0] = xyl[c, k, 0]
            points_px[c, k, 1] = xyl[c, k, 1]
            likelihood[c, k] = xyl[c, k, 2]
    min_likelihood, weighted, outlier_px, max_error_px = scalars[0], scalars[1] != 0.0, scalars[2], scalars[3]
    exhaustive_max, greedy_k, prior_ambiguity_mm = int(scalars[4]), int(scalars[5]), scalars[6]
    max_iter, tol = int(scalars[7]), scalars[8]
    meas_var0, mm_per_px, min_score, init_vel_var, gate2 = scalars[9], scalars[10], scalars[11], scalars[12], scalars[13]
    reinit_after, max_coast_s, max_speed, two_view_factor = int(scalars[14]), scalars[15], scalars[16], scalars[17]
    report_max_var, t_s, dt, lead_s = scalars[18], scalars[19], scalars[20], scalars[21]
    prior = np.empty((n_kp, 3))
    predict_kernel(pos, vel, cov, active, accel_var, tau, dt, prior_ambiguity_mm * prior_ambiguity_mm, prior)
    raw_used = np.empty((n_cams, n_kp), np.bool_)
    meas_xyz = np.empty((n_kp, 3))
    meas_err = np.empty(n_kp)
    meas_n = np.empty(n_kp, np.int64)
    meas_score = np.empty(n_kp)
    meas_used = np.empty((n_cams, n_kp), np.bool_)
    triangulate_kernel(
        kmat, kinv, dist, ext, points_px, likelihood, min_likelihood, weighted, outlier_px, max_error_px,
        exhaustive_max, greedy_k, prior, prior_ambiguity_mm, max_iter, tol, raw_xyz, raw_err, raw_n, raw_score,
        raw_used, meas_xyz, meas_err, meas_n, meas_score, meas_used,
    )
    filtered = np.empty((n_kp, 3))
    predicted = np.empty((n_kp, 3))
    var = np.empty((n_kp, 3))
    velo = np.empty((n_kp, 3))
    status = np.empty(n_kp, np.int8)
    kalman_step_kernel(
        pos, vel, cov, active, last_update_s, rejections, cand, cand_t_s, t_s, dt, meas_xyz, meas_err, meas_score,
        meas_n, accel_var, meas_var0, mm_per_px, min_score, init_vel_var, gate2, reinit_after, max_coast_s,
        max_speed, two_view_factor, tau, lead_s, filtered, predicted, var, velo, status, gated_total,
    )
    src = predicted if lead_s > 0.0 else filtered
    r = report_max_var
    for k in range(n_kp):
        # a NaN variance is vague too, as `KalmanFilter3D.finish` has it
        vague = r >= 0.0 and not (var[k, 0] <= r and var[k, 1] <= r and var[k, 2] <= r)
        for a in range(3):
            estimate[k, a] = np.nan if vague else src[k, a]


@dataclass(frozen=True, slots=True)
class FusionOptions:
    """Everything the pipeline needs besides the calibration and keypoint names.

    `predict_ahead_ms`: a number, or "auto" = the measured capture-to-publish latency (a running
    mean over the last `latency_window` frame sets).
    `keypoint_motion`: keypoint name -> (accel_noise_mm_s2, velocity_time_constant_s) of its Kalman
    motion model, overriding `kalman`'s for that keypoint.
    `floor_keypoints`: keypoints (the paws) that get a floor point (`fusion.floor`) in frame sets
    where one camera alone sees them; `floor_height_mm`: their keypoint's height when planted.
    """

    sync: SyncOptions
    triangulation: TriangulationOptions = TriangulationOptions()
    kalman: KalmanOptions = KalmanOptions()
    predict_ahead_ms: float | str = 0.0
    latency_window: int = 30
    keypoint_motion: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    floor_keypoints: tuple[str, ...] = ()
    floor_height_mm: float = 4.0


class FusionPipeline:
    """sync -> triangulate -> Kalman for one rig. No sockets, no clock: callers pass times in.

    Args:
        calibration: cameras in the rig's order (`load_calibration(path, rig.camera_names)`).
        keypoint_names: the pipeline's keypoints; 2D packets are matched to them by name.
        options: see FusionOptions.
    """

    def __init__(self, calibration: Calibration, keypoint_names: Sequence[str], options: FusionOptions) -> None:
        if not keypoint_names:
            raise ValueError("keypoint_names: expected at least one keypoint")
        pa = options.predict_ahead_ms
        if not (pa == "auto" or (isinstance(pa, (int, float)) and math.isfinite(pa) and pa >= 0)):
            raise ValueError(f"predict_ahead_ms: expected a number >= 0 or 'auto', got {pa!r}")
        self.calibration = calibration
        self.rig = RigGeometry.from_calibration(calibration)
        self.keypoint_names = tuple(keypoint_names)
        self.options = options
        self.sync = FrameSynchronizer(self.rig.camera_names, options.sync)
        for what, names in (("keypoint_motion", options.keypoint_motion), ("floor_keypoints", options.floor_keypoints)):
            unknown = set(names) - set(self.keypoint_names)
            if unknown:
                raise ValueError(f"{what}: unknown keypoints {sorted(unknown)}; keypoints are {list(self.keypoint_names)}")
        motion = [options.keypoint_motion.get(n) for n in self.keypoint_names]
        self._floor_idx = np.array([i for i, n in enumerate(self.keypoint_names) if n in options.floor_keypoints], np.int64)
        self.kalman = KalmanFilter3D(len(self.keypoint_names), options.kalman, motion)
        t = options.triangulation
        self._tri_args = (float(t.min_likelihood), bool(t.weighted), float(t.outlier_threshold_px),
                          float(t.max_reprojection_error_px), int(t.exhaustive_max_views), int(t.greedy_candidates),
                          float(t.prior_ambiguity_mm), int(t.undistort_max_iter), float(t.undistort_tol))
        self._cam_index = {c: i for i, c in enumerate(self.rig.camera_names)}
        # fuse_kernel's arguments that never change (the arrays are updated in place); `_scalars`
        # gets each frame set's time, dt and lead written into it
        kf, rig = self.kalman, self.rig
        accel_var, params, tau = kf.kernel_model()
        self._kernel_head = (rig.matrix, rig.matrix_inv, rig.dist, rig.extrinsic)
        self._kernel_tail = (*kf.kernel_state(), accel_var, tau, kf.gated_total)
        self._scalars = np.array([*self._tri_args, *params, kf.report_max_var(), 0.0, 0.0, 0.0], np.float64)
        assert self._scalars.shape == (len(_SCALARS),)
        self._has_floor = bool(self._floor_idx.size)
        self._nan_xyl = np.full((rig.n_cameras, len(self.keypoint_names), 3), np.nan)
        pa = options.predict_ahead_ms
        self._fixed_ahead_s = None if pa == "auto" else float(pa) * 1e-3
        self._kp_maps: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._latency_ms: deque[float] = deque(maxlen=options.latency_window)
        self._compute_us: deque[float] = deque(maxlen=300)
        self._published: deque[int] = deque(maxlen=300)  # publish times, for the rate
        self._latency_stats_ms: deque[float] = deque(maxlen=300)  # capture -> publish, for the stats
        self._views_used: deque[np.ndarray] = deque(maxlen=300)  # (K,) views per keypoint, recent frame sets
        self.unknown_keypoint_names: set[str] = set()
        self.bad_packets = 0

    # -- input -------------------------------------------------------------------------------------

    def add(self, packet: Keypoints2DPacket, arrival_ns: int) -> list[Pose3DPacket]:
        """Feed one camera's 2D result; returns the 3D poses of the frame sets it completes."""
        kp = packet.keypoints
        shape = kp.shape if isinstance(kp, np.ndarray) else np.shape(kp)
        if shape != (len(packet.keypoint_names), 3):
            self.bad_packets += 1
            log.warning("camera %s frame %s: keypoints shape %s does not match %d names, dropped",
                        packet.camera, packet.frame_index, shape, len(packet.keypoint_names))
            return self.poll(arrival_ns)
        sets = self.sync.add(packet.camera, packet.capture_ns, packet, arrival_ns)
        if not sets:
            return sets
        return [self._fuse(fs) for fs in sets]

    def warm_up(self) -> None:
        """Load (or compile) the compiled kernels now, on scratch copies of the state: the first frame
        set must not wait for them."""
        n_cams, n_kp = self.rig.n_cameras, len(self.keypoint_names)
        xyl = np.full((n_cams, n_kp, 3), np.nan)
        tail = tuple(a.copy() for a in self._kernel_tail)
        fuse_kernel(*self._kernel_head, xyl, self._scalars.copy(), *tail, np.empty((n_kp, 3)), np.empty(n_kp),
                    np.empty(n_kp, np.int8), np.empty(n_kp), np.empty((n_kp, 3)))

    def poll(self, now: int) -> list[Pose3DPacket]:
        """Frame sets whose deadline passed (late or dead cameras); call when idle."""
        return [self._fuse(fs) for fs in self.sync.poll(now)]

    def flush(self, now: int) -> list[Pose3DPacket]:
        return [self._fuse(fs) for fs in self.sync.flush(now)]

    # -- fusion ------------------------------------------------------------------------------------

    def _keypoint_map(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """-> (indices into the packet's rows, indices into our keypoints) for the shared names."""
        m = self._kp_maps.get(names)
        if m is None:
            ours = {n: i for i, n in enumerate(self.keypoint_names)}
            src = [i for i, n in enumerate(names) if n in ours]
            dst = [ours[names[i]] for i in src]
            unknown = set(names) - set(ours)
            if unknown - self.unknown_keypoint_names:
                log.warning("2D keypoints %s are not rig keypoints %s; ignored", sorted(unknown), list(self.keypoint_names))
                self.unknown_keypoint_names |= unknown
            m = (np.asarray(src, np.int64), np.asarray(dst, np.int64))
            self._kp_maps[names] = m
        return m

    def frame_set_xyl(self, fs: FrameSet) -> np.ndarray:
        """FrameSet -> (C, K, 3) x px, y px, likelihood per camera and keypoint, NaN for absent views
        and keypoints."""
        xyl = self._nan_xyl.copy()
        ours = self.keypoint_names
        cam_index = self._cam_index
        for cam, view in fs.views.items():
            pkt: Keypoints2DPacket = view.payload
            names = pkt.keypoint_names
            if names is ours or names == ours:  # the usual case: the model's keypoints are the rig's
                xyl[cam_index[cam]] = pkt.keypoints
            else:
                src, dst = self._keypoint_map(tuple(names))
                xyl[cam_index[cam], dst] = np.asarray(pkt.keypoints, np.float64)[src]
        return xyl

    def frame_set_arrays(self, fs: FrameSet) -> tuple[np.ndarray, np.ndarray]:
        """FrameSet -> (C, K, 2) points px and (C, K) likelihood, NaN for absent views/keypoints."""
        xyl = self.frame_set_xyl(fs)
        return xyl[:, :, :2], xyl[:, :, 2]

    def predict_ahead_s(self) -> float:
        if self.options.predict_ahead_ms == "auto":
            lat = self._latency_ms
            return sum(lat) / len(lat) * 1e-3 if lat else 0.0
        return float(self.options.predict_ahead_ms) * 1e-3

    def _fuse(self, fs: FrameSet) -> Pose3DPacket:
        t_start = now_ns()
        xyl = self.frame_set_xyl(fs)
        # one compiled call: the filter's prediction, then the triangulation twice in one pass --
        # raw_mm is a function of this frame set alone (replay reproduces it whichever moments the
        # live run skipped); the filter's measurement may differ where the outlier rejection had two
        # equally good camera subsets (a left/right swap): there the one continuing the track wins (a
        # prediction vaguer than the separation that counts as a swap cannot tell them apart) --
        # then the filter step on that measurement. Only the published arrays are new per frame set.
        n_kp = xyl.shape[1]
        ahead_s = self._fixed_ahead_s
        if ahead_s is None:
            ahead_s = self.predict_ahead_s()
        scalars = self._scalars
        scalars[_T_S], scalars[_DT] = self.kalman.advance_clock(fs.capture_ns)
        scalars[_LEAD_S] = ahead_s
        raw_xyz, raw_err, raw_n, raw_score = np.empty((n_kp, 3)), np.empty(n_kp), np.empty(n_kp, np.int8), np.empty(n_kp)
        estimate = np.empty((n_kp, 3))
        kmat, kinv, dist, ext = self._kernel_head
        fuse_kernel(kmat, kinv, dist, ext, xyl, scalars, *self._kernel_tail, raw_xyz, raw_err, raw_n, raw_score, estimate)
        t_tri = now_ns()  # triangulation and filter are one call now: both stamps at its end
        floor = None
        if self._has_floor:
            floor = np.full((n_kp, 3), np.nan)
            idx = self._floor_idx
            sub = xyl[:, idx]
            like = sub[:, :, 2]
            usable = np.isfinite(like) & (like >= self.options.triangulation.min_likelihood)
            floor[idx] = floor_points(self.rig, np.ascontiguousarray(sub[:, :, :2]), usable, self.options.floor_height_mm)
        t_filt = now_ns() if floor is not None else t_tri
        views = fs.views
        stamps: dict[str, int] = {}
        frame_indices = {}
        arrivals = []
        for cam, view in views.items():
            pkt = view.payload
            frame_indices[cam] = int(pkt.frame_index)
            arrivals.append(view.arrival_ns)
            upstream = pkt.stamps_ns
            if upstream:
                for stage, ns in upstream.items():  # each stage's latest stamp among the views
                    if ns > stamps.get(stage, -1):
                        stamps[stage] = int(ns)
        stamps["capture"] = capture = int(fs.capture_ns)
        stamps["fusion_first_in"] = int(min(arrivals))
        stamps["fusion_last_in"] = int(max(arrivals))
        stamps["fusion_set"] = int(fs.emitted_ns)
        stamps["fusion_triangulated"] = t_tri
        stamps["fusion_filtered"] = t_filt
        self._compute_us.append((t_filt - t_start) * 1e-3)
        self._views_used.append(raw_n)  # reduced in stats(), not per frame set
        names = self.rig.camera_names
        cameras = names if len(views) == len(names) else tuple(c for c in names if c in views)
        # positional, in field order: keywords cost a frozen dataclass ~1 us per frame set
        return Pose3DPacket(fs.index, capture, self.keypoint_names, cameras, raw_xyz, estimate, raw_err, raw_n,
                            raw_score, stamps, ahead_s * 1e3, frame_indices, floor)

    def published(self, pose: Pose3DPacket, published_ns: int) -> None:
        """Record that `pose` went out at `published_ns` (feeds the latency estimate and the rate)."""
        self._latency_ms.append((published_ns - pose.capture_ns) / 1e6)
        self._latency_stats_ms.append((published_ns - pose.capture_ns) / 1e6)
        self._published.append(published_ns)

    # -- statistics --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        s: dict[str, Any] = self.sync.counters.as_dict()
        pub = list(self._published)
        s["fps"] = (len(pub) - 1) / ((pub[-1] - pub[0]) * 1e-9) if len(pub) > 1 and pub[-1] > pub[0] else 0.0
        lat = np.asarray(self._latency_stats_ms, float)
        s["capture_to_3d_ms"] = (
            {"p50": float(np.median(lat)), "p99": float(np.percentile(lat, 99)), "mean": float(lat.mean())}
            if lat.size else None
        )
        # mean views per triangulated keypoint, averaged over the recent frame sets that had any
        per_set = [float(n.sum()) / k for n in self._views_used if (k := np.count_nonzero(n))]
        s["views_used_mean"] = float(np.mean(per_set)) if per_set else None
        cu = np.asarray(self._compute_us, float)
        s["compute_us_median"] = float(np.median(cu)) if cu.size else None
        s["predict_ahead_ms"] = self.predict_ahead_s() * 1e3
        s["gated"] = int(self.kalman.gated_total.sum())
        s["bad_packets"] = self.bad_packets
        s["pending_frame_sets"] = self.sync.pending
        s["clock_offsets_ns"] = self.sync.offsets_ns()
        return s


# ------------------------------------------------------------------------------------------------
# process


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig-fusion", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="rig TOML config (cameras, keypoints, [fusion], [calibration])")
    p.add_argument("--calibration", help="Anipose calibration.toml (overrides [calibration] file)")
    p.add_argument("--connect", action="append", default=None, metavar="ENDPOINT",
                   help="2D keypoint publisher to subscribe to (repeatable; default: the rig's inference workers)")
    p.add_argument("--bind", default=None, metavar="ENDPOINT", help="where to publish pose3d/stats (default: the rig's fusion port)")
    p.add_argument("--predict-ahead-ms", default=None, help="forward prediction in ms, or 'auto' (overrides [fusion])")
    p.add_argument("--estimate-clock-offsets", action="store_true",
                   help="estimate each camera's clock offset from arrival times (on top of cameras[].clock_offset_ms)")
    p.add_argument("--stats-interval", type=float, default=1.0, help="seconds between stats messages (default 1)")
    p.add_argument("--max-frame-sets", type=int, default=0, help="stop after this many frame sets (0: run until signalled)")
    p.add_argument("--standby", action="store_true",
                   help="hot standby for the supervisor (ratrig.standby): load everything, connect to the workers, "
                        "then wait for a 'takeover' line on stdin before subscribing and binding --bind")
    p.add_argument("--log-level", default="INFO")
    return p


def options_from_config(
    rig: Any, predict_ahead_ms: float | str | None = None, estimate_clock_offsets: bool = False
) -> FusionOptions:
    """FusionOptions from a `ratrig.config.RigConfig` ([fusion] section and camera fps/clock offsets)."""
    f = rig.fusion
    period_ns = int(round(1e9 / max(c.fps for c in rig.cameras)))
    sync = SyncOptions(
        frame_period_ns=period_ns,
        tolerance_ns=None if f.tolerance_ms is None else int(f.tolerance_ms * 1e6),
        max_wait_ns=None if f.max_wait_ms is None else int(f.max_wait_ms * 1e6),
        clock_offsets_ns={c.name: int(round(c.clock_offset_ms * 1e6)) for c in rig.cameras if c.clock_offset_ms},
        estimate_offsets=estimate_clock_offsets,
    )
    tri = TriangulationOptions(min_likelihood=f.min_likelihood, outlier_threshold_px=f.outlier_threshold_px)
    kal = KalmanOptions(
        accel_noise_mm_s2=f.process_noise, gate_sigma=f.gate_sigma, max_coast_s=f.max_coast_ms * 1e-3,
        velocity_time_constant_s=f.velocity_time_constant_ms * 1e-3, report_max_sigma_mm=f.max_sigma_mm,
    )
    motion = {
        kp: (float(m.get("process_noise", f.process_noise)),
             float(m.get("velocity_time_constant_ms", f.velocity_time_constant_ms)) * 1e-3)
        for kp, m in f.keypoint_motion.items()
    }
    ahead = f.predict_ahead_ms if predict_ahead_ms is None else predict_ahead_ms
    return FusionOptions(sync=sync, triangulation=tri, kalman=kal, predict_ahead_ms=ahead, keypoint_motion=motion,
                         floor_keypoints=tuple(f.floor_keypoints), floor_height_mm=f.floor_height_mm)


def _parse_ahead(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--predict-ahead-ms: expected a number or 'auto', got {value!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fusion process until SIGTERM/SIGINT (or --max-frame-sets). Returns the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s fusion %(levelname)s %(message)s")

    import zmq

    from ratrig.camera import CalibrationError, load_calibration
    from ratrig.config import ConfigError, Endpoints, load_config
    from ratrig.messages import with_stamp
    from ratrig.standby import bind_when_free, wait_for_takeover
    from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

    try:
        rig = load_config(args.config)
        calib_path = args.calibration or rig.resolve(rig.calibration.file)
        if not calib_path:
            raise CalibrationError(
                f"{args.config}: [calibration] file is empty and no --calibration given; fusion needs the rig's "
                "calibration.toml (for the synthetic rig: `ratrig synth calibration OUT`)"
            )
        calibration = load_calibration(calib_path, rig.camera_names)
        try:
            options = options_from_config(rig, _parse_ahead(args.predict_ahead_ms), args.estimate_clock_offsets)
        except ValueError as e:
            raise ValueError(f"{args.config}: [fusion]: {e}") from None
        pipeline = FusionPipeline(calibration, rig.keypoints, options)
    except (ConfigError, CalibrationError, ValueError) as e:
        print(f"fusion: {e}", file=sys.stderr)
        return 2

    endpoints = Endpoints(rig)
    connects = args.connect or [endpoints.connect(f"inference/{j}") for j in range(len(rig.worker_groups()))]
    bind = args.bind or endpoints.bind("fusion")

    stop = {"signal": None}

    def _on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    ctx = zmq.Context()
    try:
        if args.standby:
            # a hot standby: connected (no topic yet: nothing flows), kernels loaded; the port is the
            # running fusion's until the supervisor says it died
            started = time.monotonic()
            sub = make_sub(ctx, connects, topics=[], rcvhwm=10_000)
            pipeline.warm_up()
            log.info("hot standby ready after %.2f s; waiting to take over", time.monotonic() - started)
            if not wait_for_takeover(lambda: stop["signal"] is not None):
                sub.close(0)
                return 0
            sub.setsockopt(zmq.SUBSCRIBE, b"pose2d/")
            try:
                pub = bind_when_free(lambda: make_pub(ctx, bind))
            except OSError as e:
                print(f"fusion: {e}", file=sys.stderr)
                return 2
            log.info("took over: subscribed to %s, publishing on %s", connects, bind)
        else:
            try:
                pub = make_pub(ctx, bind)
            except OSError as e:
                print(f"fusion: {e}", file=sys.stderr)
                return 2
            sub = make_sub(ctx, connects, topics=[b"pose2d/"], rcvhwm=10_000)
            log.info("subscribed to %s, publishing on %s, cameras %s", connects, bind, list(calibration.names))
            # warm the numba kernels (loaded from cache, or compiled once) before data flows
            pipeline.warm_up()
        counters = ReceiveCounters()

        published = 0
        other = 0
        # a standby that took over says so at once (the session's stats show the new pid)
        next_stats = time.monotonic() + (0.0 if args.standby else args.stats_interval)

        def publish(poses: list[Pose3DPacket]) -> None:
            nonlocal published
            for pose in poses:
                t = now_ns()
                pose = with_stamp(pose, "fusion_published", t)
                send_packet(pub, pose)
                pipeline.published(pose, t)
                published += 1

        while stop["signal"] is None:
            if sub.poll(5) & zmq.POLLIN:
                for _ in range(1000):
                    packet = recv_packet(sub, counters, zmq.NOBLOCK)
                    if packet is None:
                        if not sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                            break
                        continue
                    if not isinstance(packet, Keypoints2DPacket):
                        other += 1
                        continue
                    publish(pipeline.add(packet, now_ns()))
            publish(pipeline.poll(now_ns()))
            if time.monotonic() >= next_stats:
                stats = pipeline.stats()
                stats.update(malformed=counters.malformed, other_messages=other, published=published)
                send_packet(pub, StatsPacket(PROCESS_NAME, now_ns(), stats))
                next_stats = time.monotonic() + args.stats_interval
            if args.max_frame_sets and published >= args.max_frame_sets:
                break
        final = pipeline.stats()
        final.update(malformed=counters.malformed, other_messages=other, published=published)
        send_packet(pub, StatsPacket(PROCESS_NAME, now_ns(), final))
        log.info("stopping (%s): %s", "signal %s" % stop["signal"] if stop["signal"] else "done", final)
        sub.close(0)
        pub.close(0)
        return 0
    finally:
        ctx.term()
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
