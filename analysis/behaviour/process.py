"""The live behaviour stage: fused 3D poses in, behaviour features and segmentation out.

    python -m analysis.behaviour.process --config rig.toml [--fusion tcp://127.0.0.1:5630]
                                         [--bind tcp://127.0.0.1:5637] [--model segmenter.npz]

Subscribes to ``pose3d`` (every frame set, in order: the windows must see every frame), keeps the
last `[behaviour] long_window_s` of frames in a ring buffer, runs the feature kernel
(`analysis.behaviour.features`) on the window ending at each frame set and one forward step of the
HMM, and publishes a BehaviourPacket on ``behaviour/<name>`` (default ``behaviour/segment``) for every
frame set. Without a saved model (`[behaviour] model` or --model) it fits the HMM on the features of
the first `warmup_s` seconds (longer until there are 20 usable frame sets per state) in a background
thread and freezes it; states are -1 until the model is ready, then the filter is run over the frame
sets that came meanwhile, so from there on the states equal the offline run's. `stats/behaviour`
every `stats_interval_s`: frame sets, rate, capture -> behaviour latency (p50/p99 ms), kernel time,
fit time, the first frame set with a state, state counts.

The offline run that equals this stage's output on the same frames is
`analysis.behaviour.offline.live_equivalent`. SIGTERM/SIGINT end it cleanly (status 0); a bad config
or model exits with status 2 and a message naming the file and key.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError
from typing import Any

import numpy as np
import zmq

from analysis.behaviour.features import FEATURE_NAMES, FeatureWindow
from analysis.behaviour.offline import BehaviourParams
from analysis.behaviour.segment import MIN_FRAMES_PER_STATE, Segmenter, usable_frames
from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, load_config
from ratrig.messages import BehaviourPacket, Pose3DPacket, StatsPacket
from ratrig.stats import LatencyWindow, RateMeter
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

log = logging.getLogger("behaviour")


class BehaviourStage:
    """Features + causal segmentation for a stream of Pose3DPackets (no sockets: `main` owns those).

    Without a model, the HMM is fitted on the warm-up frames in a background thread (`background_fit`)
    while frame sets keep flowing with state -1; when the fit is done, the forward filter is run over
    the frame sets that arrived meanwhile (from the warm-up's end, exactly as the offline run does), so
    from then on states and posteriors equal `offline.live_equivalent` bit for bit. With
    `background_fit=False` the fit runs in the loop (one stall, no state -1 after the warm-up).

    Args:
        params: window lengths, states, warm-up.
        segmenter: a fitted model, or None to fit one on the first `params.warmup_s` of frames.
        name: the message name (topic ``behaviour/<name>``).
        coords: "filtered" (the Kalman estimate, default) or "raw" (triangulated) positions.
        background_fit: fit in a thread (default) or in the loop.
    """

    def __init__(self, params: BehaviourParams, segmenter: Segmenter | None = None, name: str = "segment",
                 coords: str = "filtered", background_fit: bool = True) -> None:
        if coords not in ("filtered", "raw"):
            raise ValueError(f"BehaviourStage.coords: expected 'filtered' or 'raw', got {coords!r}")
        self.params = params
        self.segmenter = segmenter
        self.name = name
        self.coords = coords
        self.background_fit = background_fit
        self._window: FeatureWindow | None = None
        self._names: tuple[str, ...] | None = None
        self._t0_ns: int | None = None
        self._warm: list[np.ndarray] = []
        self._usable = 0  # warm-up frames a fit can use
        self._pending: list[np.ndarray] = []  # frame sets since the warm-up ended, while the fit runs
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._fit_started = 0.0
        self._post: np.ndarray | None = None
        self.frames = 0
        self.fit_s: float | None = None
        self.fit_frames = 0
        self.first_state_frame: int | None = None  # frame_set_index of the first message with a state
        self.state_counts: dict[int, int] = {}
        self.latency_ms = LatencyWindow()
        self.kernel_us = LatencyWindow()
        self.rate = RateMeter()

    def handle(self, pose: Pose3DPacket) -> BehaviourPacket:
        """One frame set -> its behaviour message (stamped with the emission time)."""
        t_start = time.perf_counter()
        names = tuple(pose.keypoint_names)
        if self._window is None or names != self._names:
            if self._window is not None:
                log.warning("pose3d keypoints changed from %s to %s; the feature window starts again", self._names, names)
            self._window = FeatureWindow(self.params.features, names)
            self._names = names
        if self._t0_ns is None:
            self._t0_ns = int(pose.capture_ns)
        t_s = (int(pose.capture_ns) - self._t0_ns) / 1e9
        pts = pose.filtered_mm if self.coords == "filtered" else pose.raw_mm
        feats = self._window.push(t_s, pts)
        state = -1
        probs = np.zeros(0)
        if self.segmenter is not None:
            self._post = self.segmenter.step(self._post, feats)
        elif self._future is not None:  # fitting in the background
            self._pending.append(feats)
            if self._future.done():
                self._install()
        elif t_s < self.params.warmup_s or self._usable < MIN_FRAMES_PER_STATE * self.params.n_states:
            self._warm.append(feats)
            self._usable += int(usable_frames(feats[None])[0])
        else:
            self._pending = [feats]
            self._start_fit()
            if not self.background_fit:
                self._install()
        if self.segmenter is not None and self._post is not None:
            probs = self._post
            state = int(np.argmax(probs))
            self.state_counts[state] = self.state_counts.get(state, 0) + 1
            if self.first_state_frame is None:
                self.first_state_frame = int(pose.frame_set_index)
        self.frames += 1
        self.kernel_us.add((time.perf_counter() - t_start) * 1e6)
        emitted = now_ns()
        stamps = dict(pose.stamps_ns)
        stamps["behaviour"] = emitted
        self.latency_ms.add((emitted - int(pose.capture_ns)) * 1e-6)
        self.rate.tick()
        return BehaviourPacket(self.name, int(pose.frame_set_index), int(pose.capture_ns), emitted, state,
                               FEATURE_NAMES, np.array(feats, np.float64), np.array(probs, np.float64), stamps)

    def _start_fit(self) -> None:
        warm = np.array(self._warm).reshape(-1, len(FEATURE_NAMES))
        self.fit_frames = len(warm)
        self._warm = []
        self._fit_started = time.perf_counter()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="behaviour-fit")
        self._future = self._executor.submit(Segmenter.fit, warm, self.params.n_states, self.params.seed)

    def _install(self) -> None:
        """Take the fitted model and filter the frame sets since the warm-up, as the offline run does."""
        assert self._future is not None
        try:
            segmenter = self._future.result()
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as e:
            log.error("behaviour: cannot fit the segmenter on the warm-up (%s); segmentation stays off", e)
            self.params = BehaviourParams(self.params.features, self.params.n_states, float("inf"),
                                          self.params.seed, self.params.detection)
            self._future, self._pending = None, []
            return
        self.fit_s = time.perf_counter() - self._fit_started
        post = None
        for f in self._pending:
            post = segmenter.step(post, f)
        self.segmenter, self._post, self._future, self._pending = segmenter, post, None, []
        log.info("behaviour: segmenter fitted on %d frame sets in %.2f s", self.fit_frames, self.fit_s)

    def wait_for_fit(self, timeout_s: float | None = None) -> bool:
        """Block until a background fit has finished or the stage has a model (True); False when no fit
        was started or it timed out. A fitted model is taken into use with the next frame set."""
        if self._future is None:
            return self.segmenter is not None
        try:
            self._future.exception(timeout=timeout_s)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def stats(self, receive: ReceiveCounters | None = None) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "fps": self.rate.rate(),
            "capture_to_behaviour_ms": self.latency_ms.summary(),
            "kernel_us": self.kernel_us.summary(),
            "segmenter": ("fitted" if self.fit_s is not None else "loaded" if self.segmenter is not None
                          else "fitting" if self._future is not None else "warming up"),
            "first_state_frame": self.first_state_frame,
            "model_ready": self.segmenter is not None or (self._future is not None and self._future.done()),
            "fit_s": self.fit_s,
            "fit_frames": self.fit_frames,
            "states": {str(k): v for k, v in sorted(self.state_counts.items())},
            "received": receive.received if receive else None,
            "malformed": receive.malformed if receive else None,
        }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig-behaviour", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="rig TOML file")
    p.add_argument("--fusion", help="endpoint to subscribe to for pose3d (default: the rig's fusion endpoint)")
    p.add_argument("--bind", help="endpoint to publish behaviour and stats on (default: the rig's behaviour endpoint)")
    p.add_argument("--model", help="segmenter .npz (overrides [behaviour] model)")
    p.add_argument("--name", default="segment", help="message name: topic behaviour/<name> (default %(default)s)")
    p.add_argument("--coords", choices=("filtered", "raw"), default="filtered")
    p.add_argument("--force", action="store_true", help="run even when [behaviour] enabled = false")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s behaviour %(levelname)s %(message)s")
    try:
        rig = load_config(args.config)
    except ConfigError as e:
        print(f"ratrig behaviour: {e}", file=sys.stderr)
        return 2
    if not (rig.behaviour.enabled or args.force):
        log.info("behaviour: disabled in %s ([behaviour] enabled = false); nothing to do", args.config)
        return 0
    fps = max(c.fps for c in rig.cameras)
    params = BehaviourParams.from_config(rig.behaviour, fps)
    model_path = args.model or rig.behaviour.model
    segmenter = None
    if model_path:
        try:
            segmenter = Segmenter.load(model_path)
        except ValueError as e:
            print(f"ratrig behaviour: {args.config}: behaviour.model: {e}", file=sys.stderr)
            return 2
    endpoints = Endpoints(rig)
    fusion_ep = args.fusion or endpoints.connect("fusion")
    pub_ep = args.bind or endpoints.bind("behaviour")
    stage = BehaviourStage(params, segmenter, args.name, args.coords)

    stop = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    ctx = zmq.Context()
    pub = sub = None
    try:
        pub = make_pub(ctx, pub_ep, sndhwm=10_000)
        sub = make_sub(ctx, [fusion_ep], [b"pose3d"], rcvhwm=100_000)
        counters = ReceiveCounters()
        interval_ns = int(rig.behaviour.stats_interval_s * 1e9)
        next_stats = now_ns() + interval_ns
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        log.info("behaviour: pose3d from %s, publishing on %s (%s)", fusion_ep, pub_ep,
                 f"model {model_path}" if segmenter else f"fit after {params.warmup_s:g} s")
        while not stop["flag"]:
            if poller.poll(50):
                for _ in range(1000):  # every waiting frame set, in order
                    pkt = recv_packet(sub, counters, zmq.NOBLOCK)
                    if pkt is None:
                        break
                    if isinstance(pkt, Pose3DPacket):
                        send_packet(pub, stage.handle(pkt), block=False)
            if now_ns() >= next_stats:
                next_stats += interval_ns
                send_packet(pub, StatsPacket("behaviour", now_ns(), stage.stats(counters)), block=False)
        send_packet(pub, StatsPacket("behaviour", now_ns(), dict(stage.stats(counters), final=True)), block=False)
    except OSError as e:
        print(f"ratrig behaviour: {e}", file=sys.stderr)
        return 2
    finally:
        stage.close()
        for s in (sub, pub):
            if s is not None:
                s.close(0)
        ctx.term()
        for s, h in old.items():
            signal.signal(s, h)
    log.info("behaviour: stopped after %d frame sets", stage.frames)
    return 0


if __name__ == "__main__":
    sys.exit(main())
