"""Recorder benchmark: sustained write rate and CPU cost with 4 cameras at 30 fps, and headroom.

    nice -n 10 python bench/bench_recorder.py [--seconds 15] [--codec ffv1] [--noise 2]

1. Live: a publisher process sends 4 x 30 fps 640x480 synthetic renders (sensor noise `--noise`
   grey levels, as the synthetic cameras do) over tcp loopback to a real recorder process
   (`python -m recorder.process`). Reported: frames/s and MB/s written per camera, frames lost, the
   recorder's CPU (user+system from /proc, in cores), and the frame delay to disk.
2. Capacity: the same frames pushed through SessionWriter as fast as its writer threads take them
   (blocking on full queues, nothing dropped): the most frames/s this machine can record, for each
   codec, beside the plain alternative of writing the raw pixels to disk (np.ndarray.tofile).
Headroom = capacity / 120 frames/s.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ratrig.clock import now_ns  # noqa: E402
from ratrig.messages import FramePacket  # noqa: E402

CAMS = ("cam_ne", "cam_nw", "cam_sw", "cam_se")
FPS = 30.0


def render_bank(n: int, noise: float) -> list[list[np.ndarray]]:
    """n frames per camera of the synthetic rat walking, (480, 640, 3) uint8."""
    from synthetic.rat import simulate
    from synthetic.render import NoiseOptions, Renderer
    from synthetic.rig import default_rig

    calib = default_rig()
    traj = simulate(n / FPS + 0.1, FPS, 1)
    r = Renderer(calib, seed=1, noise=NoiseOptions(sensor_noise_sigma=noise))
    return [[r.render(c, traj.keypoints_mm[i], traj.extra_mm[i], float(traj.times_s[i])) for i in range(n)]
            for c in range(len(CAMS))]


def publisher(endpoint: str, bank_path: str, seconds: float) -> None:
    """Process target: publish every camera at 30 fps for `seconds`."""
    import zmq

    from ratrig.transport import make_pub, send_packet

    bank = np.load(bank_path)
    ctx = zmq.Context()
    pub = make_pub(ctx, endpoint, sndhwm=100000)
    time.sleep(1.0)
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds:
        cap = now_ns()
        for c, cam in enumerate(CAMS):
            send_packet(pub, FramePacket(cam, i, cap, bank[c, i % bank.shape[1]].copy()))
        i += 1
        time.sleep(max(0.0, t0 + i / FPS - time.monotonic()))
    time.sleep(0.5)
    pub.close(0)
    ctx.term()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_rig(path: Path, base: int, codec: str) -> Path:
    lines = ['name = "bench"', "[network]", f"base_port = {base}", "[recorder]", f'codec = "{codec}"',
             "flush_interval_s = 1.0", "min_free_gb = 0.5", "warn_free_gb = 1.0", "queue_frames = 90"]
    for c in CAMS:
        lines += ["[[cameras]]", f'name = "{c}"', 'source = "synthetic"', f"fps = {FPS}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def live_run(tmp: Path, bank_path: Path, seconds: float, codec: str, base: int) -> dict:
    from recorder.session import open_session

    rig = write_rig(tmp / f"rig_{codec}.toml", base, codec)
    out = tmp / f"live_{codec}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    endpoint = f"tcp://127.0.0.1:{base + 1}"
    rec = subprocess.Popen([sys.executable, "-m", "recorder.process", "--config", str(rig), "--out", str(out),
                            "--connect", endpoint, "--no-publish"], env=env, cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while not (out / "session.json").exists():
        time.sleep(0.05)
    pub = mp.get_context("fork").Process(target=publisher, args=(endpoint, str(bank_path), seconds))
    pub.start()
    time.sleep(1.0)  # publisher start-up
    cpu0, t0 = cpu_seconds(rec.pid), time.monotonic()
    pub.join()
    cpu1, t1 = cpu_seconds(rec.pid), time.monotonic()
    time.sleep(0.5)
    rec.terminate()
    log, _ = rec.communicate(timeout=60)
    s = open_session(out)
    res = {"codec": codec, "seconds": t1 - t0, "cpu_cores": (cpu1 - cpu0) / (t1 - t0), "cameras": {}}
    for cam in CAMS:
        f = s.frames(cam)
        size = sum(p.stat().st_size for p in s.video_paths(cam))
        dur = (f.capture_ns.iloc[-1] - f.capture_ns.iloc[0]) / 1e9
        c = s.counts()["cameras"][cam]
        res["cameras"][cam] = {"frames": len(f), "fps": (len(f) - 1) / dur, "MB_s": size / 1e6 / dur,
                               "lost": c["missing_upstream"] + c["dropped_queue_full"],
                               "missing_upstream": c["missing_upstream"], "dropped_queue_full": c["dropped_queue_full"],
                               "missing_upstream": c["missing_upstream"], "dropped_queue_full": c["dropped_queue_full"],
                               "kB_per_frame": size / len(f) / 1e3}
    return res


def capacity(tmp: Path, bank: np.ndarray, codec: str, n_per_cam: int) -> dict:
    """Frames/s the writer threads sustain when fed as fast as they take frames."""
    from ratrig.config import CameraConfig, RecorderConfig, RigConfig
    from recorder.video import check_codec
    from recorder.writer import SessionWriter

    rig = RigConfig(name="cap", cameras=[CameraConfig(c, "synthetic") for c in CAMS],
                    recorder=RecorderConfig(codec=codec, queue_frames=30))
    w = SessionWriter(tmp / f"cap_{codec}", rig, check_codec(codec))
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(n_per_cam):
        for c, cam in enumerate(CAMS):
            pkt = FramePacket(cam, i, i * 33_333_333, bank[c, i % bank.shape[1]])
            while True:  # blocking put: measure capacity, drop nothing
                try:
                    w.writers[cam].queue.put((pkt, 0), timeout=5)
                    break
                except queue.Full:
                    continue
    w.close()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    size = sum(p.stat().st_size for p in (tmp / f"cap_{codec}").rglob("seg_*"))
    return {"codec": codec, "frames_s": 4 * n_per_cam / dt, "MB_s": size / 1e6 / dt, "cpu_cores": cpu / dt,
            "cpu_ms_per_frame": 1e3 * cpu / (4 * n_per_cam)}


def raw_capacity(tmp: Path, bank: np.ndarray, n_per_cam: int) -> dict:
    t0 = time.perf_counter()
    with open(tmp / "raw.bin", "wb") as f:
        for i in range(n_per_cam):
            for c in range(len(CAMS)):
                bank[c, i % bank.shape[1]].tofile(f)
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    size = (tmp / "raw.bin").stat().st_size
    (tmp / "raw.bin").unlink()
    return {"codec": "raw tofile", "frames_s": 4 * n_per_cam / dt, "MB_s": size / 1e6 / dt}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--codecs", default="ffv1,mjpeg")
    p.add_argument("--noise", type=float, default=2.0, help="sensor noise of the renders, grey levels")
    p.add_argument("--bank", type=int, default=60, help="distinct frames per camera")
    p.add_argument("--base-port", type=int, default=7300)
    args = p.parse_args(argv)
    codecs = args.codecs.split(",")
    print(f"machine: {os.cpu_count()} cores; disk free {shutil.disk_usage(tempfile.gettempdir()).free / 1e9:.1f} GB "
          f"at {tempfile.gettempdir()}; load avg {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        bank = np.asarray(render_bank(args.bank, args.noise))
        np.save(tmp / "bank.npy", bank)
        print(f"rendered {bank.shape[1]} frames x {bank.shape[0]} cameras {bank.shape[2:]} in {time.perf_counter() - t:.1f} s")
        for k, codec in enumerate(codecs):
            r = live_run(tmp, tmp / "bank.npy", args.seconds, codec, args.base_port + 100 * k)
            print(f"\nLIVE {codec}: 4 cameras x {FPS:.0f} fps for {r['seconds']:.1f} s; recorder CPU {r['cpu_cores']:.2f} cores "
                  f"({100 * r['cpu_cores'] / os.cpu_count():.0f} % of the machine)")
            for cam, c in r["cameras"].items():
                print(f"  {cam}: {c['frames']} frames, {c['fps']:.2f} frames/s, {c['MB_s']:.2f} MB/s, "
                      f"{c['kB_per_frame']:.0f} kB/frame, lost {c['lost']} (disk too slow {c['dropped_queue_full']}, before the recorder {c['missing_upstream']})")
            shutil.rmtree(tmp / f"live_{codec}")
        print(f"\nCAPACITY (SessionWriter fed as fast as it takes frames, 4 writer threads, {os.cpu_count()} cores):")
        n = max(args.bank, 90)
        for codec in codecs:
            c = capacity(tmp, bank, codec, n)
            print(f"  {codec:<6}: {c['frames_s']:7.1f} frames/s ({c['MB_s']:6.1f} MB/s), {c['cpu_ms_per_frame']:.1f} ms CPU/frame "
                  f"-> headroom x{c['frames_s'] / (4 * FPS):.2f} over 4 x 30 fps")
            shutil.rmtree(tmp / f"cap_{codec}")
        r = raw_capacity(tmp, bank, n)
        print(f"  plain alternative, raw pixels np.tofile + fsync: {r['frames_s']:.0f} frames/s ({r['MB_s']:.0f} MB/s); "
              f"4 x 30 fps raw needs {4 * FPS * 640 * 480 * 3 / 1e6:.0f} MB/s of disk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
