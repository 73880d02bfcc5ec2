"""Shared helpers for the behaviour tests: a recorded pose-only session from arrays, synthetic input."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ratrig.config import load_config
from ratrig.messages import Pose3DPacket
from ratrig.skeleton import KEYPOINTS
from recorder.session import Session, open_session
from recorder.video import check_codec
from recorder.writer import SessionWriter

START_NS = 5_000_000_000


def write_rig(path: Path, base_port: int = 6100, extra: str = "") -> Path:
    """A one-camera rig file with ratrig's eight keypoints (no model: nothing is inferred)."""
    kps = ", ".join(f'"{k}"' for k in KEYPOINTS)
    path.write_text(f'name = "beh"\nkeypoints = [{kps}]\n[network]\nbase_port = {base_port}\n'
                    '[recorder]\nmin_free_gb = 0.05\nwarn_free_gb = 0.1\n'
                    '[[cameras]]\nname = "cam_a"\nsource = "synthetic"\nfps = 30.0\n' + extra)
    return path


def capture_ns(times_s: np.ndarray) -> np.ndarray:
    return START_NS + np.round(np.asarray(times_s) * 1e9).astype(np.int64)


def pose_packets(times_s: np.ndarray, keypoints_mm: np.ndarray, names=KEYPOINTS) -> list[Pose3DPacket]:
    """(T,) s, (T, K, 3) mm -> one Pose3DPacket per frame set (raw = filtered = the given points)."""
    k = len(names)
    cap = capture_ns(times_s)
    return [Pose3DPacket(i, int(cap[i]), tuple(names), ("cam_a",), keypoints_mm[i].copy(), keypoints_mm[i].copy(),
                         np.full(k, 0.5), np.where(np.isfinite(keypoints_mm[i]).all(1), 2, 0).astype(np.int8),
                         np.where(np.isfinite(keypoints_mm[i]).all(1), 0.9, np.nan))
            for i in range(len(times_s))]


def write_pose_session(folder: Path, times_s: np.ndarray, keypoints_mm: np.ndarray, extra_rig: str = "") -> Session:
    """A real session folder (SessionWriter) holding only these 3D poses."""
    folder.mkdir(parents=True, exist_ok=True)
    rig = load_config(write_rig(folder.parent / f"{folder.name}_rig.toml", extra=extra_rig))
    w = SessionWriter(folder, rig, check_codec("ffv1"))
    for p in pose_packets(times_s, keypoints_mm):
        w.write_pose3d(p)
    w.close()
    return open_session(folder)


def synthetic_input(duration_s: float, seed: int, **script):
    """(times_s, noisy keypoints (T, 8, 3), episodes) of a synthetic rat with scripted episodes."""
    from synthetic.dyskinesia import noisy_observation, script_episodes, with_episodes
    from synthetic.rat import simulate

    episodes = script_episodes(duration_s, seed, **script)
    traj = with_episodes(simulate(duration_s, 30.0, seed), episodes)
    return traj.times_s, noisy_observation(traj.keypoints_mm, seed), episodes
