"""CurveZMQ authentication with real sockets: `ratrig keys`, allowed keys only, nothing for a peer
without a key, nothing published in by one, and the default (127.0.0.1, no key) unchanged."""
from __future__ import annotations

import os
import stat
import subprocess
import threading
import time

import numpy as np
import pytest
import zmq

from ratrig.cli.keys import main as keys_main
from ratrig.config import Endpoints, load_config
from ratrig.messages import FramePacket, StatsPacket
from ratrig.security import CURVE_ENV, KeyFileError, curve_env, keys_from_env
from ratrig.transport import ReceiveCounters, make_pub, make_sub, recv_packet, send_packet

from tests.helpers import PYTHON, REPO, free_base_port, video_rig_toml


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    assert keys_main([str(d), "server", "good", "rogue", "rogue-server"]) == 0
    return d


def server_env(d) -> dict[str, str]:
    return curve_env(server_secret=str(d / "server.key_secret"), client_secret=str(d / "good.key_secret"),
                     allowed_clients=[str(d / "good.key")])


def client_env(d, name: str, server: str = "server") -> dict[str, str]:
    return curve_env(server_public=str(d / f"{server}.key"), client_secret=str(d / f"{name}.key_secret"))


def with_env(monkeypatch, env: dict[str, str]) -> None:
    monkeypatch.delenv(CURVE_ENV, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_keys_command_writes_a_private_secret_and_refuses_to_overwrite(keys, capsys):
    secret, public = keys / "good.key_secret", keys / "good.key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    pub_key, sec_key = zmq.auth.load_certificate(secret)
    assert zmq.auth.load_certificate(public) == (pub_key, None)
    assert zmq.curve_public(sec_key) == pub_key  # a real key pair
    assert keys_main([str(keys), "good"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert zmq.auth.load_certificate(secret) == (pub_key, sec_key)  # untouched


def test_a_secret_key_readable_by_others_is_refused(keys):
    os.chmod(keys / "good.key_secret", 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        keys_from_env(server_env(keys))


def test_a_missing_key_file_is_named(keys):
    env = curve_env(server_secret=str(keys / "nope.key_secret"), client_secret=str(keys / "good.key_secret"),
                    allowed_clients=[str(keys / "good.key")])
    with pytest.raises(KeyFileError, match="network.server_secret_key: .*nope.key_secret"):
        keys_from_env(env)


def _receive(sock, seconds: float) -> int:
    n, counters = 0, ReceiveCounters()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(50):
            while recv_packet(sock, counters, zmq.NOBLOCK) is not None:
                n += 1
    return n


def test_only_allowed_client_keys_receive(keys, monkeypatch):
    port = free_base_port()
    ep = f"tcp://127.0.0.1:{port}"
    ctx = zmq.Context()
    with_env(monkeypatch, server_env(keys))
    pub = make_pub(ctx, ep)
    assert pub.mechanism == zmq.CURVE and pub.curve_server
    subs = {}
    for name, env in [("good", client_env(keys, "good")), ("keyless", {}), ("rogue", client_env(keys, "rogue")),
                      ("wrong server key", client_env(keys, "good", server="rogue-server"))]:
        with_env(monkeypatch, env)
        subs[name] = make_sub(ctx, [ep], [b"frame/"])
    got = {name: 0 for name in subs}
    stop = threading.Event()

    def send() -> None:
        i = 0
        while not stop.is_set():
            send_packet(pub, FramePacket("a", i, i, np.zeros((4, 4, 3), np.uint8)))
            i += 1
            time.sleep(0.005)

    t = threading.Thread(target=send)
    t.start()
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for name, sock in subs.items():
                got[name] += _receive(sock, 0.05)
    finally:
        stop.set()
        t.join()
    assert got["good"] > 50
    assert got["keyless"] == 0 and got["rogue"] == 0 and got["wrong server key"] == 0
    for s in [pub, *subs.values()]:
        s.close(0)
    # the authenticator stopped with its last server socket: the context terminates promptly
    done = threading.Event()
    threading.Thread(target=lambda: (ctx.term(), done.set()), daemon=True).start()
    assert done.wait(5), "Context.term() hung on the authenticator"


def test_a_peer_without_the_key_cannot_publish_into_a_stage(keys, tmp_path, monkeypatch):
    """A real stage process (the probe) with keys: frames from a keyless PUB and from a CURVE server
    with another key on the camera's endpoint never reach it; the rig's own secured camera does."""
    rig_path = video_rig_toml(tmp_path, 1)
    eps = Endpoints(load_config(rig_path))
    env = dict(os.environ, **server_env(keys))
    proc = subprocess.Popen([PYTHON, "-m", "acquisition.probe", "--config", str(rig_path)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    with_env(monkeypatch, client_env(keys, "good"))
    stats = make_sub(ctx, [eps.connect("inference/0")], [b"stats/"])
    counters = ReceiveCounters()

    def received(timeout_s: float, first: bool = False) -> int | None:
        """The probe's newest count after `timeout_s` (or at its first stats when `first`)."""
        latest = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if stats.poll(100):
                pkt = recv_packet(stats, counters)
                if isinstance(pkt, StatsPacket):
                    latest = pkt.stats["cameras"]["cam0"]["received"]
                    if first:
                        break
        return latest

    def flood(pub, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            send_packet(pub, FramePacket("cam0", i, time.monotonic_ns(), np.zeros((48, 64, 3), np.uint8)))
            i += 1
            time.sleep(0.01)
        pub.close(0)

    try:
        assert received(30, first=True) == 0, "no stats from the secured probe (or it counted frames already)"
        rogue = curve_env(server_secret=str(keys / "rogue-server.key_secret"), client_secret=str(keys / "rogue.key_secret"),
                          allowed_clients=[str(keys / "good.key")])
        with_env(monkeypatch, rogue)  # a CURVE server with another key pair
        flood(make_pub(ctx, eps.bind("camera/cam0")), 2.0)
        assert received(1.2) == 0, "the probe took frames from a server with the wrong key"
        time.sleep(0.3)  # the closed listener frees the port asynchronously
        with_env(monkeypatch, server_env(keys))
        flood(make_pub(ctx, eps.bind("camera/cam0")), 2.0)
        legit = received(1.2)
        assert legit > 20, "the rig's own secured camera did not get through"
        time.sleep(0.3)
        with_env(monkeypatch, {})  # no key at all (libzmq then drops the connection for good: last)
        flood(make_pub(ctx, eps.bind("camera/cam0")), 2.0)
        assert received(1.2) == legit, "the probe took frames from a keyless publisher"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
        stats.close(0)
        ctx.term()


def test_the_default_is_127_0_0_1_and_no_key(tmp_path, monkeypatch):
    monkeypatch.delenv(CURVE_ENV, raising=False)
    rig = load_config(video_rig_toml(tmp_path, 1))
    assert Endpoints(rig).bind("camera/cam0").startswith("tcp://127.0.0.1:")
    ctx = zmq.Context()
    pub = make_pub(ctx, Endpoints(rig).bind("camera/cam0"))
    sub = make_sub(ctx, [Endpoints(rig).connect("camera/cam0")], [b""])
    assert pub.mechanism == zmq.NULL and sub.mechanism == zmq.NULL
    time.sleep(0.2)
    send_packet(pub, FramePacket("cam0", 0, 0, np.zeros((2, 2, 3), np.uint8)))
    assert _receive(sub, 1.0) == 1
    pub.close(0)
    sub.close(0)
    ctx.term()
