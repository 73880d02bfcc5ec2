"""Record synchronised calibration videos from the live rig, for `ratrig calibrate`.

Library use (what the acquisition path calls)::

    with CalibrationRecorder(out_dir, ["cam_ne", "cam_nw"], fps=30, size=(640, 480)) as rec:
        rec.add("cam_ne", frame, capture_ns)     # in any order, as frames arrive
        ...
    # out_dir/cam_ne.avi, cam_nw.avi: frame i of every video = the same frame set; frame_sets.csv

Process use (`ratrig run CONFIG --record-calibration DIR` starts it)::

    python -m calibration.capture --config rig.toml --out DIR [--duration-s S]

Frames are grouped into frame sets by capture time: a set is written when every camera has a frame
within `tolerance_ns` of the others; a frame with no partners in time is dropped (counted), so a
missing frame never shifts one video against the others. Videos are lossless FFV1 so corner positions
are not blurred by compression.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("calibration.capture")


class CaptureError(ValueError):
    """Bad recorder input: unknown camera, wrong frame size, unwritable folder."""


class CalibrationRecorder:
    """Write one synchronised video per camera from frames that arrive per camera.

    Args:
        out_dir: folder for `<camera>.avi` and `frame_sets.csv` (created; existing videos are refused).
        camera_names: the cameras, as `ratrig calibrate` will name them (file stem = camera name).
        fps: frame rate written into the videos.
        size: (width, height) px every frame must have.
        tolerance_ns: frames closer than this in capture time belong to one frame set
            (default: half a frame period).
        fourcc: video codec (FFV1 lossless by default).
    """

    def __init__(
        self,
        out_dir: str | Path,
        camera_names: Sequence[str],
        fps: float,
        size: tuple[int, int],
        tolerance_ns: int | None = None,
        fourcc: str = "FFV1",
    ) -> None:
        import cv2

        if len(set(camera_names)) != len(camera_names) or not camera_names:
            raise CaptureError(f"camera names must be unique and non-empty, got {list(camera_names)}")
        if not fps > 0:
            raise CaptureError(f"fps must be > 0, got {fps}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.names = tuple(camera_names)
        self.size = (int(size[0]), int(size[1]))
        self.tolerance_ns = int(tolerance_ns if tolerance_ns is not None else 0.5e9 / fps)
        self._queues: dict[str, deque[tuple[int, np.ndarray]]] = {n: deque() for n in self.names}
        self._auto_ns: dict[str, int] = {n: 0 for n in self.names}
        self.frame_sets = 0
        self.dropped: dict[str, int] = {n: 0 for n in self.names}
        self._times: list[list[int]] = []
        self._writers = {}
        self._closed = False
        for n in self.names:
            path = self.out_dir / f"{n}.avi"
            if path.exists():
                self._release()
                raise CaptureError(f"{path} already exists; record calibration videos into a new folder")
            w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), self.size)
            if not w.isOpened():
                self._release()
                raise CaptureError(f"{path}: OpenCV cannot write {fourcc} video")
            self._writers[n] = w

    def add(self, camera: str, frame: np.ndarray, capture_ns: int | None = None) -> int:
        """Queue one frame of `camera`; write every frame set that is now complete. Returns sets written.

        Without `capture_ns`, frames pair up in arrival order per camera (the k-th frame of every camera).
        """
        if camera not in self._queues:
            raise CaptureError(f"unknown camera {camera!r}; this recorder has {list(self.names)}")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.shape[1], frame.shape[0]) != self.size:
            raise CaptureError(
                f"camera {camera!r}: expected a {self.size[0]}x{self.size[1]} uint8 image, got {frame.dtype} {frame.shape}"
            )
        if capture_ns is None:
            capture_ns = self._auto_ns[camera]
            self._auto_ns[camera] += 1  # one "tick" per frame; tolerance 0 pairs k-th with k-th
        self._queues[camera].append((int(capture_ns), frame))
        return self._flush()

    def _flush(self) -> int:
        import cv2

        written = 0
        while all(self._queues.values()):
            heads = {n: q[0][0] for n, q in self._queues.items()}
            newest = max(heads.values())
            stale = [n for n, t in heads.items() if newest - t > self.tolerance_ns]
            if stale:  # these frames have no partner from the newest camera: drop them
                for n in stale:
                    self._queues[n].popleft()
                    self.dropped[n] += 1
                continue
            times = []
            for n in self.names:
                t, img = self._queues[n].popleft()
                if img.ndim == 2:
                    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
                self._writers[n].write(img)
                times.append(t)
            self._times.append(times)
            self.frame_sets += 1
            written += 1
        return written

    def close(self) -> dict[str, object]:
        """Finish the videos and write frame_sets.csv; returns a summary. Incomplete sets are dropped."""
        if self._closed:
            return self.summary()
        for n, q in self._queues.items():
            self.dropped[n] += len(q)
            q.clear()
        self._release()
        from ratrig.tomlio import atomic_write_text

        lines = [",".join(["frame_set", *(f"{n}_capture_ns" for n in self.names)])]
        lines += [",".join([str(i), *map(str, ts)]) for i, ts in enumerate(self._times)]
        atomic_write_text(self.out_dir / "frame_sets.csv", "\n".join(lines) + "\n")
        return self.summary()

    def _release(self) -> None:
        for w in self._writers.values():
            w.release()
        self._writers = {}
        self._closed = True

    def summary(self) -> dict[str, object]:
        return {"frame_sets": self.frame_sets, "dropped": dict(self.dropped), "out_dir": str(self.out_dir)}

    def __enter__(self) -> CalibrationRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frame_sets(path: str | Path) -> np.ndarray:
    """frame_sets.csv -> (S, C) capture times, ns."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64).reshape(len(rows) - 1, -1)


