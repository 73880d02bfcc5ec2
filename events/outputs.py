"""Output plugins: where events go besides the ZeroMQ topic (TTL hardware, other software, lab code).

Contract, as small as DLC-Live's Processor: an output is any object with

    process(event: EventPacket) -> None   # called once per event, in order
    close() -> None                       # optional; called once at shutdown

Every output runs in its own thread behind a bounded queue (`OutputRunner`). An output that raises
is logged and counted and keeps receiving events; one that blocks longer than `timeout_ms` is
reported as stalled and the events offered to it meanwhile are dropped and counted, so neither the
detector nor the other outputs ever wait for it. A full queue drops the new event (counted).

Configured in the rig TOML as ``[[events.outputs]]`` tables; keys common to every type:

    type        "serial" | "udp" | "zmq" | "python"
    name        label in stats and logs (default "<type>[<index>]")
    on          event names to pass, e.g. ["touchdown"] (default: all)
    subjects    paws / keypoints to pass, e.g. ["hind_left_paw"] (default: all)
    queue_size  bounded queue length (default 64)
    timeout_ms  a process() call longer than this marks the output stalled (default 100)

Per type:

    serial  port (str, required), baud (int, 115200), pulse_ms (int 1..255, 5)
    udp     host (str, "127.0.0.1"), port (int, required)
    zmq     endpoint (str, required), bind (bool, true), socket ("pub" | "push", "pub")
    python  path (str, required; relative to the config file), class (str, required),
            options (table, {}; passed to the class as keyword arguments)

Serial byte protocol (host -> microcontroller; sketch in events/arduino/ratrig_ttl/):

    0x01 N        set the TTL pulse width to N ms (1..255); sent once when the port opens
    1KKK SSSS     one event: bit 7 set; KKK = kind (0 touchdown, 1 liftoff, 2..7 the rules in
                  config order, the 7th and later sharing 7); SSSS = subject (paw index 0..3 in
                  ratrig.skeleton.PAWS order for paw events, keypoint index for rules, 15 unknown)

The sketch pulses one digital pin per (kind, paw) for N ms; see its header for the pin map.
"""
from __future__ import annotations

import collections
import importlib.util
import json
import logging
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ratrig.clock import now_ns
from ratrig.messages import EventPacket, encode
from ratrig.skeleton import KEYPOINTS, PAWS

log = logging.getLogger(__name__)

SET_PULSE_MS = 0x01
EVENT_BIT = 0x80
UNKNOWN_SUBJECT = 0x0F


class OutputConfigError(ValueError):
    """A bad [[events.outputs]] table; the message names the key."""


class Output(Protocol):
    def process(self, event: EventPacket) -> None: ...


# --------------------------------------------------------------------------------------------------
# Built-in outputs


def event_byte(event: EventPacket, kinds: Sequence[str], keypoints: Sequence[str] = KEYPOINTS) -> int:
    """EventPacket -> the one-byte serial code (see the module docstring)."""
    try:
        kind = min(kinds.index(event.name), 7)
    except ValueError:
        kind = 7
    if event.name in ("touchdown", "liftoff"):
        subject = PAWS.index(event.subject) if event.subject in PAWS else UNKNOWN_SUBJECT
    else:
        subject = keypoints.index(event.subject) if event.subject in keypoints else UNKNOWN_SUBJECT
    return EVENT_BIT | (kind << 4) | min(subject, UNKNOWN_SUBJECT)


def decode_event_byte(byte: int, kinds: Sequence[str]) -> tuple[str, int]:
    """The inverse, for tests and tools: byte -> (kind name, subject index)."""
    if not byte & EVENT_BIT:
        raise ValueError(f"0x{byte:02x} is not an event byte (bit 7 clear)")
    kind = (byte >> 4) & 0x07
    return (kinds[kind] if kind < len(kinds) else f"kind{kind}"), byte & 0x0F


class SerialOutput:
    """One byte per event to a microcontroller that turns it into a TTL pulse (pyserial)."""

    def __init__(self, port: str, baud: int = 115200, pulse_ms: int = 5,
                 kinds: Sequence[str] = ("touchdown", "liftoff")) -> None:
        import serial  # lazy: only rigs with a serial output need pyserial loaded

        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=0.5)
        except (serial.SerialException, OSError, ValueError) as e:
            raise OSError(f"serial output: cannot open {port!r} at {baud} baud: {e}") from None
        self.kinds = tuple(kinds)
        self.last_write_ns = 0  # when the write of the last event byte began (monotonic ns)
        self._serial.write(bytes([SET_PULSE_MS, int(pulse_ms)]))
        self._serial.flush()

    def process(self, event: EventPacket) -> None:
        started = now_ns()
        self._serial.write(bytes([event_byte(event, self.kinds)]))
        self._serial.flush()
        self.last_write_ns = started

    def close(self) -> None:
        self._serial.close()


