"""Dependencies point one way: each package is imported in a fresh interpreter with the modules it
must not use blocked; importing also has no side effects (no sockets, threads or log handlers)."""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.helpers import PYTHON, REPO

MODEL_FRAMEWORKS = ["tensorflow", "torch", "dlclive", "jax"]
QT = ["PySide6", "pyqtgraph", "PyQt5", "PyQt6"]
STAGES = ["acquisition", "inference", "fusion", "events", "viewer", "recorder", "calibration", "analysis", "synthetic"]

CASES = [
    # (module, blocked)
    ("ratrig.config", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.messages", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.transport", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.camera", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.supervisor", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.summary", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.cli", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.cli._session", STAGES + MODEL_FRAMEWORKS + QT),
    ("ratrig.cli.batch", STAGES + MODEL_FRAMEWORKS + QT + ["dask", "distributed", "dask_jobqueue"]),
    ("acquisition.capture", MODEL_FRAMEWORKS + QT + ["inference", "fusion", "viewer", "synthetic"]),
    ("fusion.process", ["tensorflow", "torch", "dlclive"] + QT + ["inference", "viewer", "acquisition"]),
    ("events.process", MODEL_FRAMEWORKS + QT + ["inference", "viewer", "acquisition"]),
    ("recorder.process", MODEL_FRAMEWORKS + QT + ["viewer"]),
    ("recorder.triangulate", MODEL_FRAMEWORKS + QT + ["viewer", "inference", "acquisition"]),
    ("inference.worker", QT + ["fusion", "viewer", "acquisition"]),
    ("calibration.solve", MODEL_FRAMEWORKS + QT + ["viewer", "inference"]),
    ("analysis.cli", MODEL_FRAMEWORKS + QT + ["viewer", "inference"]),
    ("analysis.behaviour.process", MODEL_FRAMEWORKS + QT + ["viewer", "inference", "acquisition", "fusion",
                                                              "recorder", "synthetic"]),
]

PROBE = textwrap.dedent(
    """
    import sys, threading, logging, importlib
    blocked = {blocked!r}
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ImportError(f"{{name}} is blocked for {module}")
            return None
    sys.meta_path.insert(0, Blocker())
    threads = threading.active_count()
    handlers = len(logging.getLogger().handlers)
    importlib.import_module({module!r})
    assert threading.active_count() == threads, "importing started a thread"
    assert len(logging.getLogger().handlers) == handlers, "importing configured logging"
    print("ok")
    """
)


@pytest.mark.parametrize("module, blocked", CASES, ids=[c[0] for c in CASES])
def test_import_boundary(module, blocked):
    code = PROBE.format(module=module, blocked=blocked)
    res = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


def test_viewer_is_the_only_qt_importer():
    """No other package's source mentions Qt."""
    offenders = []
    for pkg in ["ratrig"] + [s for s in STAGES if s != "viewer"]:
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            if any(f"import {q}" in text or f"from {q}" in text for q in QT):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders
