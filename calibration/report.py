"""What a calibration is worth: per-camera and per-pair numbers, a verdict with advice, a figure.

`build_report` is pure (numbers in, dataclass out); `write_report` writes `<name>_report.toml` and
`<name>_report.png` atomically; `format_report` gives the text printed at the end of `ratrig calibrate`.
"""
from __future__ import annotations

import io
import os
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from ratrig.camera import Calibration
from ratrig.tomlio import atomic_write_bytes, write_toml


@dataclass(frozen=True, slots=True)
class CameraStats:
    name: str
    frames_with_board: int  # frames where the board was detected
    frames_used: int  # of those, frames that went into the bundle adjustment
    corners_used: int
    error_mean_px: float  # reprojection error of corners seen by >= 2 cameras
    error_p95_px: float
    focal_px: float
    center_mm: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class PairStats:
    camera_a: str
    camera_b: str
    shared_frames: int  # frames used in which both saw the board
    shared_corners: int  # corners both saw in those frames


@dataclass(frozen=True)
class CalibrationReport:
    """Numbers and verdict of one calibration. `problems` empty = good; `notes` are not failures."""

    cameras: tuple[CameraStats, ...]
    pairs: tuple[PairStats, ...]
    error_median_px: float
    error_threshold_px: float
    seed: int
    world_frame: str
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    rejected_attempts: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def good(self) -> bool:
        return not self.problems


def build_report(
    calib: Calibration,
    rows_per_camera: Sequence[Sequence[dict[str, Any]]],
    frames_with_board: Sequence[int],
    frames_used: Sequence[int],
    errors_px: np.ndarray,
    point_camera_seen: np.ndarray | None = None,
    *,
    seed: int = 0,
    world_frame: str = "first camera",
    error_threshold_px: float = 1.0,
    min_frames: int = 20,
    rejected_attempts: Sequence[str] = (),
) -> CalibrationReport:
    """Statistics and verdict.

    Args:
        calib: the calibration (cameras in the order of the rows).
        rows_per_camera: each camera's detection rows (aniposelib form).
        frames_with_board: per camera, frames in which the board was detected.
        frames_used: frame indices used in the bundle adjustment.
        errors_px: (C, P) reprojection error of multi-view corners, NaN where not seen.
        error_threshold_px: mean error per camera above this is a problem.
        min_frames: fewer used frames per camera is a problem (too few to trust its intrinsics).
    """
    used = set(int(f) for f in frames_used)
    names = calib.names
    seen: list[dict[int, set[int]]] = []
    for rows in rows_per_camera:
        seen.append({int(r["framenum"]): set(r["ids"].ravel().tolist()) for r in rows if r["framenum"] in used})
    cams = []
    problems: list[str] = []
    notes: list[str] = []
    for i, cam in enumerate(calib.cameras):
        e = errors_px[i][np.isfinite(errors_px[i])] if errors_px.size else np.zeros(0)
        mean = float(e.mean()) if e.size else float("nan")
        p95 = float(np.percentile(e, 95)) if e.size else float("nan")
        stats = CameraStats(
            name=cam.name,
            frames_with_board=int(frames_with_board[i]),
            frames_used=len(seen[i]),
            corners_used=int(sum(len(v) for v in seen[i].values())),
            error_mean_px=mean,
            error_p95_px=p95,
            focal_px=float(cam.matrix[0, 0]),
            center_mm=tuple(float(x) for x in cam.center_mm),
        )
        cams.append(stats)
        if stats.frames_used < min_frames:
            problems.append(
                f"camera {cam.name!r} saw the board in only {stats.frames_used} of the frames used (want >= {min_frames}): "
                "record more board poses in its view (all corners of the image, tilted, near and far)."
            )
        if not np.isfinite(mean):
            problems.append(f"camera {cam.name!r} shares no board corner with another camera: its pose is unknown.")
        elif mean > error_threshold_px:
            problems.append(
                f"camera {cam.name!r} reprojection error {mean:.2f} px (p95 {p95:.2f}) is above {error_threshold_px:g} px: "
                "check the board is flat and matches board.toml, the videos are synchronised, and the camera "
                "did not move or refocus during the recording."
            )
    pairs = []
    for (i, a), (j, b) in combinations(enumerate(names), 2):
        common = set(seen[i]) & set(seen[j])
        corners = sum(len(seen[i][f] & seen[j][f]) for f in common)
        pairs.append(PairStats(a, b, len(common), int(corners)))
        if not common:
            notes.append(
                f"cameras {a!r} and {b!r} never saw the board together; they are linked through the other "
                "cameras (fine for opposed cameras, but a few shared views would make the link stronger)."
            )
    finite = errors_px[np.isfinite(errors_px)] if errors_px.size else np.zeros(0)
    return CalibrationReport(
        cameras=tuple(cams),
        pairs=tuple(pairs),
        error_median_px=float(np.median(finite)) if finite.size else float("nan"),
        error_threshold_px=float(error_threshold_px),
        seed=int(seed),
        world_frame=world_frame,
        problems=tuple(problems),
        notes=tuple(notes),
        rejected_attempts=tuple(rejected_attempts),
    )


