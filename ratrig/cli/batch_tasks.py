"""The work of `ratrig batch`: one task per session, its input hashes, and the function a Dask worker runs.

A `Task` names one SESSION argument, the one-session command to run on it, its options and the
sha256 of every input that command reads. Its `key` (sha256 of command, inputs and options) is
what "the same inputs" means: a result folder holding a `batch.json` with that key and status
"done" is not redone.

`run_task(task)` is what a worker runs. It calls the one-session functions of the stages
(`recorder.reprocess.reprocess`; `analysis.cli.analyse_path` and `write_session`;
`recorder.triangulate.triangulate_files`), writes into a
hidden staging folder and renames it into place when complete, so a worker killed mid-task
leaves no partial result under a final name (only a hidden `.batch-*` / `.*.tmp-*` folder). It
never raises: a failing session comes back as a record with status "failed" and the error text.

Stages are imported inside the functions (this package is the composition root; importing it
loads no stage).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ratrig import __version__
from ratrig.tomlio import atomic_write_text

BATCH_FILE = "batch.json"  # the manifest record kept inside each result folder
VIDEO_SUFFIXES = (".mkv", ".avi", ".mp4")


class PlanError(ValueError):
    """A SESSION argument that cannot become a task; the message names the file."""


@dataclass(frozen=True, slots=True)
class Task:
    """One session through one command.

    Attributes:
        command: "reprocess", "analyze" or "triangulate".
        session: the SESSION argument as given.
        target: reprocess: the folder the result goes into (SESSION/reprocessed, or OUT/<name>);
            analyze: the session's output folder OUT/<session_id>; triangulate: the output session
            folder (FOLDER/triangulated, or OUT/<folder name>).
        options: JSON-able keyword options of the one-session function (recorded, and hashed).
        inputs: input name -> sha256 (or "bytes:N" for video segments, see `reprocess_inputs`).
        key: sha256 over command, inputs and options.
        cameras: reprocess with 2D inference split per camera: the cameras, one `infer_camera`
            task each, whose 2D the session's task then uses (empty: no split).
    """

    command: str
    session: str
    target: str
    options: dict[str, Any] = field(hash=False)
    inputs: dict[str, str] = field(hash=False)
    key: str = ""
    cameras: tuple[str, ...] = ()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def task_key(command: str, inputs: dict[str, str], options: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of (command, inputs, options)."""
    doc = json.dumps({"command": command, "inputs": inputs, "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


def make_task(command: str, session: str, target: Path, options: dict[str, Any], inputs: dict[str, str],
              cameras: tuple[str, ...] = ()) -> Task:
    options = json.loads(json.dumps(options, default=str))  # tuples -> lists: recorded and hashed alike
    return Task(command, str(session), str(target), options, inputs, task_key(command, inputs, options), cameras)


def _hash_files(root: Path, names: Iterable[str]) -> dict[str, str]:
    return {n: sha256_file(root / n) for n in names if (root / n).is_file()}


# ---------------------------------------------------------------------------------------------------
# reprocess


def reprocess_inputs(session: Path, options: dict[str, Any], model_hashes: dict[str, str]) -> dict[str, str]:
    """What `ratrig reprocess` reads from `session` with these options -> name -> sha256.

    session.json, rig.toml, model.json and the calibration always; the live 2D tables with
    --skip-inference; an earlier result's 2D with --reuse-2d; otherwise the frame and segment
    tables and, for each video segment, its size (`bytes:N`): hashing every video byte of hundreds
    of sessions would cost more than the planning is worth, and a segment is never rewritten
    after it is closed (recorder/FORMAT.md). `model_hashes` caches model path -> sha256.
    """
    from recorder.writer import model_identity  # the recorder's own hash of a model file or folder

    sj = session / "session.json"
    if not sj.is_file():
        raise PlanError(f"{session}: no session.json; not a ratrig session folder")
    try:
        meta = json.loads(sj.read_text())
    except json.JSONDecodeError as e:
        raise PlanError(f"{sj}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("cameras"), list):
        raise PlanError(f"{sj}: expected a ratrig session.json with a 'cameras' list")
    cams = [str(c) for c in meta["cameras"]]
    inputs = _hash_files(session, ["session.json", "rig.toml", "model.json"])
    calib = Path(options["calibration"]) if options.get("calibration") else session / "calibration.toml"
    if calib.is_file():
        inputs["calibration"] = sha256_file(calib)
    if options.get("reuse_2d"):
        r = f"reprocessed/{options['reuse_2d']}"
        inputs.update(_hash_files(session, [f"{r}/result.json"] + [f"{r}/pose2d/{c}.csv" for c in cams]))
    elif options.get("skip_inference"):
        inputs.update(_hash_files(session, [f"pose2d/{c}.csv" for c in cams]))
    else:
        for c in cams:
            cam = f"cameras/{c}"
            inputs.update(_hash_files(session, [f"{cam}/frames.csv", f"{cam}/segments.csv"]))
            d = session / cam
            for seg in sorted(d.iterdir()) if d.is_dir() else []:
                if seg.suffix in VIDEO_SUFFIXES and seg.is_file():
                    inputs[f"{cam}/{seg.name}"] = f"bytes:{seg.stat().st_size}"
        model = options.get("model")
        if not model and (session / "model.json").is_file():
            model = json.loads((session / "model.json").read_text()).get("path")
        if model:
            if model not in model_hashes:
                model_hashes[model] = str(model_identity(model).get("sha256"))
            inputs["model"] = model_hashes[model]
    return inputs


def plan_reprocess(session: str, options: dict[str, Any], out: Path | None,
                   model_hashes: dict[str, str], split_cameras: bool = True) -> Task:
    """A reprocess task; its result goes to SESSION/reprocessed/<stamp> (or OUT/<session name>/<stamp>).

    The session is opened here first, so that a session whose recorder was killed is repaired
    once, by this process, before its files are hashed and before several workers read it.
    With 2D inference and `split_cameras`, the task carries its cameras (one inference task each).
    """
    from recorder.session import SessionFormatError, open_session

    p = Path(session)
    if not p.is_dir():
        raise PlanError(f"{p}: no such session folder")
    try:
        opened = open_session(p)
    except (SessionFormatError, KeyError) as e:
        raise PlanError(f"{p}: {e}") from None
    target = (out / p.resolve().name) if out is not None else p / "reprocessed"
    infer = not options.get("skip_inference") and not options.get("reuse_2d")
    cameras = tuple(opened.cameras) if infer and split_cameras else ()
    return make_task("reprocess", session, target, options, reprocess_inputs(p, options, model_hashes), cameras)


# ---------------------------------------------------------------------------------------------------
# analyze


def resolve_result(folder: Path, result: str | None) -> str | None:
    """`--result latest` -> the newest result's name (as analysis.loader picks it), so the key names it."""
    if result != "latest":
        return result
    rdir = folder / "reprocessed"
    names = sorted(p.name for p in rdir.iterdir() if p.is_dir() and not p.name.startswith(".")) if rdir.is_dir() else []
    return names[-1] if names else result


def analyze_session_id(path: Path, overrides: dict[str, Any]) -> str:
    """The session id `ratrig analyze` will name the output folder after (best effort before loading)."""
    from analysis.loader import read_subject

    if overrides.get("session_id"):
        return str(overrides["session_id"])
    if not path.is_dir():
        return path.stem
    try:
        sj = path / "session.json"
        meta = json.loads(sj.read_text()) if sj.is_file() else None
        found = read_subject(path, meta if isinstance(meta, dict) else None)
    except (ValueError, OSError):
        found = {}  # the task reports what is wrong with the session
    return str(found.get("session_id") or path.name)


def analyze_inputs(path: Path, result: str | None) -> dict[str, str]:
    """What `ratrig analyze` reads: the pose table, and session.json, subject.toml, rig.toml, events.jsonl."""
    if path.is_file():
        return {path.name: sha256_file(path)}
    if not path.is_dir():
        raise PlanError(f"{path}: no such session folder or pose table")
    table = "pose3d.csv" if result is None else f"reprocessed/{result}/pose3d.csv"
    return _hash_files(path, [table, "session.json", "subject.toml", "rig.toml", "events.jsonl"])


def plan_analyze(session: str, folder: Path, options: dict[str, Any]) -> Task:
    """An analyze task writing OUT/<session_id> (`folder`); `options` holds the resolved result."""
    return make_task("analyze", session, folder, options, analyze_inputs(Path(session), options.get("result")))


# ---------------------------------------------------------------------------------------------------
# triangulate


def triangulate_inputs(folder: Path, calibration: Path, options: dict[str, Any]) -> dict[str, str]:
    """The 2D pose files of `folder` (as recorder.posefiles matches them), the calibration, config and map."""
    from recorder.posefiles import POSE_SUFFIXES

    inputs = {f"pose/{f.name}": sha256_file(f) for f in sorted(folder.iterdir())
              if f.is_file() and f.suffix.lower() in POSE_SUFFIXES}
    inputs["calibration"] = sha256_file(calibration)
    for k in ("config", "keypoint_map"):
        if options.get(k):
            f = Path(options[k])
            if not f.is_file():
                raise PlanError(f"--{k.replace('_', '-')} {f}: file not found")
            inputs[k] = sha256_file(f)
    return inputs


def plan_triangulate(folder: str, options: dict[str, Any], calibration: str | None, out: Path | None) -> Task:
    """A triangulate task: FOLDER's 2D files -> FOLDER/triangulated/ (or OUT/<folder name>/), a session folder."""
    p = Path(folder)
    if not p.is_dir():
        raise PlanError(f"{p}: no such folder of 2D pose files")
    calib = Path(calibration) if calibration else p / "calibration.toml"
    if not calib.is_file():
        raise PlanError(f"{calib}: no calibration (pass --calibration, or put calibration.toml in the folder)")
    target = out / p.resolve().name if out is not None else p / "triangulated"
    opts = dict(options, calibration=str(calib.resolve()))
    return make_task("triangulate", folder, target, opts, triangulate_inputs(p, calib, options))


# ---------------------------------------------------------------------------------------------------
# Done or not


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((folder / BATCH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def find_done(task: Task) -> Path | None:
    """The result folder of an earlier run of `task` with the same key, or None."""
    target = Path(task.target)
    if task.command in ("analyze", "triangulate"):  # one output folder, replaced when inputs change
        rec = read_record(target)
        return target if rec and rec.get("key") == task.key and rec.get("status") == "done" else None
    if not target.is_dir():
        return None
    for d in sorted(target.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            rec = read_record(d)
            if rec and rec.get("key") == task.key and rec.get("status") == "done":
                return d
    return None


# ---------------------------------------------------------------------------------------------------
# On the worker


def base_record(task: Task) -> dict[str, Any]:
    rec = {"command": task.command, "session": task.session, "key": task.key, "status": "pending",
           "result": None, "error": None, "inputs": task.inputs, "options": task.options,
           "ratrig_version": __version__}
    if task.cameras:
        rec["inference_tasks"] = list(task.cameras)  # 2D inference ran as one task per camera
    return rec


def infer_camera(task: Task, camera: str) -> tuple[str, tuple[Any, Any, Any], float]:
    """2D inference of one camera of a reprocess task (on a Dask worker).

    Returns (camera, its `infer_2d` arrays, seconds it took).
    """
    from recorder.reprocess import infer_2d, model_and_inference
    from recorder.session import open_session

    t0 = time.monotonic()
    session = open_session(task.session)
    model, inference = model_and_inference(session, task.options.get("model"))
    arrays = infer_2d(session, model, session.keypoints, inference, progress=False, cameras=[camera])[camera]
    return camera, arrays, time.monotonic() - t0


def run_task(task: Task, *inferred_2d: tuple[str, tuple[Any, Any, Any], float]) -> dict[str, Any]:
    """Run one task (on a Dask worker). Never raises: returns the manifest record.

    `inferred_2d`: the `infer_camera` results of every camera of a split reprocess task.

    Record keys: command, session, key, status (done | skipped | failed), result (folder), error,
    inputs, options, ratrig_version, host, pid, started_wall, elapsed_s, cpu_s (this task only);
    analyze and triangulate add `line`; split reprocess adds `inference_tasks` and `inference_s`
    (seconds of the camera tasks, summed).
    """
    t0, cpu0 = time.monotonic(), time.process_time()
    rec = base_record(task) | {"host": socket.gethostname(), "pid": os.getpid(),
                                "started_wall": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if inferred_2d:
        rec["inference_s"] = round(sum(part[2] for part in inferred_2d), 3)
    try:
        done = find_done(task)  # a task recomputed after its worker died may already be complete
        if done is not None:
            rec.update(status="skipped", result=str(done))
        elif task.command == "reprocess":
            rec.update(_reprocess(task, rec, t0, {cam: arrays for cam, arrays, _ in inferred_2d} or None))
        elif task.command == "analyze":
            rec.update(_analyze(task, rec, t0))
        elif task.command == "triangulate":
            rec.update(_triangulate(task, rec, t0))
        else:
            raise ValueError(f"unknown batch command {task.command!r}")
    except Exception as e:  # noqa: BLE001 -- one failing session must not stop the others: report it
        rec.update(status="failed", error=f"{type(e).__name__}: {e}",
                   traceback="".join(traceback.format_exception(e)[-6:]))
    rec["elapsed_s"] = round(time.monotonic() - t0, 3)
    rec["cpu_s"] = round(time.process_time() - cpu0, 3)  # the worker process's CPU time during the task
    return rec


def _reprocess(task: Task, rec: dict[str, Any], t0: float, inferred_2d: dict | None) -> dict[str, Any]:
    from recorder.reprocess import reprocess
    from recorder.session import open_session

    opts = dict(task.options)
    opts["constraints"] = [tuple(c) for c in opts.get("constraints", [])]
    session = open_session(task.session)
    target = Path(task.target)
    stage = target / f".batch-{uuid.uuid4().hex[:12]}"  # hidden until complete
    stage.mkdir(parents=True)
    try:
        name = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
        made = reprocess(session, progress=False, name=name, out=stage / name, inferred_2d=inferred_2d, **opts)
        done = dict(rec, status="done", result=str(target / name), elapsed_s=round(time.monotonic() - t0, 3))
        atomic_write_text(made / BATCH_FILE, json.dumps(done, indent=2, default=str))
        os.rename(made, target / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"status": "done", "result": str(target / name)}


def _analyze(task: Task, rec: dict[str, Any], t0: float) -> dict[str, Any]:
    import argparse

    from analysis.cli import analyse_path, one_line, write_session
    from analysis.gait import GaitParams
    from analysis.pipeline import AnalysisParams
    from analysis.session import Apparatus

    o = task.options
    app = None
    if o.get("apparatus") is not None:
        a = o["apparatus"]
        app = Apparatus(cylinder_center_mm=tuple(a["cylinder_center_mm"]), cylinder_radius_mm=a["cylinder_radius_mm"],
                        pots_mm=tuple(tuple(p) for p in a["pots_mm"]), pot_zone_radius_mm=a["pot_zone_radius_mm"])
    args = argparse.Namespace(result=o.get("result"), coords=o.get("coords", "auto"), fps=o.get("fps"))
    params = AnalysisParams(gait=GaitParams(reference_speed_mm_s=o["reference_speed"]))
    session, result = analyse_path(task.session, dict(o.get("overrides") or {}), app, args, params)

    def write(stage: Path) -> str:
        write_session(result, stage, not o.get("no_report", False))
        return f"{session.n_frames} frames, {one_line(result.summary)}"

    return _write_hidden_then_rename(Path(task.target), rec, t0, write)


def _triangulate(task: Task, rec: dict[str, Any], t0: float) -> dict[str, Any]:
    import argparse

    from recorder.triangulate import options_from_args, triangulate_files

    o = dict(task.options)
    calibration = Path(o.pop("calibration"))
    for k in ("config", "keypoint_map"):
        o[k] = Path(o[k]) if o.get(k) else None
    options = options_from_args(argparse.Namespace(**o))
    return _write_hidden_then_rename(
        Path(task.target), rec, t0,
        lambda stage: f"{triangulate_files(calibration, Path(task.session), stage, options).get('frames')} frames")


def _write_hidden_then_rename(final: Path, rec: dict[str, Any], t0: float,
                              write: Callable[[Path], str]) -> dict[str, Any]:
    """Run `write(stage) -> summary line` into a hidden folder beside `final`, add its batch record,
    and rename it into place: a killed worker never leaves a partial result under `final`."""
    stage = final.parent / f".{final.name}.batch-{uuid.uuid4().hex[:12]}"
    try:
        line = write(stage)
        done = dict(rec, status="done", result=str(final), line=line, elapsed_s=round(time.monotonic() - t0, 3))
        atomic_write_text(stage / BATCH_FILE, json.dumps(done, indent=2, default=str))
        replace_dir(stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"status": "done", "result": str(final), "line": line}


def replace_dir(new: Path, final: Path) -> None:
    """Put folder `new` at `final`, replacing an older `final` (moved aside first, then removed).

    A process killed between the two renames leaves the old folder under a hidden `.*.old-*` name
    and nothing at `final`: a rerun redoes that session.
    """
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)
        os.rename(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, final)

