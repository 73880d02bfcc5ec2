"""Fault suite, short cases (the full table is `bench/faults.py`): SIGKILL the recorder, then the
fusion process, of a live recorded demo. Each is taken over by its hot standby: recording goes on
in a second part that starts where the killed recorder's part ends (no frame lost or listed twice),
3D comes back, and every part opens in `ratrig replay` and `ratrig analyze`."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import pytest

from tests.helpers import REPO


def load_faults():
    spec = importlib.util.spec_from_file_location("bench_faults", REPO / "bench" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_faults"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run_case(case: str, tmp_path) -> dict:
    faults = load_faults()
    args = argparse.Namespace(fps=10.0, duration=18.0, settle_s=5.0, observe_s=6.0)  # settle: the spares start with the cameras
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
               TF_CPP_MIN_LOG_LEVEL="2")
    row = faults.run_case(case, args, tmp_path, env)
    assert "error" not in row, row
    assert row["demo_exit"] == 0
    return row


@pytest.mark.slow
def test_a_killed_recorder_is_taken_over_and_every_part_opens(tmp_path):
    row = run_case("recorder", tmp_path)
    assert row["restarts"].get("recorder") == 1, row
    assert row["takeovers"].get("recorder") == 1, row  # by the hot standby, not a fresh start
    # the standby was there, holding memory, before the kill
    assert row["standby_cost"]["recorder"]["rss_mb"] > 0 and row["standby_cost"]["fusion"]["rss_mb"] > 0, row
    assert row["parts"] == 2, row  # the crashed part and the one recorded after the restart
    assert row["opens"], row["opens_error"]
    # 3D does not depend on the recorder: it kept flowing through the kill
    assert row["gap_3d_s"] is not None and row["gap_3d_s"] < 2.0, row
    assert row["stage_back_s"] is not None, "the restarted recorder never published"
    # the second part starts where the first ends: nothing listed twice, at most 1 s lost (the goal;
    # the standby's window normally leaves 0)
    assert row["duplicates"] == 0, row
    assert 0 < row["written"] <= row["published"]
    assert row["recorder_lost_s"] <= 1.0, row


@pytest.mark.slow
def test_a_killed_fusion_process_is_taken_over_and_3d_comes_back(tmp_path):
    row = run_case("fusion", tmp_path)
    assert row["restarts"].get("fusion") == 1 and row["takeovers"].get("fusion") == 1, row
    assert row["gap_3d_s"] is not None, "no 3D pose of a moment after the kill"
    assert row["pose3d_before_after"][1] > 0 and row["stage_back_s"] is not None, row
    # fusion is not the recorder: nothing is lost, one part
    assert row["parts"] == 1 and row["recorder_lost"] == 0 and row["duplicates"] == 0, row
    assert row["opens"], row["opens_error"]
