"""Model checks, both engines through dlclive, and the batched paths against DLCLive.get_pose."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from inference import engines
from inference.engines import ModelError, check_model, decode_scoremap, map_keypoints
from ratrig.config import InferenceConfig
from ratrig.skeleton import KEYPOINTS

MODELS = Path(__file__).resolve().parents[1] / "inference" / "models"
SYNTHRAT = MODELS / "synthrat"
DOTS_PT = MODELS / "dots_pytorch" / "dots.pt"


@pytest.fixture(scope="module")
def tiny_tf(tmp_path_factory) -> Path:
    from inference import tfmodel

    folder = tmp_path_factory.mktemp("tiny_tf")
    tfmodel.export_dlc(tfmodel.init_params(len(KEYPOINTS), seed=1), folder, KEYPOINTS)
    return folder


# --------------------------------------------------------------------------------------------------
# check_model: clear errors before any camera opens


def test_check_model_reports_engine_sha_and_bodyparts(tiny_tf):
    info = check_model(InferenceConfig(model=str(tiny_tf)), KEYPOINTS)
    assert info.engine == "tensorflow" and info.bodyparts == KEYPOINTS
    assert len(info.sha256) == 64 and info.sha256 == engines.sha256_file(next(tiny_tf.glob("*.pb")))
    assert info.keypoint_index == tuple(range(len(KEYPOINTS))) and info.can_batch


def test_missing_model(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        check_model(InferenceConfig(model=str(tmp_path / "nope")), KEYPOINTS)
    with pytest.raises(ModelError, match="no model given"):
        check_model(InferenceConfig(model=""), KEYPOINTS)


def test_folder_without_graph(tmp_path, tiny_tf):
    (tmp_path / "pose_cfg.yaml").write_text((tiny_tf / "pose_cfg.yaml").read_text())
    with pytest.raises(ModelError, match=r"missing a frozen graph \*\.pb"):
        check_model(InferenceConfig(model=str(tmp_path)), KEYPOINTS)


def test_corrupt_graph(tmp_path, tiny_tf):
    (tmp_path / "pose_cfg.yaml").write_text((tiny_tf / "pose_cfg.yaml").read_text())
    good = next(tiny_tf.glob("*.pb")).read_bytes()
    (tmp_path / "snapshot.pb").write_bytes(good[: len(good) // 3])
    with pytest.raises(ModelError, match="snapshot.pb"):
        check_model(InferenceConfig(model=str(tmp_path)), KEYPOINTS)


def test_corrupt_pytorch_file(tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"this is not a zip archive")
    with pytest.raises(ModelError, match="cannot load as a PyTorch file"):
        check_model(InferenceConfig(model=str(pt)), KEYPOINTS)


def test_wrong_engine(tiny_tf):
    with pytest.raises(ModelError, match="is a tensorflow model"):
        check_model(InferenceConfig(model=str(tiny_tf), engine="pytorch"), KEYPOINTS)


@pytest.mark.parametrize("engine", ["tflite", "tensorrt"])
def test_broken_dlclive_engines_are_refused_with_a_reason(tiny_tf, engine):
    with pytest.raises(ModelError, match="dlclive 1.1.0 cannot run"):
        check_model(InferenceConfig(model=str(tiny_tf), engine=engine), KEYPOINTS)


def test_keypoints_that_the_model_lacks(tiny_tf):
    with pytest.raises(ModelError, match=r"does not provide keypoints \['tail_tip'\]"):
        check_model(InferenceConfig(model=str(tiny_tf)), (*KEYPOINTS, "tail_tip"))
    with pytest.raises(ModelError, match="snout"):
        check_model(InferenceConfig(model=str(tiny_tf), keypoint_map={"snout": "nose"}), KEYPOINTS)


def test_keypoint_map_renames_and_reorders():
    bodyparts = ("snout", "earL", "earR", "tailbase", "fl", "fr", "hl", "hr", "spine")
    kmap = {"snout": "nose", "earL": "left_ear", "earR": "right_ear", "tailbase": "tail_base",
            "fl": "front_left_paw", "fr": "front_right_paw", "hl": "hind_left_paw", "hr": "hind_right_paw"}
    idx = map_keypoints(bodyparts, tuple(reversed(KEYPOINTS)), kmap, "m")
    assert idx == (7, 6, 5, 4, 3, 2, 1, 0)
    with pytest.raises(ModelError, match="both map to keypoint 'nose'"):
        map_keypoints(bodyparts, KEYPOINTS, dict(kmap, spine="nose"), "m")


def test_to_pipeline_reorders_and_marks_bad_output():
    info = engines.ModelInfo("m", "tensorflow", "0" * 64, ("b", "a"), ("a", "b"), (1, 0), 8.0, True)
    pose = np.array([[1, 2, 0.9], [3, 4, 0.8]])
    np.testing.assert_allclose(engines.to_pipeline(pose, info), [[3, 4, 0.8], [1, 2, 0.9]], rtol=1e-6)
    bad = engines.to_pipeline(np.zeros((5, 3)), info)
    assert np.isnan(bad[:, :2]).all() and (bad[:, 2] == 0).all()


# --------------------------------------------------------------------------------------------------
# Decoding and the batched TensorFlow path == dlclive


def test_decode_scoremap_matches_dlclive_argmax_pose_predict():
    from dlclive.pose_estimation_tensorflow.pose import argmax_pose_predict

    rng = np.random.default_rng(0)
    scmap = rng.random((3, 6, 7, 4)).astype(np.float32)
    locref = rng.normal(size=(3, 6, 7, 8)).astype(np.float32)
    got = decode_scoremap(scmap, locref, 8.0, 7.2801)
    for b in range(3):
        want = argmax_pose_predict(scmap[b], locref[b].reshape(6, 7, 4, 2) * 7.2801, 8.0)
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-4)


def _frames_from_synthetic(n_moments: int, seed: int = 11):
    from synthetic.rat import simulate
    from synthetic.render import Renderer
    from synthetic.rig import default_rig

    cal = default_rig()
    traj = simulate(duration_s=3.0, fps=30.0, seed=seed)
    r = Renderer(cal, seed=seed)
    moments = []
    for t in np.linspace(1.0, 1.3, n_moments):
        kp, ex = traj.pose_at(float(t))
        moments.append([r.render(c.name, np.asarray(kp), np.asarray(ex), t_s=float(t)) for c in cal.cameras])
    return [c.name for c in cal.cameras], moments


@pytest.mark.parametrize("options", [
    {"resize": 0.5},
    {"resize": 1.0, "cropping": [40, 600, 20, 460]},
    {"resize": 0.5, "dynamic": True, "dynamic_threshold": 0.3, "dynamic_margin": 30},
])
def test_tf_batch_equals_dlclive_get_pose(options, tiny_tf):
    model = SYNTHRAT if (SYNTHRAT / "pose_cfg.yaml").is_file() else tiny_tf
    cfg = InferenceConfig(model=str(model), **options)
    info = check_model(cfg, KEYPOINTS)
    cams, moments = _frames_from_synthetic(3)
    ref = engines.build_estimator(info, cfg, cams, batch=False)
    bat = engines.build_estimator(info, cfg, cams, batch=True)
    assert isinstance(ref, engines.DLCLiveEstimator) and isinstance(bat, engines.TFBatchEstimator)
    for frames in moments:  # successive moments: dynamic cropping state carries over per camera
        want = ref.infer(cams, frames)
        got = bat.infer(cams, frames)
        np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-3)
    if options.get("dynamic") and model == SYNTHRAT:
        assert any(p.dynamic_cropping is not None for p in bat._prep.values()), "dynamic cropping never engaged"
    ref.close()
    bat.close()


def test_batch_handles_frames_of_different_sizes(tiny_tf):
    cfg = InferenceConfig(model=str(tiny_tf), resize=0.5)
    info = check_model(cfg, KEYPOINTS)
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 255, (480, 640, 3), np.uint8), rng.integers(0, 255, (240, 320), np.uint8),
              rng.integers(0, 255, (480, 640, 3), np.uint8)]
    cams = ["a", "b", "c"]
    want = engines.build_estimator(info, cfg, cams, batch=False).infer(cams, frames)
    got = engines.build_estimator(info, cfg, cams, batch=True).infer(cams, frames)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Accuracy of the bundled models on inputs whose answer is known


@pytest.mark.skipif(not (SYNTHRAT / "pose_cfg.yaml").is_file(), reason="bundled model not built")
@pytest.mark.slow
def test_bundled_synthrat_on_held_out_renders():
    """Held-out seed, small sample, real DLCLive path: median <= 3 px, >= 95 % within 8 px, per keypoint."""
    from inference.evaluate_synthetic import evaluate
    from inference.train_synthetic import TRAIN_SEEDS

    from inference.evaluate_synthetic import HELD_OUT_SEED

    assert HELD_OUT_SEED not in TRAIN_SEEDS
    # The first 30 of the 100 moments evaluate_synthetic.py uses (same seeds), 120 frames.
    s = evaluate(str(SYNTHRAT), seed=HELD_OUT_SEED, n_times=30, resize=0.5)
    assert s["all"]["median_px"] <= 3.0 and s["all"]["within_8px"] >= 0.95, s["all"]
    for name, k in s["per_keypoint"].items():
        assert k["n"] >= 10, (name, k)
        assert k["median_px"] <= 3.0, (name, k)
        assert k["within_8px"] >= 0.95, (name, k)
    # trained with hidden keypoints as negatives: a hidden paw is reported as not seen
    assert s["likelihood"]["hidden_above"] <= 0.10, s["likelihood"]
    assert s["likelihood"]["visible_above"] >= 0.95, s["likelihood"]


@pytest.mark.skipif(not DOTS_PT.is_file(), reason="bundled PyTorch model not built")
@pytest.mark.parametrize("cropping", [None, [100, 600, 60, 420]])
def test_pytorch_export_finds_known_positions_through_dlclive(cropping):
    """The dots export (trained at one disc size, so run at resize 1) through DLCLive.get_pose."""
    from inference.torchmodel import draw_dots

    cfg = InferenceConfig(model=str(DOTS_PT), resize=1.0, cropping=cropping)
    info = check_model(cfg, KEYPOINTS)
    assert info.engine == "pytorch" and info.bodyparts == KEYPOINTS
    est = engines.build_estimator(info, cfg, ["a"], batch=False)
    rng = np.random.default_rng(1234)
    x0, x1, y0, y1 = cropping or [0, 640, 0, 480]
    errs = []
    for _ in range(6):
        # Discs on a grid of distinct cells inside the analysed region, jittered by sub-pixel amounts.
        cells = rng.permutation(12)[: len(KEYPOINTS)]
        pos = np.stack([x0 + 40 + (cells % 4) * (x1 - x0 - 80) / 3, y0 + 40 + (cells // 4) * (y1 - y0 - 80) / 2], 1)
        pos = pos + rng.uniform(-10, 10, pos.shape)
        img, pos = draw_dots(rng, 480, 640, positions=pos)
        pose = est.infer(["a"], [img])[0]
        errs.append(np.hypot(*(pose[:, :2] - pos).T))
        assert (pose[:, 2] > 0.5).all()
    errs = np.array(errs)
    assert np.median(errs) < 2.5 and errs.max() < 8.0, errs  # a wrong disc would be ~100 px off


@pytest.mark.skipif(not DOTS_PT.is_file(), reason="bundled PyTorch model not built")
def test_pytorch_batch_equals_dlclive_and_absent_dots_score_low():
    from inference.torchmodel import draw_dots

    cfg = InferenceConfig(model=str(DOTS_PT), resize=1.0)
    info = check_model(cfg, KEYPOINTS)
    cams = ["a", "b", "c", "d"]
    rng = np.random.default_rng(5)
    present = np.ones(len(KEYPOINTS), bool)
    present[3] = False
    frames = [draw_dots(rng, 480, 640, present=present)[0] for _ in cams]
    ref = engines.build_estimator(info, cfg, cams, batch=False)
    bat = engines.build_estimator(info, cfg, cams, batch=True)
    assert isinstance(bat, engines.TorchBatchEstimator)
    want, got = ref.infer(cams, frames), bat.infer(cams, frames)
    np.testing.assert_allclose(np.array(got), np.array(want), atol=1e-3)
    assert all(p[3, 2] < 0.5 for p in got)  # the missing disc is not "found"


def test_model_info_is_frozen(tiny_tf):
    info = check_model(InferenceConfig(model=str(tiny_tf)), KEYPOINTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.engine = "pytorch"  # type: ignore[misc]


def test_graph_in_an_order_dlclive_cannot_read(tmp_path, tiny_tf):
    """A plain Keras-style freeze ends in Identity nodes: dlclive would read offsets as the score map."""
    import tensorflow as tf

    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="Placeholder")
        s = tf.math.sigmoid(tf.reduce_mean(x, axis=3, keepdims=True), name="Sigmoid")
        tf.identity(s, name="Identity")
    (tmp_path / "pose_cfg.yaml").write_text((tiny_tf / "pose_cfg.yaml").read_text())
    (tmp_path / "frozen.pb").write_bytes(g.as_graph_def().SerializeToString())
    with pytest.raises(ModelError, match="expects a Sigmoid"):
        check_model(InferenceConfig(model=str(tmp_path)), KEYPOINTS)
