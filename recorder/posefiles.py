"""Reading the 2D tracks a lab already has: DeepLabCut .h5/.csv and SLEAP analysis .h5, one file per camera.

    track = read_pose_file("videos/cam_ne_DLC_resnet50.h5")           # single animal
    track = read_pose_file("sleap/cam_ne.analysis.h5", individual="rat1")
    track.points          # (N, K, 3) x px, y px, likelihood; NaN = not detected
    track.frame_index     # (N,) the video frame number of each row

The `movement` library (BSD-3) does the format work: `movement.io.load_poses.from_sleap_file` for
SLEAP analysis files and `from_dlc_style_df` for DeepLabCut tables (single and multi-animal). What
movement does not keep, and this module adds:

* the frame numbers: movement numbers the rows 0..N-1, but a DeepLabCut table's row index is the
  video frame number and need not start at 0 or be contiguous (a file cut to a trial, or frames
  dropped by a tool). The index is read with pandas and kept, so rows are never silently shifted; a
  non-numeric index (DeepLabCut's labelled-data image paths) falls back to the row position, and
  `PoseTrack.index_note` says so.
* errors that name the file and what was expected (a truncated or foreign .h5, a multi-animal file
  without an individual, an unknown individual).
* per-camera timestamp files (`read_timestamps`) and matching a folder of pose files to the
  calibration's camera names (`match_pose_folder`).

SLEAP points without a score (user labels: no `point_scores`, or NaN there) get likelihood 1.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: file suffixes `match_pose_folder` considers pose files
POSE_SUFFIXES = (".h5", ".hdf5", ".csv")


class PoseFileError(ValueError):
    """A 2D pose file that cannot be used; the message names the file and what was expected."""


@dataclass(frozen=True, slots=True)
class PoseTrack:
    """2D keypoints of one animal in one camera's video, as read from one file.

    Attributes:
        path: the file.
        source_software: "DeepLabCut" or "SLEAP".
        keypoints: (K,) body-part names as the file spells them.
        frame_index: (N,) int64 video frame number of each row, increasing, unique.
        points: (N, K, 3) float64 x px, y px, likelihood; NaN x/y = not detected.
        individual: the animal chosen in a multi-animal file (None for a single-animal file).
        index_note: how the frame numbers were obtained ("" when read from the file's index).
    """

    path: Path
    source_software: str
    keypoints: tuple[str, ...]
    frame_index: np.ndarray
    points: np.ndarray
    individual: str | None = None
    index_note: str = ""

    @property
    def n_frames(self) -> int:
        return int(len(self.frame_index))


@contextlib.contextmanager
def _quiet_movement() -> Iterator[None]:
    """movement logs every load (loguru, to stderr and ~/.movement/movement.log) and warns about files
    without SLEAP tracks; what matters reaches the summary, so keep the command's output clean."""
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - movement depends on loguru
        logger = None
    if logger is not None:
        logger.disable("movement")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if logger is not None:
            logger.enable("movement")


# ---------------------------------------------------------------------------------------------------
# format detection


def _h5_keys(path: Path) -> list[str]:
    """Top-level names of an HDF5 file; PoseFileError if it is not a readable HDF5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return list(f.keys())
    except OSError as e:
        size = path.stat().st_size if path.exists() else 0
        raise PoseFileError(
            f"{path}: not a readable HDF5 file ({size} bytes; truncated or not HDF5?): expected a DeepLabCut .h5 "
            f"(table 'df_with_missing') or a SLEAP analysis .h5 (dataset 'tracks') ({e})"
        ) from None


def detect_format(path: Path) -> str:
    """-> "dlc_h5", "dlc_csv" or "sleap_h5"; PoseFileError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PoseFileError(f"{path}: pose file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "dlc_csv"
    if suffix in (".h5", ".hdf5"):
        keys = _h5_keys(path)
        if "tracks" in keys and "node_names" in keys:
            return "sleap_h5"
        if keys:
            return "dlc_h5"
        raise PoseFileError(f"{path}: empty HDF5 file: expected a DeepLabCut table or a SLEAP analysis file")
    raise PoseFileError(f"{path}: unknown pose file type {suffix!r}: expected DeepLabCut .h5/.csv or SLEAP analysis .h5")


# ---------------------------------------------------------------------------------------------------
# DeepLabCut


def _dlc_table_h5(path: Path) -> pd.DataFrame:
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = [k.lstrip("/") for k in store.keys()]
            key = "df_with_missing" if "df_with_missing" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise PoseFileError(
                    f"{path}: expected a DeepLabCut table under key 'df_with_missing' (or a single table), found {keys}"
                )
            df = store[key]
    except PoseFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise PoseFileError(f"{path}: not a readable DeepLabCut .h5 table (expected pandas key 'df_with_missing'): {e}") from None
    if not isinstance(df, pd.DataFrame):
        raise PoseFileError(f"{path}: expected a DeepLabCut table (DataFrame), got {type(df).__name__}")
    return df


def _dlc_table_csv(path: Path) -> pd.DataFrame:
    levels = ("scorer", "individuals", "bodyparts", "coords")
    header_rows = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.split(",")[0].strip() in levels:
                    header_rows += 1
                else:
                    break
    except OSError as e:
        raise PoseFileError(f"{path}: cannot read ({e})") from None
    if header_rows < 3:
        raise PoseFileError(
            f"{path}: expected DeepLabCut CSV header rows 'scorer', ['individuals',] 'bodyparts', 'coords'; "
            f"found {header_rows} of them"
        )
    try:
        df = pd.read_csv(path, header=list(range(header_rows)), index_col=0)
    except (ValueError, pd.errors.ParserError) as e:
        raise PoseFileError(f"{path}: not a readable DeepLabCut CSV ({e})") from None
    df.columns.names = list(levels if header_rows == 4 else ("scorer", "bodyparts", "coords"))
    return df


def _frame_numbers(index: pd.Index, path: Path) -> tuple[np.ndarray, str]:
    """A DeepLabCut table's row index -> (N,) frame numbers and a note ("" if taken from the index)."""
    n = len(index)
    if n and not isinstance(index, pd.MultiIndex) and pd.api.types.is_integer_dtype(index.dtype):
        fi = index.to_numpy(np.int64)
        if (fi < 0).any():
            raise PoseFileError(f"{path}: negative frame numbers in the row index (first {int(fi[fi < 0][0])})")
        if np.any(np.diff(fi) <= 0):
            raise PoseFileError(f"{path}: the row index (frame numbers) is not strictly increasing")
        return fi, ""
    return np.arange(n, dtype=np.int64), "row index is not a frame number: rows numbered 0..N-1 by position"


def _from_dlc_table(df: pd.DataFrame, path: Path, individual: str | None) -> PoseTrack:
    from movement.io import load_poses

    names = list(df.columns.names)
    if "bodyparts" not in names or "coords" not in names:
        raise PoseFileError(f"{path}: expected DeepLabCut column levels scorer/bodyparts/coords, got {names}")
    coords = set(df.columns.get_level_values("coords"))
    if not {"x", "y", "likelihood"} <= coords:
        raise PoseFileError(f"{path}: expected coords x, y, likelihood, got {sorted(map(str, coords))}")
    frame_index, note = _frame_numbers(df.index, path)
    if "individuals" in names:
        inds = list(dict.fromkeys(df.columns.get_level_values("individuals")))
        # maDLC's unique body parts live under the individual "single" with other body parts: movement's
        # reshape needs the same body parts for every individual, so keep only the chosen one
        if individual is None:
            if len(inds) > 1:
                raise PoseFileError(f"{path}: multi-animal file with individuals {inds}: choose one with --individual NAME")
            individual = inds[0]
        if individual not in inds:
            raise PoseFileError(f"{path}: no individual {individual!r}; the file has {inds}")
        df = df.xs(individual, axis=1, level="individuals", drop_level=False)
    else:
        individual = None  # a single-animal file: its one animal, whatever name was asked for the others
    df = df.reset_index(drop=True).astype(np.float64)
    try:
        with _quiet_movement():
            ds = load_poses.from_dlc_style_df(df, source_software="DeepLabCut")
    except (ValueError, KeyError) as e:
        raise PoseFileError(f"{path}: movement could not read the DeepLabCut table ({e})") from None
    return _from_dataset(ds, path, "DeepLabCut", frame_index, individual, note)


# ---------------------------------------------------------------------------------------------------
# SLEAP


def _from_sleap(path: Path, individual: str | None) -> PoseTrack:
    from movement.io import load_poses

    try:
        with _quiet_movement():
            ds = load_poses.from_sleap_file(path)
    except (OSError, ValueError, KeyError) as e:
        raise PoseFileError(f"{path}: not a readable SLEAP analysis .h5 (expected datasets tracks, node_names): {e}") from None
    inds = [str(v) for v in ds["individuals"].values]
    if len(inds) == 1 and inds[0] == "individual_0":
        individual = inds[0]  # no SLEAP tracks (movement's default name): the file's one animal
    if individual is None:
        if len(inds) > 1:
            raise PoseFileError(f"{path}: multi-animal file with tracks {inds}: choose one with --individual NAME")
        individual = inds[0]
    elif individual not in inds:
        raise PoseFileError(f"{path}: no track {individual!r}; the file has {inds}")
    n = int(ds.sizes["time"])
    return _from_dataset(ds, path, "SLEAP", np.arange(n, dtype=np.int64), individual, "")


# ---------------------------------------------------------------------------------------------------


def _from_dataset(ds, path: Path, software: str, frame_index: np.ndarray, individual: str | None, note: str) -> PoseTrack:
    """movement poses dataset (time, space, keypoints, individuals) -> PoseTrack of one individual."""
    ind = individual if individual is not None else str(ds["individuals"].values[0])
    pos = ds["position"].sel(individuals=ind).transpose("time", "keypoints", "space").to_numpy().astype(np.float64)
    conf = ds["confidence"].sel(individuals=ind).transpose("time", "keypoints").to_numpy().astype(np.float64)
    if pos.shape[2] != 2:
        raise PoseFileError(f"{path}: expected 2D positions (x, y), got {pos.shape[2]} coordinates")
    seen = np.isfinite(pos).all(axis=2)
    if software == "SLEAP":
        # user-labelled instances carry no scores (NaN, or no point_scores at all): a labelled point is certain
        conf = np.where(seen & ~np.isfinite(conf), 1.0, conf)
    pos[~seen] = np.nan
    conf = np.where(seen, conf, np.nan)
    points = np.concatenate([pos, conf[:, :, None]], axis=2)
    keypoints = tuple(str(k) for k in ds["keypoints"].values)
    if len(set(keypoints)) != len(keypoints):
        raise PoseFileError(f"{path}: body-part names appear more than once: {list(keypoints)}")
    return PoseTrack(Path(path), software, keypoints, frame_index, points, individual, note)


def read_pose_file(path: str | os.PathLike[str], individual: str | None = None) -> PoseTrack:
    """Read one camera's 2D tracks: DeepLabCut .h5/.csv or SLEAP analysis .h5.

    Args:
        path: the file.
        individual: the animal to take from a multi-animal file (DeepLabCut `individuals`, SLEAP
            track name); required when the file holds more than one, ignored by a single-animal file.

    Raises:
        PoseFileError: naming the file and what was expected.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "sleap_h5":
        return _from_sleap(path, individual)
    df = _dlc_table_h5(path) if fmt == "dlc_h5" else _dlc_table_csv(path)
    return _from_dlc_table(df, path, individual)


# ---------------------------------------------------------------------------------------------------
# timestamps


#: timestamp column names and their factor to ns
TIMESTAMP_COLUMNS = {"capture_ns": 1, "timestamp_ns": 1, "time_ns": 1, "timestamp_us": 1_000,
                     "timestamp_ms": 1_000_000, "time_s": 1_000_000_000, "timestamp_s": 1_000_000_000,
                     "timestamp": 1_000_000_000, "time": 1_000_000_000}


def read_timestamps(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """A per-camera timestamp file -> ((N,) capture times ns, (N,) frame numbers or None).

    Accepted: a CSV with a header holding one of the `TIMESTAMP_COLUMNS` (capture_ns, timestamp_ns,
    time_ns, timestamp_us, timestamp_ms, time_s, timestamp_s, timestamp, time: the unit is in the
    name, seconds when none) and optionally `frame_index` (ratrig's frames.csv and the `*_frames.csv`
    of `ratrig export --to dlc` are such files); or one number per line without a header, in seconds.
    Without frame_index, data row f is the time of video frame f (the pose file's frame numbers).
    """
    path = Path(path)
    if not path.is_file():
        raise PoseFileError(f"{path}: timestamp file not found")
    try:
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        header = not _is_number(first.split(",")[0].strip())
        df = pd.read_csv(path, header=0 if header else None)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise PoseFileError(f"{path}: not a readable timestamp table ({e})") from None
    if header:
        cols = [c for c in TIMESTAMP_COLUMNS if c in df.columns]
        if not cols:
            raise PoseFileError(f"{path}: expected a timestamp column, one of {list(TIMESTAMP_COLUMNS)}; got {list(df.columns)}")
        values = pd.to_numeric(df[cols[0]], errors="coerce").to_numpy(np.float64)
        factor = TIMESTAMP_COLUMNS[cols[0]]
        frames = df["frame_index"].to_numpy(np.int64) if "frame_index" in df.columns else None
    else:
        if df.shape[1] != 1:
            raise PoseFileError(f"{path}: a timestamp file without header must hold one number (seconds) per line")
        values = pd.to_numeric(df[0], errors="coerce").to_numpy(np.float64)
        factor, frames = 1_000_000_000, None
    first_line = 2 if header else 1

    def where(i: int) -> str:
        return f"data row {i + 1} (line {i + first_line})"

    if not np.isfinite(values).all():
        raise PoseFileError(f"{path}: {where(int(np.flatnonzero(~np.isfinite(values))[0]))}: timestamp is not a number")
    ns = np.round(values * factor).astype(np.int64) if factor != 1 else values.astype(np.int64)
    if len(ns) > 1 and np.any(np.diff(ns) <= 0):
        raise PoseFileError(f"{path}: timestamps must increase ({where(int(np.flatnonzero(np.diff(ns) <= 0)[0]) + 1)})")
    return ns, frames


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# folders


def match_pose_folder(folder: str | os.PathLike[str], camera_names: Sequence[str]) -> dict[str, Path]:
    """Pose files of a folder -> {camera: file}, by the camera name inside the file name.

    Every .h5/.csv file must contain exactly one camera name (the longest wins when one name holds
    another, e.g. cam1 and cam10) and every camera at most one file (a .csv beside the .h5 of the
    same name, as DeepLabCut's save_as_csv writes, is the same table: the .h5 is read). A file that names no camera of
    the calibration is an error (the calibration lacks that camera); a camera without a file is
    simply not used.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PoseFileError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in POSE_SUFFIXES)
    # DeepLabCut's save_as_csv writes the same table twice, NAME.h5 and NAME.csv: take the .h5
    h5_stems = {p.stem for p in files if p.suffix.lower() != ".csv"}
    files = [p for p in files if not (p.suffix.lower() == ".csv" and p.stem in h5_stems)]
    if not files:
        raise PoseFileError(f"{folder}: no pose files (*.h5, *.csv)")
    out: dict[str, Path] = {}
    for f in files:
        hits = [c for c in camera_names if re.search(re.escape(c), f.stem)]
        if not hits:
            raise PoseFileError(f"{f}: the file name contains none of the calibration's cameras {list(camera_names)}")
        cam = max(hits, key=len)
        if cam in out:
            raise PoseFileError(f"{folder}: camera {cam!r} matches two files, {out[cam].name} and {f.name}; name them with CAM=FILE")
        out[cam] = f
    return out
