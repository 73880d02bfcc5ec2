"""Offline behaviour runs: `python -m analysis.behaviour fit|run ...`.

    python -m analysis.behaviour fit SESSION... -o segmenter.npz [--n-states 8]
        fit the HMM on the features of one or more sessions (concatenated) and save it; the live
        stage loads it with `[behaviour] model = "segmenter.npz"` (no warm-up fit, states from the
        first frame set)
    python -m analysis.behaviour run SESSION --out DIR [--model segmenter.npz]
        features (window ending at each frame), proxies (at window centres), detected episodes and
        the HMM states of one session as CSVs in DIR

SESSION: a ratrig session folder or a pose CSV (as `ratrig analyze`); --result, --coords and --fps
as there. Exit status 0, 1 when a session cannot be read (named on stderr), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.behaviour.features import FEATURE_NAMES, FeatureParams, session_features
from analysis.behaviour.offline import BehaviourParams, analyse
from analysis.behaviour.segment import Segmenter
from analysis.loader import SessionLoadError, load_session
from ratrig.tomlio import atomic_write_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.behaviour", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("fit", "run"):
        s = sub.add_parser(name)
        s.add_argument("sessions", nargs="+" if name == "fit" else 1)
        s.add_argument("--result", help="reprocessed result ('latest' for the newest); default: live poses")
        s.add_argument("--coords", choices=("auto", "filtered", "raw"), default="auto")
        s.add_argument("--fps", type=float)
        s.add_argument("--window", type=float, default=1.0, help="feature window, s")
        s.add_argument("--long-window", type=float, default=3.0, help="long feature window, s")
        s.add_argument("--n-states", type=int, default=8)
        s.add_argument("--seed", type=int, default=0)
        if name == "fit":
            s.add_argument("-o", "--output", required=True, help="segmenter .npz to write")
        else:
            s.add_argument("--out", required=True, help="output folder")
            s.add_argument("--model", help="segmenter .npz (default: fit on this session)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sessions = []
    try:
        for path in args.sessions:
            sessions.append(load_session(Path(path), None, None, args.result, args.coords, args.fps))
    except SessionLoadError as e:
        print(f"analysis.behaviour: {e}", file=sys.stderr)
        return 1
    fps = 1.0 / sessions[0].frame_period_s if sessions[0].n_frames > 1 else 30.0
    params = BehaviourParams(FeatureParams(fps, args.window, args.long_window), args.n_states, seed=args.seed)
    if args.command == "fit":
        feats = np.concatenate([session_features(s.times_s, s.keypoints_mm, s.keypoint_names, params.features)
                                for s in sessions])
        try:
            seg = Segmenter.fit(feats, args.n_states, args.seed)
        except ValueError as e:
            print(f"analysis.behaviour: {e}", file=sys.stderr)
            return 1
        print(seg.save(args.output))
        print(seg.state_table().round(2).to_string())
        return 0
    session = sessions[0]
    segmenter = None
    if args.model:
        try:
            segmenter = Segmenter.load(args.model)
        except ValueError as e:
            print(f"analysis.behaviour: --model: {e}", file=sys.stderr)
            return 2
    res = analyse(session.times_s, session.keypoints_mm, session.keypoint_names, params, segmenter)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(res.features, columns=list(FEATURE_NAMES))
    table.insert(0, "t_s", res.times_s)
    if res.states is not None:
        table["state"] = res.states
    atomic_write_text(out / "behaviour_features.csv", table.to_csv(index=False))
    prox = pd.DataFrame(res.proxies)
    prox.insert(0, "t_s", res.times_s)
    atomic_write_text(out / "dyskinesia_proxies_per_frame.csv", prox.to_csv(index=False))
    atomic_write_text(out / "behaviour_episodes.csv", pd.DataFrame(
        [{"kind": e.kind, "onset_s": e.onset_s, "offset_s": e.offset_s, "side": e.side, "peak_excess": e.peak_excess}
         for e in res.episodes], columns=["kind", "onset_s", "offset_s", "side", "peak_excess"]).to_csv(index=False))
    print(f"{session.source}: {session.n_frames} frames, {len(res.episodes)} episodes detected -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
