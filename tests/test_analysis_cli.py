"""`ratrig analyze` end to end: recorder-format session folders in, CSV/JSON/HTML out; bad input named."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.loader import SessionLoadError, load_session
from analysis.quality import fit_floor_plane, session_quality
from analysis.session import PoseSession
from ratrig.skeleton import KEYPOINTS
from recorder.tables import pose3d_columns
from synthetic.rat import Lesion, simulate
from synthetic.scenarios_cylinder import default_plan, simulate_cylinder

CAMERAS = ("cam_ne", "cam_nw", "cam_sw", "cam_se")


def write_session_folder(folder: Path, times_s, kp, subject: dict | None = None, apparatus: str = "",
                         seed: int = 0, drop: float = 0.02) -> Path:
    """A session folder as the recorder writes it: session.json, pose3d.csv (recorder columns), rig.toml."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    kp = kp + rng.normal(0.0, 1.0, kp.shape)
    raw = kp.copy()
    raw[rng.random(kp.shape[:2]) < drop] = np.nan  # not triangulated in that frame; the filter filled it
    cols = pose3d_columns(KEYPOINTS, CAMERAS)
    data: dict[str, np.ndarray] = {
        "fnum": np.arange(len(times_s)),
        "capture_ns": (5_000_000_000 + np.round(times_s * 1e9)).astype(np.int64),
        "wall_ns": np.zeros(len(times_s), np.int64), "recv_ns": np.zeros(len(times_s), np.int64),
    }
    for k, name in enumerate(KEYPOINTS):
        for j, a in enumerate("xyz"):
            data[f"{name}_{a}"] = raw[:, k, j]
            data[f"{name}_f{a}"] = kp[:, k, j]
        data[f"{name}_error"] = np.where(np.isfinite(raw[:, k, 0]), rng.uniform(0.3, 1.5, len(times_s)), np.nan)
        data[f"{name}_ncams"] = np.where(np.isfinite(raw[:, k, 0]), 4, 0)
        data[f"{name}_score"] = np.full(len(times_s), 0.95)
    for c in CAMERAS:
        data[f"frame_index_{c}"] = np.arange(len(times_s))
    pd.DataFrame(data)[cols].to_csv(folder / "pose3d.csv", index=False)
    meta = {"format": "ratrig-session", "format_version": 1, "cameras": list(CAMERAS),
            "camera_fps": {c: 30.0 for c in CAMERAS}, "keypoints": list(KEYPOINTS), "status": "complete"}
    if subject:
        meta["subject"] = subject
    (folder / "session.json").write_text(json.dumps(meta))
    (folder / "rig.toml").write_text(
        'name = "test"\n[[cameras]]\nname = "cam_ne"\nsource = "device:9"\n' + apparatus)
    return folder


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    out = {}
    for i, (animal, tp, lesion) in enumerate([("r1", "baseline", None), ("r1", "week4", Lesion("left", 0.8)),
                                              ("r2", "baseline", None), ("r2", "week4", Lesion("left", 0.85))]):
        tr = simulate(60.0, 30.0, seed=40 + i, lesion=lesion)
        out[f"{animal}_{tp}"] = write_session_folder(
            root / f"{animal}_{tp}", tr.times_s, tr.keypoints_mm, seed=i,
            subject={"animal_id": animal, "lesion_side": "right", "test_type": "open_walk",
                     "treatment": "6-OHDA", "time_point": tp})
    sc = simulate_cylinder(default_plan(3, n_rears=10, p_left=0.3), fps=30.0, seed=3)
    out["cyl"] = write_session_folder(root / "cyl", sc.times_s, sc.keypoints_mm, seed=9,
                                      apparatus="[apparatus]\ncylinder_center_mm = [0.0, 0.0]\ncylinder_radius_mm = 100.0\n")
    out["cyl_truth"] = sc
    return out


