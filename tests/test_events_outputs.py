"""Output plugins: serial bytes through a pseudo-terminal, isolation of bad plugins, config errors."""
from __future__ import annotations

import json
import os
import select
import socket
import textwrap
import threading
import time

import pytest

from events.outputs import (
    EVENT_BIT, SET_PULSE_MS, OutputConfigError, OutputRunner, SerialOutput, UdpOutput, decode_event_byte,
    event_byte, parse_output_specs, start_outputs,
)
from ratrig.clock import now_ns
from ratrig.messages import EventPacket
from ratrig.skeleton import PAWS

KINDS = ("touchdown", "liftoff", "rearing")


def ev(name="touchdown", subject="hind_left_paw", capture_ns=None):
    t = now_ns() if capture_ns is None else capture_ns
    return EventPacket(name, subject, 7, t, t, (1.0, 2.0, 4.0), {}, {"onset_ns": t})


def read_bytes(fd, n, timeout_s=2.0):
    """Read n bytes from fd; returns [(byte, monotonic ns when read)]."""
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            t = now_ns()
            out += [(b, t) for b in os.read(fd, n - len(out))]
    return out


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def test_event_byte_layout():
    assert event_byte(ev("touchdown", "front_left_paw"), KINDS) == 0x80
    assert event_byte(ev("liftoff", "hind_right_paw"), KINDS) == 0x80 | 0x10 | 3
    assert event_byte(ev("rearing", "nose"), KINDS) == 0x80 | 0x20 | 0  # nose = keypoint 0
    assert event_byte(ev("touchdown", "mystery"), KINDS) == 0x8F
    for paw in PAWS:
        for kind in ("touchdown", "liftoff"):
            assert decode_event_byte(event_byte(ev(kind, paw), KINDS), KINDS) == (kind, PAWS.index(paw))
    with pytest.raises(ValueError):
        decode_event_byte(0x01, KINDS)


def test_serial_output_writes_protocol_bytes_promptly(pty_pair):
    master, path = pty_pair
    out = SerialOutput(path, baud=115200, pulse_ms=7, kinds=KINDS)
    runner = OutputRunner("ttl", out, queue_size=16, timeout_ms=200)
    try:
        assert [b for b, _ in read_bytes(master, 2)] == [SET_PULSE_MS, 7]
        sent = [ev("touchdown", "front_right_paw"), ev("liftoff", "hind_left_paw"), ev("rearing", "nose")]
        got = []
        for i, e in enumerate(sent):
            t_submit = now_ns()
            assert runner.submit(e)
            (b, t_read), = read_bytes(master, 1)
            got.append(b)
            # the byte reaches the other end of the line within a few ms of the event being offered
            assert (t_read - t_submit) < 50e6, (t_read - t_submit) / 1e6
            # this event's write began after it was offered and before its byte arrived (the
            # output thread records it once flush() returns, which may be after the read)
            deadline = time.monotonic() + 2.0
            while runner.stats.written < i + 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert runner.stats.written == i + 1
            assert t_submit <= out.last_write_ns <= t_read
        assert got == [0x80 | 1, 0x80 | 0x10 | 2, 0x80 | 0x20 | 0]
        assert all(b & EVENT_BIT for b in got)
    finally:
        assert runner.close()
    assert runner.stats.written == 3 and runner.stats.errors == 0
    assert runner.summary()["capture_to_output_ms_p99"] < 50


def test_serial_output_bad_port_names_the_device(tmp_path):
    with pytest.raises(OSError, match="ttyNOPE"):
        SerialOutput(str(tmp_path / "ttyNOPE"))


class Recorder:
    def __init__(self):
        self.events = []
        self.closed = False

    def process(self, event):
        self.events.append((event, now_ns()))

    def close(self):
        self.closed = True


class Crasher:
    def __init__(self):
        self.calls = 0

    def process(self, event):
        self.calls += 1
        raise RuntimeError("lab code bug")


class Blocker:
    def __init__(self):
        self.release = threading.Event()

    def process(self, event):
        self.release.wait(10)


def test_crashing_and_blocking_plugins_do_not_stop_the_others():
    good, crasher, blocker = Recorder(), Crasher(), Blocker()
    runners = [OutputRunner("crasher", crasher, queue_size=4, timeout_ms=50),
               OutputRunner("blocker", blocker, queue_size=4, timeout_ms=50),
               OutputRunner("good", good, queue_size=64, timeout_ms=50)]
    n = 40
    t0 = time.monotonic()
    for i in range(n):
        e = ev(subject=PAWS[i % 4])
        for r in runners:
            assert isinstance(r.submit(e), bool)  # never raises, never blocks
        time.sleep(0.005)
    submit_time = time.monotonic() - t0
    assert submit_time < n * 0.005 + 0.5  # the blocked plugin did not slow the producer down
    deadline = time.monotonic() + 2
    while len(good.events) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(good.events) == n  # every event reached the healthy output, in order
    assert [e.subject for e, _ in good.events] == [PAWS[i % 4] for i in range(n)]
    c, b = runners[0].summary(), runners[1].summary()
    assert c["errors"] == n and crasher.calls == n and "lab code bug" in c["last_error"]
    assert b["stalls"] == 1 and b["stalled_now"]
    assert b["dropped_stalled"] + b["dropped_full"] >= n - 5  # skipped while stuck, counted
    assert runners[1].close(timeout_s=0.2) is False  # still stuck: abandoned, reported
    blocker.release.set()
    assert runners[0].close() and runners[2].close()
    assert good.closed


def test_queue_overflow_is_counted():
    gate = threading.Event()

    class Slow:
        def process(self, event):
            gate.wait(5)

    r = OutputRunner("slow", Slow(), queue_size=2, timeout_ms=10_000)
    results = [r.submit(ev()) for _ in range(6)]
    gate.set()
    assert results.count(False) >= 3 and r.stats.dropped_full == results.count(False)
    assert r.close()


def test_filter_on_and_subjects():
    rec = Recorder()
    r = OutputRunner("f", rec, on=["touchdown"], subjects=["hind_left_paw"])
    r.submit(ev("touchdown", "hind_left_paw"))
    r.submit(ev("liftoff", "hind_left_paw"))
    r.submit(ev("touchdown", "front_left_paw"))
    assert r.close()
    assert [(e.name, e.subject) for e, _ in rec.events] == [("touchdown", "hind_left_paw")]
    assert r.stats.filtered == 2


def test_udp_output_sends_json():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    out = UdpOutput("127.0.0.1", rx.getsockname()[1])
    e = ev("touchdown", "front_left_paw")
    out.process(e)
    msg = json.loads(rx.recv(65536))
    out.close()
    rx.close()
    assert msg["name"] == "touchdown" and msg["subject"] == "front_left_paw"
    assert msg["capture_ns"] == e.capture_ns and msg["sent_ns"] >= e.capture_ns
    assert msg["position_mm"] == [1.0, 2.0, 4.0] and msg["extra"]["onset_ns"] == e.capture_ns


def test_python_plugin_from_file(tmp_path):
    plugin = tmp_path / "lab_plugin.py"
    plugin.write_text(textwrap.dedent("""
        class Count:
            def __init__(self, out, prefix="x"):
                self.out, self.prefix = out, prefix
            def process(self, event):
                with open(self.out, "a") as f:
                    f.write(self.prefix + event.subject + "\\n")
    """))
    out_file = tmp_path / "seen.txt"
    specs = parse_output_specs(
        [{"type": "python", "path": "lab_plugin.py", "class": "Count",
          "options": {"out": str(out_file), "prefix": "P:"}}],
        KINDS, resolve=lambda p: str(tmp_path / p))
    (runner,) = start_outputs(specs, KINDS)
    runner.submit(ev(subject="front_left_paw"))
    assert runner.close()
    assert out_file.read_text() == "P:front_left_paw\n"


@pytest.mark.parametrize("table, message", [
    ({"type": "serail", "port": "/dev/x"}, r"events\.outputs\[0\]\.type: expected one of"),
    ({"type": "serial"}, r"events\.outputs\[0\]\.port: missing"),
    ({"type": "serial", "port": "/dev/x", "baud": "fast"}, r"events\.outputs\[0\]\.baud: expected a positive integer"),
    ({"type": "serial", "port": "/dev/x", "pulse_ms": 0}, r"\.pulse_ms: expected an integer in 1\.\.255"),
    ({"type": "udp", "port": 70000}, r"\.port: expected a port"),
    ({"type": "udp", "port": 9999, "hots": "x"}, r"events\.outputs\[0\]\.hots: unknown key"),
    ({"type": "udp", "port": 9999, "on": ["touchdwn"]}, r"\.on: unknown event 'touchdwn'"),
    ({"type": "zmq", "endpoint": "localhost"}, r"\.endpoint: expected 'transport://address'"),
    ({"type": "zmq", "endpoint": "tcp://127.0.0.1:1", "socket": "req"}, r"\.socket: expected 'pub' or 'push'"),
    ({"type": "python", "path": "/nonexistent/p.py", "class": "X"}, r"\.path: plugin file .* not found"),
    ({"type": "udp", "port": 1, "queue_size": 0}, r"\.queue_size: expected an integer >= 1"),
])
def test_output_config_errors_name_the_key(table, message):
    with pytest.raises(OutputConfigError, match=message):
        parse_output_specs([table], KINDS)


def test_output_config_defaults():
    (s,) = parse_output_specs([{"type": "serial", "port": "/dev/ttyACM0", "on": ["touchdown"]}], KINDS)
    assert s.options == {"port": "/dev/ttyACM0", "baud": 115200, "pulse_ms": 5}
    assert s.on == ("touchdown",) and s.name == "serial[0]" and s.queue_size == 64
