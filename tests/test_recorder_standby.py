"""recorder.standby: the window a standby recorder keeps, and how far a dead recorder's part got."""
from __future__ import annotations

import json
import time

import numpy as np

from ratrig.config import load_config
from ratrig.messages import EventPacket, FramePacket, Keypoints2DPacket, Pose3DPacket, StatsPacket
from recorder.session import open_session
from recorder.standby import RecentPackets, RecordedUpTo, last_part, recorded_up_to
from recorder.video import check_codec
from recorder.writer import SessionWriter
from recorder_helpers import CAMS, frame_image, write_rig

S = 1_000_000_000


def frame(cam: int, i: int) -> FramePacket:
    return FramePacket(CAMS[cam], i, 10 * S + i * S // 30, frame_image(cam, i))


def pose2d(cam: int, i: int) -> Keypoints2DPacket:
    return Keypoints2DPacket(CAMS[cam], i, 10 * S + i * S // 30, ("nose", "tail_base"),
                             np.array([[1.0 + i, 2.0, 0.9], [3.0, 4.0, 0.8]], np.float32))


def pose3d(i: int) -> Pose3DPacket:
    k = 2
    return Pose3DPacket(frame_set_index=i, capture_ns=10 * S + i * S // 30, keypoint_names=("nose", "tail_base"),
                        cameras=CAMS, raw_mm=np.full((k, 3), float(i)), filtered_mm=np.full((k, 3), float(i)),
                        reprojection_error_px=np.zeros(k), n_cameras=np.full(k, 2, np.int8), score=np.ones(k),
                        stamps_ns={}, predicted_ahead_ms=0.0, frame_indices={c: i for c in CAMS}, floor_mm=None)


def event(i: int) -> EventPacket:
    return EventPacket("touchdown", "nose", i, 10 * S + i * S // 30, 20 * S + i, (0.0, 0.0, 0.0))


def test_the_window_keeps_the_last_seconds_and_counts_its_bytes():
    recent = RecentPackets(window_s=1.0)
    for i in range(90):  # 3 s at 30 fps, received as captured
        recv = 10 * S + i * S // 30
        for p in (frame(0, i), frame(1, i), pose2d(0, i), pose3d(i), StatsPacket("x", recv, {})):
            recent.add(p, recv)
    held = list(recent.newer_than(RecordedUpTo()))
    frames = [p for _, p in held if isinstance(p, FramePacket)]
    # the last 1 s (both ends included) at 30 fps, per camera; stats are not kept
    assert {p.frame_index for p in frames if p.camera == CAMS[0]} == set(range(59, 90))
    assert not any(isinstance(p, StatsPacket) for _, p in held)
    assert recent.frame_bytes == sum(p.image.nbytes for p in frames) == 62 * frame_image(0, 0).nbytes
    assert recent.oldest_frame_index(CAMS[1]) == 59
    # arrival order is kept
    recv = [r for r, _ in held]
    assert recv == sorted(recv)


def test_only_what_the_dead_part_lacks_is_handed_on():
    recent = RecentPackets(window_s=10.0)
    for i in range(30):
        for p in (frame(0, i), frame(1, i), pose2d(0, i), pose3d(i), event(i)):
            recent.add(p, 10 * S + i * S // 30)
    done = RecordedUpTo(frame_capture_ns={CAMS[0]: frame(0, 19).capture_ns},
                        pose2d_capture_ns={CAMS[0]: pose2d(0, 24).capture_ns},
                        pose3d_capture_ns=pose3d(9).capture_ns, event_emitted_ns=event(27).emitted_ns)
    out = [p for _, p in recent.newer_than(done)]
    assert [p.frame_index for p in out if isinstance(p, FramePacket) and p.camera == CAMS[0]] == list(range(20, 30))
    # a camera the part holds nothing of: all of it
    assert [p.frame_index for p in out if isinstance(p, FramePacket) and p.camera == CAMS[1]] == list(range(30))
    assert [p.frame_index for p in out if isinstance(p, Keypoints2DPacket)] == list(range(25, 30))
    assert [p.frame_set_index for p in out if isinstance(p, Pose3DPacket)] == list(range(10, 30))
    assert [p.frame_set_index for p in out if isinstance(p, EventPacket)] == [28, 29]


def test_recorded_up_to_reads_what_a_live_part_lists_and_ignores_torn_rows(tmp_path):
    rig = load_config(write_rig(tmp_path / "rig.toml", 40000, flush_s=0.05))
    out = tmp_path / "session"
    w = SessionWriter(out, rig, check_codec("ffv1"))
    for i in range(40):
        for c in range(2):
            w.write(frame(c, i))
        w.write(pose2d(0, i))
        w.write(pose3d(i))
        w.write(event(i))
        time.sleep(0.004)
    time.sleep(0.3)  # segments close every 0.05 s of wall time
    w.sync_tables()
    for i in range(40, 45):  # into a segment left open, as at a kill
        w.write(frame(0, i))
    time.sleep(0.02)
    try:
        done = recorded_up_to(out, CAMS)
        listed = open_session(out, repair=False)  # the writer is alive: read without repairing
        for cam in CAMS:
            frames = listed.frames(cam)
            assert done.frame_capture_ns[cam] == int(frames["capture_ns"].iloc[-1])
            assert done.frame_index[cam] == int(frames["frame_index"].iloc[-1])
        assert done.pose2d_capture_ns == {CAMS[0]: pose2d(0, 39).capture_ns}
        assert done.pose3d_capture_ns == pose3d(39).capture_ns
        assert done.event_emitted_ns == event(39).emitted_ns
        # a row of a segment never closed and a torn last line, as a kill leaves them, are not counted
        before = done.frame_capture_ns[CAMS[1]]
        frames_csv = out / "cameras" / CAMS[1] / "frames.csv"
        with open(frames_csv, "a") as f:
            f.write(f"99,{frame(1, 99).capture_ns},0,0,9999,0\n99,123")
        with open(out / "events.jsonl", "a") as f:
            f.write(json.dumps({"emitted_ns": 1}) + "\n" + '{"emitted_ns": 77')
        again = recorded_up_to(out, CAMS)
        assert again.frame_capture_ns[CAMS[1]] == before
        assert again.event_emitted_ns == 1
    finally:
        w.close()


def test_last_part_is_the_newest_with_a_session(tmp_path):
    out = tmp_path / "s"
    assert last_part(out) is None
    for p in (out, tmp_path / "s.part2", tmp_path / "s.part3"):
        p.mkdir()
    (out / "session.json").write_text("{}")
    assert last_part(out) == out
    (tmp_path / "s.part2" / "session.json").write_text("{}")
    assert last_part(out) == tmp_path / "s.part2"  # part3 is empty: a recorder that died before writing
