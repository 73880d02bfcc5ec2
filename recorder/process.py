"""The recorder process: subscribe to every stream of a session and write it to a session folder.

Usage::

    python -m recorder.process --config rig.toml --out sessions/2026-11-25_rat07 \
        [--connect tcp://127.0.0.1:5551 ...] [--calibration calibration.toml] [--model MODEL] [--duration-s S]

Without --connect it connects to every PUB endpoint of the rig (each camera, each inference worker,
fusion, events). SIGINT/SIGTERM end the session cleanly (every queued frame is written). A SIGKILL
leaves a session readable up to the last flush interval (see FORMAT.md, "Crash safety").

With --standby (the supervisor's hot standby, `ratrig.standby`) it connects and keeps the last
--standby-window-s of every stream in memory (`recorder.standby`) but opens nothing until a
`takeover` line arrives on stdin; then it records into the next part (OUT.part2, ...) and first
writes what it holds that the part of the recorder that died does not.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import zmq

from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, RigConfig, load_config, replace_section
from ratrig.messages import FramePacket, StatsPacket
from ratrig.standby import bind_when_free, wait_for_takeover
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_all, recv_packet, send_packet
from recorder.standby import RecentPackets, RecordedUpTo, last_part, recorded_up_to
from recorder.video import VideoCodecError, check_codec
from recorder.writer import SessionError, SessionWriter

log = logging.getLogger("recorder")

GB = 1024**3
#: errno values that mean the session's disk (or quota) is full
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: exit status when the disk filled up: the session so far is kept; a restart cannot help
EXIT_DISK_FULL = 3
DISK_CHECK_NS = 500_000_000  # statvfs is cheap; at 4 x 30 fps a 2 s gap is ~100 MB of video
#: room kept on the session's disk from the start, given back when the disk fills so that the
#: session can still be finished (last table lines, segments closed, session.json written)
RESERVE_FILE, RESERVE_BYTES = ".disk-reserve", 1024**2


def make_reserve(out: Path) -> Path | None:
    path = out / RESERVE_FILE
    try:
        with open(path, "wb") as f:
            f.write(bytes(RESERVE_BYTES))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        log.warning("could not reserve %d bytes on %s for finishing the session: %s", RESERVE_BYTES, out, e)
        path.unlink(missing_ok=True)
        return None
    return path


def disk_full_message(out: Path, e: BaseException) -> str:
    return (f"DISK FULL: {out}: {e}; recording stopped here. The session up to this moment is readable "
            f"(`ratrig replay {out}`); the live pipeline goes on without a recorder. Free space or record "
            f"elsewhere, and raise recorder.min_free_gb so that video stops before the disk is full.")


def is_disk_full(e: BaseException | None) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL


def default_endpoints(rig: RigConfig) -> list[str]:
    """Every PUB endpoint a recorder subscribes to: cameras, inference workers, fusion, events."""
    ep = Endpoints(rig)
    keys = [k for k in ep.ports() if k.startswith(("camera/", "inference/")) or k in ("fusion", "events")]
    return [ep.connect(k) for k in keys]


class DiskMonitor:
    """Free space of the session's disk, and the time left at the rate the session writes."""

    def __init__(self, path: Path, min_free_gb: float, warn_free_gb: float):
        self.path = path
        self.min_free = min_free_gb * GB
        self.warn_free = warn_free_gb * GB
        self._first: tuple[int, int] | None = None  # (ns, free bytes)
        self._last_warn_ns = 0

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def check(self) -> tuple[int, str | None, bool]:
        """(free bytes, warning or None, stop) where stop means below min_free_gb."""
        t, free = now_ns(), self.free_bytes()
        if self._first is None:
            self._first = (t, free)
        rate = (self._first[1] - free) / max((t - self._first[0]) / 1e9, 1e-9)
        left_s = (free - self.min_free) / rate if rate > 0 else float("inf")
        if free < self.min_free:
            return free, (f"free disk space {free / GB:.2f} GB on {self.path} is below recorder.min_free_gb "
                          f"{self.min_free / GB:.2f}: video is no longer written"), True
        if free < self.warn_free or left_s < 600:
            if t - self._last_warn_ns > 10e9:
                self._last_warn_ns = t
                return free, (f"LOW DISK SPACE: {free / GB:.2f} GB free on {self.path}, writing {rate / 1e6:.1f} MB/s: "
                              f"about {left_s / 60:.1f} min before recording stops (min_free_gb {self.min_free / GB:.1f})"), False
        return free, None, False


