"""The reliability and security suite in one command, one summary table.

    python bench/reliability.py [--messages 100000] [--skip fuzz,faults,overload,auth,netmode]

Runs, one after the other: `bench/fuzz.py` (hostile messages into every subscriber stage),
`bench/faults.py` (SIGKILL / freeze one stage of a live recorded demo per case), `bench/overload.py`
(cameras faster than inference), the authentication and disk-full tests (pytest, real sockets,
tmpfs) and `bench/netmode.py` (two network namespaces, root). Each writes JSON; this prints one table
of what was measured against the goals of README "Reliability and security". Nothing is skipped
silently: a part that did not run says why. The soak (30 min) is not part of it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    t = time.monotonic()
    print(f"\n$ {' '.join(cmd)}", flush=True)
    try:
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    out = res.stdout + res.stderr
    print("\n".join(line for line in out.splitlines()[-25:] if not line.startswith(("I0000", "WARNING: All"))))
    print(f"({time.monotonic() - t:.0f} s, exit {res.returncode})", flush=True)
    return res.returncode, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--skip", default="", help="comma-separated parts to leave out")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
               TF_CPP_MIN_LOG_LEVEL="2")
    py = sys.executable
    rows: list[tuple[str, str, str, str]] = []  # (item, measured, goal, met)
    with tempfile.TemporaryDirectory(prefix="ratrig-reliability-") as tmp_s:
        tmp = Path(tmp_s)
        if "fuzz" not in skip:
            rc, _ = run([py, "bench/fuzz.py", "--messages", str(args.messages), "--json", str(tmp / "fuzz.json")],
                        env, 3600)
            if (tmp / "fuzz.json").exists():
                for r in json.loads((tmp / "fuzz.json").read_text())["stages"]:
                    if "error" in r:
                        rows.append((f"fuzz -> {r['stage']}", f"did not run: {r['error'][:60]}", "", "no"))
                        continue
                    ok = r["counted"] == r["sent"] and r["alive"]
                    rows.append((f"fuzz -> {r['stage']}", f"{r['counted']}/{r['sent']} counted, "
                                 f"{'alive' if r['alive'] else 'CRASHED'}, RSS +{r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB "
                                 f"(peak {r['rss_peak_mb']:.0f})", "all counted, 0 crashes", "yes" if ok else "no"))
            else:
                rows.append(("fuzz", f"exit {rc}, no figures", "", "no"))
        if "faults" not in skip:
            rc, _ = run([py, "bench/faults.py", "--json", str(tmp / "faults.json")], env, 3600)
            if (tmp / "faults.json").exists():
                for r in json.loads((tmp / "faults.json").read_text()):
                    name = "freeze camera 2 s" if r["case"] == "stall" else f"SIGKILL {r['case']}"
                    if "error" in r:
                        rows.append((name, f"did not run: {r['error'][:60]}", "", "no"))
                        continue
                    gap = r["gap_3d_s"]
                    lost_ok = r["recorder_lost"] == 0 or (r["case"] == "recorder" and (r["recorder_lost_s"] or 0) <= 1)
                    # a frame listed in two parts (the killed recorder's and its standby's) is a fault too
                    met = gap is not None and gap <= 2 and lost_ok and r.get("duplicates", 0) == 0 and r["opens"]
                    back = r.get("views_back_s") if r.get("views_back_s") is not None else r.get("stage_back_s")
                    rows.append((name, f"3D gap {gap if gap is None else round(gap, 2)} s, back "
                                 f"{back if back is None else round(back, 1)} s, recorder lost {r['recorder_lost']} "
                                 f"({r['recorder_lost_s']:.1f} s), dup {r.get('duplicates', 0)}, parts {r['parts']}, "
                                 f"{'taken over by its standby, ' if r.get('takeovers') else ''}opens {'yes' if r['opens'] else 'NO'}",
                                 "3D <= 2 s, lost 0 (own kill <= 1 s), opens", "yes" if met else "no"))
            else:
                rows.append(("faults", f"exit {rc}, no figures", "", "no"))
        if "overload" not in skip:
            rc, _ = run([py, "bench/overload.py", "--json", str(tmp / "overload.json")], env, 1200)
            if (tmp / "overload.json").exists():
                o = json.loads((tmp / "overload.json").read_text())
                p99 = [w["p99_ms"] for w in o["windows"]]
                grew = len(p99) > 1 and p99[-1] > 1.5 * p99[0]
                rows.append(("overload", f"{o['offered_over_inferred']:.1f}x offered/inferred, p99 per 10 s "
                             f"{'/'.join(f'{x:.0f}' for x in p99)} ms, skipped {o['skipped']}, recorder lost "
                             f"{o['recorder_lost']}", "p99 no growth, 0 lost", "yes" if not grew and o["recorder_lost"] == 0 else "no"))
            else:
                rows.append(("overload", f"exit {rc}, no figures", "", "no"))
        if "auth" not in skip:
            rc, out = run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/test_security.py",
                           "tests/test_network_mode.py", "tests/test_recorder_disk_full.py", "tests/test_clock_faults.py",
                           "tests/test_supervisor_standby.py", "tests/test_supervisor_standby_stages.py",
                           "tests/test_recorder_standby.py"],
                          env, 1200)
            m = re.search(r"(\d+) passed", out)
            f = re.search(r"(\d+) failed", out)
            s = re.search(r"(\d+) skipped", out)
            rows.append(("auth, network mode, disk full, clock tests",
                         f"{m.group(1) if m else 0} passed, {f.group(1) if f else 0} failed, {s.group(1) if s else 0} skipped",
                         "all pass", "yes" if rc == 0 and not s else "no"))
        if "netmode" not in skip:
            rc, out = run([py, "bench/netmode.py"], env, 1200)
            hosts = re.search(r"hosts: ([^;]+);", out)
            intr = re.findall(r"^(cam_\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s+(\d+)$", out, re.M)
            if rc == 0 and intr:
                got = sum(int(x[3]) for x in intr)
                pub = sum(int(x[2]) for x in intr)
                bad = sum(int(x[4]) for x in intr)
                rows.append(("network mode", f"{hosts.group(1) if hosts else '?'}: {got}/{pub} frames to the "
                             f"processing host, intruder {bad}", "intruder 0", "yes" if bad == 0 and got > 0 else "no"))
            else:
                rows.append(("network mode", f"exit {rc}: {out.strip().splitlines()[-1][:80] if out.strip() else ''}",
                             "", "no"))
    rows.append(("soak 30 min", "not run by this command", "RSS < 5 % growth", "not done"))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'item':<{w}}  {'met':<8} measured (goal)")
    for item, measured, goal, met in rows:
        print(f"{item:<{w}}  {met:<8} {measured}" + (f"  (goal: {goal})" if goal else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
