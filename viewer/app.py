"""`ratrig view`: the live viewer process (and `python -m viewer.app`).

    ratrig view [--connect tcp://HOST:PORT] [--config rig.toml] [--calibration calibration.toml]
    ratrig view --replay SESSION_DIR
    ratrig view --screenshot out.png --duration 5      # render N s, write a PNG of the window, exit

`--connect` is the directory endpoint of a running session (default: the one `--config`'s network
section gives, else tcp://127.0.0.1:5550). The viewer only subscribes, and runs at a lower CPU
priority (--nice): closing, freezing or starving it never slows the session. Without a display
(no $DISPLAY) and with --screenshot, it starts its own Xvfb.

The display loop ticks at viewer.redraw_hz (60 Hz): each tick drains the sockets and draws what
changed since the last one; `--stats-json` writes the tick and redraw rates, how late the ticks
started and the CPU time used (see bench/bench_viewer.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ratrig.camera import Calibration, CalibrationError, camera_from_dict, load_calibration
from ratrig.config import ConfigError, CorridorConfig, NetworkConfig, RigConfig, ViewerConfig, load_config
from ratrig.skeleton import KEYPOINTS

log = logging.getLogger("viewer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ratrig view", description="Live 3D/2D viewer of a running or recorded ratrig session.")
    p.add_argument("--config", help="rig TOML file (default directory endpoint, corridor, cameras, calibration)")
    p.add_argument("--connect", metavar="ENDPOINT", help="directory endpoint of a running session, e.g. tcp://rig-pc:5550")
    p.add_argument("--calibration", help="Anipose calibration.toml for reprojecting the 3D pose into the camera panels")
    p.add_argument("--replay", metavar="SESSION_DIR", help="play a recorded session with a time slider")
    p.add_argument("--screenshot", metavar="PNG", help="write a PNG of the whole window after --duration seconds and exit")
    p.add_argument("--duration", type=float, default=None, help="run this many seconds, then exit (default: until closed)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the session directory (default 10)")
    p.add_argument("--redraw-hz", type=float, default=None, help="display refresh rate (default: config viewer.redraw_hz)")
    p.add_argument("--no-frames", action="store_true", help="do not subscribe to camera images (poses only)")
    # Measured on a 2-core box running the whole demo (CPU-bound inference, 0 moments skipped alone):
    # the viewer 5 below the pipeline's priority cost it 12-27 skipped moments per camera in 30 s,
    # 9 below 2.
    p.add_argument("--nice", type=int, default=10,
                   help="lower the viewer's CPU priority by this much (default 10, 0 keeps it): on a saturated "
                        "machine the pipeline's processes get the CPU first and the display slows instead")
    p.add_argument("--screenshot-dir", default=".", help="folder for S / Ctrl+S screenshots (default: current folder)")
    p.add_argument("--layout-json", metavar="PATH", help="with --screenshot: also write where the views are in the PNG")
    p.add_argument("--stats-json", metavar="PATH", help="write the viewer's own redraw/receive figures at exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


class UsageError(Exception):
    """A problem with the command line or its files; printed without a traceback, exit status 2."""


def _load_calibration(
    args: argparse.Namespace, rig: RigConfig | None, sent: Any, sent_path: str | None
) -> Calibration | None:
    """--calibration, else the one the session sent (table, or a path readable here), else the rig
    config's file; None if none (the camera panels then show 2D keypoints without reprojection)."""
    try:
        if args.calibration:
            return load_calibration(args.calibration)
        if sent_path and Path(sent_path).is_file():
            return load_calibration(sent_path)
        if isinstance(sent, dict):
            tables = sorted((k for k in sent if str(k).startswith("cam_")), key=lambda k: (len(k), k))
            cams = tuple(camera_from_dict(dict(sent[k]), f"session calibration [{k}]") for k in tables)
            if cams:
                return Calibration(cams, dict(sent.get("metadata", {})))
        if rig is not None and rig.calibration.file:
            return load_calibration(rig.resolve(rig.calibration.file))
    except CalibrationError as e:
        if args.calibration:
            raise UsageError(str(e)) from None
        log.warning("no reprojection in the camera panels: %s", e)
    return None


def _start_xvfb() -> tuple[subprocess.Popen, str]:
    """An Xvfb of our own (for --screenshot without a display). Returns (process, display)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise UsageError("no display ($DISPLAY is unset) and Xvfb is not installed (Debian package: xvfb)")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(w), "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
        pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    if not number.isdigit():
        proc.kill()
        raise UsageError("Xvfb did not start (no display number reported)")
    return proc, f":{number}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(name)s: %(message)s")
    xvfb = None
    try:
        if args.duration is not None and args.duration <= 0:
            raise UsageError(f"--duration: expected seconds > 0, got {args.duration}")
        if not 0 <= args.nice <= 19:
            raise UsageError(f"--nice: expected 0 to 19, got {args.nice}")
        if args.nice:
            os.nice(args.nice)  # only ever lowers our own priority: needs no privileges
        if args.screenshot and args.duration is None:
            args.duration = 5.0
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and "QT_QPA_PLATFORM" not in os.environ:
            if not args.screenshot:
                raise UsageError("no display ($DISPLAY is unset): run on a desktop, over ssh -X, or under xvfb-run; "
                                 "or use --screenshot PNG to render without one")
            xvfb, display = _start_xvfb()
            os.environ["DISPLAY"] = display
        # The 3D view needs OpenGL through a real (or virtual) X server; Qt's offscreen platform cannot.
        os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "wayland")
        return _run(args)
    except UsageError as e:
        print(f"ratrig view: {e}", file=sys.stderr)
        return 2
    finally:
        if xvfb is not None:
            xvfb.terminate()
            try:
                xvfb.wait(5)
            except subprocess.TimeoutExpired:
                xvfb.kill()


def _run(args: argparse.Namespace) -> int:
    import zmq

    from viewer.model import ViewState
    from viewer.source import DirectoryError, LiveSource, directory_from_config, fetch_directory

    rig: RigConfig | None = None
    if args.config:
        try:
            rig = load_config(args.config)
        except ConfigError as e:
            raise UsageError(str(e)) from None

    ctx = zmq.Context()
    source = None
    replay = None
    try:
        session = None
        if args.replay:
            from viewer.replay import ReplayError, ReplaySource

            try:
                replay = ReplaySource(args.replay, frames=not args.no_frames)
            except ReplayError as e:
                raise UsageError(str(e)) from None
            rig = rig or replay.rig
            sent_calibration, sent_calibration_path = replay.calibration_dict, None
        else:
            net = rig.network if rig is not None else NetworkConfig()
            endpoint = args.connect or (directory_from_config(rig) if rig is not None else f"tcp://{net.connect_host}:{net.base_port}")
            log.info("asking the session directory at %s", endpoint)
            try:
                session = fetch_directory(ctx, endpoint, timeout_s=args.wait)
            except DirectoryError as e:
                raise UsageError(str(e)) from None
            rig = session.rig or rig
            sent_calibration = session.calibration
            sent_calibration_path = session.extra.get("calibration_path")
            source = LiveSource(ctx, session.endpoints, frames=not args.no_frames)
            log.info("subscribed to %d endpoints", len(set(session.endpoints.values())))

        names = rig.camera_names if rig is not None else None
        calibration = _load_calibration(args, rig, sent_calibration, sent_calibration_path)
        if names is None:
            if calibration is not None:
                names = list(calibration.names)
            elif session is not None:
                names = sorted(k.split("/", 1)[1] for k in session.endpoints if k.startswith("camera/"))
            else:
                names = list(replay.camera_names) if replay is not None else []
        sizes = {c.name: tuple(c.size) for c in calibration.cameras} if calibration is not None else {}
        if rig is not None:
            for cam in rig.cameras:
                sizes.setdefault(cam.name, (cam.width, cam.height))
        viewer_cfg = rig.viewer if rig is not None else ViewerConfig()
        corridor = rig.corridor if rig is not None else CorridorConfig()
        keypoints = rig.keypoints if rig is not None else list(KEYPOINTS)
        redraw_hz = args.redraw_hz or viewer_cfg.redraw_hz
        if not redraw_hz > 0:
            raise UsageError(f"--redraw-hz / viewer.redraw_hz: expected a rate > 0, got {redraw_hz}")

        state = ViewState(keypoints, calibration, trail_s=viewer_cfg.trail_s)
        return _run_qt(args, state, names, sizes, corridor, viewer_cfg, redraw_hz, source, replay, session)
    finally:
        if source is not None:
            source.close()
        if replay is not None:
            replay.close()
        ctx.term()


class TickPacer:
    """Deadlines of a loop that should run `hz` times a second, driven by a single-shot millisecond timer.

    A periodic QTimer takes whole milliseconds, so it cannot tick at 60 Hz (17 ms: 58.8 Hz, 16 ms:
    62.5 Hz); waits to absolute deadlines one period apart can, however each wait is rounded. A tick
    that overran its successor's deadline by less than a period (a long paint) is followed at once,
    and the loop stays on its grid; one more than a period behind drops the missed deadlines
    instead of bursting to catch up.

    Args:
        hz: ticks per second.
        start_s: the first deadline, on the clock the caller passes to `next_delay_ms`.
    """

    def __init__(self, hz: float, start_s: float) -> None:
        if not hz > 0:
            raise ValueError(f"tick rate: expected > 0 Hz, got {hz}")
        self.period_s = 1.0 / hz
        self.deadline_s = start_s - self.period_s  # the first call schedules `start_s`

    def next_delay_ms(self, now_s: float) -> int:
        """Advance to the next deadline; ms from `now_s` until it (0: due now)."""
        self.deadline_s += self.period_s
        if self.deadline_s < now_s - self.period_s:
            self.deadline_s = now_s
        return max(0, int(round(1000.0 * (self.deadline_s - now_s))))


def _cpu_s() -> float:
    """CPU seconds this process used so far, all threads (the software renderer's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _quantiles(values: Any) -> dict[str, float] | None:
    """Median, 95th percentile and maximum of some figures (None when there are none)."""
    import numpy as np

    if not values:
        return None
    a = np.asarray(values, np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max()), "n": int(len(a))}


