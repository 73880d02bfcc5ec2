"""The demo's live evaluator: exact outputs score zero, known offsets score exactly."""
from __future__ import annotations

import numpy as np

from ratrig.config import load_config, replace_section
from ratrig.messages import Keypoints2DPacket, Pose3DPacket
from ratrig.skeleton import KEYPOINTS
from synthetic.evaluate import QUANTILE_RELATIVE_ACCURACY, Evaluator
from synthetic.live import LiveCamera, SyntheticTruth, corridor_of
from synthetic.render import Renderer

from tests.helpers import REPO


REL = QUANTILE_RELATIVE_ACCURACY + 1e-9


def make():
    rig = replace_section(load_config(REPO / "configs" / "synthetic.toml"), "synthetic", session_s=20.0)
    truth = SyntheticTruth.from_rig_config(rig)
    return rig, truth, Evaluator(truth, Renderer(truth.calibration, corridor_of(rig)), rig.keypoints, every_2d=1)


def test_exact_outputs_score_zero_and_offsets_score_their_size():
    rig, truth, ev = make()
    names = tuple(KEYPOINTS)
    for k in range(100, 110):
        kp = truth.keypoints_mm(k)
        for cam in truth.calibration.cameras:
            px = cam.project(kp)
            pred = np.column_stack([px + np.array([3.0, 4.0]), np.ones(len(px))]).astype(np.float32)
            ev.add_pose2d(Keypoints2DPacket(cam.name, k, 0, names, pred))
        raw = kp + np.array([0.0, 0.0, 2.0])
        ev.add_pose3d(Pose3DPacket(k, 0, names, truth.calibration.names, raw, kp.copy(), np.zeros(8),
                                   np.full(8, 4, np.int8), np.ones(8), frame_indices={"cam_ne": k}))
    rep = ev.report()["accuracy"]
    assert abs(rep["pose2d_error_px"]["median"] - 5.0) < 5.0 * REL  # a 3-4-5 offset in every view
    assert rep["pose2d_error_px"]["n"] < 4 * 10 * 8  # hidden keypoints are left out
    assert abs(rep["pose3d_error_mm"]["raw"]["median"] - 2.0) < 2.0 * REL
    assert rep["pose3d_error_mm"]["filtered"]["median"] < 1e-9
    assert rep["pose3d_coverage_all_keypoints"] == {"raw": 1.0, "filtered": 1.0}
    assert rep["pose3d_coverage"]["raw"] == 1.0 and rep["pose3d_coverage"]["n"] > 0


class FixedVisibility:
    """A renderer stand-in whose visibility is a fixed table: camera -> keypoint indices shown."""

    def __init__(self, shown: dict[str, list[int]]) -> None:
        self.shown = shown
        self.calls = 0

    def visibility(self, camera, keypoints_mm, extra_mm):  # noqa: ANN001
        self.calls += 1
        vis = np.zeros(len(keypoints_mm), bool)
        vis[self.shown[camera]] = True
        return vis


def test_coverage_is_split_by_how_many_cameras_show_the_keypoint():
    rig, truth, _ = make()
    # seen by: kp0 4 cameras, kp1 2, kp2 1, kp3 1, kp4-7 none
    shown = {"cam_ne": [0, 1, 2], "cam_nw": [0, 1], "cam_sw": [0], "cam_se": [0, 3]}
    renderer = FixedVisibility(shown)
    ev = Evaluator(truth, renderer, rig.keypoints, every_2d=2)
    names = tuple(KEYPOINTS)
    for k in range(100, 104):  # moments 100 and 102 are in the subsample, 101 and 103 only in the all-figure
        kp = truth.keypoints_mm(k)
        raw = kp.copy()
        raw[[1, 3, 5, 6, 7]] = np.nan  # found: kp0 (4 cams), kp2 (1 cam), kp4 (0 cams)
        ev.add_pose3d(Pose3DPacket(k, 0, names, truth.calibration.names, raw, kp.copy(), np.zeros(8),
                                   np.full(8, 4, np.int8), np.ones(8), frame_indices={"cam_ne": k}))
    rep = ev.report()["accuracy"]
    assert rep["pose3d_coverage"] == {"raw": 0.5, "filtered": 1.0, "n": 4}  # kp0, kp1 at 2 moments
    assert rep["pose3d_coverage_seen_by_1"] == {"raw": 0.5, "filtered": 1.0, "n": 4}  # kp2, kp3
    assert rep["pose3d_coverage_seen_by_0"] == {"raw": 0.25, "filtered": 1.0, "n": 8}  # kp4-7
    assert rep["pose3d_coverage_all_keypoints"] == {"raw": 0.375, "filtered": 1.0}
    assert renderer.calls == 8  # 4 cameras x the 2 subsampled moments, nothing for 101 and 103


