"""One inference worker: camera frames in, 2D keypoints out, always on the newest moment.

    python -m inference.worker --config RIG.toml --worker J [--duration S]

Worker J serves the cameras `RigConfig.worker_groups()[J]`. It subscribes to each camera's
`frame/<camera>` (one SUB socket per camera, connected to `Endpoints(rig).connect("camera/<name>")`;
with ``[network] shared_memory = true`` to `frameref/<camera>` instead, and runs the model on the
frame in place in the camera's shared-memory ring, dropping a frame the camera overwrote before its
result went out: `lapped` in the stats),
drains every socket to its newest frame (`ratrig.transport.drain_newest`), picks the newest complete
moment of its cameras (`inference.moments`), runs the model once for that moment (batched where the
model allows it, `inference.engines`) and publishes one `Keypoints2DPacket` per camera on
`pose2d/<camera>` from a PUB bound at `Endpoints(rig).bind("inference/J")`, with "received" and
"inferred" stamps added to the frame's stamps. About every 0.5 s it publishes a `StatsPacket`
(`stats/inference/J`). It writes no files.

Exit codes: 0 clean stop (SIGTERM/SIGINT or --duration), 2 bad arguments, config or model (the model is
checked before any socket is opened).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from inference.engines import ModelError, ModelInfo, PoseEstimator, build_estimator, check_model, to_pipeline
from inference.moments import MomentSelector, PendingFrame
from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, RigConfig, load_config
from ratrig.messages import FramePacket, FrameRefPacket, Keypoints2DPacket, StatsPacket
from ratrig.shmring import FrameRingReader, FrameView, RingError, ring_name
from ratrig.stats import LatencyWindow, RateMeter, install_stop_handlers
from ratrig.transport import ReceiveCounters, drain_newest, make_pub, make_sub, send_packet

log = logging.getLogger("ratrig.inference")

STATS_PERIOD_NS = 500_000_000
POLL_MS = 20


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference.worker", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="rig TOML file")
    p.add_argument("--worker", type=int, required=True, help="worker index J into RigConfig.worker_groups()")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--bind", default=None, help="override the PUB endpoint")
    return p.parse_args(None if argv is None else list(argv))


def moment_timing(rig: RigConfig, cameras: Sequence[str]) -> tuple[int, int, int]:
    """(tolerance, max wait, dead-after) in ns for a group of cameras.

    Tolerance: half a frame period of the fastest camera. Max wait: inference.moment_wait_ms, default
    one period. Dead after: inference.camera_timeout_s, default max(0.5 s, 5 periods).
    """
    fps = max(c.fps for c in rig.cameras if c.name in cameras)
    period_ns = int(1e9 / fps)
    inf = rig.inference
    wait_ns = period_ns if inf.moment_wait_ms is None else int(inf.moment_wait_ms * 1e6)
    dead_ns = max(500_000_000, 5 * period_ns) if inf.camera_timeout_s is None else int(inf.camera_timeout_s * 1e9)
    return period_ns // 2, wait_ns, dead_ns


class CameraStats:
    """Counters and latency windows of one camera, reported in the worker's StatsPacket."""

    def __init__(self) -> None:
        self.counters = ReceiveCounters()
        self.inferred = 0
        self.failed = 0  # taken for inference, but the model raised
        self.published_skips = 0  # skips already reported in a Keypoints2DPacket
        self.transport_ms = LatencyWindow(maxlen=5000)
        self.capture_to_2d_ms = LatencyWindow(maxlen=5000)
        self.last_capture_ns: int | None = None
        self.lapped = 0  # shared-memory frames the camera overwrote before (or while) they were run
        self.ring_errors = 0  # frame refs whose ring could not be attached


def _pct(window: LatencyWindow) -> dict[str, float] | None:
    s = window.summary()
    return None if s is None else {"p50": s["p50"], "p99": s["p99"]}


