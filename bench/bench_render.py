"""Synthetic rig speed: frames/s per core of the renderer and what surrounds it.

Run: nice -n 10 python bench/bench_render.py [--frames N]

Prints ms per 640x480 frame and frames/s on one core (OpenCV limited to one thread), for:
the bare background copy (floor of the cost), the rat without noise, with noise + blur + exposure,
visibility flags, the pose evaluation, FFV1 encoding; and, as the plain alternative, ray-casting the
static scene for every frame instead of once per camera.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synthetic.rat import simulate  # noqa: E402
from synthetic.render import NoiseOptions, Renderer, _build_scene, _textures  # noqa: E402
from synthetic.rig import Corridor, default_rig  # noqa: E402


def _time(fn, n: int) -> tuple[float, float]:
    """Median (wall ms, CPU ms of this thread) per call over n calls, after one warm-up.

    CPU time is the figure to trust on a shared box: wall time includes waiting for the core.
    """
    fn(0)
    wall, cpu = [], []
    for i in range(n):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        fn(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return 1000.0 * float(np.median(wall)), 1000.0 * float(np.median(cpu))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    n = args.frames
    calib = default_rig()
    t0 = time.perf_counter()
    traj = simulate(60.0, 30.0, seed=1)
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    clean = Renderer(calib, Corridor(), seed=0)
    build_s = time.perf_counter() - t0
    noisy = Renderer(calib, Corridor(), seed=0,
                     noise=NoiseOptions(sensor_noise_sigma=3.0, blur_sigma_px=0.8, exposure_jitter=0.1))
    opaque = Renderer(calib, Corridor(clear_walls=False), seed=0)
    T = len(traj.times_s)

    def frame(i: int) -> tuple[int, np.ndarray, np.ndarray, float]:
        j = (i * 7) % T
        return i % 4, traj.keypoints_mm[j], traj.extra_mm[j], float(traj.times_s[j])

    bg = clean.background(0)
    rows = []
    rows.append(("background copy only (floor)", _time(lambda i: bg.copy(), n)))
    rows.append(("render, clear walls, no noise", _time(lambda i: clean.render(*frame(i)[:3]), n)))
    rows.append(("render, opaque walls", _time(lambda i: opaque.render(*frame(i)[:3]), n)))
    rows.append(("render + noise/blur/exposure", _time(lambda i: noisy.render(*frame(i)), n)))
    rows.append(("visibility flags (8 keypoints)", _time(lambda i: clean.visibility(*frame(i)[:3]), n)))
    rows.append(("pose_at(t) one time", _time(lambda i: traj.pose_at(0.0123 * i), n)))
    with tempfile.TemporaryDirectory() as d:
        w = cv2.VideoWriter(str(Path(d) / "b.mkv"), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (640, 480))
        imgs = [clean.render(*frame(i)[:3]) for i in range(30)]
        rows.append(("FFV1 encode one frame", _time(lambda i: w.write(imgs[i % 30]), min(n, 60))))
        w.release()
        w = cv2.VideoWriter(str(Path(d) / "b.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
        rows.append(("MJPG encode one frame", _time(lambda i: w.write(imgs[i % 30]), min(n, 60))))
        w.release()
    tex = _textures(np.random.default_rng(0))
    raycast_ms = _time(lambda i: _build_scene(calib.cameras[i % 4], Corridor(), tex), 3)
    rows.append(("plain alternative: ray-cast scene per frame", raycast_ms))

    print(f"synthetic rig benchmark, one core (cv2 threads = {cv2.getNumThreads()}), {n} frames each")
    print(f"simulate(60 s, 30 fps): {sim_s * 1000:.0f} ms; Renderer build (4 cameras): {build_s * 1000:.0f} ms")
    print(f"{'what':46s} {'wall ms':>8s} {'CPU ms':>8s} {'frames/s per core (CPU)':>24s}")
    for name, (wall_ms, cpu_ms) in rows:
        print(f"{name:46s} {wall_ms:8.2f} {cpu_ms:8.2f} {1000.0 / max(cpu_ms, 1e-3):24.0f}")
    render_ms = rows[1][1][1]
    noisy_ms = rows[3][1][1]
    print(f"speed-up of the precomputed background over per-frame ray casting (CPU): "
          f"{raycast_ms[1] / render_ms:.0f}x")
    need = 4 * 30
    print(f"4 cameras x 30 fps = {need} frames/s needs {need * render_ms / 1000:.2f} core (clean) / "
          f"{need * noisy_ms / 1000:.2f} core (noisy), by CPU time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
