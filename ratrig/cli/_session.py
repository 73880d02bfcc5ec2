"""Running a session: the stages of a rig as supervised processes, stats collected, a summary.

Shared by `ratrig demo` (the synthetic rig) and `ratrig run CONFIG` (a user's rig).

Start order: consumers first (recorder, fusion, events, inference workers, evaluator, viewer), wait
until each reports ready (models loaded), then the cameras with one shared start time t0 so that
synchronised cameras tick on one schedule. Stop order: cameras, then everything downstream once it
has drained. A camera that dies is restarted with backoff and reported; it never stops the session.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from ratrig import __version__
from ratrig.camera import CalibrationError, load_calibration
from ratrig.clock import now_ns
from ratrig.config import ConfigError, Endpoints, RigConfig, config_to_dict, replace_section, save_config
from ratrig.messages import StatsPacket
from ratrig.security import CURVE_ENV, KeyFileError, curve_env, keys_from_env, server_socket
from ratrig.summary import build_summary
from ratrig.supervisor import ProcessSpec, Supervisor
from ratrig.tomlio import atomic_write_text
from ratrig.transport import ReceiveCounters, make_sub, recv_all

log = logging.getLogger("ratrig.session")

READY_TIMEOUT_S = 120.0
CAMERA_START_DELAY_S = 0.5
#: counters that a restarted process starts again from zero: the summary adds them over restarts
SUMMED_COUNTERS = ("captured", "published", "dropped_at_source")


class SessionError(RuntimeError):
    """The session cannot start; the message says what to fix."""


@dataclass(frozen=True)
class SessionOptions:
    duration_s: float | None = None
    headless: bool = False
    json_path: str | None = None
    record_dir: str | None = None
    record_calibration_dir: str | None = None
    run_dir: str | None = None
    synthetic_truth: bool = False  # evaluate against the synthetic rig's ground truth
    # which stages run on this host: "all", "cameras" (the camera host of a multi-host rig) or
    # "processing" (every stage but the cameras; README "Several hosts")
    role: str = "all"
    started_wall_s: float | None = None  # names the session folder; set by run_session


def stage_available(module: str) -> bool:
    """Whether a stage's module exists in this installation (stages land one by one)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def prepare(rig: RigConfig, run_dir: Path) -> tuple[RigConfig, dict[str, Any]]:
    """Resolve what the session needs before any process starts; raise SessionError otherwise.

    Returns the effective config (written to run_dir/rig.toml) and facts for the summary.
    """
    facts: dict[str, Any] = {}
    synthetic = all(c.source_kind == "synthetic" for c in rig.cameras)
    if not rig.calibration.file and synthetic:
        from synthetic.rig import default_rig  # the synthetic rig's true calibration

        path = run_dir / "calibration.toml"
        default_rig().subset(rig.camera_names).save(path)
        rig = replace_section(rig, "calibration", file=str(path))
    if rig.calibration.file:
        try:
            load_calibration(rig.calibration.file, rig.camera_names)
        except CalibrationError as e:
            raise SessionError(str(e)) from None
    if rig.inference.model:
        facts["model"] = check_model(rig)
    check_events(rig)
    if rig.network.curve:
        try:
            keys_from_env(network_env(rig))
        except KeyFileError as e:
            raise SessionError(f"{rig.path or 'config'}: {e}") from None
        facts["authentication"] = "curve"
    return rig, facts


def network_env(rig: RigConfig) -> dict[str, str]:
    """The environment that gives every process of the session the rig's CurveZMQ keys ({} if none)."""
    net = rig.network
    return curve_env(server_secret=net.server_secret_key, server_public=net.server_public_key,
                     client_secret=net.client_secret_key, allowed_clients=net.allowed_client_keys)


def check_events(rig: RigConfig) -> None:
    """Validate [events] (thresholds, floor area, rules, outputs) before any process starts, as the
    events process would on start-up; nothing to check when that stage is off or not installed."""
    if not (rig.events.enabled and stage_available("events.process")):
        return
    from events.process import setup_from_config  # lazy: stages are imported by the composition root only

    try:
        setup_from_config(rig)
    except ConfigError as e:
        raise SessionError(str(e)) from None


def check_behaviour(rig: RigConfig) -> None:
    """A [behaviour] model that cannot be read stops the session before any process starts."""
    if not (rig.behaviour.enabled and rig.behaviour.model and stage_available("analysis.behaviour.process")):
        return
    from analysis.behaviour.segment import Segmenter  # lazy: stages are imported by the composition root only

    try:
        Segmenter.load(rig.behaviour.model)
    except ValueError as e:
        raise SessionError(f"{rig.path or 'config'}: behaviour.model: {e}") from None


