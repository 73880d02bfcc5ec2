"""Where the viewer's packets come from: a running session (ZeroMQ) or a recorded one. No Qt here.

Live: the viewer asks the session's directory (a REP socket the supervisor binds) for every endpoint,
then subscribes. Two SUB sockets, because the streams need different treatment:

* frames (``frame/<camera>``, ~1 MB each): receive-HWM of about a second of frames per camera. A
  viewer that falls behind (or is frozen in a debugger) fills its queue and the cameras' PUB sockets
  drop further frames *for this subscriber only*; the recorder and inference are untouched.
  The queue must hold what arrives between two redraws: the drain below stops when the queue is
  momentarily empty, so with a queue of a few frames a slow redraw loop took only a few frames per
  camera per tick, fell behind the camera, and then showed frames from the *publisher's* backlog
  (SNDHWM frames + socket buffers, seconds old) while poses on the other socket were current.
* everything else (poses, 2D keypoints, events, stats; a few hundred bytes each): a larger HWM so
  that paw events and the pose stream for the traces arrive whole.

Both are drained completely at every redraw (CONFLATE does not work with multipart messages). Frames
are received without copying and decoded only as far as their header (the image stays the ZeroMQ
buffer); the window keeps a short ring of them per camera so that it can show the frame the
overlaid keypoints belong to, and keeps every pose and every event it received.
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgpack
import zmq

from ratrig.config import ConfigError, Endpoints, RigConfig, config_from_dict
from ratrig.messages import FramePacket, Packet
from ratrig.security import client_socket, keys_from_env
from ratrig.transport import ReceiveCounters, make_sub, recv_packet

log = logging.getLogger(__name__)

DIRECTORY_REQUEST = b"directory"
#: Per camera: ~1 s at 30 fps, so the queue never fills between two redraws (down to ~1 redraw/s),
#: the I/O thread keeps reading and no backlog builds up on the camera's side. Bounded: a frozen
#: viewer holds at most this many frames per camera here (plus the camera's SNDHWM there).
FRAME_RCVHWM = 32
DATA_RCVHWM = 2000
DATA_TOPICS: tuple[bytes, ...] = (b"pose3d", b"pose2d/", b"event/", b"stats/")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "::1", "*"})


class DirectoryError(ConnectionError):
    """The session's directory did not answer, or answered something unusable."""


@dataclass(frozen=True)
class SessionInfo:
    """What the directory said about a session.

    Attributes:
        endpoints: key ("camera/<name>", "inference/<j>", "fusion", "events", "recorder",
            "supervisor", ...) -> ZeroMQ endpoint to connect to.
        rig: the session's rig config, when the directory sent it (as a dict or a readable path).
        calibration: the calibration table the directory sent (Anipose calibration.toml as a dict), if any.
        directory: the endpoint that was asked.
    """

    endpoints: Mapping[str, str]
    rig: RigConfig | None = None
    calibration: Mapping[str, Any] | None = None
    directory: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        """True when the session runs on this machine (its monotonic clock is ours)."""
        host = urlsplit(self.directory).hostname or ""
        if host in LOOPBACK_HOSTS:
            return True
        try:
            return host in {socket.gethostname(), socket.getfqdn()} or host in _local_addresses()
        except OSError:
            return False


