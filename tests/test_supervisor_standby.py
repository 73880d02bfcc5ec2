"""The supervisor's hot standby with real child processes (`tests/standby_stage.py`): a spare that
has started takes over a SIGKILLed process at once, a new spare follows, a dead spare is replaced,
and nothing changes where no restart would happen; stop ends spares too."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ratrig.supervisor import ProcessSpec, Supervisor
from tests.helpers import REPO


def lines(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [(w, int(p)) for w, p in (ln.split() for ln in log.read_text().splitlines() if ln.strip())]


def pump(sup: Supervisor, until, timeout_s: float = 15.0) -> list[str]:
    """sup.poll() every 20 ms until `until()` is true; the events it reported."""
    events: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events += sup.poll()
        if until():
            return events
        time.sleep(0.02)
    raise AssertionError(f"timed out; events so far: {events}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def sup(tmp_path):
    s = Supervisor(tmp_path / "logs", env=dict(os.environ, PYTHONPATH=str(REPO)))
    yield s
    s.close()


def stage(log: Path, **kw) -> ProcessSpec:
    args = ("--log", str(log), *kw.pop("args", ()))
    return ProcessSpec("stage", "tests.standby_stage", args, **{"backoff_s": 0.1, "standby_delay_s": 0.1, **kw})


def test_the_spare_takes_over_a_killed_process_and_a_new_spare_follows(sup, tmp_path):
    log = tmp_path / "steps"
    st = sup.add(stage(log, restart=True, standby=True))
    first = st.popen.pid
    pump(sup, lambda: ("standby", st.spare.pid if st.spare else -1) in lines(log) and ("run", first) in lines(log))
    spare = st.spare.pid
    assert ("run", spare) not in lines(log)  # standing by: it has not started the stage's work
    os.kill(first, signal.SIGKILL)
    events = pump(sup, lambda: ("run", spare) in lines(log))
    assert st.popen.pid == spare, "the spare became the process"
    assert st.state == "running" and st.restarts == 1 and st.takeovers == 1
    assert st.exit_codes == [-signal.SIGKILL]
    assert any("took over" in e and str(spare) in e for e in events), events
    # a fresh spare stands by again
    pump(sup, lambda: st.spare is not None and ("standby", st.spare.pid) in lines(log))
    second_spare = st.spare.pid
    assert second_spare not in (first, spare)
    rep = sup.report()["stage"]
    assert rep["pid"] == spare and rep["standby_pid"] == second_spare and rep["takeovers"] == 1
    # a clean stop ends the process and its spare; the spare never ran the stage
    sup.stop()
    assert not alive(spare) and not alive(second_spare)
    assert ("stop", spare) in lines(log) and ("standby-stop", second_spare) in lines(log)
    assert ("run", second_spare) not in lines(log)
    assert st.state == "stopped"


def test_a_spare_that_dies_is_replaced(sup, tmp_path):
    log = tmp_path / "steps"
    st = sup.add(stage(log, restart=True, standby=True))
    pump(sup, lambda: st.spare is not None and ("standby", st.spare.pid) in lines(log))
    dead = st.spare.pid
    os.kill(dead, signal.SIGKILL)
    events = pump(sup, lambda: st.spare is not None and st.spare.pid != dead and ("standby", st.spare.pid) in lines(log))
    assert any("standby exited with code -9" in e for e in events), events
    assert st.restarts == 0 and st.popen.poll() is None  # the process itself is untouched


def test_without_a_spare_ready_a_crash_is_restarted_as_before(sup, tmp_path):
    log = tmp_path / "steps"
    st = sup.add(stage(log, restart=True, standby=True, standby_delay_s=60.0))  # no spare for a minute
    first = st.popen.pid
    pump(sup, lambda: ("run", first) in lines(log))
    os.kill(first, signal.SIGKILL)
    events = pump(sup, lambda: st.popen.pid != first and ("run", st.popen.pid) in lines(log))
    assert any("restarting in" in e for e in events), events
    assert st.restarts == 1 and st.takeovers == 0


@pytest.mark.parametrize("how", ["no_restart_code", "restart_disabled", "clean_exit"])
def test_no_takeover_where_no_restart_would_happen(sup, tmp_path, how):
    log = tmp_path / "steps"
    code = 0 if how == "clean_exit" else 2
    spec = stage(log, restart=how != "restart_disabled", standby=True, no_restart_codes=(2,),
                 args=("--exit-after-s", "1.5", "--exit-code", str(code)))
    st = sup.add(spec)
    first = st.popen.pid
    pump(sup, lambda: st.state in ("failed", "exited"))
    assert st.exit_codes == [code]
    assert st.popen.pid == first and st.restarts == 0 and st.takeovers == 0
    assert st.spare is None
    # a spare stood by (unless restarts are off) and was sent away, never running the stage
    spares = [p for w, p in lines(log) if w == "standby"]
    assert len(spares) == (0 if how == "restart_disabled" else 1)
    pump(sup, lambda: all(("standby-stop", p) in lines(log) for p in spares))
    assert not any(w == "run" and p in spares for w, p in lines(log))
    for _ in range(5):  # and no new one is started
        sup.poll()
        time.sleep(0.05)
    assert st.spare is None


def test_spares_wait_until_the_session_arms_them(tmp_path):
    log = tmp_path / "steps"
    sup = Supervisor(tmp_path / "logs", env=dict(os.environ, PYTHONPATH=str(REPO)), start_standbys=False)
    try:
        st = sup.add(stage(log, restart=True, standby=True))
        first = st.popen.pid
        pump(sup, lambda: ("run", first) in lines(log))
        for _ in range(10):  # standby_delay_s is 0.1 s: it would be up by now if armed
            sup.poll()
            time.sleep(0.05)
        assert st.spare is None and not [p for w, p in lines(log) if w == "standby"]
        sup.start_standbys()
        pump(sup, lambda: st.spare is not None and ("standby", st.spare.pid) in lines(log))
    finally:
        sup.close()
    assert not alive(first)
