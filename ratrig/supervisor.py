"""Starts the stage processes of a session, restarts crashed ones with backoff, stops them cleanly.

Each stage runs as `python -m MODULE ARGS...` in its own process. Children get PR_SET_PDEATHSIG so
that a supervisor killed with SIGKILL does not leave orphans; a clean stop sends SIGTERM in the
order given, waits, then SIGKILLs whatever is left.

Hot standby (`ProcessSpec.standby`): for a stage whose restart costs seconds (start-up, imports,
compiled kernels) the supervisor keeps a spare, `python -m MODULE ARGS... --standby`, that has done
all of that and connected its inputs but claims no output (`ratrig.standby`). When the stage
crashes, the spare gets the line `takeover` on its stdin the moment the crash is reaped and becomes
the stage (counted as a restart); a new spare starts `standby_delay_s` later. A spare that dies is
started again with backoff. Without a live spare a crash is handled as before (backoff restart).
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

from ratrig.standby import STANDBY_FLAG, TAKEOVER

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
    # keep a hot spare (`MODULE ARGS --standby`, see ratrig.standby) that takes over a crash at once;
    # only with restart=True. A new spare starts standby_delay_s after the process (and after each
    # takeover), so that it does not compete for the CPU with a start or a takeover.
    standby: bool = False
    standby_delay_s: float = 1.0


@dataclass
class ProcessState:
    spec: ProcessSpec
    popen: subprocess.Popen | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    next_start: float | None = None
    state: str = "new"  # new, running, backoff, exited, failed, stopped
    started_at: float | None = None
    spare: subprocess.Popen | None = None  # the hot standby, if spec.standby
    spare_next_start: float | None = None
    spare_failures: int = 0  # spares that died while standing by
    takeovers: int = 0

    def report(self) -> dict[str, Any]:
        out = {"state": self.state, "restarts": self.restarts, "exit_codes": list(self.exit_codes),
               "pid": self.popen.pid if self.popen is not None else None}
        if self.spec.standby:
            out["takeovers"] = self.takeovers
            out["standby_pid"] = self.spare.pid if self.spare is not None else None
        return out


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

    def __init__(self, log_dir: str | os.PathLike[str], env: dict[str, str] | None = None,
                 start_standbys: bool = True) -> None:
        """`start_standbys=False`: no spare starts until `start_standbys()` (a session arms them once
        its consumer stages are up, so that spares do not slow their start)."""
        self.log_dir = Path(log_dir)
        self.standbys_started = start_standbys
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.procs: dict[str, ProcessState] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._retired: list[subprocess.Popen] = []  # spares told to stop, not reaped yet

    def log_path(self, name: str) -> Path:
        return self.log_dir / (name.replace("/", "_") + ".log")

    def add(self, spec: ProcessSpec, start: bool = True) -> ProcessState:
        if spec.name in self.procs:
            raise ValueError(f"process {spec.name!r} already supervised")
        st = ProcessState(spec)
        self.procs[spec.name] = st
        if start:
            self._start(st)
            if spec.standby and spec.restart and self.standbys_started:
                st.spare_next_start = time.monotonic() + spec.standby_delay_s
        return st

    def start_standbys(self) -> None:
        """Start the spares of every stage with `spec.standby` (once; at the next poll)."""
        if self.standbys_started:
            return
        self.standbys_started = True
        now = time.monotonic()
        for st in self.procs.values():
            if st.spec.standby and st.spec.restart and st.state in ("running", "backoff") and st.spare is None:
                st.spare_next_start = now

    def _popen(self, spec: ProcessSpec, standby: bool) -> subprocess.Popen:
        logf = self._logs.get(spec.name)
        if logf is None:
            logf = open(self.log_path(spec.name), "ab")
            self._logs[spec.name] = logf
        env = dict(self.env)
        env.update(dict(spec.env))
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [sys.executable, "-m", spec.module, *spec.args, *((STANDBY_FLAG,) if standby else ())]
        popen = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                 stdin=subprocess.PIPE if standby else subprocess.DEVNULL,
                                 env=env, preexec_fn=_pdeathsig(os.getpid()))
        what = "standby" if standby else "start"
        logf.write(f"\n=== {what} {time.strftime('%H:%M:%S')} pid {popen.pid}: {' '.join(cmd)}\n".encode())
        logf.flush()
        log.debug("%s %s pid %d", what, spec.name, popen.pid)
        return popen

    def _start(self, st: ProcessState) -> None:
        st.popen = self._popen(st.spec, standby=False)
        st.state = "running"
        st.started_at = time.monotonic()
        st.next_start = None

    def _take_over(self, st: ProcessState, now: float) -> subprocess.Popen | None:
        """Hand the stage to its spare, if one is alive. Returns the spare that took over, or None."""
        spare = st.spare
        if spare is None or spare.poll() is not None or spare.stdin is None:
            return None  # a dead spare is reaped (and restarted) by _poll_spare
        try:
            spare.stdin.write(TAKEOVER)
            spare.stdin.close()  # the line stays readable in the pipe; then EOF, which it no longer reads
        except OSError:  # it died just now
            return None
        st.spare = None
        st.popen = spare
        st.state = "running"
        st.started_at = now
        st.restarts += 1
        st.takeovers += 1
        st.spare_next_start = now + st.spec.standby_delay_s
        return spare

    def _poll_spare(self, st: ProcessState, now: float, events: list[str]) -> None:
        """Reap a spare that died while standing by; start one when it is due."""
        spec = st.spec
        if st.spare is not None:
            rc = st.spare.poll()
            if rc is None:
                return
            st.spare = None
            st.spare_failures += 1
            if rc in spec.no_restart_codes or st.spare_failures > spec.max_restarts:
                st.spare_next_start = None
                events.append(f"{spec.name}: its standby exited with code {rc}; no more standbys "
                              f"({self.tail_log(spec.name, 3)})")
                return
            delay = spec.backoff_s * (2 ** (st.spare_failures - 1))
            st.spare_next_start = now + delay
            events.append(f"{spec.name}: its standby exited with code {rc}; another in {delay:.1f} s "
                          f"({self.tail_log(spec.name, 3)})")
        elif st.spare_next_start is not None and now >= st.spare_next_start and st.state in ("running", "backoff"):
            st.spare_next_start = None
            st.spare = self._popen(spec, standby=True)

    def _retire_spare(self, st: ProcessState) -> None:
        """The stage will not be restarted: its spare goes (SIGTERM; reaped later)."""
        st.spare_next_start = None
        if st.spare is not None:
            if st.spare.poll() is None:
                st.spare.send_signal(signal.SIGTERM)
            self._retired.append(st.spare)
            st.spare = None

    def poll(self) -> list[str]:
        """Reap exited children, hand crashes to spares or schedule restarts. Returns lines worth reporting."""
        events: list[str] = []
        now = time.monotonic()
        self._retired = [p for p in self._retired if p.poll() is None]
        for st in self.procs.values():
            if st.state == "running" and st.popen is not None:
                rc = st.popen.poll()
                if rc is not None:
                    st.exit_codes.append(rc)
                    if rc == 0:
                        st.state = "exited"
                        self._retire_spare(st)
                    elif st.spec.restart and rc not in st.spec.no_restart_codes and st.restarts < st.spec.max_restarts:
                        spare = self._take_over(st, now)
                        tail = self.tail_log(st.spec.name, 3)
                        if spare is not None:
                            events.append(f"{st.spec.name} exited with code {rc}; its hot standby "
                                          f"(pid {spare.pid}) took over ({tail})")
                        else:
                            delay = st.spec.backoff_s * (2 ** st.restarts)
                            st.state = "backoff"
                            st.next_start = now + delay
                            events.append(f"{st.spec.name} exited with code {rc}; restarting in {delay:.1f} s ({tail})")
                    else:
                        st.state = "failed"
                        self._retire_spare(st)
                        events.append(f"{st.spec.name} exited with code {rc}; not restarted "
                                      f"({self.tail_log(st.spec.name, 3)})")
            elif st.state == "backoff" and st.next_start is not None and now >= st.next_start:
                st.restarts += 1
                self._start(st)
            if st.spec.standby and st.spec.restart:
                self._poll_spare(st, now, events)
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
        """SIGTERM `names` (default all, in insertion order) and their spares, wait, then SIGKILL what
        is left.

        The grace period is `timeout_s`, or each process's `spec.stop_timeout_s` when None.
        """
        targets = [self.procs[n] for n in (names if names is not None else list(self.procs))]
        spares: list[tuple[ProcessState, subprocess.Popen]] = []
        for st in targets:
            if st.state == "backoff":
                st.state = "stopped"
            st.spare_next_start = None
            signalled = [st.popen]
            if st.spare is not None:
                spares.append((st, st.spare))
                signalled.append(st.spare)
                st.spare = None
            for p in signalled:
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        start = time.monotonic()
        for st in targets:
            if st.popen is None:
                continue
            grace = st.spec.stop_timeout_s if timeout_s is None else timeout_s
            rc = self._wait(st.spec.name, st.popen, start + grace, grace)
            if st.state == "running":
                st.exit_codes.append(rc)
                st.state = "stopped" if rc in (0, -signal.SIGTERM) else "failed"
        for st, spare in spares:
            grace = st.spec.stop_timeout_s if timeout_s is None else timeout_s
            self._wait(st.spec.name + " (standby)", spare, start + grace, grace)
        if names is None:
            for p in self._retired:
                self._wait("a retired standby", p, time.monotonic() + 5.0, 5.0)
            self._retired.clear()

    @staticmethod
    def _wait(what: str, popen: subprocess.Popen, deadline: float, grace: float) -> int:
        try:
            return popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.1f s; killing it", what, grace)
            popen.kill()
            return popen.wait()

    def close(self) -> None:
        self.stop()
        for st in self.procs.values():
            if st.popen is not None and st.popen.stdin is not None and not st.popen.stdin.closed:
                st.popen.stdin.close()
        for f in self._logs.values():
            f.close()
        self._logs.clear()

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: st.report() for name, st in self.procs.items()}
