"""Find the calibration board in per-camera videos or image folders, in parallel, with a progress bar.

A *source* is one camera's recording: a video file or a folder of images (one image per frame set,
sorted by name with numbers compared numerically). Frame index i of every source must show the same
instant; that is what makes the detections of different cameras usable together.

Detections are rows in aniposelib's form: {"framenum": int, "corners": (K, 1, 2) float32 px,
"ids": (K, 1) int32 corner ids, "filled": (N, 1, 2) px with NaN for corners not seen}.
"""
from __future__ import annotations

import multiprocessing as mp
import re
from queue import Empty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.board import ARUCO_DICTS, BoardSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv")
MIN_CORNERS = 6  # fewer corners on a board view say nothing useful about the pose


class SourceError(ValueError):
    """Unusable input recordings; the message names the camera and the file."""


@dataclass(frozen=True, slots=True)
class Source:
    """One camera's recording: a video file or a folder of images."""

    name: str
    path: Path

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


@dataclass(slots=True)
class CameraDetections:
    """What the detector found in one camera's recording.

    Attributes:
        rows: aniposelib detection rows (see module docstring), frame order.
        size: (width, height) px.
        n_frames: frames read.
        foreign_marker_frames: ArUco id -> frames it was seen in, for ids the board spec does not have
            (seen often, a sign of a wrong board file; once or twice, a false detection in the background).
        frames_with_markers: frames where ArUco markers of the board's dictionary were seen at all.
    """

    name: str
    path: str
    size: tuple[int, int]
    n_frames: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    foreign_marker_frames: dict[int, int] = field(default_factory=dict)
    frames_with_markers: int = 0

    @property
    def foreign_marker_ids(self) -> list[int]:
        """Ids not on the board that were seen in >= 3 frames and >= 20 % of the frames showing markers."""
        need = max(3, 0.2 * self.frames_with_markers)
        return sorted(i for i, n in self.foreign_marker_frames.items() if n >= need)

    @property
    def n_board_frames(self) -> int:
        return len(self.rows)


def parse_sources(args: Sequence[str], min_sources: int = 2) -> list[Source]:
    """Command-line sources -> named sources. 'NAME=PATH' names explicitly; else name = file stem / folder name.

    Raises:
        SourceError: a missing path, an unknown file type, or two sources with the same camera name.
    """
    out: list[Source] = []
    for arg in args:
        if "=" in arg and not Path(arg).exists():
            name, _, p = arg.partition("=")
            path = Path(p)
        else:
            path = Path(arg)
            name = path.name if path.is_dir() else path.stem
        if not name:
            raise SourceError(f"{arg!r}: empty camera name (use NAME=PATH)")
        if not path.exists():
            raise SourceError(f"camera {name!r}: {path} does not exist (expected a video file or an image folder)")
        if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
            raise SourceError(
                f"camera {name!r}: {path} is not a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of images"
            )
        out.append(Source(name, path))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceError(f"camera names {dupes} appear more than once; name sources explicitly as NAME=PATH")
    if len(out) < min_sources:
        raise SourceError(f"need recordings from at least {min_sources} cameras, got {len(out)}")
    return out


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def list_images(folder: Path) -> list[Path]:
    """Images in `folder`, sorted with numbers compared numerically (frame2 before frame10)."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key
    )


def probe(source: Source) -> tuple[int, tuple[int, int]]:
    """(number of frames, (width, height)) of a source, reading as little as possible."""
    import cv2

    if source.is_folder:
        images = list_images(source.path)
        if not images:
            raise SourceError(f"camera {source.name!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in {source.path}")
        first = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise SourceError(f"camera {source.name!r}: cannot read image {images[0]}")
        return len(images), (first.shape[1], first.shape[0])
    cap = cv2.VideoCapture(str(source.path))
    try:
        if not cap.isOpened():
            raise SourceError(f"camera {source.name!r}: cannot open video {source.path}")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, frame = cap.read()
        if not ok:
            raise SourceError(f"camera {source.name!r}: video {source.path} has no readable frames")
        return n, (frame.shape[1], frame.shape[0])
    finally:
        cap.release()


def check_sources(sources: Sequence[Source]) -> tuple[int, dict[str, tuple[int, int]]]:
    """Check the recordings can be used together; returns (frames per camera, sizes by name).

    Image folders must hold the same number of images (a missing image would shift every later frame
    set out of sync). Videos may differ by a few frames at the end (encoders drop the tail); the
    shortest length is used.

    Raises:
        SourceError: naming the cameras and their frame counts.
    """
    counts: dict[str, int] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for s in sources:
        counts[s.name], sizes[s.name] = probe(s)
    folders = [s.name for s in sources if s.is_folder]
    if folders and len({counts[n] for n in folders}) > 1:
        detail = ", ".join(f"{n}: {counts[n]} images" for n in folders)
        raise SourceError(
            f"image folders hold different numbers of frames ({detail}); each folder must hold one image per "
            "synchronised frame set, so a missing or extra image would pair frames from different instants. "
            "Remove the frames that are not in every folder."
        )
    if folders and len(folders) != len(sources):
        raise SourceError("mixing image folders and videos is not supported: convert them to one kind")
    videos = [s.name for s in sources if not s.is_folder]
    if videos:
        lo, hi = min(counts[n] for n in videos), max(counts[n] for n in videos)
        # More than 2 % (and 5 frames) difference is not a dropped tail but a different recording.
        if hi - lo > max(5, 0.02 * hi):
            detail = ", ".join(f"{n}: {counts[n]} frames" for n in videos)
            raise SourceError(
                f"videos have very different lengths ({detail}); they must be synchronised recordings of the "
                "same session (start and stop together)"
            )
    return min(counts.values()), sizes


def iter_frames(source: Source, n_frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, BGR or gray image) for the first `n_frames` frames."""
    import cv2

    if source.is_folder:
        for i, p in enumerate(list_images(source.path)[:n_frames]):
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise SourceError(f"camera {source.name!r}: cannot read image {p}")
            yield i, img
        return
    cap = cv2.VideoCapture(str(source.path))
    try:
        for i in range(n_frames):
            ok, frame = cap.read()
            if not ok:
                return
            yield i, frame
    finally:
        cap.release()