def check_model(rig: RigConfig) -> dict[str, Any]:
    """Validate the configured model before any camera opens; its identity for the summary."""
    if not stage_available("inference.engines"):
        raise SessionError("inference.model is set but the inference stage is not installed")
    from inference.engines import ModelError, check_model as check  # lazy: the model framework

    try:
        info = check(rig.inference, rig.keypoints)
    except ModelError as e:
        raise SessionError(str(e)) from None
    return {"path": info.path, "engine": info.engine, "sha256": info.sha256, "bodyparts": list(info.bodyparts)}


def session_folder(rig: RigConfig, opts: SessionOptions) -> Path:
    """The new session folder inside --record DIR: <rig name>-<local date and time>."""
    assert opts.record_dir is not None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(opts.started_wall_s or time.time()))
    return Path(opts.record_dir).resolve() / f"{rig.name}-{stamp}"


#: glibc's default raises its mmap threshold the first time a frame-sized buffer is freed, after which
#: the 0.9 MB frames of the recorder's queues come from the heap, shared by the ZeroMQ I/O thread and
#: four encoder threads; the heap then keeps the high-water mark of every queue-depth peak of an
#: hours-long session (the recorder grew 112 -> 119 MB over a 30-minute soak). A fixed threshold keeps
#: frames in their own mappings, returned to the system when written.
RECORDER_ENV = (("MALLOC_MMAP_THRESHOLD_", "131072"),)


def plan(rig: RigConfig, config_path: Path, opts: SessionOptions) -> tuple[list[ProcessSpec], list[ProcessSpec]]:
    """(consumers, cameras) process specs for the stages that exist and are enabled."""
    cfg = ("--config", str(config_path))
    consumers: list[ProcessSpec] = []
    if opts.role not in ("all", "cameras", "processing"):
        raise SessionError(f"role {opts.role!r}: expected 'all', 'cameras' or 'processing'")
    if opts.role == "cameras":
        return [], [ProcessSpec(f"camera/{c.name}", "acquisition.capture", cfg + ("--camera", c.name), restart=True)
                    for c in rig.cameras]
    if opts.record_dir:
        if not stage_available("recorder.process"):
            raise SessionError("--record needs the recorder stage, which is not installed")
        # restarted after a crash: what it wrote stays readable (recorder/FORMAT.md, crash safety) and
        # recording goes on in <session>.part2, ...; a hot standby holding the last seconds of every
        # stream takes over at once and first writes what the dead recorder had not (recorder/standby.py)
        consumers.append(ProcessSpec("recorder", "recorder.process",
                                     cfg + ("--out", str(session_folder(rig, opts)), "--continue-as-part"),
                                     stop_timeout_s=120.0, restart=True, backoff_s=0.2, standby=True,
                                     no_restart_codes=(2, 3),  # 2: cannot start (bad config, disk), 3: disk full
                                     env=RECORDER_ENV))
    if rig.inference.model and stage_available("inference.worker"):
        for j, _ in enumerate(rig.worker_groups()):
            consumers.append(ProcessSpec(f"inference/{j}", "inference.worker", cfg + ("--worker", str(j)),
                                         restart=True))
        if rig.fusion.enabled and rig.calibration.file and stage_available("fusion.process"):
            # a hot standby (kernels loaded, workers connected) takes over a crash at once
            consumers.append(ProcessSpec("fusion", "fusion.process", cfg, restart=True, backoff_s=0.1, standby=True))
            if rig.events.enabled and stage_available("events.process"):
                consumers.append(ProcessSpec("events", "events.process", cfg, restart=True, backoff_s=0.1))
            if rig.behaviour.enabled and stage_available("analysis.behaviour.process"):
                check_behaviour(rig)  # off by default: [behaviour] enabled = true starts it
                consumers.append(ProcessSpec("behaviour", "analysis.behaviour.process", cfg, restart=True))
    # The probe takes every frame off the wire as soon as it arrives: the transport latency of the
    # summary. (A live worker drains only between forward passes, so its receive times include the
    # wait for the model.) Its stats go out on the monitor port.
    consumers.append(ProcessSpec("probe", "acquisition.probe", cfg + ("--bind", Endpoints(rig).bind("monitor"))))
    if opts.synthetic_truth and stage_available("synthetic.evaluate"):
        consumers.append(ProcessSpec("evaluator", "synthetic.evaluate", cfg))
    if opts.record_calibration_dir:
        consumers.append(ProcessSpec("calibration-recorder", "calibration.capture",
                                     cfg + ("--out", opts.record_calibration_dir)))
    if not opts.headless and stage_available("viewer.app"):
        consumers.append(ProcessSpec("viewer", "viewer.app", cfg + ("--connect", Endpoints(rig).connect("directory"))))
    cameras = [ProcessSpec(f"camera/{c.name}", "acquisition.capture", cfg + ("--camera", c.name), restart=True)
               for c in rig.cameras]
    return consumers, ([] if opts.role == "processing" else cameras)


