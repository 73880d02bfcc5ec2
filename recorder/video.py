"""Camera video as short, independently closed segments.

A segment is an ordinary video file (Matroska) opened with OpenCV's FFmpeg back-end and closed
every flush interval. Only closed segments are listed in the camera's segments.csv, so a kill
(SIGKILL, power loss) can only tear the one segment being written: everything up to the last
closed segment reads back with `cv2.VideoCapture`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class VideoCodecError(RuntimeError):
    """The requested codec cannot be written by this OpenCV build."""


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How a codec name of the config maps onto OpenCV's writer."""

    name: str  # config name: ffv1, mjpeg, h264
    fourcc: str
    container: str  # file extension
    lossless: bool
    description: str


CODECS: dict[str, CodecSpec] = {
    "ffv1": CodecSpec("ffv1", "FFV1", ".mkv", True, "FFV1 (lossless intra-frame), FFmpeg default level/slices"),
    # OpenCV's own MJPEG writer: unlike the FFmpeg back-end it honours VIDEOWRITER_PROP_QUALITY.
    "mjpeg": CodecSpec("mjpeg", "MJPG", ".avi", False, "Motion JPEG, OpenCV's encoder (visually lossless at quality >= 90)"),
    "h264": CodecSpec("h264", "avc1", ".mkv", False, "H.264 (needs an OpenCV build with an H.264 encoder)"),
}


def segment_name(segment: int, codec: CodecSpec) -> str:
    return f"seg_{segment:06d}{codec.container}"


def encoder_settings(codec: CodecSpec, fps: float, size: tuple[int, int], is_color: bool, quality: int) -> dict:
    """What the writer is told, recorded in session.json so a reader knows how the video was made."""
    return {
        "codec": codec.name,
        "fourcc": codec.fourcc,
        "container": codec.container.lstrip("."),
        "lossless": codec.lossless,
        "description": codec.description,
        "fps": float(fps),
        "width": int(size[0]),
        "height": int(size[1]),
        "is_color": bool(is_color),
        "quality": int(quality) if codec.name == "mjpeg" else None,
        "backend": "opencv-mjpeg" if codec.name == "mjpeg" else "opencv-ffmpeg",
        "opencv_version": cv2.__version__,
    }


def open_writer(path: Path, codec: CodecSpec, fps: float, size: tuple[int, int], is_color: bool, quality: int) -> cv2.VideoWriter:
    """An opened cv2.VideoWriter. Raises VideoCodecError naming the codec and file."""
    params: list[int] = [cv2.VIDEOWRITER_PROP_IS_COLOR, int(is_color)]
    backend = cv2.CAP_OPENCV_MJPEG if codec.name == "mjpeg" else cv2.CAP_FFMPEG
    writer = cv2.VideoWriter(str(path), backend, cv2.VideoWriter_fourcc(*codec.fourcc), float(fps), size, params)
    if writer.isOpened() and codec.name == "mjpeg" and not writer.set(cv2.VIDEOWRITER_PROP_QUALITY, int(quality)):
        writer.release()
        raise VideoCodecError(f"{path}: OpenCV's MJPEG writer refused quality {quality}")
    if not writer.isOpened():
        raise VideoCodecError(
            f"{path}: OpenCV {cv2.__version__} cannot open a {codec.fourcc} writer ({codec.description}); "
            f"use recorder.codec = 'ffv1' or 'mjpeg'"
        )
    return writer


def check_codec(codec_name: str, fps: float = 30.0, size: tuple[int, int] = (64, 48)) -> CodecSpec:
    """Raise VideoCodecError at start-up, not after the first frame, if the codec is unusable."""
    import tempfile

    if codec_name not in CODECS:
        raise VideoCodecError(f"unknown codec {codec_name!r}; expected one of {sorted(CODECS)}")
    codec = CODECS[codec_name]
    with tempfile.TemporaryDirectory() as d:
        w = open_writer(Path(d) / f"probe{codec.container}", codec, fps, size, True, 90)
        w.write(np.zeros((size[1], size[0], 3), np.uint8))
        w.release()
    return codec


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentWriter:
    """Writes one camera's frames into segment files; the caller decides when to roll.

    Not thread-safe: owned by the camera's writer thread.
    """

    def __init__(self, folder: Path, codec: CodecSpec, fps: float, quality: int):
        self.folder = folder
        self.codec = codec
        self.fps = fps
        self.quality = quality
        self.segment = -1
        self.n_frames = 0
        self.first_frame_index = -1
        self.size: tuple[int, int] | None = None
        self.is_color: bool | None = None
        self._writer: cv2.VideoWriter | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    @property
    def path(self) -> Path:
        return self.folder / segment_name(self.segment, self.codec)

    def open(self, image: np.ndarray, frame_index: int) -> None:
        h, w = image.shape[:2]
        self.size = (w, h)
        self.is_color = image.ndim == 3
        self.segment += 1
        self.n_frames = 0
        self.first_frame_index = frame_index
        self._writer = open_writer(self.path, self.codec, self.fps, self.size, self.is_color, self.quality)

    def write(self, image: np.ndarray) -> int:
        """Append a frame; returns its position in the segment."""
        assert self._writer is not None
        self._writer.write(image)
        self.n_frames += 1
        return self.n_frames - 1

    def close(self) -> tuple[int, str, int, int]:
        """Finish the segment and make it durable. Returns (segment, file name, first index, n frames)."""
        assert self._writer is not None
        self._writer.release()
        self._writer = None
        fsync_path(self.path)
        return self.segment, self.path.name, self.first_frame_index, self.n_frames


def iter_segment_frames(path: Path, mono: bool = False) -> Iterator[np.ndarray]:
    """Decoded frames of one segment file, in order (BGR, or single channel when `mono`)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise OSError(f"{path}: cannot be opened as a video")
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if mono and img.ndim == 3 else img
    finally:
        cap.release()


def count_readable_frames(path: Path) -> int:
    """How many frames of a (possibly torn) video file actually decode."""
    try:
        return sum(1 for _ in iter_segment_frames(path))
    except OSError:
        return 0


def iter_video(paths: Sequence[Path], mono: bool = False) -> Iterator[np.ndarray]:
    for p in paths:
        yield from iter_segment_frames(p, mono)
