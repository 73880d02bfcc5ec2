"""The synthetic demo on two "hosts" with CurveZMQ keys: cameras on one, inference/fusion/events/
recorder on the other, plus an intruder with an unlisted key; prints what each side saw.

    sudo python bench/netmode.py [--duration 20] [--fps 15]

The hosts are two Linux network namespaces joined by a veth pair (10.215.0.1 cameras, 10.215.0.2
processing), made with `ip netns` (root) and removed afterwards; without them (not root, or no
`ip netns`), two loopback addresses (127.0.0.2 / 127.0.0.3) stand in, and the output says which.
The intruder runs on the processing host with its own config and key (not on the cameras' list).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ratrig.cli.keys import main as keys_main  # noqa: E402
from ratrig.config import load_config, replace_section, save_config  # noqa: E402
from tests.helpers import free_base_port  # noqa: E402

NS_CAM, NS_GPU = f"rr15cam{os.getpid() % 10000}", f"rr15gpu{os.getpid() % 10000}"
VETH_CAM, VETH_GPU = f"rrc{os.getpid() % 10000}", f"rrg{os.getpid() % 10000}"


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def make_namespaces() -> tuple[str, str] | None:
    """(camera address, processing address) across two new namespaces, or None if not possible."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return None
    try:
        sh("ip", "netns", "add", NS_CAM)
        sh("ip", "netns", "add", NS_GPU)
        sh("ip", "link", "add", VETH_CAM, "type", "veth", "peer", "name", VETH_GPU)
        sh("ip", "link", "set", VETH_CAM, "netns", NS_CAM)
        sh("ip", "link", "set", VETH_GPU, "netns", NS_GPU)
        sh("ip", "-n", NS_CAM, "addr", "add", "10.215.0.1/24", "dev", VETH_CAM)
        sh("ip", "-n", NS_GPU, "addr", "add", "10.215.0.2/24", "dev", VETH_GPU)
        for ns, dev in ((NS_CAM, VETH_CAM), (NS_GPU, VETH_GPU)):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        print(f"network namespaces unavailable ({e.stderr.strip()}); using loopback addresses")
        remove_namespaces()
        return None
    return "10.215.0.1", "10.215.0.2"


def remove_namespaces() -> None:
    for ns in (NS_CAM, NS_GPU):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--fps", type=float, default=15.0)
    args = p.parse_args(argv)
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
               TF_CPP_MIN_LOG_LEVEL="2")
    addresses = make_namespaces()
    mode = "two network namespaces joined by a veth pair" if addresses else "two loopback addresses"
    cam_addr, gpu_addr = addresses or ("127.0.0.2", "127.0.0.3")
    ns = (["ip", "netns", "exec", NS_CAM], ["ip", "netns", "exec", NS_GPU]) if addresses else ([], [])
    try:
        with tempfile.TemporaryDirectory(prefix="ratrig-netmode-") as tmp_s:
            tmp = Path(tmp_s)
            keys = tmp / "keys"
            keys_main([str(keys), "server", "camera-pc", "gpu-box", "intruder"])
            rig = load_config(REPO / "configs" / "synthetic.toml")
            rig = replace_section(rig, "network", base_port=free_base_port(), host=gpu_addr, connect_host=gpu_addr,
                                  camera_host=cam_addr, server_secret_key=str(keys / "server.key_secret"),
                                  allowed_client_keys=[str(keys / "gpu-box.key"), str(keys / "camera-pc.key")])
            cfg = {}
            for name, client in (("processing", "gpu-box"), ("cameras", "camera-pc")):
                cfg[name] = tmp / f"{name}.toml"
                save_config(replace_section(rig, "network", client_secret_key=str(keys / f"{client}.key_secret")),
                            cfg[name])
            # the intruder: same rig and ports, its own key (allowed by itself, not by the cameras)
            cfg["intruder"] = tmp / "intruder.toml"
            save_config(replace_section(rig, "network", base_port=free_base_port(), host=gpu_addr,
                                        connect_host=gpu_addr, client_secret_key=str(keys / "intruder.key_secret"),
                                        allowed_client_keys=[str(keys / "intruder.key")]), cfg["intruder"])

            def demo(which: str, role: str, seconds: float, prefix: list[str], extra: list[str]) -> subprocess.Popen:
                return subprocess.Popen([*prefix, sys.executable, "-m", "ratrig", "demo", "--config", str(cfg[which]),
                                         "--role", role, "--headless", "--duration", str(seconds), "--fps",
                                         str(args.fps), "--json", str(tmp / f"{which}.json"),
                                         "--run-dir", str(tmp / f"run-{which}"), *extra],
                                        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

            # processing first (its stages load the model), then the cameras for a little less time
            processing = demo("processing", "processing", args.duration + 30, ns[1], ["--record", str(tmp / "rec")])
            intruder = demo("intruder", "processing", args.duration + 30, ns[1], ["--no-inference"])
            time.sleep(25)
            cameras = demo("cameras", "cameras", args.duration, ns[0], [])
            failed = False
            for name, proc in (("cameras", cameras), ("processing", processing), ("intruder", intruder)):
                _, err = proc.communicate(timeout=args.duration + 400)
                if proc.returncode != 0:
                    print(f"{name}: exit {proc.returncode}: {err[-1500:]}")
                    failed = True
            if failed:
                return 1
            s = {k: json.loads((tmp / f"{k}.json").read_text()) for k in ("cameras", "processing", "intruder")}
    finally:
        if addresses:
            remove_namespaces()
    print(f"\nhosts: {mode}; cameras at {cam_addr}, processing at {gpu_addr}; CurveZMQ keys on every socket; "
          f"{args.fps:g} fps x {args.duration:g} s\n")
    print(f"{'camera':<8} {'captured':>9} {'published':>10} {'received (gpu)':>15} {'inferred':>9} "
          f"{'skipped':>8} {'received (intruder)':>20}")
    for cam, c in s["cameras"]["cameras"].items():
        g = s["processing"]["cameras"].get(cam, {})
        bad = s["intruder"]["cameras"].get(cam, {})
        print(f"{cam:<8} {c.get('captured', 0):>9} {c.get('published', 0):>10} {g.get('received', 0):>15} "
              f"{g.get('inferred', 0):>9} {g.get('skipped', 0):>8} {bad.get('received', 0):>20}")
    lat = s["processing"].get("latency_ms", {})
    print(f"\nfusion frame sets: {s['processing'].get('fusion', {}).get('frame_sets')}; latency ms "
          + ", ".join(f"{k} p50 {v['p50']:.1f} p99 {v['p99']:.1f}" for k, v in lat.items() if isinstance(v, dict)))
    rec = s["processing"].get("recorder", {})
    print(f"recorder: frames written {rec.get('frames_written')}, lost {rec.get('frames_lost_total')}")
    print(f"problems: processing {s['processing']['problems']}, cameras {s['cameras']['problems']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