def format_report(report: CalibrationReport) -> str:
    """Human-readable summary ending in the verdict."""
    lines = [
        f"{'camera':<14}{'frames':>8}{'used':>6}{'corners':>9}{'err mean':>10}{'err p95':>9}{'focal px':>10}   centre mm",
    ]
    for c in report.cameras:
        centre = ", ".join(f"{x:.0f}" for x in c.center_mm)
        lines.append(
            f"{c.name:<14}{c.frames_with_board:>8}{c.frames_used:>6}{c.corners_used:>9}"
            f"{c.error_mean_px:>10.3f}{c.error_p95_px:>9.3f}{c.focal_px:>10.1f}   ({centre})"
        )
    lines.append("pairs (shared frames / corners): " + ", ".join(
        f"{p.camera_a}-{p.camera_b}: {p.shared_frames}/{p.shared_corners}" for p in report.pairs
    ))
    lines.append(f"median reprojection error {report.error_median_px:.3f} px; seed {report.seed}; world frame: {report.world_frame}")
    for r in report.rejected_attempts:
        lines.append(f"rejected attempt: {r}")
    for n in report.notes:
        lines.append(f"note: {n}")
    if report.good:
        lines.append("VERDICT: good.")
    else:
        lines.append("VERDICT: NOT GOOD:")
        lines.extend(f"  - {p}" for p in report.problems)
    return "\n".join(lines)


def report_paths(calibration_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """calibration.toml -> (calibration_report.toml, calibration_report.png) beside it."""
    p = Path(calibration_path)
    return p.with_name(p.stem + "_report.toml"), p.with_name(p.stem + "_report.png")


def report_to_dict(report: CalibrationReport) -> dict[str, Any]:
    d = asdict(report)
    d["good"] = report.good
    d["cameras"] = [dict(c, center_mm=list(c["center_mm"])) for c in d["cameras"]]
    # TOML has no NaN literal that every reader accepts; write -1 for "no data" and say so.
    for c in d["cameras"]:
        for k in ("error_mean_px", "error_p95_px"):
            if not np.isfinite(c[k]):
                c[k] = -1.0
    if not np.isfinite(d["error_median_px"]):
        d["error_median_px"] = -1.0
    d["note_on_missing"] = "-1 means no corner of this camera was seen by a second camera"
    return d


def render_figure(report: CalibrationReport, calib: Calibration) -> bytes:
    """PNG: camera positions and viewing directions in 3D (world frame), and error per camera."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8), dpi=100)
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    centres = np.array([c.center_mm for c in calib.cameras])
    span = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 100.0
    for cam in calib.cameras:
        c = cam.center_mm
        d = cam.rotation_matrix[2] * 0.3 * span
        ax.scatter(*c, s=30)
        ax.plot([c[0], c[0] + d[0]], [c[1], c[1] + d[1]], [c[2], c[2] + d[2]])
        ax.text(*c, f" {cam.name}", fontsize=8)
    ax.scatter([0], [0], [0], marker="+", color="black")
    ax.set_xlabel("x mm")
    ax.set_ylabel("y mm")
    ax.set_zlabel("z mm")
    ax.set_title(textwrap.fill(f"cameras and viewing directions; world frame: {report.world_frame}", 60), fontsize=8)
    lo, hi = np.minimum(centres.min(0), 0), np.maximum(centres.max(0), 0)
    mid, rad = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1.0)
    ax.set_xlim(mid[0] - rad, mid[0] + rad)
    ax.set_ylim(mid[1] - rad, mid[1] + rad)
    ax.set_zlim(mid[2] - rad, mid[2] + rad)
    ax2 = fig.add_subplot(1, 2, 2)
    x = np.arange(len(report.cameras))
    ax2.bar(x - 0.2, [max(c.error_mean_px, 0) for c in report.cameras], 0.4, label="mean")
    ax2.bar(x + 0.2, [max(c.error_p95_px, 0) for c in report.cameras], 0.4, label="p95")
    ax2.axhline(report.error_threshold_px, color="red", ls="--", lw=1, label="threshold")
    ax2.set_xticks(x, [c.name for c in report.cameras])
    ax2.set_ylabel("reprojection error, px")
    ax2.set_title("GOOD" if report.good else "NOT GOOD: see the report", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(report: CalibrationReport, calib: Calibration, calibration_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the report TOML and PNG beside the calibration file; returns their paths."""
    toml_path, png_path = report_paths(calibration_path)
    write_toml(toml_path, report_to_dict(report))
    atomic_write_bytes(png_path, render_figure(report, calib))
    return toml_path, png_path
