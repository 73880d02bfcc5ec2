"""Stream a recorded session through the live pipeline exactly as its cameras would.

    ratrig replay SESSION [--speed 1|2|max] [--config RIG] [--cameras a,b] [--wait-s 1]

Each camera's frames are published as FramePackets on topic ``frame/<camera>`` from the endpoint
the camera's capture process binds (`Endpoints(rig).bind("camera/<name>")`), so inference, fusion,
events, viewer and a new recorder run unchanged. Timestamps mapping (also printed and written to
``--mapping-out`` if given)::

    frame_index   unchanged (the recorded camera frame number)
    capture_ns'   = replay_t0_ns + (capture_ns - first_capture_ns)     (relative timing preserved)
    stamps_ns     {"replay_source_capture": capture_ns}                (the recorded stamp)

where replay_t0_ns is `now_ns()` when replay starts and first_capture_ns is the earliest recorded
frame of any camera. With --speed S frames are sent at S times real time (timestamps keep the
recorded spacing); with --speed max as fast as the receivers take them (blocking sends, nothing
dropped by the publisher).
"""
from __future__ import annotations

import argparse
import heapq
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq

from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, RigConfig, load_config
from ratrig.messages import FramePacket
from ratrig.transport import make_pub, send_packet
from recorder.session import Session, open_session

log = logging.getLogger("replay")


@dataclass(frozen=True, slots=True)
class ReplayMapping:
    """capture_ns' = t0_ns + (capture_ns - first_capture_ns)."""

    t0_ns: int
    first_capture_ns: int

    def map(self, capture_ns: int) -> int:
        return self.t0_ns + (int(capture_ns) - self.first_capture_ns)

    def unmap(self, replay_capture_ns: int) -> int:
        return int(replay_capture_ns) - self.t0_ns + self.first_capture_ns


def merged_frames(session: Session, cameras: Sequence[str]) -> Iterator[tuple[int, str, int, object]]:
    """(capture_ns, camera, frame_index, image) of every recorded frame, in capture-time order."""
    def one(cam: str) -> Iterator[tuple[int, str, int, object]]:
        for row, img in session.iter_frames(cam):
            yield int(row["capture_ns"]), cam, int(row["frame_index"]), img

    yield from heapq.merge(*(one(c) for c in cameras), key=lambda t: (t[0], t[1]))


def first_capture_ns(session: Session, cameras: Sequence[str]) -> int:
    firsts = [int(f["capture_ns"].iloc[0]) for f in (session.frames(c) for c in cameras) if len(f)]
    if not firsts:
        raise ValueError(f"{session.path}: no recorded frames for cameras {list(cameras)}")
    return min(firsts)


def replay(session: Session, rig: RigConfig, cameras: Sequence[str], speed: float | None,
           wait_s: float = 1.0, ctx: zmq.Context | None = None, sndhwm: int = 120) -> tuple[ReplayMapping, dict[str, int]]:
    """Publish the session's frames. `speed` None = as fast as possible. Returns mapping and counts.

    `sndhwm` bounds what a stalled subscriber (a frozen viewer) can pin in memory: 120 frames per camera.
    """
    own_ctx = ctx is None
    ctx = ctx or zmq.Context()
    ep = Endpoints(rig)
    socks = {}
    try:
        for cam in cameras:
            socks[cam] = make_pub(ctx, ep.bind(f"camera/{cam}"), sndhwm=sndhwm)
        time.sleep(wait_s)  # let subscribers (re)connect before the first frame
        mapping = ReplayMapping(now_ns(), first_capture_ns(session, cameras))
        sent = {c: 0 for c in cameras}
        for cap, cam, idx, img in merged_frames(session, cameras):
            if speed is not None:
                due = mapping.t0_ns + (cap - mapping.first_capture_ns) / speed
                delay = (due - now_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
            pkt = FramePacket(cam, idx, mapping.map(cap), img, {"replay_source_capture": cap, "replay_send": now_ns()})
            send_packet(socks[cam], pkt, block=True)
            sent[cam] += 1
        time.sleep(0.2)  # let the last messages leave before the sockets close
        return mapping, sent
    finally:
        for s in socks.values():
            s.close(linger=1000)
        if own_ctx:
            ctx.term()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig replay", description="Replay a recorded session as live cameras.")
    p.add_argument("session")
    p.add_argument("--speed", default="1", help="1 = real time, 2 = twice, 'max' = as fast as possible")
    p.add_argument("--config", default=None, help="rig TOML for the endpoints (default: the session's rig.toml)")
    p.add_argument("--cameras", default=None, help="comma-separated subset of cameras")
    p.add_argument("--wait-s", type=float, default=1.0, help="pause after binding, for subscribers to connect")
    p.add_argument("--mapping-out", default=None, help="write the timestamp mapping as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s replay %(levelname)s %(message)s")
    try:
        speed = None if args.speed == "max" else float(args.speed)
        if speed is not None and speed <= 0:
            raise ValueError
    except ValueError:
        log.error("--speed: expected a positive number or 'max', got %r", args.speed)
        return 2
    try:
        session = open_session(args.session, repair=False)
        rig = load_config(args.config or session.config_path)
    except (ConfigError, ValueError, OSError) as e:
        log.error("%s", e)
        return 2
    cameras = args.cameras.split(",") if args.cameras else list(session.cameras)
    unknown = [c for c in cameras if c not in session.cameras or c not in rig.camera_names]
    if unknown:
        log.error("cameras %s are not in both the session %s and the rig config %s", unknown, list(session.cameras), rig.camera_names)
        return 2
    try:
        mapping, sent = replay(session, rig, cameras, speed, args.wait_s)
    except OSError as e:
        log.error("%s", e)
        return 1
    info = {"t0_ns": mapping.t0_ns, "first_capture_ns": mapping.first_capture_ns, "sent": sent,
            "rule": "capture_ns' = t0_ns + (capture_ns - first_capture_ns); frame_index unchanged"}
    log.info("replayed %s: %s", session.path, json.dumps(info))
    if args.mapping_out:
        Path(args.mapping_out).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
