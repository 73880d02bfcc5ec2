"""`ratrig batch` on a LocalCluster of 2 workers and small synthetic sessions.

Results equal the one-session commands byte for byte (reprocess with and without the model,
analyze with its group outputs, triangulate); a rerun does no work and redoes only a session whose
input changed; a corrupt session is reported and the others are done; a worker SIGKILLed mid-task
is replaced, its task redone, and no partial result ever has a final name.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # Dask worker processes: seconds each


def _experiment():
    spec = importlib.util.spec_from_file_location("recorder_experiment", REPO / "bench" / "recorder_experiment.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    return exp


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """Three recorded sessions (1 s, 4 cameras, live 2D + 3D, calibration) from the synthetic rat."""
    root = tmp_path_factory.mktemp("sessions")
    exp = _experiment()
    return [exp.record_live_session(root / f"s{i}", duration_s=1.0, seed=i)["session"] for i in range(3)]


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    yield c
    c.close()


def _copy(sessions, dest: Path) -> list[Path]:
    dest.mkdir()
    return [Path(shutil.copytree(s, dest / s.name)) for s in sessions]


def _results(session: Path) -> list[Path]:
    d = session / "reprocessed"
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


REPROCESS = ["--skip-inference", "--triangulation", "dlt", "--filter", "median"]


def test_batch_reprocess_equals_one_session_command_and_a_rerun_does_no_work(sessions, tmp_path, capsys):
    from ratrig.cli import batch
    from recorder import reprocess

    ss = _copy(sessions, tmp_path / "b")
    manifest = tmp_path / "manifest.json"
    # the default path: a LocalCluster of 2 workers started by the command
    rc = batch.main(["reprocess", *map(str, ss), *REPROCESS, "--workers", "2", "--manifest", str(manifest), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Dask dashboard: not available (bokeh is not installed)" in out
    doc = json.loads(manifest.read_text())
    assert doc["counts"] == {"done": 3, "skipped": 0, "failed": 0} and doc["cluster"]["workers"] == 2
    for s in ss:
        assert reprocess.main([str(s), *REPROCESS, "--name", "single", "--no-progress"]) == 0
        (res,) = [r for r in _results(s) if r.name != "single"]
        one, many = _files(s / "reprocessed" / "single"), _files(res)
        assert set(many) == set(one) | {"batch.json"}
        for name in one:
            if name != "result.json":
                assert many[name] == one[name], name  # tables byte for byte
        a, b = json.loads(one["result.json"]), json.loads(many["result.json"])
        for volatile in ("created_wall_ns", "elapsed_s"):
            a.pop(volatile), b.pop(volatile)
        assert a == b
        rec = json.loads(many["batch.json"])
        assert rec["status"] == "done" and rec["inputs"]["calibration"] and rec["ratrig_version"]
        assert set(rec["inputs"]) >= {"session.json", "calibration", "pose2d/cam_ne.csv"}

    # a rerun with the same inputs starts no cluster and writes nothing
    before = {s: _results(s) for s in ss}
    assert batch.main(["reprocess", *map(str, ss), *REPROCESS, "--manifest", str(manifest), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 already done with the same inputs, 0 to run" in out and "Dask dashboard" not in out
    assert json.loads(manifest.read_text())["counts"] == {"done": 0, "skipped": 3, "failed": 0}
    assert {s: _results(s) for s in ss} == before

    # other options, or a changed input, redo exactly what they change
    with (ss[1] / "calibration.toml").open("a") as f:
        f.write("# edited after the first run\n")
    # (the changed session given twice is run once)
    assert batch.main(["reprocess", *map(str, ss), str(ss[1]), *REPROCESS, "--manifest", str(manifest),
                       "--workers", "1", "--no-progress"]) == 0
    doc = json.loads(manifest.read_text())
    assert [r["status"] for r in doc["sessions"]] == ["skipped", "done", "skipped", "skipped"]
    assert "same session and inputs as argument 2" in doc["sessions"][3]["note"]
    assert len(_results(ss[1])) == len(before[ss[1]]) + 1


def test_batch_analyze_equals_ratrig_analyze(sessions, tmp_path, cluster):
    from analysis.cli import main as analyze
    from ratrig.cli import batch

    args = ["--test-type", "open_walk", "--animal-id", "r9"]
    assert analyze([*map(str, sessions), *args, "--out", str(tmp_path / "one")]) == 0
    rc = batch.main(["analyze", *map(str, sessions), *args, "--out", str(tmp_path / "many"),
                     "--scheduler", cluster.scheduler_address, "--no-progress"])
    assert rc == 0
    one, many = _files(tmp_path / "one"), _files(tmp_path / "many")
    extra = {n for n in many if n.endswith("batch.json") or n == "batch-manifest.json"}
    assert set(many) - extra == set(one) and "group.csv" in one and "group_report.html" in one
    for name in one:
        assert many[name] == one[name], name
    # a rerun skips every session and still writes the same group table
    os.remove(tmp_path / "many" / "group.csv")
    assert batch.main(["analyze", *map(str, sessions), *args, "--out", str(tmp_path / "many"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "many" / "batch-manifest.json").read_text())
    assert doc["counts"]["skipped"] == 3 and (tmp_path / "many" / "group.csv").read_bytes() == one["group.csv"]


def test_a_corrupt_session_is_reported_and_the_others_are_done(sessions, tmp_path, cluster, capsys):
    from ratrig.cli import batch

    good = _copy(sessions[:2], tmp_path / "good")
    bad_calib = Path(shutil.copytree(sessions[2], tmp_path / "bad_calib"))
    (bad_calib / "calibration.toml").write_text("[cam_0\nname = ")  # fails on the worker
    bad_json = Path(shutil.copytree(sessions[2], tmp_path / "bad_json"))
    (bad_json / "session.json").write_text('{"format": "ratrig-sess')  # fails while planning
    manifest = tmp_path / "m.json"
    rc = batch.main(["reprocess", str(good[0]), str(bad_calib), str(bad_json), str(good[1]), *REPROCESS,
                     "--scheduler", cluster.scheduler_address, "--manifest", str(manifest), "--no-progress"])
    assert rc == 1
    doc = json.loads(manifest.read_text())
    st = {Path(r["session"]).name: r for r in doc["sessions"]}
    assert st["s0"]["status"] == st["s1"]["status"] == "done"
    assert st["bad_calib"]["status"] == "failed" and "calibration.toml" in st["bad_calib"]["error"]
    assert st["bad_json"]["status"] == "failed" and "session.json" in st["bad_json"]["error"]
    err = capsys.readouterr().err
    assert "FAILED" in err and "bad_calib" in err and "bad_json" in err
    assert all(len(_results(s)) == 1 for s in good)
    for s in (bad_calib, bad_json):  # nothing written, not even a hidden staging folder
        assert not (s / "reprocessed").exists() or not any((s / "reprocessed").iterdir())


def _worker_state(dask_worker):
    return os.getpid(), [str(getattr(ts, "key", ts)) for ts in dask_worker.state.executing]


def test_a_worker_killed_mid_task_is_replaced_and_its_task_redone(sessions, tmp_path, cluster):
    from distributed import Client

    from ratrig.cli import batch

    ss = _copy(sessions, tmp_path / "k")
    manifest = tmp_path / "m.json"
    # ransac takes a few seconds per session here: long enough to catch a task mid-way
    argv = ["reprocess", *map(str, ss), "--skip-inference", "--triangulation", "ransac",
            "--scheduler", cluster.scheduler_address, "--manifest", str(manifest), "--no-progress"]
    rc: list[int] = []
    runner = threading.Thread(target=lambda: rc.append(batch.main(argv)))
    killed: tuple[int, str] | None = None
    with Client(cluster.scheduler_address) as client:
        runner.start()
        deadline = time.monotonic() + 90
        while killed is None and time.monotonic() < deadline and runner.is_alive():
            for addr, (pid, keys) in client.run(_worker_state).items():
                busy = [k for k in keys if k.startswith("reprocess-")]
                # mid-task: its hidden staging folder exists, no final result yet
                i = int(busy[0].split("-")[1]) if busy else -1
                if busy and list((ss[i] / "reprocessed").glob(".batch-*")) and not _results(ss[i]):
                    os.kill(pid, signal.SIGKILL)
                    killed = (pid, busy[0])
                    break
            time.sleep(0.05)
        runner.join(240)
    assert killed is not None, "no task was caught running"
    assert not runner.is_alive() and rc == [0]
    doc = json.loads(manifest.read_text())
    i = int(killed[1].split("-")[1])
    rec = doc["sessions"][i]
    assert rec["key"].startswith(killed[1].split("-")[2]) and rec["pid"] != killed[0]  # redone elsewhere
    # (skipped only if the kill landed in the last instant, after the result was renamed into place)
    assert doc["counts"]["failed"] == 0 and rec["status"] in ("done", "skipped")
    assert all(r["status"] == "done" for j, r in enumerate(doc["sessions"]) if j != i)
    for s in ss:
        (res,) = _results(s)  # exactly one result, complete
        assert (res / "pose3d.csv").is_file() and json.loads((res / "batch.json").read_text())["status"] == "done"
    # the killed attempt's partial output stayed hidden
    assert list((ss[i] / "reprocessed").glob(".batch-*"))
    assert len(client_workers_after(cluster)) == 2


def client_workers_after(cluster, timeout_s: float = 30.0) -> dict:
    """The cluster's workers once the nanny has replaced the killed one."""
    from distributed import Client

    with Client(cluster.scheduler_address) as c:
        c.wait_for_workers(2, timeout=timeout_s)
        return c.scheduler_info()["workers"]