class BoardDetector:
    """Detect one board spec in single images. Build one per process (OpenCV detectors are not picklable)."""

    def __init__(self, spec: BoardSpec) -> None:
        import cv2

        self.spec = spec
        self.board = spec.to_aniposelib()
        self._n_markers = spec.n_markers
        if spec.board_type == "charuco":
            # aniposelib's detector thresholds at 14 window sizes (50..700 px), several times slower than
            # OpenCV's defaults, which find 640x480-scale boards as well; the ChArUco corners are
            # refined to subpixel by the board interpolation either way.
            params = cv2.aruco.DetectorParameters()
            self._charuco = cv2.aruco.CharucoDetector(self.board.board, cv2.aruco.CharucoParameters(), params)
        self._criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
        """(H, W[, 3]) image -> (corners (K, 1, 2) float32 px | None, ids (K, 1) int32 | None, marker ids (M,))."""
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if self.spec.board_type == "charuco":
            corners, ids, _, marker_ids = self._charuco.detectBoard(gray)
            markers = np.zeros(0, np.int32) if marker_ids is None else np.asarray(marker_ids).ravel()
            if corners is None or ids is None or len(ids) == 0:
                return None, None, markers
            corners = np.asarray(corners, np.float32).reshape(-1, 1, 2)
            ids = np.asarray(ids, np.int32).reshape(-1, 1)
            # OpenCV 4.11's ChArUco corners (aniposelib's too) sit about +0.5 px off in x and y on
            # rendered boards with known corners; a saddle-point refinement removes that bias.
            half = self._refine_half_window(corners, ids)
            corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), self._criteria)
            return corners, ids, markers
        found, corners = cv2.findChessboardCorners(gray, self.spec.corners_xy, self.board.DETECT_PARAMS)
        if not found or corners is None:
            return None, None, np.zeros(0, np.int32)
        corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), self._criteria)
        corners = canonical_checkerboard_order(np.asarray(corners, np.float32).reshape(-1, 1, 2), self.spec)
        ids = np.arange(self.spec.n_corners, dtype=np.int32).reshape(-1, 1)
        return corners, ids, np.zeros(0, np.int32)


    def _refine_half_window(self, corners: np.ndarray, ids: np.ndarray) -> int:
        """Half window for cornerSubPix: about a third of the board square's size in the image, 2-6 px."""
        nx, _ = self.spec.corners_xy
        flat = ids.ravel()
        pts = corners.reshape(-1, 2)
        pos = {int(i): k for k, i in enumerate(flat)}
        steps = [
            np.linalg.norm(pts[pos[i + 1]] - pts[k])
            for i, k in pos.items()
            if (i + 1) in pos and (i + 1) % nx != 0
        ]
        if not steps:
            return 2
        return int(np.clip(round(0.3 * float(np.min(steps))), 2, 6))


def canonical_checkerboard_order(corners: np.ndarray, spec: BoardSpec) -> np.ndarray:
    """(N, 1, 2) checkerboard corners -> the same corners, ordered so corner 0 is the upper-left one.

    A checkerboard has no marks telling its ends apart: OpenCV may start the grid at either end
    (a 180-degree turn of the ids), and two cameras may disagree, which makes their corners wrong
    matches. Ordering from the image top-left fixes that for cameras that see the board upright;
    boards seen upside down in one camera still need a ChArUco board.
    """
    nx, ny = spec.corners_xy
    grid = corners.reshape(ny, nx, 2)
    first, last = grid[0, 0], grid[-1, -1]
    if first.sum() > last.sum():  # corner 0 further from the image origin than the last corner
        grid = grid[::-1, ::-1]
    return np.ascontiguousarray(grid.reshape(-1, 1, 2))