@pytest.mark.slow
def test_analyze_writes_per_session_and_group_outputs(sessions, tmp_path, capsys):
    gait = [str(sessions[k]) for k in ("r1_baseline", "r1_week4", "r2_baseline", "r2_week4")]
    rc = main(gait + ["--out", str(tmp_path / "out")])
    assert rc == 0
    out = tmp_path / "out"
    for name in ("r1_baseline", "r1_week4", "r2_baseline", "r2_week4"):
        d = out / name
        strides = pd.read_csv(d / "strides.csv")
        assert len(strides) > 50 and (strides["animal_id"] == name.split("_")[0]).all()
        assert set(strides["laterality"]) == {"ipsi", "contra"}
        summary = json.loads((d / "session.json").read_text())
        assert summary["time_point"] == name.split("_")[1] and summary["lesion_side"] == "right"
        assert summary["gait"]["n_strides"] == len(strides)
        # 2 % of raw points were gap-filled by the (simulated) filter: quality says so
        fill = summary["quality"]["keypoints"]["nose"]["filled_fraction"]
        assert 0.01 < fill < 0.03
        html = (d / "report.html").read_text()
        assert len(re.findall(r"data:image/png;base64,", html)) >= 4
        assert re.search(r"\d+ strides", html)
    group = pd.read_csv(out / "group.csv")
    assert len(group) == 4
    # the lesioned time point is asymmetric (contralateral strides shorter), baseline is not
    lesioned = group[group["time_point"] == "week4"]["asym_fore_stride_length_mm"]
    baseline = group[group["time_point"] == "baseline"]["asym_fore_stride_length_mm"]
    assert (lesioned < -0.05).all() and (baseline.abs() < 0.03).all()
    assert "data:image/png;base64," in (out / "group_report.html").read_text()


def test_analyze_cylinder_uses_session_apparatus_and_cli_metadata(sessions, tmp_path):
    rc = main([str(sessions["cyl"]), "--test-type", "cylinder", "--lesion-side", "left", "--animal-id", "r9",
               "--out", str(tmp_path)])
    assert rc == 0
    summary = json.loads((tmp_path / "cyl" / "session.json").read_text())
    truth = sessions["cyl_truth"].counts()
    c = summary["cylinder"]
    assert summary["animal_id"] == "r9"
    assert all(abs(c[k] - truth[k]) <= 1 for k in ("left", "right", "both"))
    events = pd.read_csv(tmp_path / "cyl" / "wall_contacts.csv")
    assert len(events) == c["n_contacts"]


def test_cli_overrides_apparatus(sessions, tmp_path):
    # a cylinder put somewhere else: no paw ever reaches its wall
    rc = main([str(sessions["cyl"]), "--test-type", "cylinder", "--cylinder-center", "500", "0",
               "--out", str(tmp_path)])
    assert rc == 0
    assert json.loads((tmp_path / "cyl" / "session.json").read_text())["cylinder"]["n_contacts"] == 0