class StatsCollector:
    """Subscribes to every stage's stats topic; keeps the newest stats of each process."""

    def __init__(self, ctx: zmq.Context, rig: RigConfig) -> None:
        eps = Endpoints(rig)
        endpoints = [v for k, v in eps.directory().items() if k != "directory"]
        self.sub = make_sub(ctx, endpoints, [b"stats/"], rcvhwm=10_000)
        self.latest: dict[str, dict[str, Any]] = {}
        self.generations: dict[str, dict[Any, dict[str, Any]]] = {}  # process -> pid -> newest stats
        self.counters = ReceiveCounters()

    def pump(self, timeout_ms: int = 0) -> None:
        if not self.sub.poll(timeout_ms):
            return
        for pkt in recv_all(self.sub, self.counters):
            if isinstance(pkt, StatsPacket):
                stats = dict(pkt.stats)
                self.latest[pkt.process] = stats
                self.generations.setdefault(pkt.process, {})[stats.get("pid")] = stats

    def merged(self) -> dict[str, dict[str, Any]]:
        """Newest stats per process, with counters summed over restarts of that process."""
        out = {}
        for name, latest in self.latest.items():
            merged = dict(latest)
            gens = self.generations.get(name, {})
            for key in SUMMED_COUNTERS:
                if key in latest and len(gens) > 1:
                    merged[key] = sum(g.get(key, 0) for g in gens.values())
            out[name] = merged
        return out

    def ready(self, name: str) -> bool:
        """A process is ready once it publishes stats, unless they say "ready": false."""
        return name in self.latest and bool(self.latest[name].get("ready", True))

    def close(self) -> None:
        self.sub.close(0)


class Directory:
    """Answers b"directory" requests with every endpoint of the session (for `ratrig view --connect`)."""

    def __init__(self, ctx: zmq.Context, rig: RigConfig, config_path: Path) -> None:
        self.sock = server_socket(ctx, zmq.REP, keys_from_env())
        self.sock.setsockopt(zmq.LINGER, 0)
        endpoint = Endpoints(rig).bind("directory")
        try:
            self.sock.bind(endpoint)
        except zmq.ZMQError as e:
            self.sock.close(0)
            raise SessionError(f"cannot bind the session directory {endpoint}: {e}; is another ratrig session "
                               f"running? Stop it or set network.base_port (or --base-port)") from None
        calibration = None
        if rig.calibration.file:
            calibration = load_calibration(rig.calibration.file, rig.camera_names).to_dict()
        # config and calibration travel as tables: a viewer on another machine cannot read our paths
        self.reply = msgpack.packb({"endpoints": Endpoints(rig).directory(), "config_path": str(config_path),
                                    "config": config_to_dict(rig), "rig": rig.name, "cameras": rig.camera_names,
                                    "calibration_path": rig.calibration.file, "calibration": calibration,
                                    "ratrig_version": __version__})

    def serve(self) -> None:
        while self.sock.poll(0):
            self.sock.recv()
            self.sock.send(self.reply)

    def close(self) -> None:
        self.sock.close(0)


def _restore_env(saved: str | None) -> None:
    if saved is None:
        os.environ.pop(CURVE_ENV, None)
    else:
        os.environ[CURVE_ENV] = saved


