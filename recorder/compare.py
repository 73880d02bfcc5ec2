"""Compare the 3D poses of two sessions (live vs replay, or two reprocessings) frame set by frame set.

    python -m recorder.compare SESSION_A SESSION_B [--result-a NAME] [--result-b NAME] [--json]

Frame sets are matched by the camera frame numbers they hold (pose3d.csv `frame_index_<camera>`):
replay keeps every camera's frame_index, so the same moment has the same numbers in both sessions
even though replay re-bases the capture times. Only sets whose frame numbers agree for every camera
present in both are compared.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from recorder.session import Pose2D, Pose3D, open_session


def match_frame_sets(a: Pose3D, b: Pose3D, cameras: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (M,), (M,) of frame sets holding the same camera frames in `a` and `b`."""
    cams = [c for c in cameras if c in a.frame_indices and c in b.frame_indices]
    if not cams:
        raise ValueError("the pose tables have no frame_index_<camera> columns in common")
    key_a = {tuple(int(a.frame_indices[c][i]) for c in cams): i for i in range(len(a.fnum))}
    ia, ib = [], []
    for j in range(len(b.fnum)):
        k = tuple(int(b.frame_indices[c][j]) for c in cams)
        i = key_a.get(k)
        if i is not None and any(v >= 0 for v in k):
            ia.append(i)
            ib.append(j)
    return np.asarray(ia, np.int64), np.asarray(ib, np.int64)


def _stats(d: np.ndarray) -> dict[str, Any]:
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"n": 0}
    return {"n": int(d.size), "median_mm": float(np.median(d)), "p99_mm": float(np.percentile(d, 99)),
            "max_mm": float(np.max(d))}


def compare_pose3d(a: Pose3D, b: Pose3D, cameras: tuple[str, ...]) -> dict[str, Any]:
    """Distances between matched poses, mm: raw and filtered; also how often only one side has a point."""
    ia, ib = match_frame_sets(a, b, cameras)
    out: dict[str, Any] = {"frame_sets_a": int(len(a.fnum)), "frame_sets_b": int(len(b.fnum)), "matched": int(len(ia))}
    for name in ("raw_mm", "filtered_mm"):
        pa, pb = getattr(a, name)[ia], getattr(b, name)[ib]
        d = np.linalg.norm(pa - pb, axis=-1)
        fa, fb = np.isfinite(pa).all(-1), np.isfinite(pb).all(-1)
        out[name.replace("_mm", "")] = _stats(d) | {"only_in_a": int((fa & ~fb).sum()), "only_in_b": int((fb & ~fa).sum())}
    return out


def compare_pose2d(a: Pose2D, b: Pose2D) -> dict[str, Any]:
    """2D keypoints of the same camera frames (matched by frame_index): pixel and likelihood differences."""
    ia = {int(f): i for i, f in enumerate(a.frame_index)}
    pairs = [(ia[int(f)], j) for j, f in enumerate(b.frame_index) if int(f) in ia]
    if not pairs:
        return {"matched": 0}
    i, j = (np.asarray(x, np.int64) for x in zip(*pairs))
    pa, pb = a.points[i], b.points[j]
    d = np.linalg.norm(pa[..., :2] - pb[..., :2], axis=-1)
    dl = np.abs(pa[..., 2] - pb[..., 2])
    px = _stats(d)
    px = {k.replace("_mm", "_px"): v for k, v in px.items()}
    return {"matched": int(len(i)), "xy": px,
            "likelihood_max_diff": float(np.nanmax(dl)) if np.isfinite(dl).any() else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recorder.compare", description=__doc__.split("\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--result-a", default=None)
    p.add_argument("--result-b", default=None)
    args = p.parse_args(argv)
    try:
        sa, sb = open_session(args.a, repair=False), open_session(args.b, repair=False)
        res = compare_pose3d(sa.pose3d(args.result_a), sb.pose3d(args.result_b), sa.cameras)
        res["pose2d"] = {c: compare_pose2d(sa.pose2d(c, args.result_a), sb.pose2d(c, args.result_b))
                         for c in sa.cameras if c in sb.cameras}
    except (ValueError, KeyError, OSError) as e:
        print(f"compare: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
