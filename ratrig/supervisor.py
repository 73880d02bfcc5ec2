"""Starts the stage processes of a session, restarts crashed ones with backoff, stops them cleanly.

Each stage runs as `python -m MODULE ARGS...` in its own process. Children get PR_SET_PDEATHSIG so
that a supervisor killed with SIGKILL does not leave orphans; a clean stop sends SIGTERM in the
order given, waits, then SIGKILLs whatever is left.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("ratrig.supervisor")


@dataclass(frozen=True)
class ProcessSpec:
    """One stage process. `restart`: restart after a crash (exit code != 0) with exponential backoff."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    restart: bool = False
    max_restarts: int = 5
    backoff_s: float = 0.5
    env: tuple[tuple[str, str], ...] = ()
    stop_timeout_s: float = 10.0  # SIGTERM -> SIGKILL grace; a recorder finishing its queue needs more
    no_restart_codes: tuple[int, ...] = ()  # exit codes a restart cannot help (bad config, disk full)


@dataclass
class ProcessState:
    spec: ProcessSpec
    popen: subprocess.Popen | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    next_start: float | None = None
    state: str = "new"  # new, running, backoff, exited, failed, stopped
    started_at: float | None = None

    def report(self) -> dict[str, Any]:
        return {"state": self.state, "restarts": self.restarts, "exit_codes": list(self.exit_codes),
                "pid": self.popen.pid if self.popen is not None else None}


def _pdeathsig(parent_pid: int):
    """A preexec_fn: the child gets SIGTERM when the supervisor dies, even by SIGKILL."""

    def set_it() -> None:  # runs in the child between fork and exec
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            return
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os._exit(1)

    return set_it


class Supervisor:
    """Owns the child processes of one session."""

    def __init__(self, log_dir: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.procs: dict[str, ProcessState] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / (name.replace("/", "_") + ".log")

    def add(self, spec: ProcessSpec, start: bool = True) -> ProcessState:
        if spec.name in self.procs:
            raise ValueError(f"process {spec.name!r} already supervised")
        st = ProcessState(spec)
        self.procs[spec.name] = st
        if start:
            self._start(st)
        return st

    def _start(self, st: ProcessState) -> None:
        spec = st.spec
        logf = self._logs.get(spec.name)
        if logf is None:
            logf = open(self.log_path(spec.name), "ab")
            self._logs[spec.name] = logf
        env = dict(self.env)
        env.update(dict(spec.env))
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [sys.executable, "-m", spec.module, *spec.args]
        logf.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
        logf.flush()
        st.popen = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, preexec_fn=_pdeathsig(os.getpid()))
        st.state = "running"
        st.started_at = time.monotonic()
        st.next_start = None
        log.debug("started %s pid %d", spec.name, st.popen.pid)

    def poll(self) -> list[str]:
        """Reap exited children, schedule or perform restarts. Returns lines worth reporting."""
        events: list[str] = []
        now = time.monotonic()
        for st in self.procs.values():
            if st.state == "running" and st.popen is not None:
                rc = st.popen.poll()
                if rc is None:
                    continue
                st.exit_codes.append(rc)
                if rc == 0:
                    st.state = "exited"
                    continue
                tail = self.tail_log(st.spec.name, 3)
                if st.spec.restart and rc not in st.spec.no_restart_codes and st.restarts < st.spec.max_restarts:
                    delay = st.spec.backoff_s * (2 ** st.restarts)
                    st.state = "backoff"
                    st.next_start = now + delay
                    events.append(f"{st.spec.name} exited with code {rc}; restarting in {delay:.1f} s ({tail})")
                else:
                    st.state = "failed"
                    events.append(f"{st.spec.name} exited with code {rc}; not restarted ({tail})")
            elif st.state == "backoff" and st.next_start is not None and now >= st.next_start:
                st.restarts += 1
                self._start(st)
        return events

    def tail_log(self, name: str, n: int = 3) -> str:
        try:
            lines = self.log_path(name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-n:])

    def alive(self, name: str) -> bool:
        st = self.procs[name]
        return st.popen is not None and st.popen.poll() is None

    def stop(self, names: Sequence[str] | None = None, timeout_s: float | None = None) -> None:
        """SIGTERM `names` (default all, in insertion order), wait, then SIGKILL what is left.

        The grace period is `timeout_s`, or each process's `spec.stop_timeout_s` when None.
        """
        targets = [self.procs[n] for n in (names if names is not None else list(self.procs))]
        for st in targets:
            if st.state == "backoff":
                st.state = "stopped"
            if st.popen is not None and st.popen.poll() is None:
                st.popen.send_signal(signal.SIGTERM)
        start = time.monotonic()
        for st in targets:
            if st.popen is None:
                continue
            grace = st.spec.stop_timeout_s if timeout_s is None else timeout_s
            remaining = max(0.0, start + grace - time.monotonic())
            try:
                rc = st.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.1f s; killing it", st.spec.name, grace)
                st.popen.kill()
                rc = st.popen.wait()
            if st.state == "running":
                st.exit_codes.append(rc)
                st.state = "stopped" if rc in (0, -signal.SIGTERM) else "failed"

    def close(self) -> None:
        self.stop()
        for f in self._logs.values():
            f.close()
        self._logs.clear()

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: st.report() for name, st in self.procs.items()}
