"""A small synthetic session for the viewer's tests and benchmark: real ZeroMQ PUB sockets in a separate
process publishing a known pose, its exact 2D projections, camera frames, events and stats, plus a
REP directory that answers like the supervisor's.

Not a test module itself (no `test_` prefix); imported by tests/test_viewer_*.py and bench/bench_viewer.py.
"""
from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import zmq

from ratrig.camera import Calibration
from ratrig.clock import now_ns
from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket, StatsPacket, with_stamp
from ratrig.skeleton import KEYPOINTS
from ratrig.transport import send_packet

#: A rat standing still in the middle of the corridor, mm (x along, y across, z up).
KNOWN_POSE_MM = np.array(
    [
        [70.0, 0.0, 35.0],  # nose
        [40.0, 14.0, 42.0],  # left_ear
        [40.0, -14.0, 42.0],  # right_ear
        [-80.0, 0.0, 35.0],  # tail_base
        [35.0, 22.0, 4.0],  # front_left_paw
        [35.0, -22.0, 4.0],  # front_right_paw
        [-55.0, 25.0, 4.0],  # hind_left_paw
        [-55.0, -25.0, 4.0],  # hind_right_paw
    ]
)
FRAME_GREY = 70


def stream_calibration() -> Calibration:
    """The synthetic rig's four calibrated cameras (known intrinsics, distortion and poses)."""
    from synthetic.rig import default_rig

    return default_rig()


