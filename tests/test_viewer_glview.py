"""The 3D view renders offscreen and shows the result as a plain image: it draws what the GL items say
where pyqtgraph's camera puts it, renders again only when the scene changed, and follows resizes.
Run in a child process under Xvfb (the software OpenGL renderer is enough)."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.helpers import run_qt_script_under_xvfb

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json
    import pyqtgraph as pg
    import pyqtgraph.opengl as gl
    from PySide6 import QtWidgets
    from PySide6.QtOpenGLWidgets import QOpenGLWidget
    from PySide6.QtTest import QTest
    from viewer.glview import OffscreenGLView

    app = pg.mkQApp()
    host = QtWidgets.QWidget()
    lay = QtWidgets.QVBoxLayout(host)
    lay.setContentsMargins(0, 0, 0, 0)
    view = OffscreenGLView()
    lay.addWidget(view)
    view.setBackgroundColor((0, 0, 0))
    view.setCameraPosition(distance=10.0, elevation=90.0, azimuth=0.0)  # looking straight down
    dot = gl.GLScatterPlotItem(pos=[[0.0, 0.0, 0.0]], color=(1.0, 0.0, 0.0, 1.0), size=24, pxMode=True)
    view.addItem(dot)
    # A static item (like the corridor): rendered into the background once per camera position.
    post = gl.GLScatterPlotItem(pos=[[-2.0, -1.5, 0.0]], color=(0.0, 1.0, 0.0, 1.0), size=24, pxMode=True)
    view.addItem(post)
    view.set_static([post])
    host.resize(200, 150)
    host.show()
    QTest.qWaitForWindowExposed(host)
    def spin():
        for _ in range(5):
            app.processEvents()
    def px(x, y):
        c = host.grab().toImage().pixelColor(x, y)  # the window's own pixels: what is on screen
        return [c.red(), c.green(), c.blue()]
    spin()
    out = {"opengl_widgets": len(host.findChildren(QOpenGLWidget))}
    out["centre"], out["corner"] = px(100, 75), px(5, 5)
    r0 = view.renders
    view.repaint(); spin()  # a repaint with an unchanged scene reuses the image
    out["renders_on_repaint"] = view.renders - r0
    dot.setData(pos=[[2.0, 1.5, 0.0]]); spin()  # a changed item renders again (off-centre both ways)
    out["renders_on_change"] = view.renders - r0
    out["centre_after_move"] = px(100, 75)
    import numpy as np
    def project(p):  # world -> widget px through pyqtgraph's own matrices
        region = (0, 0, view.deviceWidth(), view.deviceHeight())
        m = np.array(view.projectionMatrix(region, region).data()).reshape(4, 4).T @ np.array(view.viewMatrix().data()).reshape(4, 4).T
        clip = m @ [*p, 1.0]
        return int(round((clip[0] / clip[3] + 1) / 2 * view.width())), int(round((1 - clip[1] / clip[3]) / 2 * view.height()))
    out["moved_to"] = px(*project((2.0, 1.5, 0.0)))
    out["static_at"] = px(*project((-2.0, -1.5, 0.0)))
    old = project((-2.0, -1.5, 0.0))
    view.setCameraPosition(distance=7.0); spin()  # the camera moved: the background is rendered again
    out["static_after_zoom"] = px(*project((-2.0, -1.5, 0.0)))
    out["static_old_place"] = px(*old)
    post.hide(); spin()
    out["static_hidden"] = px(*project((-2.0, -1.5, 0.0)))
    dot.setData(pos=[[0.0, 0.0, 0.0]])
    host.resize(320, 240); spin()
    out["size_after_resize"] = [view.grabFramebuffer().width(), view.grabFramebuffer().height()]
    out["centre_after_resize"] = px(160, 120)
    print(json.dumps(out))
""")


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (Debian package xvfb)")
def test_offscreen_gl_view_draws_renders_on_change_and_follows_resizes(tmp_path):
    out = run_qt_script_under_xvfb(SCRIPT, tmp_path / "glview.py", screen="800x600x24")
    # No QOpenGLWidget: a window holding one is composed through OpenGL at every repaint.
    assert out["opengl_widgets"] == 0
    red = lambda rgb: rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60  # noqa: E731
    assert red(out["centre"]) and out["corner"] == [0, 0, 0], out
    assert out["renders_on_repaint"] == 0, out
    assert out["renders_on_change"] == 1, out
    assert not red(out["centre_after_move"]) and red(out["moved_to"]), out
    green = lambda rgb: rgb[1] > 200 and rgb[0] < 60 and rgb[2] < 60  # noqa: E731
    assert green(out["static_at"]), out
    assert green(out["static_after_zoom"]) and out["static_old_place"] == [0, 0, 0], out
    assert out["static_hidden"] == [0, 0, 0], out
    assert out["size_after_resize"] == [320, 240]
    assert red(out["centre_after_resize"]), out
