"""ZeroMQ plumbing shared by every stage: PUB/SUB sockets, sending packets, draining to the newest.

Live consumers (inference, viewer) take the newest message per topic and count what they skipped;
recorders take every message. A malformed message is counted and dropped with a log line; it never
raises out of a receive loop.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import zmq

from ratrig.messages import MAX_BUFFER_BYTES, MessageError, Packet, decode, encode
from ratrig.security import client_socket, keys_from_env, server_socket

log = logging.getLogger(__name__)

#: libzmq drops (and disconnects) a peer that sends a message part larger than this, before
#: allocating it: the largest array a header may declare plus room for the header.
MAX_MESSAGE_BYTES = MAX_BUFFER_BYTES + 1024**2
#: malformed messages logged one by one before logging only every LOG_EVERY-th (a flood of them
#: must not fill the disk with log lines)
LOG_FIRST, LOG_EVERY = 20, 10_000


def make_pub(ctx: zmq.Context, endpoint: str, sndhwm: int = 1000) -> zmq.Socket:
    """A PUB socket bound to `endpoint`. Raises a clear OSError if the port is taken.

    A CurveZMQ server when $RATRIG_CURVE names keys (`ratrig.security`); plain otherwise.
    """
    sock = server_socket(ctx, zmq.PUB, keys_from_env())
    sock.setsockopt(zmq.SNDHWM, sndhwm)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        sock.close(0)
        raise OSError(f"cannot bind {endpoint}: {e} (is another ratrig session running on this port?)") from None
    return sock


def make_sub(
    ctx: zmq.Context, endpoints: Iterable[str], topics: Sequence[bytes] = (b"",), rcvhwm: int = 1000
) -> zmq.Socket:
    """A SUB socket connected to every endpoint, subscribed to each topic prefix.

    A CurveZMQ client when $RATRIG_CURVE names keys (`ratrig.security`); plain otherwise.
    """
    sock = client_socket(ctx, zmq.SUB, keys_from_env())
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.LINGER, 0)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t)
    for ep in endpoints:
        sock.connect(ep)
    return sock


def send_packet(sock: zmq.Socket, packet: Packet, block: bool = True) -> bool:
    """Send one packet without copying its arrays. Returns False if a non-blocking send would block."""
    try:
        sock.send_multipart(encode(packet), copy=False, flags=0 if block else zmq.NOBLOCK)
        return True
    except zmq.Again:
        return False


@dataclass
class ReceiveCounters:
    received: int = 0
    malformed: int = 0
    skipped: int = 0  # newer messages of the same topic arrived before this one was used
    by_topic: dict[bytes, int] = field(default_factory=dict)


def recv_packet(sock: zmq.Socket, counters: ReceiveCounters, flags: int = 0) -> Packet | None:
    """Receive and decode one message; None for a malformed one (counted, logged) or when nothing
    is waiting with zmq.NOBLOCK."""
    try:
        frames = sock.recv_multipart(copy=False, flags=flags)
    except zmq.Again:
        return None
    try:
        packet = decode(frames)
    except Exception as e:  # MessageError, or a decoding bug: either way the loop goes on
        counters.malformed += 1
        if counters.malformed <= LOG_FIRST or counters.malformed % LOG_EVERY == 0:
            what = str(e) if isinstance(e, MessageError) else f"{type(e).__name__}: {e}"
            log.warning("dropped malformed message on %r (%d so far): %s",
                        bytes(frames[0].bytes[:64]) if frames else b"", counters.malformed, what[:300])
        return None
    counters.received += 1
    counters.by_topic[packet.topic] = counters.by_topic.get(packet.topic, 0) + 1
    return packet


def drain_newest(sock: zmq.Socket, counters: ReceiveCounters, max_messages: int = 10_000) -> dict[bytes, Packet]:
    """Everything waiting on `sock` right now, keeping only the newest packet per topic.

    Older packets of a topic are counted in `counters.skipped`. Never blocks.
    """
    newest: dict[bytes, Packet] = {}
    for packet in recv_all(sock, counters, max_messages):
        if packet.topic in newest:
            counters.skipped += 1
        newest[packet.topic] = packet
    return newest


def recv_all(sock: zmq.Socket, counters: ReceiveCounters, max_messages: int = 100_000) -> Iterator[Packet]:
    """Every packet waiting on `sock` right now, in order (recorder-style: nothing skipped).

    Malformed messages are counted and left out. Never blocks.
    """
    for _ in range(max_messages):
        packet = recv_packet(sock, counters, zmq.NOBLOCK)
        if packet is None:
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            continue
        yield packet
