"""Export recorded 3D poses in the layout keypoint-MoSeq loads, so a lab can fit its own syllables.

    ratrig export SESSION --to keypoint-moseq OUT [--result NAME]

Written (the "anipose" format of `keypoint_moseq.load_keypoints`, one CSV per recording)::

    OUT/keypoints/<session>.csv      {kp}_x, _y, _z (world mm), _error, _ncams, _score per keypoint
                                     (Anipose's pose-3d names), then capture_ns, and fnum last;
                                     one row per frame set
    OUT/project_options.json         bodyparts, use_bodyparts, skeleton, anterior_bodyparts,
                                     posterior_bodyparts, fps: keyword arguments of kpms.setup_project
    OUT/README.txt                   the few lines of Python that load it

keypoint-MoSeq's anipose loader finds the bodyparts by the header pattern ``<bp>_x,<bp>_y,<bp>_z``
and reads ``<bp>_score`` as the confidence; the recording is named after the file. Points that were
not triangulated are NaN with score 0 (keypoint-MoSeq interpolates low-confidence points). Loading
it (keypoint-moseq is not a ratrig dependency; install it in its own environment)::

    import json, keypoint_moseq as kpms
    coordinates, confidences, bodyparts = kpms.load_keypoints("OUT/keypoints", "anipose")
    kpms.setup_project("my_project", **json.load(open("OUT/project_options.json")))
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ratrig.skeleton import SKELETON
from ratrig.tomlio import atomic_write_text
from recorder.session import Session

#: keypoint-MoSeq initialises the heading from anterior -> posterior bodyparts
_ANTERIOR = ("nose", "left_ear", "right_ear")
_POSTERIOR = ("tail_base",)


def kpms_table(p3d: np.ndarray, error: np.ndarray, ncams: np.ndarray, score: np.ndarray, keypoints: tuple[str, ...],
               fnum: np.ndarray, capture_ns: np.ndarray) -> pd.DataFrame:
    """(N, K, 3) mm, (N, K) error px / ncams / score -> the CSV table keypoint-MoSeq's anipose loader reads.

    Score is 0 where the point is missing (NaN) and where the recorder has none.
    """
    p3d = np.asarray(p3d, np.float64)
    score = np.where(np.isfinite(score) & np.isfinite(p3d).all(axis=-1), score, 0.0)
    cols: dict[str, np.ndarray] = {}
    for k, kp in enumerate(keypoints):
        cols[f"{kp}_x"], cols[f"{kp}_y"], cols[f"{kp}_z"] = p3d[:, k, 0], p3d[:, k, 1], p3d[:, k, 2]
        cols[f"{kp}_error"] = error[:, k]
        cols[f"{kp}_ncams"] = np.nan_to_num(ncams[:, k]).astype(np.int64)
        cols[f"{kp}_score"] = score[:, k]
    cols["capture_ns"] = np.asarray(capture_ns, np.int64)
    cols["fnum"] = np.asarray(fnum, np.int64)  # last, as keypoint-MoSeq's docs describe the format
    return pd.DataFrame(cols)


def project_options(keypoints: tuple[str, ...], fps: float) -> dict:
    """Keyword arguments for `keypoint_moseq.setup_project` describing ratrig's skeleton."""
    kps = list(keypoints)
    anterior = [k for k in _ANTERIOR if k in kps] or kps[:1]
    posterior = [k for k in _POSTERIOR if k in kps] or kps[-1:]
    return {"bodyparts": kps, "use_bodyparts": kps,
            "skeleton": [[a, b] for a, b in SKELETON if a in kps and b in kps],
            "anterior_bodyparts": anterior, "posterior_bodyparts": posterior, "fps": float(fps)}


def export_keypoint_moseq(session: Session, out: Path, result: str | None = None) -> Path:
    """Write OUT/keypoints/<session>.csv, OUT/project_options.json and OUT/README.txt. Returns the CSV.

    Raises:
        ValueError: the session holds no 3D poses.
    """
    p = session.pose3d(result)
    if len(p.fnum) == 0:
        where = session.path / ("pose3d.csv" if result is None else f"reprocessed/{result}/pose3d.csv")
        raise ValueError(f"{where}: no 3D poses to export")
    keypoints = tuple(session.keypoints)
    table = kpms_table(p.raw_mm, p.error_px, p.ncams, p.score, keypoints, p.fnum, p.capture_ns)
    csv = out / "keypoints" / f"{session.path.name}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(csv, table.to_csv(index=False))
    fps = max(session.fps(c) for c in session.cameras) if session.cameras else 30.0
    atomic_write_text(out / "project_options.json", json.dumps(project_options(keypoints, fps), indent=2) + "\n")
    atomic_write_text(out / "README.txt", (
        "3D keypoints exported by ratrig for keypoint-MoSeq (world mm; x along the corridor, z up).\n\n"
        "    import json, keypoint_moseq as kpms\n"
        f"    coordinates, confidences, bodyparts = kpms.load_keypoints('{out / 'keypoints'}', 'anipose')\n"
        f"    kpms.setup_project('my_project', **json.load(open('{out / 'project_options.json'}')))\n"))
    return csv
