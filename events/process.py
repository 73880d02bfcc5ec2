"""The events process: filtered 3D poses in, paw placements and rule events out.

    python -m events.process --config rig.toml [--fusion tcp://127.0.0.1:5630] [--bind tcp://127.0.0.1:5631]

Subscribes to ``pose3d`` from fusion, feeds every frame set (in order, none skipped: a skipped
frame could hide a touchdown) to the paw detector and the rules, publishes each event as an
EventPacket on ``event/<name>`` and hands it to the output plugins, and publishes ``stats/events``
every `events.stats_interval_s` with counts and capture -> event latency (p50/p99 ms). SIGTERM and
SIGINT end it cleanly (exit status 0); a bad config exits with status 2 and a message naming the key.
"""
from __future__ import annotations

import argparse
import collections
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, EventsConfig, RigConfig, load_config
from ratrig.messages import EventPacket, Pose3DPacket, StatsPacket, with_stamp
from ratrig.skeleton import PAWS
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

from events.outputs import OutputRunner, OutputSpec, parse_output_specs, start_outputs
from events.paw import LIFTOFF, TOUCHDOWN, PawPlacementDetector, check_floor_area, thresholds_from_config
from events.rules import RuleEngine, RuleSpec, parse_rule_specs

log = logging.getLogger("events")

_THRESHOLD_KEYS = ("touchdown_height_mm", "liftoff_height_mm", "touchdown_speed_mm_s", "liftoff_speed_mm_s",
                   "min_duration_ms", "speed_window_ms", "liftoff_distance_mm", "last_frame_fraction",
                   "max_gap_ms", "floor_tolerance_mm", "max_two_view_error_px", "single_view_min_duration_ms",
                   "step_distance_mm")


@dataclass(frozen=True)
class EventsSetup:
    """Everything the events stage needs, validated from the rig config."""

    thresholds: dict
    rules: list[RuleSpec]
    outputs: list[OutputSpec]
    event_names: tuple[str, ...]
    keypoints: tuple[str, ...]
    floor_area_mm: tuple[float, float, float, float] | None = None


def setup_from_config(rig: RigConfig) -> EventsSetup:
    """Validate the [events] section (thresholds, rules, outputs). Raises ConfigError naming the key."""
    ev: EventsConfig = rig.events
    file = rig.path or "<config>"
    try:
        common = {k: getattr(ev, k) for k in _THRESHOLD_KEYS}
        thresholds = thresholds_from_config(ev.rat_length_mm, common, ev.paws)
        rules = parse_rule_specs(ev.rules, rig.keypoints)
        names = (TOUCHDOWN, LIFTOFF, *[r.name for r in rules])
        outputs = parse_output_specs(ev.outputs, names, resolve=rig.resolve)
        area = check_floor_area(ev.floor_area_mm, "events.floor_area_mm") if ev.floor_area_mm else None
    except ValueError as e:
        raise ConfigError(f"{file}: {e}") from None
    return EventsSetup(thresholds, rules, outputs, names, tuple(rig.keypoints), area)


@dataclass
class _Counters:
    frames: int = 0
    frames_without_paws: int = 0
    floor_points: int = 0  # paw positions taken from one-camera floor points
    events: dict[str, int] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)  # touchdowns per paw (step counts)
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))
    feed_us: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))


