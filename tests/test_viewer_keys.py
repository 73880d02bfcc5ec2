"""Keyboard habits: R resets the 3D view, Space freezes the display (data keeps flowing into the state),
S and Ctrl+S write PNGs, mouse drag rotates and the wheel zooms. Run in a child process under Xvfb."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.helpers import run_qt_script_under_xvfb

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pyqtgraph as pg
    from PySide6 import QtCore, QtGui
    from PySide6.QtTest import QTest
    sys.path.insert(0, sys.argv[2])
    from viewer_stream import KNOWN_POSE_MM, stream_calibration
    from ratrig.config import CorridorConfig
    from ratrig.messages import Pose3DPacket
    from ratrig.skeleton import KEYPOINTS
    from viewer.model import ViewState
    from viewer.window import ViewerWindow

    K = len(KEYPOINTS)
    def pose(i):
        p = KNOWN_POSE_MM + [i, 0, 0]
        return Pose3DPacket(i, i * 33_000_000, KEYPOINTS, ("a",), p, p, np.zeros(K), np.zeros(K, np.int8), np.ones(K))
    app = pg.mkQApp()
    cal = stream_calibration()
    st = ViewState(KEYPOINTS, cal)
    win = ViewerWindow(st, cal.names, {}, CorridorConfig(), screenshot_dir=sys.argv[1])
    win.show()
    QTest.qWaitForWindowExposed(win)
    win.activateWindow()  # no window manager under Xvfb: shortcuts need an active window
    QTest.qWaitForWindowActive(win)
    def spin():
        for _ in range(10):
            app.processEvents()
    from PySide6.QtOpenGLWidgets import QOpenGLWidget
    out = {"active": win.isActiveWindow(), "opengl_widgets": len(win.findChildren(QOpenGLWidget))}
    st.add(pose(1)); win.redraw(); spin()
    out["drawn_1"] = win._drawn_pose.frame_set_index
    renders = win.gl_view.renders
    out["redrew_unchanged"] = win.redraw(); spin()
    out["renders_unchanged"] = win.gl_view.renders - renders
    out["up_to_date"] = win.up_to_date()
    QTest.keyClick(win, QtCore.Qt.Key.Key_Space); spin()
    st.add(pose(2)); win.redraw(); spin()
    out["paused"] = win.paused
    out["up_to_date_paused"] = win.up_to_date()
    out["drawn_while_paused"] = win._drawn_pose.frame_set_index
    out["state_while_paused"] = st.pose.frame_set_index
    QTest.keyClick(win, QtCore.Qt.Key.Key_Space); spin()
    out["drawn_after_resume"] = win._drawn_pose.frame_set_index
    home = dict(azimuth=win.gl_view.opts["azimuth"], elevation=win.gl_view.opts["elevation"], distance=win.gl_view.opts["distance"])
    gv = win.gl_view
    c = gv.rect().center()
    QTest.mousePress(gv, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, c)
    for dx in range(1, 40, 5):
        ev = QtGui.QMouseEvent(QtCore.QEvent.Type.MouseMove, QtCore.QPointF(c.x() + dx, c.y() + dx / 2),
                               QtCore.QPointF(gv.mapToGlobal(c)), QtCore.Qt.MouseButton.NoButton,
                               QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier)
        app.sendEvent(gv, ev)
    QTest.mouseRelease(gv, QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier, c)
    wheel = QtGui.QWheelEvent(QtCore.QPointF(c), QtCore.QPointF(gv.mapToGlobal(c)), QtCore.QPoint(0, 0),
                              QtCore.QPoint(0, 240), QtCore.Qt.MouseButton.NoButton,
                              QtCore.Qt.KeyboardModifier.NoModifier, QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    app.sendEvent(gv, wheel); spin()
    out["rotated"] = gv.opts["azimuth"] != home["azimuth"] or gv.opts["elevation"] != home["elevation"]
    out["zoomed"] = gv.opts["distance"] < home["distance"]
    QTest.keyClick(win, QtCore.Qt.Key.Key_R); spin()
    out["reset"] = all(abs(gv.opts[k] - v) < 1e-9 for k, v in home.items())
    QTest.keyClick(win, QtCore.Qt.Key.Key_S); spin()
    QTest.keyClick(win, QtCore.Qt.Key.Key_S, QtCore.Qt.KeyboardModifier.ControlModifier); spin()
    print(json.dumps(out))
""")


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (Debian package xvfb)")
def test_keys_and_mouse(tmp_path):
    shots = tmp_path / "shots"
    out = run_qt_script_under_xvfb(SCRIPT, tmp_path / "keys.py", (str(shots), str(REPO / "tests")))
    assert out["drawn_1"] == 1
    assert out["opengl_widgets"] == 0  # the 3D view renders offscreen: the window stays a raster window
    # Nothing new: nothing drawn, no 3D render; what is shown is current, until a pose arrives while paused.
    assert out["redrew_unchanged"] is False and out["renders_unchanged"] == 0 and out["up_to_date"] is True
    assert out["up_to_date_paused"] is False
    assert out["paused"] is True
    assert out["drawn_while_paused"] == 1 and out["state_while_paused"] == 2  # display frozen, data not
    assert out["drawn_after_resume"] == 2
    assert out["rotated"] and out["zoomed"], out
    assert out["reset"], out
    pngs = sorted(shots.glob("*.png"))
    assert len(pngs) == 2, pngs  # S and Ctrl+S
    import cv2

    assert all(cv2.imread(str(p)) is not None for p in pngs)
