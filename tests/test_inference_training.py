"""The training script's augmentation keeps labels on their pixels, and an export's weights load back."""
from __future__ import annotations

import numpy as np

from inference.train_synthetic import CROP, augment, mirror_index, params_from_export
from ratrig.skeleton import KEYPOINTS


def test_strong_augmentation_moves_labels_with_the_pixels():
    k = len(KEYPOINTS)
    rng = np.random.default_rng(0)
    n = 24
    images = np.zeros((n, CROP, CROP, 3), np.uint8)
    xy = np.full((n, k, 2), -1000.0, np.float32)
    visible = np.zeros((n, k), bool)
    for i in range(n):
        x, y = rng.uniform(30, CROP - 30, 2)
        xy[i, 0] = (x, y)  # the nose: a bright dot; it has no left/right twin, so mirroring keeps index 0
        visible[i, 0] = True
        yy, xx = np.mgrid[0:CROP, 0:CROP]
        images[i][(xx - x) ** 2 + (yy - y) ** 2 <= 9] = 250
    out, oxy, ovis = augment(images, xy, visible, rng, mirror_index(KEYPOINTS), strong=True)
    assert out.shape == images.shape and ovis[:, 0].all()
    moved = 0
    for i in range(n):
        blob = out[i].mean(axis=2) > 0.6 * out[i].mean(axis=2).max()
        cy, cx = np.argwhere(blob).mean(axis=0)
        if oxy[i, 0, 0] < -500:
            continue  # scaled out of the crop: a negative, nothing to compare
        assert abs(cx - oxy[i, 0, 0]) < 1.5 and abs(cy - oxy[i, 0, 1]) < 1.5, (i, (cx, cy), oxy[i, 0])
        moved += not np.allclose(oxy[i, 0], xy[i, 0])
    assert moved >= n // 2  # mirroring and scaling did move most labels, so the check above meant something


def test_params_from_export_returns_the_exported_weights(tmp_path):
    from inference import tfmodel

    params = tfmodel.init_params(len(KEYPOINTS), seed=3)
    params["score/b"] = np.arange(len(KEYPOINTS), dtype=np.float32)  # distinguishable from the locref bias
    tfmodel.export_dlc(params, tmp_path, KEYPOINTS)
    back = params_from_export(tmp_path / "snapshot-synthrat.pb")
    assert set(back) == set(params)
    for name, v in params.items():
        assert np.array_equal(back[name], v), name


def test_synthrat_variants_is_a_valid_export_with_its_training_variants_recorded():
    from pathlib import Path

    import yaml

    from inference import engines
    from ratrig.config import InferenceConfig
    from synthetic.variants import HELD_OUT_VARIANTS

    folder = Path(__file__).resolve().parents[1] / "inference" / "models" / "synthrat_variants"
    info = engines.check_model(InferenceConfig(model=str(folder), resize=0.5), KEYPOINTS)
    assert info.engine == "tensorflow" and list(info.bodyparts) == list(KEYPOINTS)
    assert info.sha256 in (folder / "README.md").read_text()  # the README describes this very file
    trained = yaml.safe_load((folder / "pose_cfg.yaml").read_text())["ratrig_train_variants"]
    assert "default" in trained and not set(trained) & set(HELD_OUT_VARIANTS)
