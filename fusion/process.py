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
    TriangulationResult,
    triangulate_kernel,
)
from ratrig.camera import Calibration
from ratrig.clock import now_ns
from ratrig.messages import Keypoints2DPacket, Pose3DPacket, StatsPacket

log = logging.getLogger("fusion")

PROCESS_NAME = "fusion"


@njit(cache=True, error_model="numpy")
def fuse_kernel(
    kmat, kinv, dist, ext, points_px, likelihood, min_likelihood, weighted, outlier_px, max_error_px, exhaustive_max,
    greedy_k, prior_ambiguity_mm, max_iter, tol, pos, vel, cov, active, last_update_s, rejections, cand, cand_t_s,
    t_s, dt, accel_var, meas_var0, mm_per_px, min_score, init_vel_var, gate2, reinit_after, max_coast_s, max_speed,
    two_view_factor, tau, lead_s, gated_total, prior, raw_xyz, raw_err, raw_n, raw_score, raw_used, meas_xyz,
    meas_err, meas_n, meas_score, meas_used, filtered, predicted, var, velo, status,
):  # pragma: no cover - compiled
    """One frame set in one compiled call: the filter's prediction (the prior), `triangulate_kernel`
    (raw and prior-tracked), `kalman_step_kernel` on the tracked measurement. The same kernels as
    `KalmanFilter3D.predict_position`, `triangulate_tracked` and `KalmanFilter3D.step`, without
    three round trips through Python (see their docstrings for the arguments)."""
    predict_kernel(pos, vel, cov, active, accel_var, tau, dt, prior_ambiguity_mm * prior_ambiguity_mm, prior)
    triangulate_kernel(
        kmat, kinv, dist, ext, points_px, likelihood, min_likelihood, weighted, outlier_px, max_error_px,
        exhaustive_max, greedy_k, prior, prior_ambiguity_mm, max_iter, tol, raw_xyz, raw_err, raw_n, raw_score,
        raw_used, meas_xyz, meas_err, meas_n, meas_score, meas_used,
    )
    kalman_step_kernel(
        pos, vel, cov, active, last_update_s, rejections, cand, cand_t_s, t_s, dt, meas_xyz, meas_err, meas_score,
        meas_n, accel_var, meas_var0, mm_per_px, min_score, init_vel_var, gate2, reinit_after, max_coast_s,
        max_speed, two_view_factor, tau, lead_s, filtered, predicted, var, velo, status, gated_total,
    )


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
        shape = np.shape(packet.keypoints)
        if shape != (len(packet.keypoint_names), 3):
            self.bad_packets += 1
            log.warning("camera %s frame %s: keypoints shape %s does not match %d names, dropped",
                        packet.camera, packet.frame_index, shape, len(packet.keypoint_names))
            return self.poll(arrival_ns)
        sets = self.sync.add(packet.camera, packet.capture_ns, packet, arrival_ns)
        return [self._fuse(fs) for fs in sets] if sets else []

    def warm_up(self) -> None:
        """Load (or compile) the compiled kernels now, on scratch copies of the state: the first frame
        set must not wait for them."""
        kf = self.kalman
        n_cams, n_kp = self.rig.n_cameras, len(self.keypoint_names)
        pts = np.full((n_cams, n_kp, 2), np.nan)
        like = np.full((n_cams, n_kp), np.nan)
        state = tuple(a.copy() for a in kf.kernel_state())
        accel_var, params, tau = kf.kernel_model()
        outs = [np.empty((n_kp, 3)), np.empty(n_kp), np.empty(n_kp, np.int64), np.empty(n_kp),
                np.empty((n_cams, n_kp), np.bool_)] * 2
        fuse_kernel(self.rig.matrix, self.rig.matrix_inv, self.rig.dist, self.rig.extrinsic, pts, like,
                    *self._tri_args, *state, 0.0, 0.0, accel_var, *params, tau, 0.0, kf.gated_total.copy(),
                    np.empty((n_kp, 3)), *outs, *kf.new_output())

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

    def frame_set_arrays(self, fs: FrameSet) -> tuple[np.ndarray, np.ndarray]:
        """FrameSet -> (C, K, 2) points px and (C, K) likelihood, NaN for absent views/keypoints."""
        xyl = np.full((self.rig.n_cameras, len(self.keypoint_names), 3), np.nan)
        ours = self.keypoint_names
        for cam, view in fs.views.items():
            pkt: Keypoints2DPacket = view.payload
            c = self._cam_index[cam]
            names = pkt.keypoint_names
            if names is ours or names == ours:  # the usual case: the model's keypoints are the rig's
                xyl[c] = pkt.keypoints
            else:
                src, dst = self._keypoint_map(tuple(names))
                xyl[c, dst] = np.asarray(pkt.keypoints, np.float64)[src]
        return xyl[:, :, :2], xyl[:, :, 2]

    def predict_ahead_s(self) -> float:
        if self.options.predict_ahead_ms == "auto":
            lat = self._latency_ms
            return sum(lat) / len(lat) * 1e-3 if lat else 0.0
        return float(self.options.predict_ahead_ms) * 1e-3

    def _fuse(self, fs: FrameSet) -> Pose3DPacket:
        t_start = now_ns()
        pts, like = self.frame_set_arrays(fs)
        # one compiled call: the filter's prediction, then the triangulation twice in one pass --
        # raw_mm is a function of this frame set alone (replay reproduces it whichever moments the
        # live run skipped); the filter's measurement may differ where the outlier rejection had two
        # equally good camera subsets (a left/right swap): there the one continuing the track wins (a
        # prediction vaguer than the separation that counts as a swap cannot tell them apart) --
        # then the filter step on that measurement
        rig, kf = self.rig, self.kalman
        n_cams, n_kp = pts.shape[:2]
        pts = np.ascontiguousarray(pts)
        like = np.ascontiguousarray(like)
        ahead_s = self.predict_ahead_s()
        t_s, dt = kf.advance_clock(fs.capture_ns)
        accel_var, params, tau = kf.kernel_model()
        prior = np.empty((n_kp, 3))
        raw = (np.empty((n_kp, 3)), np.empty(n_kp), np.empty(n_kp, np.int64), np.empty(n_kp),
               np.empty((n_cams, n_kp), np.bool_))
        meas = (np.empty((n_kp, 3)), np.empty(n_kp), np.empty(n_kp, np.int64), np.empty(n_kp),
                np.empty((n_cams, n_kp), np.bool_))
        out = kf.new_output()
        fuse_kernel(rig.matrix, rig.matrix_inv, rig.dist, rig.extrinsic, pts, like, *self._tri_args,
                    *kf.kernel_state(), t_s, dt, accel_var, *params, tau, ahead_s, kf.gated_total, prior,
                    *raw, *meas, *out)
        tri = TriangulationResult(*raw)
        kf_out = kf.finish(*out)
        t_tri = now_ns()  # triangulation and filter are one call now: both stamps at its end
        floor = None
        if self._floor_idx.size:
            floor = np.full((len(self.keypoint_names), 3), np.nan)
            idx = self._floor_idx
            usable = np.isfinite(like[:, idx]) & (like[:, idx] >= self.options.triangulation.min_likelihood)
            floor[idx] = floor_points(self.rig, pts[:, idx], usable, self.options.floor_height_mm)
        t_filt = now_ns() if floor is not None else t_tri
        views = fs.views
        stamps: dict[str, int] = {}
        first_in = last_in = None
        for view in views.values():
            for stage, ns in view.payload.stamps_ns.items():
                if ns > stamps.get(stage, -1):
                    stamps[stage] = int(ns)
            a = view.arrival_ns
            if first_in is None or a < first_in:
                first_in = a
            if last_in is None or a > last_in:
                last_in = a
        stamps.update(
            capture=int(fs.capture_ns), fusion_first_in=int(first_in), fusion_last_in=int(last_in),
            fusion_set=int(fs.emitted_ns), fusion_triangulated=t_tri, fusion_filtered=t_filt,
        )
        self._compute_us.append((t_filt - t_start) / 1e3)
        n_cameras = tri.n_cameras.astype(np.int8)
        self._views_used.append(n_cameras)  # reduced in stats(), not per frame set
        names = self.rig.camera_names
        return Pose3DPacket(
            frame_set_index=fs.index,
            capture_ns=int(fs.capture_ns),
            keypoint_names=self.keypoint_names,
            cameras=names if len(views) == len(names) else tuple(c for c in names if c in views),
            raw_mm=tri.points_mm,
            filtered_mm=kf_out.predicted_mm if ahead_s > 0 else kf_out.filtered_mm,
            reprojection_error_px=tri.reprojection_error_px,
            n_cameras=n_cameras,
            score=tri.score,
            stamps_ns=stamps,
            predicted_ahead_ms=ahead_s * 1e3,
            frame_indices={c: int(v.payload.frame_index) for c, v in views.items()},
            floor_mm=floor,
        )

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
        try:
            pub = make_pub(ctx, bind)
        except OSError as e:
            print(f"fusion: {e}", file=sys.stderr)
            return 2
        sub = make_sub(ctx, connects, topics=[b"pose2d/"], rcvhwm=10_000)
        counters = ReceiveCounters()
        log.info("subscribed to %s, publishing on %s, cameras %s", connects, bind, list(calibration.names))
        # warm the numba kernels (loaded from cache, or compiled once) before data flows
        pipeline.warm_up()

        published = 0
        other = 0
        next_stats = time.monotonic() + args.stats_interval

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
