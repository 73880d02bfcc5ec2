"""The viewer's data rules (no Qt): colours, geometry, trails, traces, reprojection, tolerant stats."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket, StatsPacket
from ratrig.skeleton import KEYPOINTS, PAWS, SKELETON
from viewer.model import (
    FADED_ALPHA,
    ViewState,
    confidence_alpha,
    corridor_geometry,
    downscale,
    flatten_stats,
    keypoint_colors,
    quad_mesh,
    recording_state,
    segment_vertex_colors,
    segment_vertices,
    skeleton_index_pairs,
    summarise_process,
)
from viewer_stream import KNOWN_POSE_MM, stream_calibration

K = len(KEYPOINTS)


def pose_packet(i: int, t_ns: int, pts: np.ndarray, score: float = 1.0, stamps=None) -> Pose3DPacket:
    return Pose3DPacket(i, t_ns, KEYPOINTS, ("a", "b"), pts, pts, np.zeros(K), np.full(K, 2, np.int8),
                        np.full(K, score), stamps or {})


def test_keypoint_colours_are_distinct_and_stable():
    c = keypoint_colors(KEYPOINTS)
    assert c.shape == (K, 3) and c.dtype == np.uint8
    assert len({tuple(x) for x in c}) == K
    assert np.array_equal(keypoint_colors(["tail_base", "nose"]), c[[3, 0]])
    # Colours stay clear of the greys of frames and floor.
    assert np.all(c.max(axis=1).astype(int) - c.min(axis=1) >= 100)


def test_confidence_fades_low_and_unknown_scores():
    a = confidence_alpha(np.array([0.9, 0.5, 0.49, np.nan]))
    assert a.tolist() == [1.0, 1.0, FADED_ALPHA, FADED_ALPHA]


def test_skeleton_segments_skip_missing_keypoints():
    pairs = skeleton_index_pairs(KEYPOINTS)
    assert len(pairs) == len(SKELETON)
    pts = KNOWN_POSE_MM.copy()
    pts[KEYPOINTS.index("tail_base")] = np.nan
    seg = segment_vertices(pts, pairs)
    n_tail = sum("tail_base" in e for e in SKELETON)
    assert seg.shape == (2 * (len(SKELETON) - n_tail), 3)
    assert np.isfinite(seg).all()
    rgba = np.ones((K, 4))
    assert segment_vertex_colors(rgba, pairs, pts).shape == (len(seg), 4)
    # Names the skeleton doesn't know are simply not connected.
    assert skeleton_index_pairs(["nose", "tail"]).shape == (0, 2)


def test_corridor_geometry_matches_the_world_frame():
    g = corridor_geometry(1500.0, 70.0, 230.0)
    assert np.allclose(g["floor"][:, 2], 0.0)
    assert np.allclose(np.ptp(g["floor"], axis=0)[:2], [1500.0, 70.0])
    assert np.allclose(g["floor"].mean(axis=0), 0.0)
    assert np.allclose(np.abs(g["walls"][:, :, 1]), 35.0)
    assert g["walls"][:, :, 2].max() == 230.0
    verts, faces = quad_mesh(g["walls"])
    assert verts.shape == (8, 3) and faces.shape == (4, 3) and faces.max() == 7


def test_downscale_converts_bgr_to_rgb_and_keeps_mono():
    img = np.zeros((480, 640, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    small = downscale(img, 0.5)
    assert small.shape == (240, 320, 3)
    assert small[0, 0].tolist() == [0, 0, 255]
    mono = downscale(np.full((480, 640), 9, np.uint8), 0.25)
    assert mono.shape == (120, 160, 3) and (mono == 9).all()


def test_stats_are_read_tolerantly():
    stats = {"fps": 29.97, "nested": {"dropped": 3, "deep": {"x": [1, 2]}}, "obj": object(), "none": None,
             "recording": True, "name": "x" * 100}
    flat = flatten_stats(stats)
    assert flat["nested.dropped"] == 3 and flat["nested.deep.x"] == "[2]" and flat["none"] is None
    line = summarise_process(stats)
    assert line.startswith("recording=yes") and "fps=30" in line  # priority keys first
    assert recording_state({"recorder": {"recording": False}}) == "not recording"
    assert recording_state({"recorder": {"state": "paused"}}) == "paused"
    assert recording_state({"camera/x": {"fps": 30}}) is None


def test_state_keeps_trails_and_traces_in_capture_time():
    st = ViewState(trail_s=0.5, trace_s=2.0)
    speed_mm_s = 200.0
    for i in range(91):  # 3 s at 30 Hz
        t = int(i * 1e9 / 30)
        st.add(pose_packet(i, t, KNOWN_POSE_MM + [speed_mm_s * t / 1e9, 0, 0]))
    trails = st.paw_trails()
    assert set(trails) == set(PAWS)
    track = trails["front_left_paw"]
    assert 14 <= len(track) <= 16  # 0.5 s at 30 Hz
    assert track[-1, 0] - track[0, 0] == pytest.approx(speed_mm_s * (len(track) - 1) / 30)
    t, heights, speed = st.traces()
    assert t[-1] == 0.0 and -2.0 <= t[0] < -1.9
    assert heights.shape == (len(t), len(PAWS)) and np.allclose(heights, 4.0)
    assert np.nanmedian(speed) == pytest.approx(speed_mm_s, rel=1e-6)
    # A late (older) pose does not move the display back; a far older one means a restart.
    newest = st.pose
    st.add(pose_packet(5, newest.capture_ns - 10_000_000, KNOWN_POSE_MM))
    assert st.pose is newest
    st.add(pose_packet(0, 0, KNOWN_POSE_MM))
    assert st.pose.capture_ns == 0 and len(st.traces()[0]) == 1


def test_state_marks_events_on_traces():
    st = ViewState(trace_s=2.0)
    st.add(pose_packet(0, 3_000_000_000, KNOWN_POSE_MM))
    st.add(EventPacket("touchdown", "hind_left_paw", 0, 2_500_000_000, 0, (1.0, 2.0, 3.0)))
    st.add(EventPacket("liftoff", "hind_left_paw", 0, 500_000_000, 0, (1.0, 2.0, 9.0)))  # out of the window
    marks = st.trace_marks()
    assert len(marks) == 1 and marks[0][0] == pytest.approx(-0.5) and marks[0][1] == 3.0
    assert len(st.marks) == 2


def test_reprojection_uses_the_calibration():
    calib = stream_calibration()
    st = ViewState(calibration=calib)
    assert st.reprojection(calib.names[0]) is None  # no pose yet
    pts = KNOWN_POSE_MM.copy()
    pts[0] = np.nan
    st.add(pose_packet(0, 1, pts))
    uv = st.reprojection(calib.names[1])
    expected = calib.cameras[1].project(pts)
    assert np.isnan(uv[0]).all() and np.allclose(uv[1:], expected[1:])
    assert st.reprojection("no_such_camera") is None


def test_status_reports_rates_latency_and_recording():
    st = ViewState()
    for i in range(0, 61, 3):  # the viewer sees every third frame of a 30 fps camera
        st.add(FramePacket("cam_a", i, int(i * 1e9 / 30), np.zeros((4, 4, 3), np.uint8)))
    st.add(pose_packet(7, 1_000_000_000, KNOWN_POSE_MM, stamps={"capture": 1_000_000_000, "fusion": 1_012_500_000}))
    st.add(StatsPacket("recorder", 0, {"recording": True, "frames_dropped": 4}))
    st.add(StatsPacket("camera/cam_a", 0, {"dropped": 1, "fps": 30.0}))
    fields = dict(st.status_fields(local_now_ns=1_050_000_000))
    assert fields["fps"] == "cam_a 30.0"
    assert fields["dropped"] == "5"
    assert fields["cameras in use"] == "a,b"
    assert fields["capture->fusion"] == "12.5 ms"
    assert fields["capture->display"] == "50.0 ms"
    assert fields["recording"] == "REC"
    assert "capture->display" not in dict(st.status_fields(None))  # remote viewer: clocks differ
    assert st.process_lines()[0].startswith("camera/cam_a: ")


def test_keypoints_and_unknown_packets():
    st = ViewState()
    v = st.version
    kp = Keypoints2DPacket("cam_a", 1, 1, KEYPOINTS, np.zeros((K, 3), np.float32))
    st.add(kp)
    assert st.keypoints2d["cam_a"] is kp and st.version == v + 1
    st.add("not a packet")  # type: ignore[arg-type]
    assert st.version == v + 1
    assert math.isnan(st.pipeline_latency_ms())
