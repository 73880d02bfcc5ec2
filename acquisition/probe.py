"""A frame consumer that counts what arrives: used by `ratrig demo` when no inference stage runs,
and by the transport benchmark. Reports received frames and transport latency per camera.

    python -m acquisition.probe --config RIG.toml [--duration S]
"""
from __future__ import annotations

import argparse
import logging
import sys

import zmq

from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, load_config
from ratrig.messages import FramePacket, StatsPacket
from ratrig.stats import LatencyWindow, RateMeter, install_stop_handlers
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_all, send_packet

log = logging.getLogger("ratrig.probe")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m acquisition.probe")
    p.add_argument("--config", required=True)
    p.add_argument("--bind", default=None, help="stats PUB endpoint (default: the first inference slot)")
    args = p.parse_args(argv)
    try:
        rig = load_config(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    ep = Endpoints(rig)
    stop = [False]
    install_stop_handlers(stop)
    ctx = zmq.Context()
    sub = make_sub(ctx, [ep.connect(f"camera/{c}") for c in rig.camera_names], [b"frame/"], rcvhwm=10_000)
    pub = make_pub(ctx, args.bind or ep.bind("inference/0"))
    counters = ReceiveCounters()
    per_cam = {c: {"received": 0, "latency": LatencyWindow(), "rate": RateMeter()} for c in rig.camera_names}
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    last = 0

    def publish(final: bool = False) -> None:
        cams = {c: {"received": v["received"], "transport_ms": v["latency"].summary(), "fps": v["rate"].rate()}
                for c, v in per_cam.items()}
        stats = {"cameras": cams, "malformed": counters.malformed, "ready": True, "final": final}
        send_packet(pub, StatsPacket(process="probe", sent_ns=now_ns(), stats=stats), block=False)

    while not stop[0]:
        if poller.poll(100):
            for pkt in recv_all(sub, counters):
                if isinstance(pkt, FramePacket) and pkt.camera in per_cam:
                    v = per_cam[pkt.camera]
                    v["received"] += 1
                    v["latency"].add((now_ns() - pkt.stamps_ns.get("publish", pkt.capture_ns)) / 1e6)
                    v["rate"].tick()
        if now_ns() - last > 500_000_000:
            publish()
            last = now_ns()
    publish(final=True)
    pub.setsockopt(zmq.LINGER, 500)
    pub.close()
    sub.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