class EventsStage:
    """Detector + rules + outputs for a stream of Pose3DPackets (no sockets: `main` owns those)."""

    def __init__(self, setup: EventsSetup, runners: Sequence[OutputRunner]) -> None:
        self.setup = setup
        self.detector = PawPlacementDetector(setup.thresholds, floor_area_mm=setup.floor_area_mm)
        self.rules = RuleEngine(setup.rules, setup.keypoints)
        self.runners = list(runners)
        self.counters = _Counters()
        self._index_cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def _indices(self, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the paws and of the rig keypoints in a packet's keypoint order (-1 = absent)."""
        cached = self._index_cache.get(names)
        if cached is None:
            paw_idx = np.array([names.index(p) if p in names else -1 for p in PAWS])
            kp_idx = np.array([names.index(k) if k in names else -1 for k in self.setup.keypoints])
            if (paw_idx < 0).any():
                log.warning("pose3d carries no %s; those paws are never detected",
                            [p for p, i in zip(PAWS, paw_idx) if i < 0])
            cached = (paw_idx, kp_idx)
            self._index_cache[names] = cached
        return cached

    def _with_floor_points(self, pose: Pose3DPacket, paw_idx: np.ndarray, paws: np.ndarray, n_cam: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
        """A paw not triangulated in this frame set (n_cameras < 2) but seen by one camera takes its
        floor point (fusion.floor), marked n_cameras = 1 so the detector holds its decisions longer."""
        if pose.floor_mm is None or np.shape(pose.floor_mm) != (len(pose.keypoint_names), 3):
            return paws, n_cam
        floor = self._take(np.asarray(pose.floor_mm, np.float64), paw_idx)
        use = (n_cam < 2) & np.isfinite(floor).all(axis=1)
        if use.any():
            paws = paws.copy()
            paws[use] = floor[use]
            n_cam = n_cam.copy()
            n_cam[use] = 1
            self.counters.floor_points += int(use.sum())
        return paws, n_cam

    @staticmethod
    def _take(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = np.full((len(idx), 3), np.nan)
        ok = idx >= 0
        out[ok] = points[idx[ok]]
        return out

    @staticmethod
    def _take_1d(values: Any, idx: np.ndarray, n_keypoints: int) -> np.ndarray | None:
        """(K,) per-keypoint values -> (P,) for the paws (NaN where absent); None if the packet does
        not carry them for every keypoint (the detector then judges positions alone)."""
        a = np.asarray(values, np.float64) if values is not None else np.zeros(0)
        if a.shape != (n_keypoints,):
            return None
        out = np.full(len(idx), np.nan)
        ok = idx >= 0
        out[ok] = a[idx[ok]]
        return out

    def handle(self, pose: Pose3DPacket) -> list[EventPacket]:
        """One frame set -> the events it decided (stamped; already offered to the outputs)."""
        t_start = now_ns()
        c = self.counters
        c.frames += 1
        paw_idx, kp_idx = self._indices(tuple(pose.keypoint_names))
        pts = np.asarray(pose.filtered_mm, np.float64)
        paws = self._take(pts, paw_idx)
        if not np.isfinite(paws).any():
            c.frames_without_paws += 1
        # per-paw measurement quality from fusion: coasted or doubtful two-view paws are not trusted
        n_cam = self._take_1d(pose.n_cameras, paw_idx, len(pose.keypoint_names))
        err = self._take_1d(pose.reprojection_error_px, paw_idx, len(pose.keypoint_names))
        if n_cam is not None:
            n_cam = np.where(np.isfinite(n_cam), n_cam, -1).astype(np.int64)
            n_cam[n_cam < 0] = 99  # unknown count (absent paw: its position is NaN anyway)
            paws, n_cam = self._with_floor_points(pose, paw_idx, paws, n_cam)
        events = self.detector.feed(pose.capture_ns, paws, pose.frame_set_index, n_cam, err)
        events += self.rules.feed(pose.capture_ns, self._take(pts, kp_idx), pose.frame_set_index)
        # With forward prediction on, filtered_mm is where fusion expects the keypoints
        # `predicted_ahead_ms` after the capture: the onsets found on it are that much later.
        ahead_ns = int(round(float(pose.predicted_ahead_ms) * 1e6))
        out = []
        for ev in events:
            stamps = dict(pose.stamps_ns)
            stamps["events"] = ev.emitted_ns
            extra = dict(ev.extra)
            if ahead_ns and "onset_ns" in extra:
                extra["onset_ns"] = int(extra["onset_ns"]) + ahead_ns
                extra["predicted_ahead_ms"] = float(pose.predicted_ahead_ms)
            ev = EventPacket(ev.name, ev.subject, ev.frame_set_index, ev.capture_ns, ev.emitted_ns,
                             ev.position_mm, stamps, extra)
            c.events[ev.name] = c.events.get(ev.name, 0) + 1
            if ev.name == TOUCHDOWN:
                c.steps[ev.subject] = c.steps.get(ev.subject, 0) + 1
            c.latency_ms.append((ev.emitted_ns - ev.capture_ns) * 1e-6)
            out.append(ev)
        c.feed_us.append((now_ns() - t_start) * 1e-3)
        return out

    def dispatch(self, event: EventPacket) -> None:
        for r in self.runners:
            r.submit(event)

    def stats(self, receive: ReceiveCounters | None = None) -> dict[str, Any]:
        c = self.counters
        lat = np.array(c.latency_ms, float)
        feed = np.array(c.feed_us, float)
        return {
            "frames": c.frames,
            "frames_without_paws": c.frames_without_paws,
            "floor_points": c.floor_points,
            "events": dict(c.events),
            "touchdowns_by_paw": dict(c.steps),
            "capture_to_event_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "capture_to_event_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "process_us_p50": float(np.percentile(feed, 50)) if feed.size else None,
            "paw_states": {p: int(s) for p, s in self.detector.states.items()},
            "received": receive.received if receive else None,
            "malformed": receive.malformed if receive else None,
            "outputs": {r.name: r.summary() for r in self.runners},
        }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig-events", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="rig TOML file")
    p.add_argument("--fusion", help="endpoint to subscribe to for pose3d (default: the rig's fusion endpoint)")
    p.add_argument("--bind", help="endpoint to publish events and stats on (default: the rig's events endpoint)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s events %(levelname)s %(message)s")
    try:
        rig = load_config(args.config)
        setup = setup_from_config(rig)
    except ConfigError as e:
        print(f"ratrig events: {e}", file=sys.stderr)
        return 2
    if not rig.events.enabled:
        log.info("events: disabled in %s ([events] enabled = false); nothing to do", args.config)
        return 0
    endpoints = Endpoints(rig)
    fusion_ep = args.fusion or endpoints.connect("fusion")
    pub_ep = args.bind or endpoints.bind("events")
    try:
        runners = start_outputs(setup.outputs, setup.event_names)
    except OSError as e:
        print(f"ratrig events: {e}", file=sys.stderr)
        return 2
    stage = EventsStage(setup, runners)

    stop = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    ctx = zmq.Context()
    pub = sub = None
    try:
        pub = make_pub(ctx, pub_ep)
        sub = make_sub(ctx, [fusion_ep], [b"pose3d"], rcvhwm=10_000)
        counters = ReceiveCounters()
        interval_ns = int(rig.events.stats_interval_s * 1e9)
        next_stats = now_ns() + interval_ns
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        log.info("events: pose3d from %s, publishing on %s, %d rule(s), %d output(s)",
                 fusion_ep, pub_ep, len(setup.rules), len(runners))
        while not stop["flag"]:
            if poller.poll(50):
                for _ in range(1000):  # every waiting frame set, in order
                    pkt = recv_packet(sub, counters, zmq.NOBLOCK)
                    if pkt is None:
                        break
                    if not isinstance(pkt, Pose3DPacket):
                        continue
                    for ev in stage.handle(pkt):
                        send_packet(pub, ev, block=False)
                        stage.dispatch(ev)
            if now_ns() >= next_stats:
                next_stats += interval_ns
                send_packet(pub, StatsPacket("events", now_ns(), stage.stats(counters)), block=False)
        send_packet(pub, StatsPacket("events", now_ns(), stage.stats(counters)), block=False)
    except OSError as e:
        print(f"ratrig events: {e}", file=sys.stderr)
        return 2
    finally:
        for r in runners:
            r.close()
        for s in (sub, pub):
            if s is not None:
                s.close(0)
        ctx.term()
        for s, h in old.items():
            signal.signal(s, h)
    log.info("events: stopped after %d frame sets, events %s", stage.counters.frames, stage.counters.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
