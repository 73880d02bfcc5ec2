"""The viewer's data rules (no Qt): colours, geometry, trails, traces, reprojection, tolerant stats."""
from __future__ import annotations

import dataclasses
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
    fit_image,
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


def test_fit_image_gives_qt_native_bgrx_pixels_and_keeps_mono():
    """B, G, R, 255 per pixel: QImage.Format_RGB32's bytes on little-endian machines (drawn as a copy)."""
    img = np.zeros((480, 640, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    img[..., 2] = 7  # a little red
    small = fit_image(img, (320, 240))
    assert small.shape == (240, 320, 4) and small.flags["C_CONTIGUOUS"]
    assert small[0, 0].tolist() == [255, 0, 7, 255]
    mono = fit_image(np.full((480, 640), 9, np.uint8), (160, 1000))  # the narrower bound wins
    assert mono.shape == (120, 160, 4) and (mono[..., :3] == 9).all() and (mono[..., 3] == 255).all()
    assert fit_image(np.full((480, 640, 1), 9, np.uint8), (160, 120)).shape == (120, 160, 4)


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
    # Predicted ahead: the panels show the frames of capture time, so the raw pose of that moment is
    # projected (the filtered one only where raw is missing).
    ahead = KNOWN_POSE_MM + [30.0, 0.0, 0.0]
    raw = KNOWN_POSE_MM.copy()
    raw[2] = np.nan
    p = Pose3DPacket(1, 2, KEYPOINTS, ("a",), raw, ahead, np.zeros(K), np.full(K, 2, np.int8), np.ones(K), {}, 50.0)
    uv = st.reprojection(calib.names[0], p)
    cam = calib.cameras[0]
    assert np.allclose(uv[[0, 1, 3]], cam.project(KNOWN_POSE_MM)[[0, 1, 3]])
    assert np.allclose(uv[2], cam.project(ahead)[2])


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
    assert fields["display age"] == "50.0 ms"  # the pose (and the frames of its moment) are shown
    assert fields["behind camera"] == "1000.0 ms"  # newest frame 2 s, pose 1 s
    assert fields["recording"] == "REC"
    remote = dict(st.status_fields(None))
    assert "display age" not in remote and remote["behind camera"] == "1000.0 ms"  # remote viewer: clocks differ
    assert dict(st.status_fields(1_050_000_000, shown_ns=1_040_000_000))["display age"] == "10.0 ms"
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


def _frame(cam: str, i: int, period_ns: int = 33_333_333, t0_ns: int = 10_000_000_000) -> FramePacket:
    return FramePacket(cam, i, t0_ns + i * period_ns, np.full((4, 4, 3), i % 256, np.uint8))


def _kp(cam: str, i: int, period_ns: int = 33_333_333, t0_ns: int = 10_000_000_000) -> Keypoints2DPacket:
    return Keypoints2DPacket(cam, i, t0_ns + i * period_ns, KEYPOINTS, np.full((K, 3), float(i), np.float32))


def test_panel_shows_the_frame_the_pose_and_keypoints_belong_to():
    """Frames arrive before keypoints, keypoints before poses: the panel shows the frame of the pose
    (by the pose's frame indices), with that frame's own 2D keypoints, not the newest frame."""
    st = ViewState()
    for i in range(20):
        st.add(_frame("cam_a", i))
    for i in range(15):
        st.add(_kp("cam_a", i))
    t9 = 10_000_000_000 + 9 * 33_333_333
    pose = Pose3DPacket(9, t9, KEYPOINTS, ("cam_a",), KNOWN_POSE_MM, KNOWN_POSE_MM, np.zeros(K),
                        np.full(K, 1, np.int8), np.ones(K), {}, 0.0, {"cam_a": 9})
    st.add(pose)
    c = st.panel_content("cam_a")
    assert c.frame.frame_index == 9 and c.keypoints.frame_index == 9 and c.pose is pose and c.matched
    # The frame index wins over the capture time (cameras' clocks jitter).
    st.add(dataclasses.replace(pose, frame_set_index=10, capture_ns=t9 + 33_333_333, frame_indices={"cam_a": 11}))
    assert st.panel_content("cam_a").frame.frame_index == 11
    # A pose without frame indices (a replay): the frame nearest its capture time, within half a period.
    st.add(dataclasses.replace(pose, frame_set_index=12, capture_ns=t9 + 4 * 33_333_333 + 5_000_000, frame_indices={}))
    c = st.panel_content("cam_a")
    assert c.frame.frame_index == 13 and c.keypoints.frame_index == 13 and c.pose.frame_set_index == 12
    # Frames older than the pose are let go (they pin ~1 MB buffers each).
    assert min(f.frame_index for f in st._frame_ring["cam_a"]) >= 13 - 7


def test_panel_falls_back_to_the_newest_frame_without_foreign_overlays():
    st = ViewState()
    for i in range(40, 50):  # the pose's frame (30) is older than the ring
        st.add(_frame("cam_a", i))
    st.add(_kp("cam_a", 45))
    pose = Pose3DPacket(30, 10_000_000_000 + 30 * 33_333_333, KEYPOINTS, ("cam_a",), KNOWN_POSE_MM, KNOWN_POSE_MM,
                        np.zeros(K), np.full(K, 1, np.int8), np.ones(K), {}, 0.0, {"cam_a": 30})
    st.add(pose)
    c = st.panel_content("cam_a")
    # Newest keypoints (newer than the pose) on their own frame; the pose is of another moment.
    assert c.frame.frame_index == 45 and c.keypoints.frame_index == 45 and c.pose is None and not c.matched
    st2 = ViewState()
    for i in range(5):
        st2.add(_frame("cam_b", i))
    c = st2.panel_content("cam_b")  # frames only: the newest
    assert c.frame.frame_index == 4 and c.keypoints is None and c.pose is None and c.matched
    # No frames at all (a pose-only viewer): the newest overlays.
    st3 = ViewState()
    st3.add(_kp("cam_c", 3))
    st3.add(pose)
    c = st3.panel_content("cam_c")
    assert c.frame is None and c.keypoints.frame_index == 3 and c.pose is pose


def test_frame_ring_keeps_one_second_and_restarts_with_the_source():
    st = ViewState(ring_s=1.0)
    for i in range(100):
        st.add(_frame("cam_a", i))
    ring = st._frame_ring["cam_a"]
    assert ring[-1].frame_index == 99 and 29 <= len(ring) <= 31
    st.add(_frame("cam_a", 0, t0_ns=1_000_000))  # a restarted camera: far older capture time
    assert [f.frame_index for f in st._frame_ring["cam_a"]] == [0]


def test_fit_image_area_downscales_to_the_panel():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, :, 0] = 200  # blue (BGR)
    img[::2, :, 1] = 255  # a fine stripe pattern: area averaging turns it grey-green, striding would not
    out = fit_image(img, (320, 300))
    assert out.shape == (240, 320, 4) and out.dtype == np.uint8
    assert abs(int(out[10, 10, 0]) - 200) <= 1 and abs(int(out[10, 10, 1]) - 128) <= 2 and out[10, 10, 2] == 0
    assert fit_image(np.zeros((48, 64), np.uint8), (1000, 1000)).shape == (48, 64, 4)  # never enlarged


def test_trace_version_follows_poses_and_marks_not_frames():
    st = ViewState()
    v = st.trace_version
    st.add(_frame("cam_a", 1))
    st.add(_kp("cam_a", 1))
    assert st.trace_version == v  # frames and 2D keypoints do not touch the traces
    st.add(pose_packet(0, 10, KNOWN_POSE_MM))
    assert st.trace_version == v + 1
    st.add(EventPacket("touchdown", "front_left_paw", 0, 10, 11, (1.0, 2.0, 0.0)))
    assert st.trace_version == v + 2


def test_body_speed_does_not_jump_when_a_body_keypoint_drops_out():
    """Walking at 200 mm/s while the right ear comes and goes: the speed stays 200 mm/s (a centre of
    whichever keypoints are seen would jump by a third of the ear-to-tail distance)."""
    from viewer.model import BODY_KEYPOINTS, body_speed_mm_s

    st = ViewState(trace_s=2.0)
    ear = KEYPOINTS.index("right_ear")
    for i in range(30):
        t = int(i * 1e9 / 30)
        pose = KNOWN_POSE_MM + [200.0 * t / 1e9, 0, 0]
        if i % 3 == 1:
            pose = pose.copy()
            pose[ear] = np.nan
        st.add(pose_packet(i, t, pose))
    _, _, speed = st.traces()
    assert np.allclose(speed[1:], 200.0, rtol=1e-6), speed
    b = np.zeros((len(BODY_KEYPOINTS), 3))
    assert np.isnan(body_speed_mm_s(b, np.full_like(b, np.nan), 0.1))
    assert body_speed_mm_s(b, b + [3.0, 4.0, 50.0], 0.1) == pytest.approx(50.0)  # horizontal only
