"""`ratrig batch reprocess|analyze|triangulate SESSIONS...`: many sessions at once on Dask distributed.

    ratrig batch reprocess sessions/*/ --skip-inference --triangulation dlt --workers 4
    ratrig batch analyze sessions/*/ --result latest --out results/ --workers 2
    ratrig batch triangulate pose2d/*/ --calibration calibration.toml --fps 100 --out sessions3d/
    ratrig batch reprocess sessions/*/ --scheduler tcp://10.0.0.5:8786    # an existing Dask cluster
    ratrig batch reprocess sessions/*/ --jobqueue slurm --workers 32     # dask-jobqueue (jobqueue.yaml)

Each command takes the options of its one-session command (`ratrig reprocess --help`,
`ratrig analyze --help`, `ratrig triangulate --help`: all but --pose, -o, --timestamps) plus the
batch options below; a triangulate input is a folder of per-camera 2D files named after the
calibration's cameras (`ratrig triangulate --pose FOLDER`). One Dask task per session runs that
command's own function; a LocalCluster of --workers single-threaded worker processes (bound to
127.0.0.1) is started unless --scheduler or --jobqueue names another cluster.

Results: reprocess writes SESSION/reprocessed/<UTC stamp>/ (or OUT/<session folder name>/<stamp>/
with --out); analyze writes OUT/<session_id>/ and then OUT/group.csv and OUT/group_report.html over
every session analysed; triangulate writes FOLDER/triangulated/ (or OUT/<folder name>/), a
session folder. Each result folder appears complete or not at all (written hidden, then
renamed) and holds `batch.json`, its manifest record: input hashes, options, ratrig version,
status, timings. The batch manifest (every session, failed ones with their error) is written
atomically to --manifest (default OUT/batch-manifest.json, or ./batch-<command>-manifest.json).

A rerun skips every session whose result folder holds a record with the same key (same input
hashes and options) and redoes the rest: changed inputs, failures, sessions cut short by a killed
worker. Dask reschedules the task of a worker that dies. Exit status: 0 all done, 1 some sessions
failed (the others are done), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ratrig import __version__
from ratrig.cli.batch_tasks import PlanError, Task, base_record, find_done, run_task
from ratrig.tomlio import atomic_write_text

JOBQUEUE_CLUSTERS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
                     "htcondor": "HTCondorCluster", "oar": "OARCluster", "moab": "MoabCluster"}


def add_batch_options(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("batch")
    b.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="worker processes of the local cluster, or jobqueue workers (default %(default)s)")
    b.add_argument("--scheduler", metavar="ADDR", help="use a running Dask scheduler, e.g. tcp://HOST:8786")
    b.add_argument("--jobqueue", choices=sorted(JOBQUEUE_CLUSTERS),
                   help="start workers as batch jobs with dask-jobqueue; settings (cores, memory, queue, account, "
                        "walltime) come from Dask's config: jobqueue.<name> in ~/.config/dask/jobqueue.yaml")
    b.add_argument("--manifest", metavar="PATH", help="batch manifest JSON (default: OUT/batch-manifest.json, "
                                                      "else ./batch-<command>-manifest.json)")
    b.add_argument("--force", action="store_true", help="redo sessions already done with the same inputs")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from analysis.cli import add_analyze_options
    from recorder.reprocess import add_reprocess_options
    from recorder.triangulate import add_triangulate_options

    p = argparse.ArgumentParser(prog="ratrig batch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="{reprocess,analyze,triangulate}")
    r = sub.add_parser("reprocess", help="ratrig reprocess on every session")
    r.add_argument("sessions", nargs="+", help="session folders")
    add_reprocess_options(r)
    r.add_argument("--out", default=None, help="results to OUT/<session folder name>/<stamp>/ instead of "
                                                "SESSION/reprocessed/<stamp>/")
    r.add_argument("--no-split-cameras", action="store_true",
                   help="2D inference in the session's task (default: one inference task per camera)")
    add_batch_options(r)
    a = sub.add_parser("analyze", help="ratrig analyze on every session, then the group tables")
    a.add_argument("sessions", nargs="+", help="session folders or pose CSV files")
    add_analyze_options(a)
    add_batch_options(a)
    t = sub.add_parser("triangulate", help="ratrig triangulate on every folder of 2D pose files")
    t.add_argument("sessions", nargs="+", metavar="FOLDER",
                   help="folders of per-camera 2D files (DeepLabCut .h5/.csv, SLEAP .h5) named after the cameras")
    t.add_argument("--calibration", default=None, help="Anipose calibration.toml (default: FOLDER/calibration.toml)")
    add_triangulate_options(t)
    t.add_argument("--out", default=None, help="outputs to OUT/<folder name>/ instead of FOLDER/triangulated/")
    add_batch_options(t)
    return p


# ---------------------------------------------------------------------------------------------------
# Planning (on the client): one Task per session, or a failed record naming what is wrong


def plan(args: argparse.Namespace) -> tuple[list[Task | dict[str, Any]], dict[str, Any]]:
    """Parsed arguments -> (per session: a Task or a failed record, the batch-wide options).

    Raises ValueError for arguments that are wrong for the whole batch (exit status 2).
    """
    from ratrig.cli.batch_tasks import (
        analyze_session_id,
        plan_analyze,
        plan_reprocess,
        plan_triangulate,
        resolve_result,
    )

    items: list[Task | dict[str, Any]] = []
    if args.command in ("reprocess", "triangulate") and args.out:
        names = [Path(s).resolve().name for s in args.sessions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"--out {args.out}: sessions share the folder name {dup[0]!r}; "
                             "results would collide (leave --out out to write beside each session)")
    if args.command == "reprocess":
        from recorder.reprocess import options_from_args

        options = options_from_args(args)
        out = Path(args.out) if args.out else None
        hashes: dict[str, str] = {}
        for s in args.sessions:
            items.append(_planned(lambda s=s: plan_reprocess(s, options, out, hashes, not args.no_split_cameras),
                                  "reprocess", s))
        return items, options
    if args.command == "triangulate":
        from recorder.triangulate import add_triangulate_options

        probe = argparse.ArgumentParser(add_help=False)
        add_triangulate_options(probe)
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k in vars(probe.parse_args([]))}
        out = Path(args.out) if args.out else None
        for s in args.sessions:
            items.append(_planned(lambda s=s: plan_triangulate(s, options, args.calibration, out), "triangulate", s))
        return items, dict(options, calibration=args.calibration)
    from analysis.cli import apparatus_from_args, meta_flags, meta_table, session_overrides

    apparatus = apparatus_from_args(args)
    table = meta_table(args.meta_table)
    flags = meta_flags(args)
    common = {"coords": args.coords, "fps": args.fps, "reference_speed": args.reference_speed,
              "no_report": args.no_report,
              "apparatus": dataclasses.asdict(apparatus) if apparatus is not None else None}
    out = Path(args.out)
    seen: set[str] = set()
    for s in args.sessions:
        overrides = session_overrides(s, table, flags)
        sid = analyze_session_id(Path(s), overrides)
        if sid in seen:  # as `ratrig analyze` does, except that a session that fails keeps its name
            sid = f"{sid}_{len(seen)}"
        seen.add(sid)
        opts = dict(common, overrides=overrides, result=resolve_result(Path(s), args.result))
        items.append(_planned(lambda s=s, sid=sid, opts=opts: plan_analyze(s, out / sid, opts), "analyze", s))
    return items, dict(common, result=args.result, meta_table=args.meta_table, flags=flags)


def _planned(make, command: str, session: str) -> Task | dict[str, Any]:
    try:
        return make()
    except (PlanError, OSError, ValueError) as e:
        return {"command": command, "session": session, "key": None, "status": "failed", "result": None,
                "error": f"{type(e).__name__}: {e}", "ratrig_version": __version__}


# ---------------------------------------------------------------------------------------------------
# Dask


def dashboard_available() -> bool:
    """Dask's dashboard needs bokeh, which ratrig does not install."""
    return importlib.util.find_spec("bokeh") is not None


