"""Scripted abnormal movements, behaviour features, dyskinesia proxies, detection, 20-min bins, report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from analysis.behaviour.features import FEATURE_NAMES, FeatureParams, session_features
from analysis.behaviour.offline import BehaviourParams, analyse
from analysis.behaviour.proxies import binned_proxies, episode_proxy_means, match_episodes, proxies_from_features
from behaviour_helpers import synthetic_input, write_pose_session
from ratrig.skeleton import KEYPOINTS
from synthetic.dyskinesia import Episode, apply_episodes, rotation_rate_deg_s
from synthetic.rat import simulate


@pytest.fixture(scope="module")
def walk():
    return simulate(30.0, 30.0, 11)


def test_episodes_change_only_their_interval_and_rotations_end_where_they_started(walk):
    eps = [Episode("rotational", 5.0, 6.0, 0.5, "right"), Episode("limb", 15.0, 4.0, 1.0, "right", 4.0)]
    kp, _ = apply_episodes(walk.times_s, walk.keypoints_mm, walk.keypoint_names, eps)
    t = walk.times_s
    outside = ((t < 5.0) | (t >= 11.0)) & ((t < 15.0) | (t >= 19.0))
    np.testing.assert_array_equal(kp[outside], walk.keypoints_mm[outside])
    assert np.abs(kp[(t > 6) & (t < 10)] - walk.keypoints_mm[(t > 6) & (t < 10)]).max() > 20.0
    # 3 whole turns in 6 s: the body is back in its own pose at the end, no jump
    assert rotation_rate_deg_s(eps[0]) == pytest.approx(-180.0)
    end = np.searchsorted(t, 11.0) - 1
    assert np.abs(kp[end] - walk.keypoints_mm[end]).max() < 1.0
    k = list(walk.keypoint_names).index("front_right_paw")
    limb = (t > 15.5) & (t < 18.5)
    assert (kp[limb, k, 2] - walk.keypoints_mm[limb, k, 2]).max() > 20.0  # the paw is lifted
    with pytest.raises(ValueError, match="Episode.kind"):
        Episode("tremor", 0.0, 2.0, 0.5, "left")


def test_features_see_each_scripted_movement(walk):
    base = session_features(walk.times_s, walk.keypoints_mm, walk.keypoint_names, FeatureParams())
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    t = walk.times_s
    cases = [(Episode("axial", 5.0, 8.0, 1.0, "right"), "twist_deg", -20.0),
             (Episode("rotational", 5.0, 8.0, 0.5, "left"), "rotation_deg_s", 120.0),
             (Episode("orolingual", 5.0, 8.0, 1.0, "left", 7.0), "nose_oscillation_mm", 2.0),
             (Episode("limb", 5.0, 8.0, 1.0, "left", 4.0), "front_left_paw_excursion_mm", 8.0)]
    inside = (t > 8.5) & (t < 12.5)  # the long window lies inside the episode
    for ep, name, change in cases:
        kp, _ = apply_episodes(t, walk.keypoints_mm, walk.keypoint_names, [ep])
        f = session_features(t, kp, walk.keypoint_names, FeatureParams())
        delta = np.nanmedian(f[inside, col[name]] - base[inside, col[name]])
        assert (delta <= change) if change < 0 else (delta >= change), (ep.kind, name, delta)
        if ep.kind == "limb":
            assert np.nanmedian(f[inside, col["front_right_paw_excursion_mm"]]
                                - base[inside, col["front_right_paw_excursion_mm"]]) == pytest.approx(0.0, abs=0.5)


@pytest.mark.slow
def test_detection_and_intensity_ranking_on_a_scripted_session():
    t, kps, eps = synthetic_input(300.0, 21, kinds=("rotational", "axial"), gap_range_s=(8.0, 14.0))
    res = analyse(t, kps, KEYPOINTS, BehaviourParams(n_states=4))
    for kind in ("rotational", "axial"):
        m = match_episodes(eps, res.episodes, kind)
        assert m.n_true >= 5
        assert m.f1 >= 0.6, m
        assert m.onset_error_s_median < 1.5, m
    rot = [e for e in eps if e.kind == "rotational"]
    rho = spearmanr([e.intensity for e in rot], episode_proxy_means(res.proxies, t, rot)).correlation
    assert rho > 0.7
    assert res.states is not None and res.states.shape == t.shape


def test_bins_are_20_minutes_with_ipsi_and_contra():
    t = np.arange(0.0, 2500.0, 1.0)
    feats = np.zeros((len(t), len(FEATURE_NAMES)))
    feats[:, FEATURE_NAMES.index("twist_deg")] = np.where(t < 1200, -10.0, 5.0)  # rolled right, then left
    feats[:5, :] = np.nan
    bins = binned_proxies(proxies_from_features(feats), t, lesion_side="left")
    assert sorted(bins["bin"].unique()) == [0, 1, 2]
    ax = bins[bins["region"] == "axial"].set_index(["bin", "side"])
    assert ax.loc[(0, "right"), "laterality"] == "contra" and ax.loc[(0, "left"), "laterality"] == "ipsi"
    assert ax.loc[(0, "right"), "mean"] == pytest.approx(10.0) and ax.loc[(0, "left"), "mean"] == 0.0
    assert ax.loc[(1, "left"), "mean"] == pytest.approx(5.0)
    assert ax.loc[(0, "right"), "valid_fraction"] == pytest.approx(1195 / 1200)
    assert (bins[bins["region"] == "orolingual"]["laterality"] == "").all()


@pytest.mark.slow
def test_ratrig_analyze_reports_the_proxies_with_the_rigs_lesion_side(tmp_path):
    from analysis.cli import main as analyze_main

    t, kps, _ = synthetic_input(60.0, 8, start_s=5.0)
    sess = write_pose_session(tmp_path / "rat09", t, kps, extra_rig='[behaviour]\nlesion_side = "left"\n')
    out = tmp_path / "out"
    assert analyze_main([str(sess.path), "--out", str(out)]) == 0
    bins = pd.read_csv(out / "rat09" / "dyskinesia_proxies.csv", keep_default_na=False)
    assert set(bins["region"]) == {"axial", "limb", "orolingual", "rotational"}
    assert set(bins.loc[bins["side"] == "right", "laterality"]) == {"contra"}
    report = (out / "rat09" / "report.html").read_text()
    assert "Dyskinesia proxies (not AIMs scores)" in report and "lesion side" in report.lower()
    summary = json.loads((out / "rat09" / "session.json").read_text())
    assert summary["dyskinesia_proxies"]["lesion_side"] == "left"
    assert (out / "rat09" / "behaviour_episodes.csv").is_file() and (out / "rat09" / "behaviour_states.csv").is_file()


@pytest.mark.slow
def test_offline_cli_fits_a_model_the_run_and_the_live_stage_load(tmp_path):
    from analysis.behaviour.cli import main as behaviour_main
    from analysis.behaviour.segment import Segmenter

    t, kps, _ = synthetic_input(40.0, 12, start_s=5.0)
    sess = write_pose_session(tmp_path / "s", t, kps)
    model = tmp_path / "seg.npz"
    assert behaviour_main(["fit", str(sess.path), "-o", str(model), "--n-states", "4"]) == 0
    assert Segmenter.load(model).n_states == 4
    assert behaviour_main(["run", str(sess.path), "--out", str(tmp_path / "o"), "--model", str(model)]) == 0
    feats = pd.read_csv(tmp_path / "o" / "behaviour_features.csv")
    assert len(feats) == len(t) and set(feats["state"]) <= {0, 1, 2, 3}
    assert behaviour_main(["run", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1


def test_behaviour_config_errors_name_the_file_and_key(tmp_path):
    from ratrig.config import ConfigError, load_config

    from behaviour_helpers import write_rig

    for body, key in (("[behaviour]\nwindow_s = 0\n", "behaviour.window_s"),
                      ('[behaviour]\nlesion_side = "up"\n', "behaviour.lesion_side"),
                      ("[behaviour]\nn_states = 1\n", "behaviour.n_states"),
                      ("[behaviour]\nrotation_window_s = 3\n", "behaviour.rotation_window_s")):
        path = write_rig(tmp_path / "rig.toml", 7400, body)
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert str(err.value).startswith(f"{path}: {key}"), str(err.value)
    ok = load_config(write_rig(tmp_path / "ok.toml", 7400, '[behaviour]\nlesion_side = "left"\nmodel = "m.npz"\n'))
    assert ok.behaviour.lesion_side == "left" and ok.behaviour.model == str(tmp_path / "m.npz")
    assert not ok.behaviour.enabled  # off by default