def next_part(out: Path) -> Path:
    """The first of OUT.part2, OUT.part3, ... that does not exist or is empty."""
    n = 2
    while True:
        part = out.with_name(f"{out.name}.part{n}")
        if not part.exists() or not any(part.iterdir()):
            return part
        n += 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig-recorder", description="Record every stream of a ratrig session.")
    p.add_argument("--config", required=True, help="rig TOML file")
    p.add_argument("--out", required=True, help="session folder to create (must not exist or be empty)")
    p.add_argument("--connect", action="append", default=None, metavar="ENDPOINT",
                   help="PUB endpoint to subscribe to (repeatable); default: every stage of the rig")
    p.add_argument("--calibration", default=None, help="calibration.toml used live (default: calibration.file)")
    p.add_argument("--model", default=None, help="model used live (default: inference.model)")
    p.add_argument("--codec", choices=["ffv1", "mjpeg", "h264"], default=None, help="override recorder.codec")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--no-publish", action="store_true", help="do not publish recorder stats on the rig's recorder port")
    p.add_argument("--continue-as-part", action="store_true",
                   help="when --out already holds a session (a recorder restarted after a crash), record into "
                        "OUT.part2, OUT.part3, ... instead of refusing")
    p.add_argument("--standby", action="store_true",
                   help="hot standby for the supervisor (ratrig.standby): connect and keep the last "
                        "--standby-window-s of every stream, open nothing until a 'takeover' line on stdin, then "
                        "record into the next part from what the recorder that died did not write (implies "
                        "--continue-as-part)")
    p.add_argument("--standby-window-s", type=float, default=None,
                   help="seconds of every stream a standby keeps in memory (default: recorder.flush_interval_s + 1)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s recorder %(levelname)s %(message)s")
    try:
        rig = load_config(args.config)
        if args.codec:
            rig = replace_section(rig, "recorder", codec=args.codec)
        codec = check_codec(rig.recorder.codec)
    except (ConfigError, VideoCodecError) as e:
        log.error("%s", e)
        return 2
    endpoints = args.connect or default_endpoints(rig)
    stop_event = threading.Event()

    def _stop(signum, _frame):  # noqa: ANN001
        log.info("signal %d: finishing the session", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    ctx = zmq.Context()
    sub = None
    counters = ReceiveCounters()
    recent = None
    if args.standby:
        window_s = args.standby_window_s if args.standby_window_s is not None else rig.recorder.flush_interval_s + 1.0
        recent = RecentPackets(window_s)
        sub = make_sub(ctx, endpoints, topics=SUB_TOPICS, rcvhwm=rig.recorder.rcvhwm)
        if not stand_by(sub, recent, counters, stop_event, window_s):
            sub.close(0)
            ctx.term()
            return 0
    try:
        return record(args, rig, codec, endpoints, ctx, sub, counters, recent, stop_event)
    finally:
        ctx.term()


#: what a recorder subscribes to
SUB_TOPICS = (b"frame/", b"pose2d/", b"pose3d", b"event/", b"stats/")


def stand_by(sub: zmq.Socket, recent: RecentPackets, counters: ReceiveCounters, stop_event: threading.Event,
             window_s: float) -> bool:
    """Keep the last `window_s` of every stream until the supervisor says to take over (True) or
    the standby is stopped (False)."""

    def keep() -> None:
        for packet in recv_all(sub, counters, max_messages=10_000):
            recent.add(packet, now_ns())

    started = time.monotonic()
    log.info("hot standby: keeping the last %.1f s of every stream; waiting to take over", window_s)
    took = wait_for_takeover(stop_event.is_set, sock=sub, on_message=keep)
    if took:
        keep()  # what arrived up to the takeover
        log.warning("taking over (standby for %.0f s; holding %d messages, %.0f MB of frames, at most %.0f MB)",
                    time.monotonic() - started, len(recent), recent.frame_bytes / 1e6, recent.max_frame_bytes / 1e6)
    return took


def write_what_was_lost(session: SessionWriter, recent: RecentPackets, dead_part: Path | None) -> int:
    """Write into `session` what `recent` holds that `dead_part` (the part of the recorder that died)
    does not. Returns the number of messages written; a gap neither holds is logged and kept in the
    session's warnings."""
    done = recorded_up_to(dead_part, session.cameras) if dead_part is not None else RecordedUpTo()
    n = 0
    for recv_ns, packet in recent.newer_than(done):
        session.write(packet, recv_ns, wait_s=5.0)  # the window may be longer than a writer queue
        n += 1
    for cam, last in done.frame_index.items():
        first = recent.oldest_frame_index(cam)
        if first is not None and first > last + 1:
            msg = (f"camera {cam}: frames {last + 1}..{first - 1} are neither in {dead_part} (the recorder "
                   f"that died) nor in the standby's window")
            log.error("%s", msg)
            session.warnings.append(msg)
    log.warning("wrote %d message(s) that %s did not hold", n, dead_part)
    recent.clear()
    return n


def record(args: argparse.Namespace, rig: RigConfig, codec, endpoints: list[str], ctx: zmq.Context,  # noqa: ANN001
           sub: zmq.Socket | None, counters: ReceiveCounters, recent: RecentPackets | None,
           stop_event: threading.Event) -> int:
    """Record the session (the body of main once the recorder may open its output)."""
    out = Path(args.out)
    dead_part = None
    if (args.continue_as_part or args.standby) and out.exists() and any(out.iterdir()):
        dead_part = last_part(out)
        out = next_part(out)
        log.warning("%s holds the session of a recorder that stopped; recording continues in %s", args.out, out)
    disk_root = out if out.exists() else next((p for p in out.resolve().parents if p.exists()), Path("/"))
    disk = DiskMonitor(disk_root, rig.recorder.min_free_gb, rig.recorder.warn_free_gb)
    free, warning, stop = disk.check()
    if stop:
        log.error("%s: refusing to start", warning)
        if sub is not None:
            sub.close(0)
        return 2
    if warning:
        log.warning("%s", warning)
    calibration = args.calibration if args.calibration is not None else rig.calibration.file
    model = args.model if args.model is not None else rig.inference.model
    try:
        session = SessionWriter(out, rig, codec, calibration_path=calibration, model_path=model,
                                connect={str(i): e for i, e in enumerate(endpoints)})
    except (SessionError, OSError) as e:
        log.error("%s", e)
        if sub is not None:
            sub.close(0)
        return 2
    disk.path = out
    reserve = make_reserve(out)
    if recent is not None:
        write_what_was_lost(session, recent, dead_part)
    if sub is None:
        sub = make_sub(ctx, endpoints, topics=SUB_TOPICS, rcvhwm=rig.recorder.rcvhwm)
    pub = None
    if not args.no_publish:
        try:
            # a standby takes the port over from the recorder that died
            pub = bind_when_free(lambda: make_pub(ctx, Endpoints(rig).bind("recorder")),
                                 timeout_s=1.0 if args.standby else 0.0)
        except OSError as e:
            log.warning("%s; recorder stats will not be published", e)
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    log.info("recording %d camera(s) to %s from %s (codec %s, flush every %.2f s, %.1f GB free)",
             len(rig.cameras), out, endpoints, codec.name, rig.recorder.flush_interval_s, free / GB)
    t_end = now_ns() + int(args.duration_s * 1e9) if args.duration_s else None
    last_disk_ns = last_stats_ns = now_ns()
    if args.standby:
        last_stats_ns = 0  # a standby that took over says so at once
    video_stopped = ""
    rc = 0
    try:
        while not stop_event.is_set():
            if t_end is not None and now_ns() >= t_end:
                break
            if poller.poll(50):
                for _ in range(500):  # bounded so flushing and disk checks still run under load
                    packet = recv_packet(sub, counters, zmq.NOBLOCK)
                    if packet is None:
                        if not sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                            break
                        continue
                    if video_stopped and isinstance(packet, FramePacket):
                        lost = session.counters.get(packet.camera)
                        if lost is not None:
                            lost.dropped_queue_full += 1  # counted with the disk's losses
                        continue
                    session.write(packet, now_ns())
            session.malformed = counters.malformed
            session.maybe_sync()
            t = now_ns()
            if t - last_disk_ns > DISK_CHECK_NS:
                last_disk_ns = t
                free, warning, stop = disk.check()
                if warning and not video_stopped:  # once: below min_free the same line would repeat
                    (log.error if stop else log.warning)("%s", warning)
                    session.warnings.append(warning)
                if stop and not video_stopped:
                    video_stopped = warning or "below recorder.min_free_gb"  # poses and events are small; keep them
            errors = session.writer_errors()
            if errors:
                full = [w.error for w in session.writers.values() if is_disk_full(w.error)]
                if full:
                    log.error("%s", disk_full_message(out, full[0]))
                    rc = EXIT_DISK_FULL
                else:
                    log.error("video writer failed: %s", errors)
                    rc = 1
                break
            if pub is not None and t - last_stats_ns > 1e9:
                last_stats_ns = t
                s = session.summary()
                send_packet(pub, StatsPacket("recorder", t, {
                    "frames_written": {c: v["written"] for c, v in s["cameras"].items()},
                    "frames_lost_total": s["frames_lost_total"],
                    "queue_depth": {c: v["queue_depth"] for c, v in s["cameras"].items()},
                    "free_gb": free / GB, "malformed": counters.malformed,
                    **({"video_stopped": video_stopped} if video_stopped else {})}), block=False)
    except OSError as e:
        if not is_disk_full(e):
            raise
        log.error("%s", disk_full_message(out, e))
        rc = EXIT_DISK_FULL
    finally:
        if reserve is not None:
            reserve.unlink(missing_ok=True)  # the room to finish the session in
        if rc == EXIT_DISK_FULL:
            session.warnings.append(disk_full_message(out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
        try:
            summary = session.close()
        except OSError as e:
            if not is_disk_full(e):
                raise
            # what is on disk stays readable: open_session repairs a session left 'recording'
            log.error("the session could not be finished on the full disk (%s); it is repaired when opened", e)
            summary = session.summary()
            rc = EXIT_DISK_FULL
        sub.close(0)
        if pub is not None:
            pub.close(0)
    lost = summary["frames_lost_total"]
    for cam, c in summary["cameras"].items():
        log.info("camera %s: %d frames written in %d segments, %d missing upstream, %d dropped (disk too slow)",
                 cam, c["written"], c["segments"], c["missing_upstream"], c["dropped_queue_full"])
    if lost:
        log.error("%d frame(s) were lost in this session; see %s/session.json counts", lost, out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