def publish_session(
    calibration_dict: dict[str, Any],
    ports_queue: Any,
    duration_s: float,
    fps: float = 30.0,
    frame_cameras: tuple[str, ...] | None = None,
    pose2d_cameras: tuple[str, ...] | None = None,
    image_size: tuple[int, int] | None = None,
    walk_mm_s: float = 0.0,
    start_delay_s: float = 0.0,
) -> None:
    """Process body: bind PUBs + a REP directory on free loopback ports, put their map on `ports_queue`,
    then (after `start_delay_s`, answering directory requests meanwhile) publish at `fps` for
    `duration_s` and put the publish counts on the queue.

    Cameras publish frames (fresh array each) on one PUB ("camera/<name>" keys), 2D keypoints on a
    second ("inference/0"), the 3D pose, events and stats on a third ("fusion", "events").
    """
    from ratrig.camera import camera_from_dict

    tables = sorted(k for k in calibration_dict if k.startswith("cam_"))
    calib = Calibration(tuple(camera_from_dict(calibration_dict[k], k) for k in tables))
    names = calib.names
    frame_cameras = names if frame_cameras is None else frame_cameras
    pose2d_cameras = names if pose2d_cameras is None else pose2d_cameras
    ctx = zmq.Context()
    cam_pub = ctx.socket(zmq.PUB)
    inf_pub = ctx.socket(zmq.PUB)
    fus_pub = ctx.socket(zmq.PUB)
    rep = ctx.socket(zmq.REP)
    for s in (cam_pub, inf_pub, fus_pub, rep):
        s.setsockopt(zmq.LINGER, 0)
    cam_pub.setsockopt(zmq.SNDHWM, 60 * len(frame_cameras))  # acquisition/capture.py: 60 per camera PUB
    cam_port = cam_pub.bind_to_random_port("tcp://127.0.0.1")
    inf_port = inf_pub.bind_to_random_port("tcp://127.0.0.1")
    fus_port = fus_pub.bind_to_random_port("tcp://127.0.0.1")
    dir_port = rep.bind_to_random_port("tcp://127.0.0.1")
    endpoints = {f"camera/{n}": f"tcp://127.0.0.1:{cam_port}" for n in names}
    endpoints.update({
        "inference/0": f"tcp://127.0.0.1:{inf_port}",
        "fusion": f"tcp://127.0.0.1:{fus_port}",
        "events": f"tcp://127.0.0.1:{fus_port}",
        "directory": f"tcp://127.0.0.1:{dir_port}",
    })
    ports_queue.put(endpoints)
    poller = zmq.Poller()
    poller.register(rep, zmq.POLLIN)
    period_ns = int(1e9 / fps)
    ready_ns = now_ns() + int(start_delay_s * 1e9)
    while now_ns() < ready_ns:
        if dict(poller.poll(50)).get(rep):
            rep.recv()
            rep.send(msgpack.packb({"endpoints": endpoints, "calibration": calibration_dict}, use_bin_type=True))
    t_start = now_ns()
    cpu0 = time.process_time()
    next_ns = t_start
    i = 0
    sent = {"frames": 0, "poses": 0, "late_ticks": 0}
    k = len(KEYPOINTS)
    while now_ns() - t_start < duration_s * 1e9:
        wait_ms = max(0, (next_ns - now_ns()) // 1_000_000)
        if dict(poller.poll(wait_ms)).get(rep):
            if rep.recv() == b"directory":
                rep.send(msgpack.packb({"endpoints": endpoints, "calibration": calibration_dict}, use_bin_type=True))
            else:
                rep.send(msgpack.packb({"error": "unknown request"}))
            continue
        if now_ns() < next_ns:
            continue
        cap = now_ns()
        if cap - next_ns > period_ns:
            sent["late_ticks"] += 1
        pose = KNOWN_POSE_MM + np.array([walk_mm_s * (cap - t_start) / 1e9, 0.0, 0.0])
        for cam in calib.cameras:
            if cam.name in frame_cameras:
                w, h = image_size or cam.size
                img = np.full((h, w, 3), FRAME_GREY, np.uint8)
                img[:, : w // 8] = 30  # a dark band on the left: the image orientation is visible
                send_packet(cam_pub, FramePacket(cam.name, i, cap, img, {"capture": cap}))
                sent["frames"] += 1
            if cam.name in pose2d_cameras:
                uv = cam.project(pose)
                kp = np.concatenate([uv, np.ones((k, 1))], axis=1).astype(np.float32)
                send_packet(inf_pub, Keypoints2DPacket(cam.name, i, cap, KEYPOINTS, kp, {"capture": cap, "inference": now_ns()}))
        p = Pose3DPacket(
            i, cap, KEYPOINTS, names, pose.copy(), pose.copy(), np.zeros(k), np.full(k, len(names), np.int8),
            np.ones(k), {"capture": cap},
        )
        send_packet(fus_pub, with_stamp(p, "fusion", now_ns()))
        sent["poses"] += 1
        if i % 15 == 0:
            paw = KEYPOINTS[4 + (i // 15) % 4]
            pos = tuple(float(v) for v in pose[KEYPOINTS.index(paw)])
            send_packet(fus_pub, EventPacket("touchdown", paw, i, cap, now_ns(), pos))
        if i % 30 == 0:
            send_packet(fus_pub, StatsPacket("recorder", now_ns(), {"recording": True, "frames_written": sent["frames"], "dropped": 0}))
            send_packet(fus_pub, StatsPacket("camera_stub", now_ns(), {"fps": fps, "nested": {"dropped_frames": 2}}))
        i += 1
        next_ns += period_ns
    sent["elapsed_s"] = (now_ns() - t_start) / 1e9
    sent["cpu_s"] = time.process_time() - cpu0  # this process, while publishing
    ports_queue.put(sent)
    for s in (cam_pub, inf_pub, fus_pub):
        s.close(2000)  # let the last messages reach slow subscribers (the benchmark counts them)
    rep.close(0)
    ctx.term()


# --------------------------------------------------------------------------------------------------
# Checking screenshots.


def gl_project(points_mm: np.ndarray, layout: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) world mm -> (N, 2) window px and (N,) eye-space depth, through the GL view's matrices."""
    view = np.array(layout["gl"]["view"]).reshape(4, 4).T  # Qt's data() is column-major
    proj = np.array(layout["gl"]["projection"]).reshape(4, 4).T
    x0, y0, w, h = layout["gl"]["rect"]
    hom = np.concatenate([points_mm, np.ones((len(points_mm), 1))], axis=1)
    eye = hom @ view.T
    clip = eye @ proj.T
    ndc = clip[:, :3] / clip[:, 3:4]
    px = np.stack([x0 + (ndc[:, 0] + 1) / 2 * w, y0 + (1 - ndc[:, 1]) / 2 * h], axis=1)
    return px, -eye[:, 2]


def colour_near(img_rgb: np.ndarray, xy: np.ndarray, rgb: np.ndarray, radius: int = 2, tol: int = 60) -> bool:
    """Is there a pixel within `radius` of `xy` whose colour is within `tol` (max channel) of `rgb`?"""
    x, y = int(round(xy[0])), int(round(xy[1]))
    h, w = img_rgb.shape[:2]
    patch = img_rgb[max(0, y - radius): min(h, y + radius + 1), max(0, x - radius): min(w, x + radius + 1)]
    if patch.size == 0:
        return False
    diff = np.abs(patch.astype(int) - rgb.astype(int)).max(axis=2)
    return bool((diff <= tol).any())


def visible(px: np.ndarray, order_key: np.ndarray, min_sep_px: float) -> list[int]:
    """Indices of points not covered by another point within `min_sep_px` that is drawn over them
    (the one with the smaller `order_key` covers)."""
    keep = []
    for i in range(len(px)):
        d = np.linalg.norm(px - px[i], axis=1)
        covering = (d < min_sep_px) & (order_key < order_key[i])
        covering[i] = False
        if not covering.any():
            keep.append(i)
    return keep