def _local_addresses() -> set[str]:
    try:
        return {ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        return set()


def rehost(endpoint: str, directory_endpoint: str) -> str:
    """A tcp endpoint the directory reported as loopback/any -> the same port on the directory's host.

    A session bound to 127.0.0.1/0.0.0.0 reports loopback addresses; a viewer on another machine
    reaches the same ports at the host it reached the directory on. Non-tcp endpoints pass unchanged.
    """
    ep, dr = urlsplit(endpoint), urlsplit(directory_endpoint)
    if ep.scheme != "tcp" or dr.scheme != "tcp" or not dr.hostname:
        return endpoint
    if (ep.hostname or "") in LOOPBACK_HOSTS and dr.hostname not in LOOPBACK_HOSTS:
        return f"tcp://{dr.hostname}:{ep.port}"
    return endpoint


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def parse_directory_reply(reply: Any, directory_endpoint: str) -> SessionInfo:
    """The directory's msgpack-decoded answer -> SessionInfo. Raises DirectoryError.

    Accepted forms: ``{"endpoints": {key: endpoint}, "config": {...} | "config_path": str,
    "calibration": {...} | str}`` or a flat ``{key: endpoint, ...}`` map (other values kept in
    `extra`). Config and calibration as tables work from any machine; as paths only where the
    session's files are readable (the same machine or a shared folder).
    """
    where = f"directory {directory_endpoint}"
    if not isinstance(reply, Mapping):
        raise DirectoryError(f"{where}: expected a map of endpoints, got {type(reply).__name__}")
    reply = {_text(k): v for k, v in reply.items()}
    raw_eps = reply.get("endpoints", reply)
    if not isinstance(raw_eps, Mapping):
        raise DirectoryError(f"{where}: 'endpoints' is a {type(raw_eps).__name__}, expected a map")
    endpoints = {}
    for key, value in raw_eps.items():
        key, value = _text(key), _text(value)
        if isinstance(value, str) and "://" in value:
            endpoints[str(key)] = rehost(value, directory_endpoint)
    endpoints.pop("directory", None)
    if not endpoints:
        raise DirectoryError(f"{where}: the answer names no endpoints (keys: {sorted(map(str, raw_eps))})")
    rig = None
    cfg = reply.get("config", reply.get("rig"))
    path = _text(reply.get("config_path", reply.get("path")))
    if isinstance(cfg, Mapping):
        try:
            rig = config_from_dict({_text(k): v for k, v in cfg.items()}, file=f"{where} config", path=path)
        except ConfigError as e:
            log.warning("%s: ignoring the session config it sent: %s", where, e)
    elif isinstance(path, str) and path:
        from ratrig.config import load_config

        try:
            rig = load_config(path)
        except ConfigError as e:  # another machine's path; not fatal, the endpoints are what matter
            log.info("%s: cannot read the session config %s here: %s", where, path, e)
    calib = _text(reply.get("calibration"))
    extra = {k: v for k, v in reply.items() if k not in ("endpoints", "config", "rig", "calibration")}
    if isinstance(calib, str) and calib:
        extra["calibration_path"] = calib  # a path on the session's machine; usable when it is this one
    return SessionInfo(endpoints, rig, calib if isinstance(calib, Mapping) else None, directory_endpoint, extra)


def fetch_directory(ctx: zmq.Context, endpoint: str, timeout_s: float = 5.0) -> SessionInfo:
    """Ask the session directory at `endpoint` for its endpoints. Raises DirectoryError on timeout.

    A fresh REQ socket per attempt (a REQ whose request got no answer is stuck in its state machine).
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        req = client_socket(ctx, zmq.REQ, keys_from_env())  # CurveZMQ when the session has keys
        req.setsockopt(zmq.LINGER, 0)
        try:
            req.connect(endpoint)
            req.send(DIRECTORY_REQUEST)
            wait_ms = max(1, int(min(1.0, deadline - time.monotonic()) * 1000))
            if req.poll(wait_ms, zmq.POLLIN):
                raw = req.recv()
                try:
                    reply = msgpack.unpackb(raw, raw=False, strict_map_key=False)
                except Exception as e:  # msgpack raises several unrelated types
                    raise DirectoryError(f"directory {endpoint}: answer is not msgpack ({e})") from None
                return parse_directory_reply(reply, endpoint)
        except zmq.ZMQError as e:
            last = str(e)
        finally:
            req.close(0)
        if time.monotonic() >= deadline:
            raise DirectoryError(
                f"directory {endpoint}: {last} after {timeout_s:.1f} s; is a ratrig session running "
                f"there (ratrig run / ratrig demo), and is its network.host reachable from here?"
            )


def directory_from_config(rig: RigConfig) -> str:
    """The directory endpoint of a session started with `rig` (where `ratrig view` connects by default)."""
    return Endpoints(rig).connect("directory")


@dataclass
class DrainResult:
    """What one drain brought.

    Attributes:
        frames: the newest frame per camera.
        packets: every other packet, in arrival order.
        all_frames: every frame received, in arrival order (the newest ones are also in `frames`).
        complete: both sockets were emptied (False: a limit stopped the drain, more is waiting).
    """

    frames: dict[str, FramePacket]
    packets: list[Packet]
    all_frames: list[FramePacket] = field(default_factory=list)
    complete: bool = True


class LiveSource:
    """Subscribes to a session's endpoints and hands over what arrived since the last call.

    Args:
        ctx: the ZeroMQ context (owned by the caller).
        endpoints: key -> endpoint, as from `SessionInfo.endpoints`.
        frames: subscribe to camera frames (the biggest stream; off for a pose-only viewer).
    """

    def __init__(self, ctx: zmq.Context, endpoints: Mapping[str, str], frames: bool = True) -> None:
        self.counters = ReceiveCounters()
        camera_eps = [ep for key, ep in endpoints.items() if key.startswith("camera/")]
        frame_eps = _unique(camera_eps)
        data_eps = _unique(endpoints.values())
        # The HWM is per connection: an endpoint that carries several cameras gets room for each.
        per_ep = max((camera_eps.count(ep) for ep in frame_eps), default=1)
        self.frame_rcvhwm = FRAME_RCVHWM * per_ep
        self.frame_sock = make_sub(ctx, frame_eps, (b"frame/",), self.frame_rcvhwm) if frames and frame_eps else None
        self.data_sock = make_sub(ctx, data_eps, DATA_TOPICS, DATA_RCVHWM)
        self.frames_skipped = 0  # frames that were not a camera's newest when drained (may still be shown)

    def drain(self, max_messages: int = 5000, budget_s: float = 0.008, max_frames: int = 2000) -> DrainResult:
        """Everything waiting now. Never blocks.

        Frames: every waiting frame is received (zero-copy, header decode only: cheap), so the newest
        frame returned really is the newest that arrived; `max_frames` only guards against a
        pathological flood. Other packets: up to `max_messages` or `budget_s` of work, so a flood of
        small messages cannot stall the redraw; the rest waits for the next call.
        """
        frames: dict[str, FramePacket] = {}
        all_frames: list[FramePacket] = []
        complete = True
        if self.frame_sock is not None:
            for _ in range(max_frames):
                packet = recv_packet(self.frame_sock, self.counters, zmq.NOBLOCK)
                if packet is None:
                    if not self.frame_sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        break
                    continue
                if isinstance(packet, FramePacket):
                    if packet.camera in frames:
                        self.frames_skipped += 1
                    frames[packet.camera] = packet
                    all_frames.append(packet)
            else:
                complete = False
        packets: list[Packet] = []
        deadline = time.perf_counter() + budget_s
        for n in range(max_messages):
            if n % 64 == 63 and time.perf_counter() > deadline:
                complete = False
                break
            packet = recv_packet(self.data_sock, self.counters, zmq.NOBLOCK)
            if packet is None:
                if not self.data_sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    break
                continue
            packets.append(packet)
        else:
            complete = False
        return DrainResult(frames, packets, all_frames, complete)

    def close(self) -> None:
        for sock in (self.frame_sock, self.data_sock):
            if sock is not None:
                sock.close(0)


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen
