"""Shared helpers for the recorder tests: a rig file, a free port range, a frame publisher process."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np

CAMS = ("cam_a", "cam_b")
W, H = 320, 240


def free_base_port(span: int = 90) -> int:
    """A base port with `span` free ports above it (best effort, loopback)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + span >= 65000:
            continue
        ok = True
        for off in (0, 1, 2, 40, 41, 80, 81, 82, 83):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", base + off))
                except OSError:
                    ok = False
                    break
        if ok and 1024 <= base <= 65000:
            return base
    raise RuntimeError("no free port range")


def write_rig(path: Path, base_port: int, cams=CAMS, fps: float = 30.0, flush_s: float = 0.5,
              codec: str = "ffv1", extra: str = "") -> Path:
    lines = [f'name = "test"', f'keypoints = ["nose", "tail_base"]', "[network]", f"base_port = {base_port}",
             "[recorder]", f'codec = "{codec}"', f"flush_interval_s = {flush_s}", "min_free_gb = 0.05",
             "warn_free_gb = 0.1", "queue_frames = 60"]
    for c in cams:
        lines += ["[[cameras]]", f'name = "{c}"', 'source = "synthetic"', f"width = {W}", f"height = {H}", f"fps = {fps}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def frame_image(camera_no: int, frame_index: int) -> np.ndarray:
    """A frame whose content encodes its camera and index (checked after lossless decoding)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :, 0] = frame_index % 256
    img[:, :, 1] = (frame_index // 256) % 256
    img[:, :, 2] = 40 * (camera_no + 1)
    img[: H // 4, : W // 4] = 255  # some structure for the codec
    return img


def decode_index(img: np.ndarray) -> int:
    return int(np.median(img[H // 2:, W // 2:, 0])) + 256 * int(np.median(img[H // 2:, W // 2:, 1]))


def publish_frames(endpoint: str, log_path: str, fps: float, duration_s: float, start_delay_s: float = 0.5) -> None:
    """Process target: bind PUB at `endpoint`, publish FramePackets (and pose2d of cam 0) for every
    camera at `fps`, logging `camera,frame_index,capture_ns` of every sent frame to `log_path`."""
    import zmq

    from ratrig.clock import now_ns
    from ratrig.messages import FramePacket, Keypoints2DPacket
    from ratrig.transport import make_pub, send_packet

    ctx = zmq.Context()
    pub = make_pub(ctx, endpoint, sndhwm=10000)
    time.sleep(start_delay_s)  # let the recorder connect before frame 0
    period = 1.0 / fps
    t0 = time.monotonic()
    with open(log_path, "w", buffering=1) as log:
        i = 0
        while time.monotonic() - t0 < duration_s:
            cap = now_ns()
            for c, cam in enumerate(CAMS):
                send_packet(pub, FramePacket(cam, i, cap, frame_image(c, i), {"capture": cap}))
                log.write(f"{cam},{i},{cap}\n")
            kp = np.array([[10.0 + i, 20.0, 0.9], [30.0, 40.0 + i, 0.8]], np.float32)
            send_packet(pub, Keypoints2DPacket(CAMS[0], i, cap, ("nose", "tail_base"), kp))
            i += 1
            time.sleep(max(0.0, t0 + i * period - time.monotonic()))
    time.sleep(0.3)
    pub.close(0)
    ctx.term()
