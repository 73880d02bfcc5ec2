"""One capture process per camera: grab, timestamp, publish `FramePacket`s on `frame/<camera>`.

With ``[network] shared_memory = true`` each frame is also written into the camera's shared-memory
ring (`ratrig.shmring`, created by this process and unlinked when it exits) and announced as a
`FrameRefPacket` on `frameref/<camera>`: inference workers on this host read it there.

    python -m acquisition.capture --config RIG.toml --camera NAME [--t0-ns N] [--duration S]

Exit codes: 0 clean stop (SIGTERM/SIGINT, end of file, --duration), 3 camera failed (open, disconnect,
stall; the reason is logged and published in the final stats), 2 bad arguments or config.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np
import zmq

from acquisition.faults import CameraDied, FaultInjector
from acquisition.sources import SourceError, open_source
from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, load_config
from ratrig.messages import FramePacket, FrameRefPacket, StatsPacket
from ratrig.shmring import FrameRingWriter, RingError, ring_name
from ratrig.stats import LatencyWindow, RateMeter, install_stop_handlers
from ratrig.transport import make_pub, send_packet

log = logging.getLogger("ratrig.capture")

STATS_PERIOD_NS = 500_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m acquisition.capture", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="rig TOML file")
    p.add_argument("--camera", required=True, help="camera name in the config")
    p.add_argument("--t0-ns", type=int, default=None, help="session start on the monotonic clock (shared tick schedule)")
    p.add_argument("--t0-file", default=None,
                   help="wait (source open, ready reported) until this file holds t0 in ns: one start for all cameras")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds from t0")
    p.add_argument("--bind", default=None, help="override the PUB endpoint")
    return p.parse_args(argv)


def _sleep_until(t_ns: int, stop: list[bool]) -> None:
    while not stop[0]:
        dt = (t_ns - now_ns()) / 1e9
        if dt <= 0:
            return
        time.sleep(min(dt, 0.05))


def _wait_for_start(path: str, stop: list[bool], publish_stats) -> int:
    """Report ready until the supervisor writes the shared start time into `path`."""
    while not stop[0]:
        try:
            text = open(path).read().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        publish_stats()
        time.sleep(0.1)
    return now_ns()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        rig = load_config(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    cams = {c.name: c for c in rig.cameras}
    if args.camera not in cams:
        log.error("%s: no camera named %r (cameras: %s)", args.config, args.camera, list(cams))
        return 2
    cam = cams[args.camera]
    process = f"camera/{cam.name}"
    t0_ns = args.t0_ns if args.t0_ns is not None else now_ns()
    # the session start as stats report it: unknown (None) while waiting at the start gate
    start: dict[str, int | None] = {"t0_ns": None if args.t0_file else t0_ns}
    period_ns = int(round(1e9 / cam.fps))
    syn = rig.synthetic
    faults = FaultInjector(
        drop_prob=syn.drop_prob if cam.source_kind == "synthetic" else 0.0,
        jitter_ms=syn.jitter_ms if cam.source_kind == "synthetic" else 0.0,
        die_after_s=syn.die_after_s.get(cam.name),
        seed=syn.seed * 1000 + rig.camera_names.index(cam.name),
    )

    stop = [False]
    install_stop_handlers(stop)
    ctx = zmq.Context()
    pub = make_pub(ctx, args.bind or Endpoints(rig).bind(process), sndhwm=60)  # 2 s of frames per subscriber: a frozen viewer cannot pin more
    counters = {"captured": 0, "published": 0, "dropped_at_source": 0, "failed": None}
    rate = RateMeter()
    grab_cost = LatencyWindow()
    last_stats = 0

    def publish_stats(final: bool = False) -> None:
        stats = dict(counters, camera=cam.name, fps=rate.rate(), ready=True, final=final, pid=os.getpid(),
                     grab_ms=grab_cost.summary(), t0_ns=start["t0_ns"], started=counters["captured"] > 0)
        send_packet(pub, StatsPacket(process=process, sent_ns=now_ns(), stats=stats), block=False)

    rc = 0
    source = None
    use_ring = rig.network.shared_memory
    ring: FrameRingWriter | None = None  # created at the first frame (its shape), unlinked at exit
    try:
        try:
            source = open_source(cam, rig, t0_ns)
        except SourceError as e:
            raise
        except Exception as e:  # a back-end bug must still name the camera
            raise SourceError(f"camera {cam.name}: cannot open source {cam.source!r}: {e}") from e
        if args.t0_file:
            t0_ns = _wait_for_start(args.t0_file, stop, publish_stats)
            start["t0_ns"] = t0_ns
            if hasattr(source, "t0_ns"):
                source.t0_ns = t0_ns
        _sleep_until(t0_ns, stop)
        k = max(0, (now_ns() - t0_ns) // period_ns) if now_ns() > t0_ns else 0
        while not stop[0]:
            scheduled = t0_ns + k * period_ns
            if args.duration is not None and scheduled - t0_ns >= args.duration * 1e9:
                break
            if not source.paced_by_source:
                _sleep_until(scheduled, stop)
                if stop[0]:
                    break
            faults.check_alive((now_ns() - t0_ns) / 1e9)
            t_grab = now_ns()
            grab = source.read(scheduled)
            if grab is None:
                log.info("%s: end of %s", cam.name, cam.source)
                break
            grab_cost.add((now_ns() - t_grab) / 1e6)
            frame_index = k if not source.paced_by_source else counters["captured"]
            counters["captured"] += 1
            rate.tick()
            if faults.drop():
                counters["dropped_at_source"] += 1
            else:
                capture_ns = grab.capture_ns + faults.jitter_ns()
                image = np.ascontiguousarray(grab.image)  # a fresh buffer per frame: sent zero-copy
                stamps = {"capture": int(capture_ns), "publish": now_ns()}
                ok = True
                if use_ring:
                    # pixels into the ring once; inference on this host reads them there
                    if ring is None:
                        ring = FrameRingWriter(ring_name(rig.network.base_port, cam.name, os.getpid()),
                                               rig.network.ring_slots, image.shape, image.dtype)
                        log.info("%s: frames to inference through shared-memory ring %s (%d slots)", cam.name,
                                 ring.name, ring.slots)
                    slot, seq = ring.write(image)
                    h, w = image.shape[:2]
                    ref = FrameRefPacket(cam.name, int(frame_index), int(capture_ns), ring.name, slot, seq, h, w,
                                         image.shape[2] if image.ndim == 3 else 1, stamps)
                    ok = send_packet(pub, ref, block=False)
                # the wire too, for the recorder and the viewer (ZeroMQ sends it only to subscribers)
                pkt = FramePacket(cam.name, int(frame_index), int(capture_ns), image, stamps)
                ok = send_packet(pub, pkt, block=False) and ok
                if ok:
                    counters["published"] += 1
            if source.paced_by_source:
                k += 1
            else:
                # a late renderer skips ticks rather than drifting: frame indices stay on the schedule
                k = max(k + 1, (now_ns() - t0_ns) // period_ns)
            if now_ns() - last_stats > STATS_PERIOD_NS:
                publish_stats()
                last_stats = now_ns()
    except (SourceError, CameraDied) as e:
        log.error("%s", e)
        counters["failed"] = str(e)
        rc = 3
    except RingError as e:
        log.error("%s: %s", cam.name, e)
        counters["failed"] = str(e)
        rc = 3
    finally:
        if ring is not None:
            ring.close()
        if source is not None:
            source.close()
        publish_stats(final=True)
        pub.setsockopt(zmq.LINGER, 500)
        pub.close()
        ctx.term()
    return rc


if __name__ == "__main__":
    sys.exit(main())