def main(argv: Sequence[str] | None = None) -> int:
    """Subscribe to every camera of the rig and record synchronised calibration videos until stopped."""
    p = argparse.ArgumentParser(prog="python -m calibration.capture", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="rig TOML file")
    p.add_argument("--out", required=True, help="folder for the calibration videos")
    p.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s calibration-capture %(levelname)s %(message)s")
    import zmq

    from ratrig.clock import now_ns
    from ratrig.config import ConfigError, Endpoints, load_config
    from ratrig.messages import FramePacket
    from ratrig.stats import install_stop_handlers
    from ratrig.transport import ReceiveCounters, make_sub, recv_packet

    try:
        rig = load_config(args.config)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    cams = rig.cameras
    sizes = {(c.width, c.height) for c in cams}
    if len(sizes) != 1:
        log.error("cameras have different frame sizes %s; record them separately", sorted(sizes))
        return 2
    try:
        rec = CalibrationRecorder(args.out, [c.name for c in cams], float(cams[0].fps), sizes.pop())
    except CaptureError as e:
        log.error("%s", e)
        return 2
    eps = Endpoints(rig)
    ctx = zmq.Context()
    sub = make_sub(ctx, [eps.connect(f"camera/{c.name}") for c in cams], topics=(b"frame/",), rcvhwm=10_000)
    stop = [False]
    install_stop_handlers(stop)
    t_end = now_ns() + int(args.duration_s * 1e9) if args.duration_s else None
    counters = ReceiveCounters()
    try:
        while not stop[0] and (t_end is None or now_ns() < t_end):
            if not sub.poll(100):
                continue
            packet = recv_packet(sub, counters, zmq.NOBLOCK)
            if isinstance(packet, FramePacket) and packet.camera in rec.names:
                try:
                    rec.add(packet.camera, packet.image, packet.capture_ns)
                except CaptureError as e:
                    log.error("%s", e)
                    return 1
    finally:
        summary = rec.close()
        sub.close(0)
        ctx.term()
    log.info("wrote %d frame sets to %s (dropped without partners: %s)", summary["frame_sets"], args.out, summary["dropped"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
