"""Small helpers shared by tests: free port blocks, rig configs on disk, process checks."""
from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def ephemeral_port_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux: ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other systems use 49152 and up


def free_base_port(span: int = 90) -> int:
    """A base port whose whole block of ratrig ports (base .. base+span) is free now.

    The block lies below the ephemeral range: every ZeroMQ connect takes a local port from that
    range, so a block inside it could be taken by some process's outgoing connection between this
    check and a stage's bind ("Address already in use").
    """
    rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    top = min(ephemeral_port_floor(), 60000) - span
    for _ in range(200):
        base = rng.randrange(12000, top)
        if all(_port_free(base + off) for off in range(span)):
            return base
    raise RuntimeError("no free port block found")


def write_video(path: Path, n_frames: int, size: tuple[int, int] = (64, 48), fps: float = 30.0) -> Path:
    """A small MJPG video whose frame k has brightness k (mod 256), for sources that must be real files."""
    import cv2

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened(), f"cannot write {path}"
    for k in range(n_frames):
        vw.write(np.full((h, w, 3), k % 256, np.uint8))
    vw.release()
    return path


def video_rig_toml(tmp: Path, n_cameras: int, n_frames: int = 300, fps: float = 30.0, loop: bool = True,
                   extra: str = "") -> Path:
    """A rig of `n_cameras` video-file cameras (64x48) on a free port block; returns the TOML path."""
    base = free_base_port()
    lines = [f'name = "test-rig"', "[network]", f"base_port = {base}"]
    for i in range(n_cameras):
        video = write_video(tmp / f"cam{i}.avi", n_frames, fps=fps)
        lines += ["[[cameras]]", f'name = "cam{i}"', f'source = "video:{video}"', "width = 64", "height = 48",
                  f"fps = {fps}", f"loop = {'true' if loop else 'false'}"]
    path = tmp / "rig.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


PYTHON = sys.executable


def run_qt_script_under_xvfb(script: str, path: Path, args: tuple[str, ...] = (), screen: str = "1920x1080x24",
                             timeout_s: float = 120.0) -> dict:
    """Write `script` to `path`, run it with this interpreter under its own Xvfb (xcb platform, the
    repository on PYTHONPATH), assert it exited 0 and return the JSON object on its last stdout line."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "xcb"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    path.write_text(script)
    run = subprocess.run(["xvfb-run", "-a", "-s", f"-screen 0 {screen}", sys.executable, str(path), *args],
                         capture_output=True, text=True, timeout=timeout_s, env=env)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])