def jobqueue_cluster(name: str):  # -> dask_jobqueue.JobQueueCluster
    """A dask-jobqueue cluster (no jobs submitted yet) configured by Dask's `jobqueue.<name>` settings.

    Put cores, memory, queue, account, walltime, job_script_prologue (e.g. activating the venv)
    and scheduler-options in ~/.config/dask/jobqueue.yaml (or a file named by DASK_CONFIG).
    """
    import dask_jobqueue

    return getattr(dask_jobqueue, JOBQUEUE_CLUSTERS[name])()


def start_cluster(args: argparse.Namespace):  # -> (distributed.Client, cluster or None)
    """A Dask client on --scheduler, on a dask-jobqueue cluster, or on a new LocalCluster."""
    from distributed import Client, LocalCluster

    if args.scheduler:
        return Client(args.scheduler), None
    if args.jobqueue:
        cluster = jobqueue_cluster(args.jobqueue)
        cluster.scale(n=args.workers)  # submits the jobs
        return Client(cluster), cluster
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0" if dashboard_available() else None)
    return Client(cluster), cluster


def run_tasks(client, tasks: list[Task], progress: bool = True) -> list[dict[str, Any]]:
    """Submit one Dask task per Task, gather their records (in `tasks` order) as they complete.

    A task whose workers kept dying (Dask gives up after `distributed.scheduler.allowed-failures`)
    or that failed inside Dask comes back as a failed record; the others still run.
    """
    from distributed import as_completed
    from tqdm import tqdm

    from ratrig.cli.batch_tasks import infer_camera

    futures, parts = {}, {}
    for i, t in enumerate(tasks):
        # 2D inference split per camera: Dask runs the cameras anywhere, then the session's task
        parts[i] = [client.submit(infer_camera, t, cam, key=f"infer-{i:05d}-{cam}-{t.key[:12]}", pure=False)
                    for cam in t.cameras]
        futures[client.submit(run_task, t, *parts[i], key=f"{t.command}-{i:05d}-{t.key[:12]}", pure=False)] = i
    records: list[dict[str, Any] | None] = [None] * len(tasks)
    with tqdm(total=len(tasks), desc=f"batch {tasks[0].command}" if tasks else "batch", unit="session",
              disable=not progress) as bar:
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                records[i] = fut.result()
            except Exception as e:  # noqa: BLE001 -- KilledWorker, a camera's failed inference, a lost scheduler
                records[i] = base_record(tasks[i]) | {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            fut.release()  # the record is here; a worker lost later must not make Dask redo this task
            for part in parts.pop(i):
                part.release()
            bar.update(1)
            if records[i]["status"] == "failed" and progress:  # as it happens; all are listed at the end
                bar.write(f"FAILED {tasks[i].session}: {records[i]['error']}")
    return [r for r in records if r is not None]


# ---------------------------------------------------------------------------------------------------
# The command


def default_manifest(args: argparse.Namespace) -> Path:
    if args.manifest:
        return Path(args.manifest)
    if args.out:
        return Path(args.out) / "batch-manifest.json"
    return Path(f"batch-{args.command}-manifest.json")


def write_group(args: argparse.Namespace, records: list[dict[str, Any]]) -> Path | None:
    """analyze: OUT/group.csv (+ report) over every session done now or before, in argument order."""
    from analysis.cli import write_group as write_group_outputs

    summaries = []
    for r in records:
        if r["status"] in ("done", "skipped") and r.get("result"):
            summaries.append(json.loads((Path(r["result"]) / "session.json").read_text()))
    if not summaries:
        return None
    out = Path(args.out)
    write_group_outputs(summaries, out, not args.no_report)
    return out / "group.csv"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers: expected 1 or more")
    t0 = time.monotonic()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        items, options = plan(args)
    except (ValueError, OSError) as e:  # ConfigError is a ValueError
        print(f"ratrig batch {args.command}: {e}", file=sys.stderr)
        return 2
    records: list[dict[str, Any]] = [None] * len(items)  # type: ignore[list-item]
    todo: list[tuple[int, Task]] = []
    planned: dict[tuple[str, str], int] = {}
    for i, it in enumerate(items):
        if not isinstance(it, Task):
            records[i] = it
            continue
        first = planned.setdefault((it.key, it.target), i)
        done = None if args.force else find_done(it)
        if first != i:  # the same session given twice: one task
            records[i] = base_record(it) | {"status": "skipped", "result": None, "elapsed_s": 0.0,
                                            "note": f"same session and inputs as argument {first + 1}"}
        elif done is not None:
            records[i] = base_record(it) | {"status": "skipped", "result": str(done), "elapsed_s": 0.0}
        else:
            todo.append((i, it))
    skipped = sum(1 for r in records if r is not None and r["status"] == "skipped")
    print(f"ratrig batch {args.command}: {len(items)} sessions, {skipped} already done with the same inputs, "
          f"{len(todo)} to run")
    cluster_info: dict[str, Any] = {}
    if todo:
        client, cluster = start_cluster(args)
        try:
            cluster_info = {"scheduler": client.scheduler.address,
                            "workers": len(client.scheduler_info().get("workers", {}))}
            if dashboard_available():
                print(f"Dask dashboard: {client.dashboard_link}")
                cluster_info["dashboard"] = client.dashboard_link
            else:
                print("Dask dashboard: not available (bokeh is not installed)")
            for (i, _), rec in zip(todo, run_tasks(client, [t for _, t in todo], not args.no_progress)):
                records[i] = rec
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    group = write_group(args, records) if args.command == "analyze" else None
    failed = [r for r in records if r["status"] == "failed"]
    manifest = default_manifest(args)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": "ratrig-batch-manifest", "command": args.command, "ratrig_version": __version__,
           "started_wall": started, "elapsed_s": round(time.monotonic() - t0, 3), "options": options,
           "cluster": cluster_info, "group": str(group) if group else None,
           "counts": {s: sum(1 for r in records if r["status"] == s) for s in ("done", "skipped", "failed")},
           "sessions": records}
    atomic_write_text(manifest, json.dumps(doc, indent=2, default=str))
    for r in records:
        if r["status"] == "failed":
            print(f"FAILED {r['session']}: {r['error']}", file=sys.stderr)
        elif r["status"] == "done":
            print(f"{r['session']}: {r.get('line') + ' -> ' if r.get('line') else ''}{r['result']} ({r['elapsed_s']:.1f} s)")
    c = doc["counts"]
    print(f"batch {args.command}: {c['done']} done, {c['skipped']} skipped (same inputs), {c['failed']} failed "
          f"in {doc['elapsed_s']:.1f} s; manifest {manifest}" + (f"; group {group}" if group else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
