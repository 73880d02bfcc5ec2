"""Frame sources: an OpenCV device, a video file, the synthetic renderer.

Each source has `open()`, `read(deadline_ns) -> Grab | None` and `close()`. `read` returns None at the
end of a file; it raises `SourceError` (naming the camera and the device) when the device fails.
Heavy back-ends are imported lazily by `open_source`, so importing this module costs nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ratrig.clock import now_ns
from ratrig.config import CameraConfig, RigConfig


class SourceError(RuntimeError):
    """A camera that cannot be opened or stopped delivering; the message names it."""


@dataclass(frozen=True, slots=True)
class Grab:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    capture_ns: int  # monotonic, taken as close to the grab as the back-end allows


class FrameSource(Protocol):
    paced_by_source: bool  # True: read() blocks until the camera delivers; False: the caller paces

    def open(self) -> None: ...
    def read(self, scheduled_ns: int) -> Grab | None: ...
    def close(self) -> None: ...


class DeviceSource:
    """A USB/V4L2 camera through OpenCV. The camera paces the loop."""

    paced_by_source = True

    def __init__(self, cam: CameraConfig, stall_timeout_s: float = 2.0) -> None:
        self.cam = cam
        self.stall_timeout_s = stall_timeout_s
        self._cap = None

    def open(self) -> None:
        import cv2

        arg = self.cam.source_arg
        target = int(arg) if arg.isdigit() else arg
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2) if hasattr(cv2, "CAP_V4L2") else cv2.VideoCapture(target)
        if not cap.isOpened():
            raise SourceError(f"camera {self.cam.name}: cannot open device {self.cam.source!r}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cam.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cam.height)
        cap.set(cv2.CAP_PROP_FPS, self.cam.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.cam.exposure_us is not None:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual
            cap.set(cv2.CAP_PROP_EXPOSURE, self.cam.exposure_us / 100.0)  # V4L2 unit: 100 us
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (w, h) != (self.cam.width, self.cam.height):
            cap.release()
            raise SourceError(
                f"camera {self.cam.name}: device {self.cam.source!r} gives {w}x{h}, config asks {self.cam.width}x{self.cam.height}"
            )
        self._cap = cap

    def read(self, scheduled_ns: int) -> Grab | None:
        assert self._cap is not None, "open() first"
        t_start = time.monotonic()
        ok = self._cap.grab()
        ts = now_ns()  # right after the grab returns: closest to exposure that V4L2 via OpenCV gives
        if not ok:
            raise SourceError(f"camera {self.cam.name}: device {self.cam.source!r} stopped delivering frames (disconnected?)")
        if time.monotonic() - t_start > self.stall_timeout_s:
            raise SourceError(f"camera {self.cam.name}: device {self.cam.source!r} stalled for {time.monotonic() - t_start:.1f} s")
        ok, image = self._cap.retrieve()
        if not ok or image is None:
            raise SourceError(f"camera {self.cam.name}: device {self.cam.source!r} returned an empty frame")
        return Grab(image, ts)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource:
    """A video file, paced in real time by the caller (pace=True) or read as fast as possible."""

    def __init__(self, cam: CameraConfig) -> None:
        self.cam = cam
        self.paced_by_source = not cam.pace
        self._cap = None

    def open(self) -> None:
        import cv2

        path = self.cam.source_arg
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise SourceError(f"camera {self.cam.name}: cannot open video file {path!r}")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (w, h) != (self.cam.width, self.cam.height):
            cap.release()
            raise SourceError(
                f"camera {self.cam.name}: video {path!r} is {w}x{h}, config asks {self.cam.width}x{self.cam.height}"
            )
        self._cap = cap

    def read(self, scheduled_ns: int) -> Grab | None:
        import cv2

        assert self._cap is not None, "open() first"
        ok, image = self._cap.read()
        if not ok and self.cam.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok:
            return None
        return Grab(image, now_ns() if self.paced_by_source else scheduled_ns)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class SyntheticSource:
    """The synthetic rig's renderer: the rat at the scheduled capture time, seen by this camera."""

    paced_by_source = False

    def __init__(self, cam: CameraConfig, rig: RigConfig, t0_ns: int) -> None:
        self.cam = cam
        self.rig = rig
        self.t0_ns = t0_ns  # the session start; the capture loop sets it once the start is known
        self._camera = None

    def open(self) -> None:
        from synthetic.live import LiveCamera  # lazy: synthetic is only needed for this source

        self._camera = LiveCamera.from_rig_config(self.rig, self.cam.name)

    def read(self, scheduled_ns: int) -> Grab | None:
        assert self._camera is not None, "open() first"
        t_s = (scheduled_ns - self.t0_ns) / 1e9
        return Grab(self._camera.render_at(t_s), scheduled_ns)

    def close(self) -> None:
        self._camera = None


def open_source(cam: CameraConfig, rig: RigConfig, t0_ns: int) -> FrameSource:
    """The source for one camera of the config, opened. Raises SourceError naming the camera."""
    kind = cam.source_kind
    if kind == "device":
        src: FrameSource = DeviceSource(cam)
    elif kind == "video":
        src = VideoFileSource(cam)
    elif kind == "synthetic":
        src = SyntheticSource(cam, rig, t0_ns)
    else:
        raise SourceError(f"camera {cam.name}: unknown source {cam.source!r}; expected synthetic, device:N or video:PATH")
    src.open()
    return src