def event_json(event: EventPacket, sent_ns: int) -> bytes:
    """The UDP datagram: one JSON object per event (UTF-8)."""
    return json.dumps({
        "name": event.name,
        "subject": event.subject,
        "frame_set_index": int(event.frame_set_index),
        "capture_ns": int(event.capture_ns),
        "emitted_ns": int(event.emitted_ns),
        "sent_ns": int(sent_ns),
        "position_mm": [float(v) for v in event.position_mm],
        "extra": dict(event.extra),
    }, separators=(",", ":")).encode()


class UdpOutput:
    """One JSON datagram per event (see `event_json`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9999) -> None:
        self.address = (host, int(port))
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def process(self, event: EventPacket) -> None:
        self._sock.sendto(event_json(event, now_ns()), self.address)

    def close(self) -> None:
        self._sock.close()


class ZmqOutput:
    """The EventPacket in ratrig's wire form on an extra PUB or PUSH socket (other software)."""

    def __init__(self, endpoint: str, bind: bool = True, socket_type: str = "pub") -> None:
        import zmq

        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB if socket_type == "pub" else zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 1000)
        try:
            self._sock.bind(endpoint) if bind else self._sock.connect(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(0)
            self._ctx.term()
            raise OSError(f"zmq output: cannot {'bind' if bind else 'connect'} {endpoint!r}: {e}") from None
        self._noblock = zmq.NOBLOCK
        self._again = zmq.Again

    def process(self, event: EventPacket) -> None:
        try:
            self._sock.send_multipart(encode(event), flags=self._noblock)
        except self._again:
            raise RuntimeError("zmq output: peer not keeping up (send would block)") from None

    def close(self) -> None:
        self._sock.close(0)
        self._ctx.term()


def load_python_output(path: str, class_name: str, options: Mapping[str, Any]) -> Any:
    """Import `class_name` from the Python file `path` and build it with **options."""
    file = Path(path)
    if not file.is_file():
        raise OSError(f"python output: plugin file {path!r} not found")
    module_name = f"ratrig_plugin_{file.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise OSError(f"python output: cannot import {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise OSError(f"python output: {path!r} defines no {class_name!r}")
    obj = cls(**dict(options))
    if not callable(getattr(obj, "process", None)):
        raise OSError(f"python output: {class_name} in {path!r} has no process(event) method")
    return obj


# --------------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class OutputSpec:
    """One validated [[events.outputs]] table."""

    type: str
    name: str
    options: Mapping[str, Any]
    on: tuple[str, ...] | None = None
    subjects: tuple[str, ...] | None = None
    queue_size: int = 64
    timeout_ms: float = 100.0


_COMMON = {"type", "name", "on", "subjects", "queue_size", "timeout_ms"}
# type -> key -> (python types, required, default, description)
_KEYS: dict[str, dict[str, tuple[tuple[type, ...], bool, Any, str]]] = {
    "serial": {"port": ((str,), True, None, "a device path such as '/dev/ttyACM0'"),
               "baud": ((int,), False, 115200, "a positive integer"),
               "pulse_ms": ((int,), False, 5, "an integer in 1..255")},
    "udp": {"host": ((str,), False, "127.0.0.1", "a host name or address"),
            "port": ((int,), True, None, "a port in 1..65535")},
    "zmq": {"endpoint": ((str,), True, None, "a ZeroMQ endpoint such as 'tcp://127.0.0.1:5600'"),
            "bind": ((bool,), False, True, "true or false"),
            "socket": ((str,), False, "pub", "'pub' or 'push'")},
    "python": {"path": ((str,), True, None, "the path of a Python file"),
               "class": ((str,), True, None, "a class name"),
               "options": ((dict,), False, {}, "a table")},
}


def parse_output_specs(
    tables: Sequence[Mapping[str, Any]],
    event_names: Sequence[str],
    resolve: Callable[[str], str] = lambda p: p,
    where: str = "events.outputs",
) -> list[OutputSpec]:
    """[[events.outputs]] tables -> OutputSpecs. Raises OutputConfigError naming the key.

    `event_names`: every event the session can emit (for checking `on`); `resolve` turns a path of
    the config file into an absolute one.
    """
    specs: list[OutputSpec] = []
    for i, t in enumerate(tables):
        at = f"{where}[{i}]"
        if not isinstance(t, Mapping):
            raise OutputConfigError(f"{at}: expected a table, got {t!r}")
        kind = t.get("type")
        if kind not in _KEYS:
            raise OutputConfigError(f"{at}.type: expected one of {sorted(_KEYS)}, got {kind!r}")
        keys = _KEYS[kind]
        unknown = [k for k in t if k not in keys and k not in _COMMON]
        if unknown:
            raise OutputConfigError(f"{at}.{unknown[0]}: unknown key for a {kind} output; expected one of "
                                    f"{sorted(set(keys) | _COMMON)}")
        options: dict[str, Any] = {}
        for key, (types, required, default, desc) in keys.items():
            if key not in t:
                if required:
                    raise OutputConfigError(f"{at}.{key}: missing; a {kind} output needs {desc}")
                options[key] = default
                continue
            v = t[key]
            if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
                raise OutputConfigError(f"{at}.{key}: expected {desc}, got {v!r}")
            options[key] = v
        if kind == "serial":
            if options["baud"] <= 0:
                raise OutputConfigError(f"{at}.baud: expected a positive integer, got {options['baud']!r}")
            if not 1 <= options["pulse_ms"] <= 255:
                raise OutputConfigError(f"{at}.pulse_ms: expected an integer in 1..255, got {options['pulse_ms']!r}")
        if kind == "udp" and not 1 <= options["port"] <= 65535:
            raise OutputConfigError(f"{at}.port: expected a port in 1..65535, got {options['port']!r}")
        if kind == "zmq":
            if options["socket"] not in ("pub", "push"):
                raise OutputConfigError(f"{at}.socket: expected 'pub' or 'push', got {options['socket']!r}")
            if "://" not in options["endpoint"]:
                raise OutputConfigError(f"{at}.endpoint: expected 'transport://address', got {options['endpoint']!r}")
        if kind == "python":
            options["path"] = resolve(options["path"])
            if not Path(options["path"]).is_file():
                raise OutputConfigError(f"{at}.path: plugin file {options['path']!r} not found")
        on = t.get("on")
        if on is not None:
            if not isinstance(on, list) or not all(isinstance(x, str) for x in on):
                raise OutputConfigError(f"{at}.on: expected a list of event names, got {on!r}")
            bad = [x for x in on if x not in event_names]
            if bad:
                raise OutputConfigError(f"{at}.on: unknown event {bad[0]!r}; events are {list(event_names)}")
        subjects = t.get("subjects")
        if subjects is not None and (not isinstance(subjects, list) or not all(isinstance(x, str) for x in subjects)):
            raise OutputConfigError(f"{at}.subjects: expected a list of paw / keypoint names, got {subjects!r}")
        queue_size = t.get("queue_size", 64)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise OutputConfigError(f"{at}.queue_size: expected an integer >= 1, got {queue_size!r}")
        timeout_ms = t.get("timeout_ms", 100.0)
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) or not timeout_ms > 0:
            raise OutputConfigError(f"{at}.timeout_ms: expected a number > 0, got {timeout_ms!r}")
        name = t.get("name", f"{kind}[{i}]")
        if not isinstance(name, str) or not name:
            raise OutputConfigError(f"{at}.name: expected a non-empty string, got {name!r}")
        if any(s.name == name for s in specs):
            raise OutputConfigError(f"{at}.name: output name {name!r} is used twice")
        specs.append(OutputSpec(kind, name, options, tuple(on) if on is not None else None,
                                tuple(subjects) if subjects is not None else None, queue_size, float(timeout_ms)))
    return specs


def build_output(spec: OutputSpec, event_names: Sequence[str]) -> Any:
    """OutputSpec -> an opened output object. Raises OSError naming the device/file."""
    o = spec.options
    if spec.type == "serial":
        return SerialOutput(o["port"], o["baud"], o["pulse_ms"], kinds=event_names)
    if spec.type == "udp":
        return UdpOutput(o["host"], o["port"])
    if spec.type == "zmq":
        return ZmqOutput(o["endpoint"], o["bind"], o["socket"])
    if spec.type == "python":
        return load_python_output(o["path"], o["class"], o["options"])
    raise ValueError(f"unknown output type {spec.type!r}")


# --------------------------------------------------------------------------------------------------
# Isolation


@dataclass
class OutputStats:
    offered: int = 0
    filtered: int = 0  # not matching `on` / `subjects`
    written: int = 0  # process() returned normally
    errors: int = 0  # process() raised
    dropped_full: int = 0  # queue full
    dropped_stalled: int = 0  # offered while a process() call was overdue
    stalls: int = 0  # process() calls that exceeded timeout_ms
    last_error: str = ""
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))


