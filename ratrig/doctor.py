"""`ratrig doctor`: checks the environment the way the install promises it (exactly one OpenCV,
numpy < 2, the named dependencies importable) and says what to do when it is not.

    python -m ratrig.doctor  (exit code 1 on a problem)
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import sys

OPENCV_DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                        "opencv-contrib-python-headless")
EXPECTED_OPENCV = "opencv-contrib-python-headless"


def installed_opencv() -> list[str]:
    """Names of the OpenCV distributions installed in this environment."""
    names = set()
    for dist in md.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name in OPENCV_DISTRIBUTIONS:
            names.add(name)
    return sorted(names)


def problems() -> list[str]:
    out: list[str] = []
    cv = installed_opencv()
    if cv != [EXPECTED_OPENCV]:
        extra = [n for n in cv if n != EXPECTED_OPENCV]
        out.append(
            f"expected exactly one OpenCV distribution ({EXPECTED_OPENCV}), found {cv or 'none'}; "
            f"fix: pip uninstall -y {' '.join(cv)} && pip install -c requirements/constraints.txt {EXPECTED_OPENCV}"
            if extra or not cv else ""
        )
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        out.append(f"numpy {numpy.__version__} is installed; deeplabcut-live 1.1 needs numpy<2 "
                   "(reinstall with -c requirements/constraints.txt)")
    for module in ("cv2", "zmq", "msgpack", "numba", "aniposelib", "pyqtgraph"):
        try:
            importlib.import_module(module)
        except Exception as e:  # report every broken import, whatever it raises
            out.append(f"cannot import {module}: {e}")
    try:
        import cv2

        if not hasattr(cv2, "aruco"):
            out.append("cv2 has no aruco module: install opencv-contrib-python-headless")
    except Exception:
        pass
    for dist in ("deeplabcut-live", "aniposelib"):
        try:
            md.version(dist)
        except md.PackageNotFoundError:
            out.append(f"{dist} is not installed: pip install --no-deps -r requirements/no-deps.txt")
    return [p for p in out if p]


def main(argv: list[str] | None = None) -> int:
    found = problems()
    for p in found:
        print(f"ratrig doctor: {p}", file=sys.stderr)
    if not found:
        print(f"ratrig doctor: OK ({', '.join(installed_opencv())}; numpy {importlib.import_module('numpy').__version__})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