def _run_qt(args, state, names, sizes, corridor, viewer_cfg, redraw_hz, source, replay, session) -> int:  # noqa: ANN001
    import pyqtgraph as pg
    import shiboken6
    from PySide6 import QtCore

    from viewer.window import ViewerWindow

    app = pg.mkQApp("ratrig viewer")
    title = f"ratrig viewer - {session.directory}" if session is not None else f"ratrig replay - {args.replay}"
    win = ViewerWindow(state, names, sizes, corridor, viewer_cfg.image_scale, args.screenshot_dir, title)
    win.session_is_local = bool(session is not None and session.is_local)
    controls = None
    if replay is not None:
        from viewer.window import ReplayControls

        controls = ReplayControls(win, replay)
    win.show()
    win.activateWindow()

    # Rates are also counted from the first data on, so start-up and waiting don't dilute them.
    ages: dict[str, deque] = {  # ms, per tick that drew / per tick
        "age": deque(maxlen=20_000), "behind": deque(maxlen=20_000), "late": deque(maxlen=20_000)}
    ticks = {"n": 0, "busy_s": 0.0, "t0": time.perf_counter(), "t_data": None, "n_data": 0, "redraws_at_data": 0,
             "current": 0, "cpu_at_data": 0.0, "renders_at_data": 0}
    pacer = TickPacer(redraw_hz, time.perf_counter())
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.setSingleShot(True)

    def tick() -> None:
        try:
            _tick()
        finally:  # an exception in one tick (printed by Qt) must not stop the display
            timer.start(pacer.next_delay_ms(time.perf_counter()))

    def _tick() -> None:
        t0 = time.perf_counter()
        late_ms = 1000.0 * (t0 - pacer.deadline_s)
        drained = True
        if source is not None:
            got = source.drain()
            drained = got.complete
            now = time.monotonic_ns()
            for packet in got.packets:
                state.add(packet, now)
            for frame in got.all_frames:  # every one: the panels show the frame their overlays belong to
                state.add(frame, now)
        elif replay is not None:
            replay.step(state)
            controls.update()
        drew = win.redraw()
        ticks["n"] += 1
        shown = win.shown_ns() if drew else None
        if shown is not None and state.frames:
            newest = max(int(f.capture_ns) for f in state.frames.values())
            ages["behind"].append((newest - shown) / 1e6)
            if win.session_is_local:
                ages["age"].append((time.monotonic_ns() - shown) / 1e6)
        if ticks["t_data"] is None and state.version > 0:
            ticks["t_data"], ticks["redraws_at_data"] = time.perf_counter(), win.redraws
            ticks["cpu_at_data"], ticks["renders_at_data"] = _cpu_s(), win.gl_view.renders
        if ticks["t_data"] is not None:
            ticks["n_data"] += 1
            ticks["current"] += drained and win.up_to_date()
            ages["late"].append(late_ms)
        ticks["busy_s"] += time.perf_counter() - t0

    timer.timeout.connect(tick)
    timer.start(pacer.next_delay_ms(time.perf_counter()))

    # Ctrl+C in the terminal and SIGTERM from a supervisor close the window cleanly; the timer gives
    # Python a chance to run the handler while Qt's loop is in C++.
    def stop(*_: Any) -> None:
        app.quit()

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)

    result = {"rc": 0}
    if args.duration is not None:
        def finish() -> None:
            tick()
            ticks["t_end"], ticks["cpu_at_end"] = time.perf_counter(), _cpu_s()  # the loop's end (not the PNG's)
            if args.screenshot:
                try:
                    path = win.save_screenshot(args.screenshot)
                    log.info("screenshot written to %s", path)
                except OSError as e:
                    log.error("%s", e)
                    result["rc"] = 1
                if args.layout_json:
                    Path(args.layout_json).write_text(json.dumps(win.layout_report(), indent=1))
            app.quit()

        QtCore.QTimer.singleShot(int(args.duration * 1000), finish)
    try:
        app.exec()
    finally:
        timer.stop()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    elapsed = time.perf_counter() - ticks["t0"]
    t_end, cpu_end = ticks.get("t_end", time.perf_counter()), ticks.get("cpu_at_end", _cpu_s())
    live_s = t_end - ticks["t_data"] if ticks["t_data"] is not None else 0.0
    cpu_live_s = cpu_end - ticks["cpu_at_data"] if ticks["t_data"] is not None else 0.0
    redraws_live = win.redraws - ticks["redraws_at_data"]
    if args.stats_json:
        counters = source.counters if source is not None else None
        figures = {
            "elapsed_s": elapsed,
            "ticks": ticks["n"],
            "tick_hz": ticks["n"] / elapsed if elapsed > 0 else 0.0,
            "redraws": win.redraws,
            "redraw_hz": win.redraws / elapsed if elapsed > 0 else 0.0,
            "mean_redraw_ms": 1000.0 * win.redraw_s_total / max(1, win.redraws),
            "live_s": live_s,
            "tick_hz_live": ticks["n_data"] / live_s if live_s > 0 else 0.0,
            "redraw_hz_live": (win.redraws - ticks["redraws_at_data"]) / live_s if live_s > 0 else 0.0,
            "mean_tick_ms": 1000.0 * ticks["busy_s"] / max(1, ticks["n"]),
            # A redraw is a tick that put something new on screen (pose, frame, 2D keypoints, mark or
            # traces); a tick with nothing new draws nothing. "up to date": the tick emptied the
            # sockets and left nothing undrawn (the status text, refreshed a few times a second, aside).
            "up_to_date_frac_live": ticks["current"] / ticks["n_data"] if ticks["n_data"] else 0.0,
            "tick_late_ms": _quantiles(ages["late"]),  # how long after its deadline each tick started
            "cpu_s_live": cpu_live_s,
            "cpu_frac_live": cpu_live_s / live_s if live_s > 0 else 0.0,
            "cpu_ms_per_redraw_live": 1000.0 * cpu_live_s / redraws_live if redraws_live > 0 else None,
            "gl_renders_live": win.gl_view.renders - ticks["renders_at_data"],
            "mean_gl_render_ms": 1000.0 * win.gl_view.render_s_total / max(1, win.gl_view.renders),
            "poses_seen": state.poses_seen,
            "frames_seen": state.frames_seen,
            "received": counters.received if counters else None,
            "malformed": counters.malformed if counters else None,
            "frames_skipped": source.frames_skipped if source is not None else None,
            "cpu_s": _cpu_s(),
            "niceness": os.nice(0),
            # what was on screen: its age (same machine only) and its lag behind the newest frame received
            "display_age_ms": _quantiles(ages["age"]),
            "behind_camera_ms": _quantiles(ages["behind"]),
        }
        Path(args.stats_json).write_text(json.dumps(figures, indent=1))
    # Free every X and GLX resource now, while the display is certainly there: left to the
    # interpreter's exit, they were freed after main() had stopped our own Xvfb, and Xlib's fatal
    # "X11 connection broke" error turned a good run into exit status 1.
    win.close()
    win.gl_view.release_gl()
    shiboken6.delete(win)
    app.shutdown()
    return result["rc"]


if __name__ == "__main__":
    sys.exit(main())
