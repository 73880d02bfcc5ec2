"""Write (and read back) a synthetic recording session with exact ground truth.

Layout of `out_dir` (all names listed in manifest.json):

* ``calibration.toml``: the true calibration, Anipose format (`Calibration.save`).
* ``<camera>.mkv``: one lossless FFV1 video per camera (bit-exact round trip through OpenCV), or
  ``<camera>.avi`` (MJPG) with ``codec="mjpg"``.
* ``<camera>_timestamps.csv``: frame_index, capture_ns, t_s (cameras are synchronised: frame k of
  every camera is captured at t = k / fps; capture_ns = start_ns + t in ns).
* ``ground_truth.npz``: times_s (T,), keypoints_mm (T, K, 3), keypoint_names, extra_mm (T, E, 3),
  extra_names, in_stance (T, 4), paw_names, camera_names, visibility (C, T, K),
  keypoints_px (C, T, K, 2) (projections, NaN behind the camera), capture_ns (C, T),
  body_speed_mm_s (T,).
* ``keypoints_3d.csv``: frame_index, t_s, then <keypoint>_x_mm, _y_mm, _z_mm for keypoints and extras.
* ``visibility.csv``: camera, frame_index, then one 0/1 column per keypoint.
* ``paw_contacts.csv`` / ``paw_contacts.json``: paw, touchdown_s, liftoff_s, censored_start,
  censored_end (an interval cut by the session's start or end).
* ``manifest.json``: parameters, corridor, files, frame counts.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ratrig.skeleton import KEYPOINTS, PAWS
from ratrig.tomlio import atomic_write_bytes, atomic_write_text
from synthetic.rat import EXTRA_NAMES, Lesion, Trajectory, simulate
from synthetic.render import NoiseOptions, Renderer
from synthetic.rig import Corridor, default_rig

#: codec name -> (fourcc, file suffix, lossless)
CODECS: dict[str, tuple[str, str, bool]] = {
    "ffv1": ("FFV1", ".mkv", True),  # bit-exact; about 150 kB per 640x480 frame, ~30 ms to encode
    "mjpg": ("MJPG", ".avi", False),  # about 20 kB per frame, ~6 ms, mean error ~1.3 grey levels
}
MANIFEST = "manifest.json"


def write_session(
    out_dir: str | os.PathLike[str],
    duration_s: float,
    fps: float = 30.0,
    seed: int = 0,
    *,
    corridor: Corridor | None = None,
    lesion: Lesion | None = None,
    noise: NoiseOptions | None = None,
    start_ns: int = 1_000_000_000_000,
    codec: str = "ffv1",
) -> dict[str, Any]:
    """Simulate, render and write a session; returns the manifest (also written as manifest.json).

    Args:
        out_dir: created if missing; existing files of the same names are replaced.
        duration_s, fps, seed, lesion: as for `synthetic.rat.simulate`.
        corridor: geometry (default `Corridor()`, clear walls).
        noise: image degradations (default none).
        start_ns: capture_ns of frame 0 (a monotonic-clock-like value).
        codec: "ffv1" (lossless, default) or "mjpg" (small and fast, lossy).

    Raises:
        OSError: naming the video file when OpenCV cannot write it.
    """
    if codec not in CODECS:
        raise ValueError(f"write_session: unknown codec {codec!r}; choose from {sorted(CODECS)}")
    fourcc, suffix, lossless = CODECS[codec]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corridor = corridor or Corridor()
    calib = default_rig(corridor)
    traj = simulate(duration_s, fps, seed, lesion=lesion, corridor=corridor)
    renderer = Renderer(calib, corridor, seed=seed, noise=noise)
    n_frames = len(traj.times_s)
    names = calib.names
    capture_ns = start_ns + np.round(traj.times_s * 1e9).astype(np.int64)
    visibility = np.zeros((len(names), n_frames, len(KEYPOINTS)), bool)
    keypoints_px = np.stack([cam.project(traj.keypoints_mm.reshape(-1, 3)).reshape(n_frames, -1, 2)
                             for cam in calib.cameras])
    for ci, cam in enumerate(calib.cameras):
        behind = cam.depth_mm(traj.keypoints_mm.reshape(-1, 3)).reshape(n_frames, -1) <= 0
        keypoints_px[ci][behind] = np.nan

    files: dict[str, Any] = {"calibration": "calibration.toml", "videos": {}, "timestamps": {}}
    calib.save(out / "calibration.toml")
    for ci, name in enumerate(names):
        video = out / f"{name}{suffix}"
        tmp = out / f".{name}.tmp{suffix}"
        w, h = calib.cameras[ci].size
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
        if not writer.isOpened():
            raise OSError(f"{video}: OpenCV cannot open a {fourcc} video writer for it")
        try:
            for fi in range(n_frames):
                kp, ex = traj.keypoints_mm[fi], traj.extra_mm[fi]
                writer.write(renderer.render(ci, kp, ex, t_s=float(traj.times_s[fi])))
                visibility[ci, fi] = renderer.visibility(ci, kp, ex)
        finally:
            writer.release()
        os.replace(tmp, video)
        files["videos"][name] = video.name
        ts_name = f"{name}_timestamps.csv"
        lines = ["frame_index,capture_ns,t_s"]
        lines += [f"{i},{int(capture_ns[i])},{traj.times_s[i]:.9f}" for i in range(n_frames)]
        atomic_write_text(out / ts_name, "\n".join(lines) + "\n")
        files["timestamps"][name] = ts_name

    buf = io.BytesIO()
    np.savez_compressed(
        buf, times_s=traj.times_s, keypoints_mm=traj.keypoints_mm, keypoint_names=np.array(KEYPOINTS),
        extra_mm=traj.extra_mm, extra_names=np.array(EXTRA_NAMES), in_stance=traj.in_stance,
        paw_names=np.array(PAWS), camera_names=np.array(names), visibility=visibility,
        keypoints_px=keypoints_px, capture_ns=np.tile(capture_ns, (len(names), 1)),
        body_speed_mm_s=traj.body_speed_mm_s,
    )
    atomic_write_bytes(out / "ground_truth.npz", buf.getvalue())
    files["ground_truth"] = "ground_truth.npz"

    cols = ["frame_index", "t_s"] + [f"{n}_{a}_mm" for n in KEYPOINTS + EXTRA_NAMES for a in "xyz"]
    allpts = np.concatenate([traj.keypoints_mm, traj.extra_mm], axis=1).reshape(n_frames, -1)
    rows = [",".join(cols)]
    rows += [f"{i},{traj.times_s[i]:.9f}," + ",".join(f"{v:.4f}" for v in allpts[i]) for i in range(n_frames)]
    atomic_write_text(out / "keypoints_3d.csv", "\n".join(rows) + "\n")
    files["keypoints_3d"] = "keypoints_3d.csv"

    rows = ["camera,frame_index," + ",".join(KEYPOINTS)]
    for ci, name in enumerate(names):
        rows += [f"{name},{i}," + ",".join(str(int(v)) for v in visibility[ci, i]) for i in range(n_frames)]
    atomic_write_text(out / "visibility.csv", "\n".join(rows) + "\n")
    files["visibility"] = "visibility.csv"

    contacts = contact_table(traj)
    rows = ["paw,touchdown_s,liftoff_s,censored_start,censored_end"]
    rows += [f"{c['paw']},{c['touchdown_s']:.9f},{c['liftoff_s']:.9f},{int(c['censored_start'])},"
             f"{int(c['censored_end'])}" for c in contacts]
    atomic_write_text(out / "paw_contacts.csv", "\n".join(rows) + "\n")
    atomic_write_text(out / "paw_contacts.json", json.dumps(contacts, indent=1) + "\n")
    files["paw_contacts"] = ["paw_contacts.csv", "paw_contacts.json"]

    manifest = {
        "kind": "ratrig synthetic session",
        "format_version": 1,
        "duration_s": float(duration_s),
        "fps": float(fps),
        "seed": int(seed),
        "n_frames": int(n_frames),
        "start_ns": int(start_ns),
        "camera_names": list(names),
        "image_size": list(calib.cameras[0].size),
        "keypoints": list(KEYPOINTS),
        "extra_points": list(EXTRA_NAMES),
        "paws": list(PAWS),
        "units": {"positions": "mm, world frame: x along corridor, y across, z up, floor z=0",
                  "times": "s from frame 0; capture_ns = start_ns + t_s * 1e9"},
        "corridor": asdict(corridor),
        "lesion": asdict(lesion) if lesion is not None else None,
        "noise": asdict(noise or NoiseOptions()),
        "video_codec": {"fourcc": fourcc, "container": suffix, "lossless": lossless},
        "pauses_s": traj.pauses_s.tolist(),
        "rears_s": traj.rears_s.tolist(),
        "files": files,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


def contact_table(traj: Trajectory) -> list[dict[str, Any]]:
    """Paw-contact intervals as records, sorted by touchdown; censored flags mark cut intervals."""
    end = float(traj.times_s[-1]) if len(traj.times_s) else 0.0
    recs = []
    for paw in PAWS:
        for a, b in traj.contacts[paw]:
            recs.append({"paw": paw, "touchdown_s": float(a), "liftoff_s": float(b),
                         "censored_start": bool(a <= 0.0), "censored_end": bool(b >= end)})
    recs.sort(key=lambda r: (r["touchdown_s"], r["paw"]))
    return recs


def load_session(session_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read manifest.json and ground_truth.npz of a written session: (manifest, arrays)."""
    d = Path(session_dir)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: no manifest; is {d} a synthetic session folder?")
    manifest = json.loads(mpath.read_text())
    gt_path = d / manifest["files"]["ground_truth"]
    with np.load(gt_path) as z:
        arrays = {k: z[k] for k in z.files}
    return manifest, arrays
