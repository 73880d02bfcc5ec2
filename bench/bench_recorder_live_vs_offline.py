"""Live vs offline 3D error on a real recorded synthetic session (every stage real, model included).

    nice -n 10 python bench/bench_recorder_live_vs_offline.py [--duration 15] [--fps 10] [--session DIR]

1. `ratrig demo --headless --record DIR` runs the synthetic rig through the real stages (capture
   processes rendering the rat, DLC-Live inference with the bundled model, fusion, events, recorder).
   With --session an existing demo recording is used instead.
2. `recorder.reprocess` reruns DLC-Live on every recorded frame, median-filters the 2D tracks and
   triangulates with aniposelib's triangulate_optim (limb-length constraints on the head), and also
   with plain DLT for reference.
3. Every 3D pose is compared with the synthetic ground truth of its frame (synthetic.live.SyntheticTruth:
   frame k of every camera shows truth row k), per keypoint, in mm.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ratrig.config import load_config  # noqa: E402
from recorder.compare import match_frame_sets  # noqa: E402
from recorder.reprocess import reprocess  # noqa: E402
from recorder.session import Pose3D, open_session  # noqa: E402
from synthetic.live import SyntheticTruth  # noqa: E402


def truth_for(p: Pose3D, truth: SyntheticTruth, cameras: tuple[str, ...]) -> np.ndarray:
    """(N, K, 3) ground truth of each frame set, NaN where no camera frame index is known."""
    out = np.full(p.raw_mm.shape, np.nan)
    for r in range(len(p.fnum)):
        idx = [int(p.frame_indices[c][r]) for c in cameras if c in p.frame_indices and p.frame_indices[c][r] >= 0]
        if idx:
            out[r] = truth.keypoints_mm(idx[0])
    return out


def summary(p3d: np.ndarray, gt: np.ndarray) -> str:
    e = np.linalg.norm(p3d - gt, axis=-1)
    ok = np.isfinite(e)
    return (f"median {np.median(e[ok]):6.2f}  mean {np.mean(e[ok]):7.2f}  p95 {np.percentile(e[ok], 95):7.2f}  "
            f"max {np.max(e[ok]):7.1f} mm   points {ok.sum()}/{np.isfinite(gt[..., 0]).sum()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--fps", type=float, default=10.0, help="camera fps (the 2-core box cannot infer 4 x 30 fps)")
    ap.add_argument("--session", default=None, help="use this demo recording instead of recording a new one")
    args = ap.parse_args(argv)
    if args.session:
        session_dir = Path(args.session)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="ratrig_bench_"))
        session_dir = tmp / "session"
        cmd = [sys.executable, "-m", "ratrig", "demo", "--headless", "--duration", str(args.duration),
               "--fps", str(args.fps), "--record", str(session_dir), "--run-dir", str(tmp / "run")]
        print("running:", " ".join(cmd), flush=True)
        r = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:])
            return 1
        if not (session_dir / "session.json").exists():  # the CLI may record into a folder inside DIR
            inner = [p.parent for p in session_dir.rglob("session.json")]
            session_dir = inner[0]
    s = open_session(session_dir)
    rig = load_config(s.config_path)
    truth = SyntheticTruth.from_rig_config(rig)
    counts = s.counts()
    print(f"session {session_dir}: status {s.status}; frames per camera "
          f"{ {c: len(s.frames(c)) for c in s.cameras} }; lost {counts.get('frames_lost_total')}")
    live = s.pose3d()
    gt = truth_for(live, truth, s.cameras)
    print(f"live frame sets: {len(live.fnum)}")
    print("live raw (online triangulation)   ", summary(live.raw_mm, gt))
    print("live filtered (Kalman)            ", summary(live.filtered_mm, gt))
    first = None
    stamp = time.strftime("%H%M%S")
    for filt, tri in (("none", "dlt"), ("none", "ransac"), ("median", "optim")):
        # the model runs once; the other methods reuse its 2D keypoints
        out = reprocess(s, filter_name=filt, triangulation=tri, progress=first is None, name=f"bench_{filt}_{tri}_{stamp}",
                        reuse_2d=first)
        first = first or out.name
        p = s.pose3d(result=out.name)
        print(f"offline {filt:>6} + {tri:<6} ({len(p.fnum)} frame sets)    ", summary(p.raw_mm, truth_for(p, truth, s.cameras)))
        # the same frame sets as live (live inference skips moments when it falls behind)
        il, io = match_frame_sets(live, p, s.cameras)
        print(f"   same {len(io)} frame sets: live filtered", summary(live.filtered_mm[il], gt[il]))
        print(f"   same {len(io)} frame sets: offline      ", summary(p.raw_mm[io], truth_for(p, truth, s.cameras)[io]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
