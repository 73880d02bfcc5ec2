"""Fault suite, short case (the full table is `bench/faults.py`): SIGKILL the recorder of a live
recorded demo. The supervisor restarts it, recording goes on in a second part, 3D never stops, and
both parts open in `ratrig replay` and `ratrig analyze`."""
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


@pytest.mark.slow
def test_a_killed_recorder_is_restarted_and_every_part_opens(tmp_path):
    faults = load_faults()
    args = argparse.Namespace(fps=10.0, duration=16.0, settle_s=3.0, observe_s=6.0)
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
               TF_CPP_MIN_LOG_LEVEL="2")
    row = faults.run_case("recorder", args, tmp_path, env)
    assert "error" not in row, row
    assert row["demo_exit"] == 0
    assert row["restarts"].get("recorder") == 1, row
    assert row["parts"] == 2, row  # the crashed part and the one recorded after the restart
    assert row["opens"], row["opens_error"]
    # 3D does not depend on the recorder: it kept flowing through the kill
    assert row["gap_3d_s"] is not None and row["gap_3d_s"] < 2.0, row
    assert row["stage_back_s"] is not None, "the restarted recorder never published"
    # what was lost is the restart gap, not the session: most frames are in the two parts
    assert 0 < row["written"] <= row["published"]
    assert row["recorder_lost"] < 0.5 * row["published"], row