class Worker:
    """The receive -> select -> infer -> publish loop, separated from process set-up for tests."""

    def __init__(self, rig: RigConfig, index: int, info: ModelInfo, estimator: PoseEstimator,
                 subs: dict[str, zmq.Socket], pub: zmq.Socket) -> None:
        self.rig = rig
        self.index = index
        self.process = f"inference/{index}"
        self.cameras = list(subs)
        self.info = info
        self.estimator = estimator
        self.subs = subs
        self.pub = pub
        tol, wait, dead = moment_timing(rig, self.cameras)
        self.selector = MomentSelector(self.cameras, tol, wait, dead, start_ns=now_ns())
        self.cam_stats = {c: CameraStats() for c in self.cameras}
        self.poller = zmq.Poller()
        for s in subs.values():
            self.poller.register(s, zmq.POLLIN)
        self.infer_ms = LatencyWindow(maxlen=5000)
        self.rate = RateMeter()
        self.moments = 0
        self.errors = 0
        self.last_error = ""
        self._last_stats_ns = 0
        self.rings: dict[str, FrameRingReader] = {}  # camera -> its ring (shared-memory mode)
        # a camera's rings are named for this session and camera (ratrig.shmring.ring_name + its pid)
        self._ring_prefix = {c: ring_name(rig.network.base_port, c, 0)[:-1] for c in self.cameras}
        self._views: dict[str, dict[int, FrameView]] = {}  # camera -> ring sequence -> frame in place

    def receive(self, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for frames, then drain every socket to its newest frame."""
        ready = dict(self.poller.poll(timeout_ms))
        for cam, sock in self.subs.items():
            if sock not in ready:
                continue
            st = self.cam_stats[cam]
            for packet in drain_newest(sock, st.counters).values():
                received = now_ns()
                if isinstance(packet, FrameRefPacket) and packet.camera == cam:
                    packet = self._from_ring(packet, st)
                    if packet is None:
                        continue
                if not isinstance(packet, FramePacket) or packet.camera != cam:
                    st.counters.malformed += 1
                    log.warning("%s: unexpected %s message on camera %s's socket", self.process,
                                type(packet).__name__, cam)
                    continue
                st.transport_ms.add((received - packet.capture_ns) / 1e6)
                self.selector.add(cam, PendingFrame(packet, received))

    def _from_ring(self, ref: FrameRefPacket, st: CameraStats) -> FramePacket | None:
        """A FramePacket whose image is the frame in place in its camera's ring (no copy), or None
        if the ring cannot be read or the camera already overwrote the frame (counted)."""
        if not ref.ring.startswith(self._ring_prefix[ref.camera]):
            st.ring_errors += 1
            if st.ring_errors <= 5:
                log.error("%s: camera %s announces ring %r, expected one named %s<pid>", self.process, ref.camera,
                          ref.ring[:80], self._ring_prefix[ref.camera])
            return None
        reader = self.rings.get(ref.camera)
        if reader is None or reader.name != ref.ring:  # first frame, or a restarted camera's new ring
            if reader is not None:
                reader.close()
                del self.rings[ref.camera]
            try:
                reader = FrameRingReader(ref.ring)
            except RingError as e:
                st.ring_errors += 1
                if st.ring_errors <= 5:
                    log.error("%s: %s", self.process, e)
                return None
            self.rings[ref.camera] = reader
        if reader.shape != (ref.height, ref.width, ref.channels):
            st.ring_errors += 1
            if st.ring_errors <= 5:
                log.error("%s: camera %s announces %dx%dx%d frames, its ring %s holds %dx%dx%d", self.process,
                          ref.camera, ref.height, ref.width, ref.channels, reader.name, *reader.shape)
            return None
        try:
            view = reader.view(ref.slot, ref.sequence)
        except RingError:  # Lapped, or a slot/sequence that does not fit the ring
            st.lapped += 1
            return None
        views = self._views.setdefault(ref.camera, {})
        views[ref.sequence] = view
        for seq in [s for s in views if s <= ref.sequence - reader.slots]:  # overwritten by now: forget
            del views[seq]
        return FramePacket(ref.camera, ref.frame_index, ref.capture_ns, view.image,
                           {**ref.stamps_ns, "ring_sequence": int(ref.sequence)})

    def _intact(self, cam: str, packet: FramePacket) -> bool:
        """False if `packet`'s pixels came from a ring slot the camera has overwritten since."""
        seq = packet.stamps_ns.get("ring_sequence")
        if seq is None:
            return True
        view = self._views.get(cam, {}).get(seq)
        return view is not None and view.intact()

    def step(self) -> bool:
        """Run the newest moment if one is ready. True if something was run."""
        moment = self.selector.take(now_ns())
        if not moment:
            return False
        if self.rings:
            # frames in rings are used in place: forget the views older than the ones taken (the
            # selector never goes back), and leave out views the camera overwrote while they waited
            for c, pf in moment.items():
                taken = pf.packet.stamps_ns.get("ring_sequence")
                views = self._views.get(c)
                if taken is not None and views:
                    for seq in [s for s in views if s < taken]:
                        del views[seq]
            for c in [c for c, pf in moment.items() if not self._intact(c, pf.packet)]:
                self.cam_stats[c].lapped += 1
                del moment[c]
            if not moment:
                return True
        cams = list(moment)
        frames = [moment[c].packet.image for c in cams]
        t0 = now_ns()
        try:
            poses = self.estimator.infer(cams, frames)
        except Exception as e:  # a bad frame must not stop the worker; it is counted and reported
            self.errors += 1
            for c in cams:
                self.cam_stats[c].failed += 1
            self.last_error = f"{type(e).__name__}: {e}"
            if self.errors <= 5 or self.errors % 100 == 0:
                log.error("%s: inference failed on %s (%d errors so far): %s", self.process, cams, self.errors, e)
            return True
        inferred = now_ns()
        self.infer_ms.add((inferred - t0) / 1e6)
        self.moments += 1
        self.rate.tick()
        for cam, pose in zip(cams, poses):
            pf = moment[cam]
            st = self.cam_stats[cam]
            if not self._intact(cam, pf.packet):  # overwritten during inference: the pose may be of a torn frame
                st.lapped += 1
                continue
            skipped_total = st.counters.skipped + self.selector.skipped[cam]
            stamps = dict(pf.packet.stamps_ns)
            stamps.pop("ring_sequence", None)  # the worker's own bookkeeping, not a stage time
            stamps["received"] = pf.received_ns
            stamps["inferred"] = inferred
            out = Keypoints2DPacket(
                camera=cam, frame_index=int(pf.packet.frame_index), capture_ns=int(pf.packet.capture_ns),
                keypoint_names=self.info.keypoints, keypoints=to_pipeline(pose, self.info), stamps_ns=stamps,
                skipped_frames=int(skipped_total - st.published_skips),
            )
            st.published_skips = skipped_total
            st.inferred += 1
            st.capture_to_2d_ms.add((inferred - pf.capture_ns) / 1e6)
            st.last_capture_ns = pf.capture_ns
            send_packet(self.pub, out, block=False)
        return True

    def stats(self, final: bool = False) -> dict[str, Any]:
        now = now_ns()
        alive = set(self.selector.alive(now))
        per_cam = {}
        for cam, st in self.cam_stats.items():
            per_cam[cam] = {
                "received": st.counters.received,
                "inferred": st.inferred,
                "skipped": st.counters.skipped + self.selector.skipped[cam],
                "failed": st.failed,
                "pending": self.selector.pending_count(cam),
                "malformed": st.counters.malformed,
                "transport_latency_ms": _pct(st.transport_ms),
                "capture_to_2d_ms": _pct(st.capture_to_2d_ms),
                "alive": cam in alive,
                "lapped": st.lapped,
                "ring_errors": st.ring_errors,
            }
        return {
            "worker": self.index, "cameras": per_cam, "engine": self.info.engine,
            "model": self.info.path, "model_sha256": self.info.sha256, "batched": bool(self.estimator.batched),
            "moments": self.moments, "partial_moments": self.selector.partial_moments,
            "moments_per_s": self.rate.recent_rate(), "inference_ms": _pct(self.infer_ms),
            "errors": self.errors, "last_error": self.last_error, "ready": True, "final": final,
        }

    def publish_stats(self, final: bool = False) -> None:
        send_packet(self.pub, StatsPacket(process=self.process, sent_ns=now_ns(), stats=self.stats(final)), block=False)
        self._last_stats_ns = now_ns()

    def close_rings(self) -> None:
        self._views.clear()
        for reader in self.rings.values():
            reader.close()
        self.rings.clear()

    def run(self, stop: list[bool], duration_s: float | None = None) -> None:
        end_ns = None if duration_s is None else now_ns() + int(duration_s * 1e9)
        while not stop[0] and (end_ns is None or now_ns() < end_ns):
            self.receive(POLL_MS)
            if not self.step():
                # Nothing complete yet: wait a little for the rest of the moment, without spinning.
                self.receive(1)
                self.step()
            if now_ns() - self._last_stats_ns > STATS_PERIOD_NS:
                self.publish_stats()


def _warm_up(estimator: PoseEstimator, rig: RigConfig, cameras: Sequence[str]) -> None:
    """First inference is slow (graph/session set-up); run it on blank frames before frames arrive."""
    cams = {c.name: c for c in rig.cameras}
    frames = [np.zeros((cams[c].height, cams[c].width, 3), np.uint8) for c in cameras]
    estimator.infer(list(cameras), frames)
    # Reset dynamic-cropping state learnt from the blank frames.
    for prep in getattr(estimator, "_prep", {}).values():
        prep.pose = None
        prep.dynamic_cropping = None
    for live in getattr(estimator, "_live", {}).values():
        live.pose = None
        live.dynamic_cropping = None


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        rig = load_config(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    groups = rig.worker_groups()
    if not 0 <= args.worker < len(groups):
        log.error("%s: --worker %d out of range; the config has %d inference worker(s): %s",
                  args.config, args.worker, len(groups), groups)
        return 2
    cameras = groups[args.worker]
    try:
        info = check_model(rig.inference, rig.keypoints)
        estimator = build_estimator(info, rig.inference, cameras)
        _warm_up(estimator, rig, cameras)
    except ModelError as e:
        log.error("%s", e)
        return 2
    log.info("inference/%d: cameras %s, %s model %s (sha256 %s), %s", args.worker, cameras, info.engine,
             info.path, info.sha256[:12], "batched" if estimator.batched else "dlclive per frame")

    stop = [False]
    install_stop_handlers(stop)
    ctx = zmq.Context()
    endpoints = Endpoints(rig)
    pub = None
    subs: dict[str, zmq.Socket] = {}
    try:
        pub = make_pub(ctx, args.bind or endpoints.bind(f"inference/{args.worker}"), sndhwm=200)
        # shared-memory mode: the frames' ring references instead of the frames (same host only)
        topic = b"frameref/" if rig.network.shared_memory else b"frame/"
        for cam in cameras:
            # A small receive queue: the worker only ever wants the newest frame.
            subs[cam] = make_sub(ctx, [endpoints.connect(f"camera/{cam}")], [topic + cam.encode()], rcvhwm=4)
        worker = Worker(rig, args.worker, info, estimator, subs, pub)
        try:
            worker.run(stop, args.duration)
            worker.publish_stats(final=True)
        finally:
            worker.close_rings()
    except OSError as e:
        log.error("%s", e)
        return 2
    finally:
        for s in subs.values():
            s.close(0)
        if pub is not None:
            pub.setsockopt(zmq.LINGER, 500)
            pub.close()
        estimator.close()
        ctx.term()
        time.sleep(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