class OutputRunner:
    """Runs one output in its own thread behind a bounded queue. `submit` never blocks.

    Latency recorded per written event: time process() returned minus the event's capture_ns.
    """

    _STOP = object()

    def __init__(self, name: str, output: Any, queue_size: int = 64, timeout_ms: float = 100.0,
                 on: Sequence[str] | None = None, subjects: Sequence[str] | None = None) -> None:
        self.name = name
        self.output = output
        self.timeout_ns = int(timeout_ms * 1e6)
        self.on = frozenset(on) if on is not None else None
        self.subjects = frozenset(subjects) if subjects is not None else None
        self.stats = OutputStats()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._busy_since_ns = 0  # start of the current process() call; 0 when idle
        self._stall_counted = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)
        self._thread.start()

    def submit(self, event: EventPacket) -> bool:
        """Offer one event; False if it was filtered or dropped (counted in `stats`)."""
        s = self.stats
        s.offered += 1
        if (self.on is not None and event.name not in self.on) or (
            self.subjects is not None and event.subject not in self.subjects
        ):
            s.filtered += 1
            return False
        if self.stalled():
            s.dropped_stalled += 1
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            s.dropped_full += 1
            log.warning("output %s: queue full, event %s/%s dropped", self.name, event.name, event.subject)
            return False
        return True

    def stalled(self) -> bool:
        """True while a process() call has been running longer than timeout_ms (counted once)."""
        busy = self._busy_since_ns
        if busy and now_ns() - busy > self.timeout_ns:
            with self._lock:
                if not self._stall_counted:
                    self._stall_counted = True
                    self.stats.stalls += 1
                    log.error("output %s: process() blocked for more than %.0f ms; skipping it until it returns",
                              self.name, self.timeout_ns / 1e6)
            return True
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                break
            self._busy_since_ns = now_ns()
            try:
                self.output.process(item)
            except Exception as e:  # a plugin may raise anything: report it, keep going
                self.stats.errors += 1
                self.stats.last_error = f"{type(e).__name__}: {e}"
                if self.stats.errors <= 3 or self.stats.errors % 100 == 0:
                    log.error("output %s: process() raised %s (%d errors so far)", self.name,
                              self.stats.last_error, self.stats.errors)
            else:
                self.stats.written += 1
                self.stats.latency_ms.append((now_ns() - item.capture_ns) * 1e-6)
            finally:
                with self._lock:
                    self._busy_since_ns = 0
                    self._stall_counted = False
        close = getattr(self.output, "close", None)
        if callable(close):
            try:
                close()
            except Exception as e:
                self.stats.last_error = f"close: {type(e).__name__}: {e}"
                log.error("output %s: close() raised %s", self.name, self.stats.last_error)

    def close(self, timeout_s: float = 1.0) -> bool:
        """Let the queue drain, close the output in its thread; False if it did not finish in time
        (a blocked plugin: its daemon thread is abandoned)."""
        try:
            self._queue.put(self._STOP, timeout=timeout_s)
        except queue.Full:
            log.error("output %s: queue still full at shutdown; abandoning it", self.name)
            return False
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("output %s: did not close within %.1f s; abandoning it", self.name, timeout_s)
            return False
        return True

    def summary(self) -> dict[str, Any]:
        """Counters and latency percentiles (msgpack-able) for the stats message."""
        s = self.stats
        lat = np.array(s.latency_ms, float)
        return {
            "offered": s.offered, "filtered": s.filtered, "written": s.written, "errors": s.errors,
            "dropped_full": s.dropped_full, "dropped_stalled": s.dropped_stalled, "stalls": s.stalls,
            "stalled_now": bool(self._busy_since_ns and now_ns() - self._busy_since_ns > self.timeout_ns),
            "last_error": s.last_error,
            "capture_to_output_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "capture_to_output_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        }


def start_outputs(specs: Sequence[OutputSpec], event_names: Sequence[str]) -> list[OutputRunner]:
    """Open every output and start its runner. On a failure, closes those already opened and raises."""
    runners: list[OutputRunner] = []
    try:
        for spec in specs:
            out = build_output(spec, event_names)
            runners.append(OutputRunner(spec.name, out, spec.queue_size, spec.timeout_ms, spec.on, spec.subjects))
    except Exception as e:
        for r in runners:
            r.close()
        raise OSError(f"events.outputs ({spec.name}): {e}") from None
    return runners
