"""Camera stalls and clock jumps through fusion's synchroniser and Kalman filter (socket-free; the
live stall of a real camera process is `bench/faults.py --cases stall`).

A camera that freezes 2 s and resumes: 3D keeps coming from the other three (never more than the
dead-camera wait between frame sets), and the camera is back in the frame sets at once. A camera
whose timestamps jump 5 s back: its results are counted late and dropped, never merged into other
moments; the other cameras' 3D goes on at full rate and accuracy.
"""
from __future__ import annotations

import numpy as np

from tests.test_fusion_process import PERIOD, make_pipeline, packets_for_frame, truth_at


def run(pipe, n_frames: int, stall: tuple[str, range] | None = None, jump: tuple[str, int, int] | None = None):
    """Feed frames 0..n-1 at 30 Hz (arrival 5 ms after capture); returns [(arrival ns, pose)]."""
    out = []
    for i in range(n_frames):
        capture = 10**9 + i * PERIOD
        drop = {stall[0]} if stall and i in stall[1] else set()
        for p in packets_for_frame(pipe.rig, i, capture, drop):
            if jump and p.camera == jump[0] and i >= jump[1]:
                p = type(p)(p.camera, p.frame_index, p.capture_ns - jump[2], p.keypoint_names, p.keypoints, p.stamps_ns)
            arrival = capture + 5_000_000
            out += [(arrival, pose) for pose in pipe.add(p, arrival)]
        out += [(capture + 20_000_000, pose) for pose in pipe.poll(capture + 20_000_000)]
    return out


def test_a_camera_frozen_for_two_seconds_costs_no_3d():
    pipe = make_pipeline()
    cam = pipe.rig.camera_names[0]
    stalled = range(30, 90)  # 2 s at 30 fps (the walk stays in every camera's view until frame ~160)
    poses = run(pipe, 130, stall=(cam, stalled))
    indices = sorted({min(p.frame_indices.values()) for _, p in poses})
    assert len(indices) >= 128  # every moment fused (the first may wait for its set)
    times = np.array([t for t, _ in poses])
    assert np.diff(times).max() < 0.5e9  # no 3D gap longer than the dead-camera wait
    during = [p for _, p in poses if 40 <= min(p.frame_indices.values()) < 88]
    assert during and all(cam not in p.frame_indices for p in during)
    after = [p for _, p in poses if min(p.frame_indices.values()) >= 91]
    assert after and all(cam in p.frame_indices for p in after)  # back in every frame set at once
    err = [np.nanmax(np.abs(p.raw_mm - truth_at(min(p.frame_indices.values())))) for _, p in poses]
    assert np.nanmax(err) < 1.0  # noise-free views: exact with three cameras as with four


def test_a_timestamp_that_jumps_back_is_counted_late_and_dropped():
    pipe = make_pipeline()
    cam = pipe.rig.camera_names[1]
    poses = run(pipe, 130, jump=(cam, 40, 5 * 10**9))
    stats = pipe.stats()
    assert stats["late"] >= 85 and stats["late_by_camera"].get(cam, 0) >= 85  # 90 jumped frames
    moments = sorted(min(p.frame_indices.values()) for _, p in poses)
    assert len(moments) == len(set(moments)) >= 128  # no moment twice, none lost
    jumped = [p for _, p in poses if min(p.frame_indices.values()) >= 42]
    assert jumped and all(cam not in p.frame_indices for p in jumped)  # never merged into another moment
    for _, p in poses:
        i = int(np.median(list(p.frame_indices.values())))
        assert np.nanmax(np.abs(p.raw_mm - truth_at(i))) < 1.0