def test_jobqueue_cluster_takes_its_settings_from_dask_config():
    import dask

    from ratrig.cli.batch import jobqueue_cluster

    with dask.config.set({"jobqueue.slurm.cores": 1, "jobqueue.slurm.memory": "3GiB", "jobqueue.slurm.queue": "ratlab",
                          "jobqueue.slurm.walltime": "02:00:00",
                          "jobqueue.slurm.scheduler-options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}}):
        cluster = jobqueue_cluster("slurm")
        try:
            script = cluster.job_script()  # nothing is submitted: no SLURM here
        finally:
            cluster.close()
    assert "#SBATCH -p ratlab" in script and "#SBATCH -t 02:00:00" in script
    assert "--nthreads 1" in script and "tcp://127.0.0.1:" in script


MODEL = Path(os.environ.get("RATRIG_TEST_MODEL", REPO / "inference" / "models" / "synthrat"))


@pytest.mark.skipif(not (MODEL / "pose_cfg.yaml").is_file(), reason=f"no trained model at {MODEL}")
def test_batch_reprocess_reruns_the_model_like_the_one_session_command(tmp_path, cluster):
    """Recorded video (FFV1) through DLCLive on the workers, one inference task per camera: the same
    2D and 3D as `ratrig reprocess`, which runs the cameras one after the other in one process."""
    from ratrig.cli import batch
    from ratrig.config import CameraConfig, InferenceConfig, RigConfig
    from ratrig.messages import FramePacket
    from recorder import reprocess
    from recorder.video import check_codec
    from recorder.writer import SessionWriter
    from synthetic.rat import simulate
    from synthetic.render import Renderer
    from synthetic.rig import CAMERA_NAMES, default_rig

    calib = default_rig()
    calib.save(tmp_path / "calibration.toml")
    rig = RigConfig(name="t", cameras=[CameraConfig(n, "synthetic") for n in CAMERA_NAMES],
                    inference=InferenceConfig(model=str(MODEL), resize=0.5))
    ss = []
    for seed in range(1):
        traj, r = simulate(0.5, 30.0, seed), Renderer(calib, seed=seed)
        w = SessionWriter(tmp_path / f"v{seed}", rig, check_codec("ffv1"),
                          calibration_path=str(tmp_path / "calibration.toml"), model_path=str(MODEL))
        for i in range(4):
            for c, cam in enumerate(CAMERA_NAMES):
                img = r.render(c, traj.keypoints_mm[i], traj.extra_mm[i], float(traj.times_s[i]))
                w.submit_frame(FramePacket(cam, i, 10**10 + i * 33_333_333, img))
        w.close()
        ss.append(tmp_path / f"v{seed}")
    opts = ["--filter", "none", "--triangulation", "dlt"]
    manifest = tmp_path / "m.json"
    assert batch.main(["reprocess", *map(str, ss), *opts, "--scheduler", cluster.scheduler_address,
                       "--manifest", str(manifest), "--no-progress"]) == 0
    rec = json.loads(manifest.read_text())["sessions"][0]
    assert rec["status"] == "done" and rec["inputs"]["model"] and "cameras/cam_ne/frames.csv" in rec["inputs"]
    assert json.loads((Path(rec["result"]) / "result.json").read_text())["inference"].startswith("rerun")
    assert rec["inference_tasks"] == list(CAMERA_NAMES) and rec["inference_s"] > 0
    for s in ss:
        assert reprocess.main([str(s), *opts, "--name", "single", "--no-progress"]) == 0
        (res,) = [r for r in _results(s) if r.name != "single"]
        for t in ["pose3d.csv"] + [f"pose2d/{c}.csv" for c in CAMERA_NAMES]:
            assert (res / t).read_bytes() == (s / "reprocessed" / "single" / t).read_bytes(), t


def test_batch_triangulate_equals_ratrig_triangulate(tmp_path, cluster):
    """Folders of DeepLabCut files + a calibration -> the same session folders as `ratrig triangulate`."""
    import pandas as pd

    from ratrig.cli import batch
    from recorder.triangulate import main as triangulate
    from synthetic.rig import default_rig
    from synthetic.tracks2d import rat_tracks_2d, write_dlc_files

    calib = default_rig()
    calib.save(tmp_path / "calibration.toml")
    folders = []
    for seed in range(2):
        _, pts, names = rat_tracks_2d(calib, 40, 100.0, seed=seed, noise_px=0.5, drop_rate=0.05)
        write_dlc_files(pts, calib.names, names, tmp_path / f"rat{seed}")
        folders.append(tmp_path / f"rat{seed}")
    opts = ["--fps", "100", "--filter", "median"]
    argv = ["triangulate", *map(str, folders), "--calibration", str(tmp_path / "calibration.toml"), *opts,
            "--out", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address, "--no-progress"]
    assert batch.main(argv) == 0
    for f in folders:
        one = tmp_path / f"one_{f.name}"
        assert triangulate(["--calibration", str(tmp_path / "calibration.toml"), "--pose", str(f), "-o", str(one),
                            *opts, "--no-progress"]) == 0
        a, b = _files(one), _files(tmp_path / "out" / f.name)
        assert set(b) == set(a) | {"batch.json"}
        for name in set(a) - {"summary.json", "pose3d_dlc.h5"}:  # HDF5 files carry their own write times
            assert b[name] == a[name], name
        h5 = "pose3d_dlc.h5"
        assert pd.read_hdf(one / h5).equals(pd.read_hdf(tmp_path / "out" / f.name / h5))
        sa, sb = json.loads(a["summary.json"]), json.loads(b["summary.json"])
        assert sa["frames"] == sb["frames"] == 40 and sa["coverage"] == sb["coverage"]
        assert sa["reprojection_error_px"] == sb["reprojection_error_px"]
    rec = json.loads((tmp_path / "out" / "batch-manifest.json").read_text())["sessions"][0]
    assert rec["status"] == "done" and rec["inputs"]["calibration"] and any(k.startswith("pose/") for k in rec["inputs"])
    assert batch.main(argv) == 0  # nothing changed: nothing redone
    assert json.loads((tmp_path / "out" / "batch-manifest.json").read_text())["counts"]["skipped"] == 2


def test_out_refuses_sessions_that_would_share_a_result_folder(sessions, tmp_path, capsys):
    from ratrig.cli import batch

    a, b = tmp_path / "day1" / "s0", tmp_path / "day2" / "s0"
    shutil.copytree(sessions[0], a)
    shutil.copytree(sessions[1], b)
    rc = batch.main(["reprocess", str(a), str(b), *REPROCESS, "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 2 and "share the folder name 's0'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