# -- worker process side ------------------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(queue: Any) -> None:
    global _progress_queue  # one per worker process, set once by the pool initializer
    _progress_queue = queue


def detect_source(
    source: Source, spec: BoardSpec, n_frames: int, every: int = 1, must_detect: Sequence[int] = ()
) -> CameraDetections:
    """Detect the board in every `every`-th frame of one source, and in `must_detect` (runs in a worker)."""
    import cv2

    cv2.setNumThreads(1)  # the pool already uses the cores
    detector = BoardDetector(spec)
    rows: list[dict[str, Any]] = []
    foreign: dict[int, int] = {}
    with_markers = 0
    size = (0, 0)
    done = 0
    frames_read = 0
    for i, img in iter_frames(source, n_frames):
        frames_read += 1
        if size == (0, 0):
            size = (img.shape[1], img.shape[0])
        elif (img.shape[1], img.shape[0]) != size:
            raise SourceError(
                f"camera {source.name!r}: frame {i} of {source.path} is {img.shape[1]}x{img.shape[0]}, "
                f"earlier frames are {size[0]}x{size[1]}"
            )
        if i % every == 0 or i in must_detect:
            corners, ids, markers = detector.detect(img)
            if len(markers):
                with_markers += 1
                for m in set(int(m) for m in markers if m >= detector._n_markers):
                    foreign[m] = foreign.get(m, 0) + 1
            if corners is not None and len(ids) >= MIN_CORNERS:
                rows.append(
                    {
                        "framenum": i,
                        "corners": corners,
                        "ids": ids,
                        "filled": detector.board.fill_points(corners, ids),
                    }
                )
        done += 1
        if _progress_queue is not None and done % 10 == 0:
            _progress_queue.put(10)
    if _progress_queue is not None and done % 10:
        _progress_queue.put(done % 10)
    return CameraDetections(source.name, str(source.path), size, frames_read, rows, foreign, with_markers)


def _detect_task(args: tuple[Source, BoardSpec, int, int, tuple[int, ...]]) -> CameraDetections:
    return detect_source(*args)


def detect_all(
    sources: Sequence[Source],
    spec: BoardSpec,
    n_frames: int,
    every: int = 1,
    workers: int = 2,
    progress: bool = True,
    must_detect: Sequence[int] = (),
) -> list[CameraDetections]:
    """Detect the board in all sources with `workers` processes; result in the order of `sources`.

    One task per camera keeps each video decoded sequentially (seeking in compressed video is not
    frame-exact, and a frame off would break the synchronisation). Progress is the total of frames read.
    """
    from tqdm import tqdm

    tasks = [(s, spec, n_frames, every, tuple(must_detect)) for s in sources]
    total = n_frames * len(sources)
    if workers <= 1:
        results = []
        with tqdm(total=total, unit="frame", desc="detecting board", disable=not progress) as bar:
            for t in tasks:
                r = _detect_task(t)
                bar.update(r.n_frames)
                results.append(r)
        return results
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")  # fork would copy the caller's threads (OpenCV, jax) into the workers
    queue = ctx.Queue()
    # An executor (not mp.Pool): a worker that dies raises BrokenProcessPool instead of hanging forever.
    with ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker, initargs=(queue,)
    ) as pool:
        futures = [pool.submit(_detect_task, t) for t in tasks]
        with tqdm(total=total, unit="frame", desc="detecting board", disable=not progress) as bar:
            while not all(f.done() for f in futures):
                try:
                    bar.update(queue.get(timeout=0.2))
                except Empty:
                    pass
            while not queue.empty():
                bar.update(queue.get())
        return [f.result() for f in futures]


def diagnose_unseen(source: Source, spec: BoardSpec, n_frames: int, n_samples: int = 12) -> str:
    """Why a camera never saw the board: look for other ArUco dictionaries or a checkerboard in a few frames.

    Returns a sentence for the error message (empty if nothing board-like is found).
    """
    import cv2

    indices = set(np.linspace(0, max(n_frames - 1, 0), n_samples).astype(int).tolist())
    frames = [img for i, img in iter_frames(source, n_frames) if i in indices]
    found: dict[str, int] = {}
    for bits in (4, 5, 6, 7):
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, ARUCO_DICTS[(bits, 1000)]))
        det = cv2.aruco.ArucoDetector(dictionary, cv2.aruco.DetectorParameters())
        n = 0
        for img in frames:
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
            _, ids, _ = det.detectMarkers(gray)
            if ids is not None and len(ids) >= 4:
                n += 1
        if n:
            found[f"{bits}x{bits}"] = n
    if found:
        kinds = ", ".join(f"{k} markers in {n} of {len(frames)} sampled frames" for k, n in found.items())
        return (
            f"The frames do show ArUco markers ({kinds}) but not the board described in the board file "
            f"({spec.describe()}): the board file does not match the printed board."
        )
    return ""