def test_bad_inputs_are_named(sessions, tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "no such session folder" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "session.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(SessionLoadError, match="session.json.*ratrig-session"):
        load_session(bad)
    with pytest.raises(SessionLoadError, match="lesion_side"):
        load_session(sessions["cyl"], {"lesion_side": "middle"})
    assert main([str(sessions["cyl"]), "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path)]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main([str(sessions["cyl"]), "--pots=1,2,3", "--out", str(tmp_path)]) == 2
    # a corridor session without pots is analysed (gait) but the retrieval score says why it is missing
    assert main([str(sessions["r1_baseline"]), "--test-type", "corridor", "--out", str(tmp_path / "c")]) == 0
    s = json.loads((tmp_path / "c" / "r1_baseline" / "session.json").read_text())
    assert "pot" in s["corridor"]["skipped"] and s["gait"]["n_strides"] > 0


def test_loader_reads_raw_or_filtered_and_plain_anipose_tables(sessions, tmp_path):
    s = load_session(sessions["r1_baseline"])
    raw = load_session(sessions["r1_baseline"], coords="raw")
    assert s.keypoint_names == KEYPOINTS and s.meta.animal_id == "r1"
    assert np.isfinite(s.keypoints_mm).all() and not np.isfinite(raw.keypoints_mm).all()
    assert s.filled is not None and s.filled.any() and not raw.filled.any()
    assert s.times_s[0] == 0.0 and s.frame_period_s == pytest.approx(1 / 30.0)
    # an Anipose table with only fnum needs the frame rate
    df = pd.read_csv(sessions["r1_baseline"] / "pose3d.csv").drop(columns=["capture_ns"])
    df.to_csv(tmp_path / "anipose.csv", index=False)
    with pytest.raises(SessionLoadError, match="fps"):
        load_session(tmp_path / "anipose.csv")
    a = load_session(tmp_path / "anipose.csv", fps=30.0)
    assert np.allclose(a.times_s, s.times_s)


def test_subject_sidecar_and_torn_last_line(sessions, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(sessions["r2_baseline"], d)
    (d / "subject.toml").write_text('[subject]\nanimal_id = "r2b"\ntime_point = "day 3"\n')
    with open(d / "pose3d.csv", "a") as f:
        f.write("123,456,7")  # a recorder killed mid-line
    s = load_session(d)
    assert s.meta.animal_id == "r2b" and s.meta.time_point == "day 3" and s.meta.treatment == "6-OHDA"
    assert s.n_frames == 1800


def test_floor_plane_recovers_a_tilt():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-700, 700, (4000, 2)) * np.array([1.0, 0.05])
    z_floor = 0.01 * xy[:, 0] - 0.02 * xy[:, 1] + 3.0
    lifted = rng.random(4000) < 0.5
    z = z_floor + np.where(lifted, rng.uniform(5, 20, 4000), 0.0) + rng.normal(0, 0.3, 4000)
    plane = fit_floor_plane(np.c_[xy, z][:, None, :])
    assert plane is not None
    assert plane.slope_x == pytest.approx(0.01, abs=1e-3)
    assert plane.offset_mm == pytest.approx(3.0, abs=0.5)
    assert plane.tilt_deg == pytest.approx(np.degrees(np.arctan(np.hypot(0.01, 0.02))), abs=0.2)
    assert fit_floor_plane(np.full((10, 1, 3), np.nan)) is None


def test_quality_counts_valid_and_dropped_frames():
    t = np.r_[np.arange(50), np.arange(52, 100)] / 30.0  # two frames lost
    kp = np.zeros((t.size, 8, 3))
    kp[:10, 4] = np.nan
    q = session_quality(PoseSession(t, kp, KEYPOINTS))
    assert q["keypoints"]["front_left_paw"]["valid_fraction"] == pytest.approx(1 - 10 / t.size)
    assert q["dropped_frame_fraction"] == pytest.approx(2 / 100)


def test_session_written_by_the_recorder(tmp_path):
    """A session folder written by the real recorder (SessionWriter) is read and analysed; the loader's
    arrays equal the recorder's own reader's."""
    from ratrig.config import load_config
    from ratrig.messages import Pose3DPacket
    from recorder.session import open_session
    from recorder.video import check_codec
    from recorder.writer import SessionWriter

    rig_file = tmp_path / "rig.toml"
    rig_file.write_text(
        'name = "bench"\n'
        + "".join(f'[[cameras]]\nname = "{c}"\nsource = "synthetic"\n' for c in CAMERAS)
        + "[recorder]\nmin_free_gb = 0.01\nwarn_free_gb = 0.02\n"
        + "[apparatus]\ncylinder_radius_mm = 120.0\n")
    rig = load_config(rig_file)
    tr = simulate(40.0, 30.0, seed=77)
    rng = np.random.default_rng(0)
    w = SessionWriter(tmp_path / "rec", rig, check_codec("ffv1"))
    for i, t in enumerate(tr.times_s):
        filt = tr.keypoints_mm[i] + rng.normal(0.0, 1.0, (8, 3))
        raw = filt.copy()
        if i % 50 == 7:
            raw[4] = np.nan  # a paw not triangulated in this frame set
        w.write_pose3d(Pose3DPacket(i, 2_000_000_000 + int(round(t * 1e9)), KEYPOINTS, CAMERAS, raw, filt,
                                    np.full(8, 0.8), np.full(8, 4, np.int8), np.full(8, 0.9)))
    w.close()
    s = load_session(tmp_path / "rec", {"lesion_side": "left", "test_type": "open_walk"})
    ref = open_session(tmp_path / "rec").pose3d()
    assert s.n_frames == len(tr.times_s) and s.apparatus.cylinder_radius_mm == 120.0
    assert np.allclose(s.keypoints_mm, ref.filtered_mm, equal_nan=True)
    assert np.allclose(s.times_s, (ref.capture_ns - ref.capture_ns[0]) / 1e9)
    assert s.filled[:, 4].sum() == len(range(7, len(tr.times_s), 50))
    rc = main([str(tmp_path / "rec"), "--test-type", "open_walk", "--lesion-side", "left", "--out", str(tmp_path / "o")])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "rec" / "session.json").read_text())
    assert summary["gait"]["n_strides"] > 50
    assert summary["quality"]["keypoints"]["front_left_paw"]["reprojection_error_px_median"] == pytest.approx(0.8)


def test_meta_table_sets_each_sessions_metadata(sessions, tmp_path):
    table = tmp_path / "meta.csv"
    table.write_text("session,animal_id,time_point,treatment\nr1_baseline,R-01,pre,graft\n"
                     f"{sessions['r2_baseline']},R-02,pre,sham\n")
    rc = main([str(sessions["r1_baseline"]), str(sessions["r2_baseline"]), "--meta-table", str(table),
               "--no-report", "--out", str(tmp_path / "o")])
    assert rc == 0
    group = pd.read_csv(tmp_path / "o" / "group.csv")
    assert sorted(zip(group["animal_id"], group["treatment"])) == [("R-01", "graft"), ("R-02", "sham")]
    assert (group["time_point"] == "pre").all()
    summary = json.loads((tmp_path / "o" / "r1_baseline" / "session.json").read_text())
    assert summary["parameters"]["gait"]["contacts"]["touchdown_height_mm"] == 6.0
    assert not (tmp_path / "o" / "r1_baseline" / "report.html").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("session,weight_g\nx,300\n")
    assert main([str(sessions["r1_baseline"]), "--meta-table", str(bad), "--out", str(tmp_path / "o2")]) == 2


def test_live_paw_events_are_compared_with_offline_contacts(tmp_path):
    tr = simulate(40.0, 30.0, seed=81)
    d = write_session_folder(tmp_path / "ev", tr.times_s, tr.keypoints_mm, seed=3,
                             subject={"test_type": "open_walk", "lesion_side": "left"})
    origin_ns = 5_000_000_000
    lines = []
    for paw, contacts in tr.contacts.items():
        for td in contacts[:, 0]:
            # a live detector deciding on the first frame after the touchdown
            ns = origin_ns + int(round(np.ceil(td * 30.0) / 30.0 * 1e9))
            lines.append(json.dumps({"name": "touchdown", "subject": paw, "capture_ns": ns, "frame_set_index": 0}))
        lines.append(json.dumps({"name": "liftoff", "subject": paw, "capture_ns": origin_ns}))
    (d / "events.jsonl").write_text("\n".join(lines) + "\n{\"name\": \"touch")  # torn last line
    s = load_session(d)
    assert set(s.live_touchdowns) == set(tr.contacts)
    assert main([str(d), "--no-report", "--out", str(tmp_path / "o")]) == 0
    live = json.loads((tmp_path / "o" / "ev" / "session.json").read_text())["quality"]["live_events"]
    for paw, entry in live.items():
        assert entry["n_live"] == len(tr.contacts[paw])
        assert entry["matched_fraction"] > 0.9
        assert 5.0 < entry["median_offset_ms"] < 30.0  # half a frame late on average
