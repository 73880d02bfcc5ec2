"""The stage side of the supervisor's hot standby (`ratrig.supervisor`, ProcessSpec.standby).

A stage started with `--standby` does everything a start needs that does not claim the stage's
outputs: imports, config, compiled kernels, SUB sockets connected. Then it waits for one line,
`takeover`, on its stdin (a pipe from the supervisor). Only after that line does it bind its PUB
socket / open its output and run as the stage. EOF on stdin (the supervisor is gone) or a stop
request ends the wait without taking over.

    if args.standby and not wait_for_takeover(lambda: stopped):
        return 0  # stopped while standing by: nothing was claimed, nothing to clean up
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import zmq

#: the line the supervisor writes to a standby's stdin when the process it stands in for died
TAKEOVER = b"takeover\n"
#: the argument that starts a stage as a standby
STANDBY_FLAG = "--standby"

T = TypeVar("T")


def wait_for_takeover(stop_requested: Callable[[], bool], sock: zmq.Socket | None = None,
                      on_message: Callable[[], None] | None = None, fd: int | None = None,
                      poll_s: float = 0.1) -> bool:
    """Block until the supervisor's takeover line arrives on `fd` (default stdin).

    Args:
        stop_requested: checked at least every `poll_s`; True ends the wait (returns False).
        sock: a ZeroMQ socket also watched; `on_message()` runs whenever it has messages (a
            standby recorder keeps its recent frames there) and must drain it.
        on_message: see `sock`.
        fd: the file descriptor the line arrives on (default: stdin).
        poll_s: longest wait between checks of `stop_requested`, seconds.

    Returns:
        True on `takeover`; False on EOF (the supervisor closed the pipe or died) or a stop request.
    """
    fd = sys.stdin.fileno() if fd is None else fd
    poller = zmq.Poller()
    poller.register(fd, zmq.POLLIN)
    if sock is not None:
        poller.register(sock, zmq.POLLIN)
    buf = b""
    while not stop_requested():
        ready = dict(poller.poll(int(poll_s * 1000)))
        if sock is not None and sock in ready and on_message is not None:
            on_message()
        if fd in ready:
            chunk = os.read(fd, 4096)
            buf += chunk
            if TAKEOVER in buf:
                return True
            if not chunk:
                return False
            buf = buf[-len(TAKEOVER):]
    return False


def bind_when_free(bind: Callable[[], T], timeout_s: float = 2.0, retry_s: float = 0.02) -> T:
    """`bind()` (e.g. `make_pub(ctx, endpoint)`), retried while it raises OSError for up to
    `timeout_s`: the process taken over frees its port when the kernel closes its sockets, which is
    done by the time the supervisor reaps it, but a port can linger for a moment elsewhere."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return bind()
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(retry_s)