def test_live_camera_renders_the_truth_of_its_frame():
    rig, truth, _ = make()
    hits = []
    for name in ("cam_nw", "cam_se"):
        cam = LiveCamera.from_rig_config(rig, name)
        bg = cam.renderer.background(0)
        for k in range(60, 480, 60):
            img = cam.render_at(k / 30.0)
            px = truth.calibration.camera(name).project(truth.keypoints_mm(k))
            vis = cam.renderer.visibility(0, truth.keypoints_mm(k), truth.extra_mm(k))
            changed = np.abs(img.astype(int) - bg.astype(int)).sum(axis=2) > 60
            hits += [changed[int(round(y)), int(round(x))] for (x, y), v in zip(px, vis) if v]
    # the rat is drawn where its visible keypoints project (a wrong frame or camera would miss)
    assert len(hits) >= 40 and np.mean(hits) >= 0.8, (len(hits), np.mean(hits))


def test_samples_grow_without_python_ints_and_keep_every_value() -> None:
    from synthetic.evaluate import Samples

    s = Samples(np.int64)
    chunks = [np.arange(n) + 10**18 for n in (0, 1, 500, 3, 2000)]  # crosses the doubling several times
    for c in chunks:
        s.extend(c)
    allv = np.concatenate(chunks)
    assert len(s) == allv.size and s.values().dtype == np.int64
    np.testing.assert_array_equal(s.values(), allv)  # ns stamps stay exact (no float64 rounding)


def test_run_long_percentiles_are_within_their_relative_accuracy_in_bounded_memory() -> None:
    import pickle

    from synthetic.evaluate import Quantiles, _pct

    q = Quantiles()
    assert _pct(q) is None
    rng = np.random.default_rng(3)
    first = np.abs(rng.standard_cauchy(20_000)) * 3.0  # heavy-tailed like 3D errors, plus exact zeros
    q.extend(np.r_[first, np.zeros(100)])
    size_small = len(pickle.dumps(q))
    rest = np.abs(rng.standard_cauchy(300_000)) * 3.0
    q.extend(rest)
    allv = np.r_[first, np.zeros(100), rest]
    got = _pct(q)
    assert got["n"] == allv.size
    for key, want in (("median", np.median(allv)), ("p95", np.percentile(allv, 95))):
        assert abs(got[key] - want) <= REL * want + 1e-3, (key, got[key], want)
    # 15x the values, about the same size: the sketch holds log-spaced bins, not the values
    assert len(pickle.dumps(q)) < 2 * size_small + 50_000, (size_small, len(pickle.dumps(q)))


def test_touchdowns_are_scored_from_their_times() -> None:
    from ratrig.messages import EventPacket

    rig, truth, ev = make()
    ev.t0_ns = T0 = 7_000_000_000_000
    ev.max_frame = int(15 * truth.trajectory.fps)
    n_true = 0
    end_s = min(15.0, truth.trajectory.duration_s) - 0.5  # the evaluator scores 1 s .. 0.5 s before the last frame
    for paw, c in truth.trajectory.contacts.items():
        for td in c[:, 0]:
            if 1.0 <= td <= end_s:
                n_true += 1
                onset = T0 + int(round((td + 0.010) * 1e9))  # 10 ms late, decided 50 ms after onset
                ev.add_event(EventPacket("touchdown", paw, 0, onset + 50_000_000, 0, (0.0, 0.0, 0.0),
                                         extra={"onset_ns": onset}))
    ev.add_event(EventPacket("touchdown", "hind_left_paw", 0, T0 + 5_555_000_000, 0, (0.0, 0.0, 0.0)))  # a false one
    td = ev.report()["events"]["touchdown"]
    assert td["n_true"] == n_true and td["n_detected"] == n_true + 1
    assert td["recall"] == 1.0 and td["precision"] == round(n_true / (n_true + 1), 4)
    assert abs(td["timing_error_ms_median"] - 10.0) < 0.01
    assert abs(td["decision_delay_ms_median"] - 60.0) < 0.01