def run_session(rig: RigConfig, opts: SessionOptions) -> dict[str, Any]:
    """Run the rig until opts.duration_s (or Ctrl-C) and return the summary (also written to JSON)."""
    run_dir = Path(opts.run_dir or tempfile.mkdtemp(prefix="ratrig-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    if opts.duration_s is not None and all(c.source_kind == "synthetic" for c in rig.cameras):
        # simulate just the walk this session needs (startup cost grows with its length)
        rig = replace_section(rig, "synthetic", session_s=float(max(30.0, opts.duration_s + 10.0)))
    rig, facts = prepare(rig, run_dir)
    config_path = run_dir / "rig.toml"
    save_config(rig, config_path)
    opts = dataclasses.replace(opts, started_wall_s=time.time())
    consumers, cameras = plan(rig, config_path, opts)
    log.info("session %s: logs in %s; stages: %s", rig.name, run_dir,
             ", ".join(s.name for s in consumers + cameras))

    # every socket of this process and of its children takes the rig's keys from the environment
    saved_env = os.environ.get(CURVE_ENV)
    os.environ.pop(CURVE_ENV, None)
    os.environ.update(network_env(rig))
    ctx = zmq.Context()
    try:
        directory = Directory(ctx, rig, config_path) if opts.role != "cameras" else None
    except SessionError:
        ctx.term()
        _restore_env(saved_env)
        raise
    # spares are armed once the stages they stand by for are up (they do not slow their start, and
    # connect to the workers' ports already bound)
    sup = Supervisor(run_dir / "logs", start_standbys=False)
    serve = directory.serve if directory is not None else (lambda: None)
    collector = StatsCollector(ctx, rig)
    interrupted = False
    t0_ns = None
    events: list[str] = []
    try:
        for spec in consumers:
            sup.add(spec)
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = [s.name for s in consumers if s.name not in ("viewer", "calibration-recorder")]
        while waiting and time.monotonic() < deadline:
            collector.pump(100)
            serve()
            events += sup.poll()
            for name in list(waiting):
                if collector.ready(name) or sup.procs[name].state in ("failed", "exited"):
                    waiting.remove(name)
        if waiting:
            log.warning("stages not ready after %.0f s, starting anyway: %s", READY_TIMEOUT_S, waiting)
        failed = [n for n, st in sup.procs.items() if st.state == "failed"]
        if failed:
            raise SessionError("stages failed to start: " + "; ".join(f"{n}: {sup.tail_log(n, 5)}" for n in failed))
        sup.start_standbys()
        t0_file = run_dir / "t0_ns"
        if t0_file.exists():
            t0_file.unlink()
        for spec in cameras:
            sup.add(dataclasses.replace(spec, args=spec.args + ("--t0-file", str(t0_file))))
        # one start for all cameras once every source is open (a slow one does not start late)
        waiting = [s.name for s in cameras]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting and time.monotonic() < deadline:
            collector.pump(100)
            serve()
            events += sup.poll()
            waiting = [n for n in waiting if not collector.ready(n) and sup.procs[n].state not in ("failed", "exited")]
        if waiting:
            log.warning("cameras not ready after %.0f s, starting without them: %s", READY_TIMEOUT_S, waiting)
        t0_ns = now_ns() + int(CAMERA_START_DELAY_S * 1e9)
        atomic_write_text(t0_file, f"{t0_ns}\n")
        end = None if opts.duration_s is None else t0_ns + int(opts.duration_s * 1e9)
        while end is None or now_ns() < end:
            collector.pump(50)
            serve()
            for line in sup.poll():
                log.warning("%s", line)
                events.append(line)
    except KeyboardInterrupt:
        interrupted = True
        log.info("interrupted; stopping")
    finally:
        stopped_ns = now_ns()
        camera_names = [s.name for s in cameras if s.name in sup.procs]
        sup.stop(camera_names, timeout_s=5.0)
        drain_until = time.monotonic() + 1.5
        while time.monotonic() < drain_until:
            collector.pump(50)
            serve()
        # everything but the recorder, then the recorder, which writes what it still holds
        sup.stop([n for n in sup.procs if n != "recorder"], timeout_s=10.0)
        if "recorder" in sup.procs:
            sup.stop(["recorder"])
        end_pump = time.monotonic() + 0.5
        while time.monotonic() < end_pump:
            collector.pump(50)
        report = sup.report()
        sup.close()
        collector.close()
        if directory is not None:
            directory.close()
        ctx.term()
        _restore_env(saved_env)
    duration_s = 0.0 if t0_ns is None else max(0.0, (stopped_ns - t0_ns) / 1e9)
    summary = build_summary(rig, collector.merged(), report, duration_s=duration_s,
                            config_path=rig.path or str(config_path), events=events, facts=facts)
    summary["interrupted"] = interrupted
    summary["run_dir"] = str(run_dir)
    if opts.record_dir:
        summary["recording"] = str(session_folder(rig, opts))
        rec = collector.merged().get("recorder")
        if rec is not None:
            summary["recorder"] = {k: v for k, v in rec.items() if k not in ("ready", "final", "pid")}
    text = json.dumps(summary, indent=2, sort_keys=False)
    if opts.json_path:
        atomic_write_text(opts.json_path, text + "\n")
    return summary
