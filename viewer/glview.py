"""The 3D view as a plain (raster) widget that renders its OpenGL scene offscreen.

pyqtgraph's `GLViewWidget` is a `QOpenGLWidget`. Qt composes a window holding one through OpenGL on
every repaint: the whole window's backing store is uploaded as a texture and drawn, with the GL
widget's texture, into a GL back buffer that is then swapped. With a GPU that costs nothing; with
software OpenGL (Mesa llvmpipe: Xvfb, remote desktops, VMs, lab PCs without a GPU driver) it costs
more than drawing the scene itself and makes every repaint of any part of the window a full-window
repaint (measured under Xvfb + llvmpipe, 1600 x 950 window: repainting a 100 x 30 px label costs
11 ms CPU with an empty QOpenGLWidget in the window, 0.02 ms without). `OffscreenGLView` renders the same pyqtgraph GL items into a framebuffer object of an
offscreen context, reads the pixels back once per scene change and paints them as an image, so the
window stays a raster window: only the regions that changed are repainted and sent to the display.
It keeps pyqtgraph's camera, mouse and item API (`GLViewMixin`), and `QWidget.grab()` (screenshots)
sees the 3D view like any other widget.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from OpenGL import GL
from pyqtgraph.opengl.GLViewWidget import GLViewMixin
from PySide6 import QtCore, QtGui, QtOpenGL, QtWidgets

log = logging.getLogger(__name__)


class GLUnavailableError(RuntimeError):
    """No OpenGL context could be created for the 3D view (no GLX/EGL on this display)."""


class OffscreenGLView(GLViewMixin, QtWidgets.QWidget):
    """A `GLViewWidget` look-alike drawn through an offscreen OpenGL context.

    The scene is rendered only when something in it changed (an item's data, the camera, the size);
    other repaints (an overlapping widget, an expose) reuse the last image. `renders` counts the
    scene renders, `render_s_total` their wall time (render + read-back).
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None, **kwargs: Any) -> None:
        self._ctx: QtGui.QOpenGLContext | None = None
        self._surface: QtGui.QOffscreenSurface | None = None
        self._fbo: QtOpenGL.QOpenGLFramebufferObject | None = None
        self._bg_fbo: QtOpenGL.QOpenGLFramebufferObject | None = None  # the static items, rendered
        self._bg_key: tuple | None = None  # camera, size and visibility they were rendered for
        self._static: list[Any] = []
        self._image: QtGui.QImage | None = None
        self._pixels = np.zeros((0, 0, 4), np.uint8)  # the last render, top row first
        self._scene_dirty = True
        self.error: str | None = None  # why the 3D view cannot be drawn (no OpenGL), once known
        self.renders = 0
        self.render_s_total = 0.0
        super().__init__(parent, **kwargs)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.ClickFocus)
        # We paint every pixel ourselves: no background fill, no blending with the parent.
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)

    # -- what GLViewMixin and the GL items expect of a QOpenGLWidget ---------------------------------

    def isValid(self) -> bool:  # noqa: N802 (Qt's name)
        return self._ctx is not None

    def context(self) -> QtGui.QOpenGLContext | None:
        return self._ctx

    def makeCurrent(self) -> None:  # noqa: N802 (Qt's name)
        self._ensure_context()
        if not self._ctx.makeCurrent(self._surface):
            raise GLUnavailableError("could not make the 3D view's OpenGL context current")
        if self._fbo is not None:
            self._fbo.bind()

    def doneCurrent(self) -> None:  # noqa: N802 (Qt's name)
        if self._ctx is not None:
            self._ctx.doneCurrent()

    def setProjection(self, region: Any, viewport: Any) -> None:  # noqa: N802 (pyqtgraph's name)
        """pyqtgraph's projection, mirrored vertically: the image comes out of the framebuffer with
        its rows in QImage's order, so no flipped copy is needed. No item culls faces, so the mirrored
        winding changes nothing; `projectionMatrix()` (used for mapping points) stays pyqtgraph's."""
        flip = QtGui.QMatrix4x4()
        flip.scale(1.0, -1.0, 1.0)
        self._projectionStack.clear()
        self._projectionStack.append(flip * self.projectionMatrix(region, viewport))

    def update(self, *args: Any) -> None:
        """Schedule a repaint; called without arguments (by the GL items and the camera) it also
        marks the scene as changed, so the next paint renders it again."""
        if not args:
            self._scene_dirty = True
        super().update(*args)

    def grabFramebuffer(self) -> QtGui.QImage:  # noqa: N802 (Qt's name)
        """The current scene as an image (renders it if it changed)."""
        self._render_if_dirty()
        return self._image.copy() if self._image is not None else QtGui.QImage()

    def set_static(self, items: list[Any]) -> None:
        """Items whose pixels change only with the camera (the corridor): rendered once per camera
        position and size into a background that every render starts from. Call
        `invalidate_background()` after changing their data."""
        self._static = list(items)
        self.invalidate_background()

    def invalidate_background(self) -> None:
        self._bg_key = None
        self.update()

    def release_gl(self) -> None:
        """Free the framebuffer, the context and the offscreen surface now (the next paint would
        create them again). For an orderly exit while the display is still there."""
        if self._ctx is None:
            return
        if self._ctx.makeCurrent(self._surface):
            self._fbo = self._bg_fbo = None  # their destructors need the context current
            self._ctx.doneCurrent()
        self._fbo = self._bg_fbo = self._bg_key = None
        self._ctx.deleteLater()
        self._surface.destroy()
        self._surface.deleteLater()
        self._ctx = self._surface = None
        self._scene_dirty = True

    # -- rendering -----------------------------------------------------------------------------------

    def _ensure_context(self) -> None:
        if self._ctx is not None:
            return
        fmt = QtGui.QSurfaceFormat.defaultFormat()
        ctx = QtGui.QOpenGLContext(self)
        ctx.setFormat(fmt)
        if not ctx.create():
            raise GLUnavailableError("could not create an OpenGL context for the 3D view "
                                     "(the X server needs GLX, e.g. Mesa's software renderer)")
        surface = QtGui.QOffscreenSurface(None, self)
        surface.setFormat(ctx.format())
        surface.create()
        if not ctx.makeCurrent(surface):
            raise GLUnavailableError("could not make the 3D view's OpenGL context current on an offscreen surface")
        self._ctx, self._surface = ctx, surface
        self.initializeGL()  # GLViewMixin: initialises the items added so far

    def _device_size(self) -> tuple[int, int]:
        return max(1, self.deviceWidth()), max(1, self.deviceHeight())

    def _render_if_dirty(self) -> None:
        w, h = self._device_size()
        if not self._scene_dirty and self._image is not None and (self._image.width(), self._image.height()) == (w, h):
            return
        t0 = QtCore.QElapsedTimer()
        t0.start()
        self.makeCurrent()
        if self._fbo is None or (self._fbo.width(), self._fbo.height()) != (w, h):
            self._fbo = self._framebuffer(w, h)
            self._pixels = np.empty((h, w, 4), np.uint8)
        self._render_scene(w, h)
        self._fbo.bind()
        # BGRA bytes are QImage's native 32-bit layout (drawing it is a plain copy), and the scene
        # was rendered upside down (`setProjection`), so GL's bottom-up rows are QImage's top-down.
        GL.glPixelStorei(GL.GL_PACK_ALIGNMENT, 4)
        GL.glReadPixels(0, 0, w, h, GL.GL_BGRA, GL.GL_UNSIGNED_BYTE, self._pixels)
        self._fbo.release()
        self._image = QtGui.QImage(self._pixels.data, w, h, 4 * w, QtGui.QImage.Format.Format_RGB32)  # borrows it
        self._image.setDevicePixelRatio(self.devicePixelRatioF())
        self._scene_dirty = False
        self.renders += 1
        self.render_s_total += t0.nsecsElapsed() / 1e9

    @staticmethod
    def _framebuffer(w: int, h: int) -> QtOpenGL.QOpenGLFramebufferObject:
        return QtOpenGL.QOpenGLFramebufferObject(w, h, QtOpenGL.QOpenGLFramebufferObject.Attachment.CombinedDepthStencil)

    def _render_scene(self, w: int, h: int) -> None:
        """The whole scene into `_fbo`: the static items' background (rendered again only when the
        camera, the size or their visibility changed) copied in, the other items drawn over it.

        In software OpenGL the corridor's large blended floor and walls cost more to fill than the
        rat, its trails and marks together; copying their pixels costs a fraction of that. Only
        colour is copied (copying depth too cost more than drawing the corridor again): the other
        items are drawn on a cleared depth buffer, so nothing static can hide them.
        """
        region = (0, 0, w, h)
        static = [item for item in self.items if any(item is s for s in self._static)]
        if not static:
            self._fbo.bind()
            GL.glViewport(0, 0, w, h)
            self.paint(region=region, viewport=region)
            return
        key = (w, h, repr(sorted(self.opts.items())), tuple(item.visible() for item in static))
        if key != self._bg_key:
            if self._bg_fbo is None or (self._bg_fbo.width(), self._bg_fbo.height()) != (w, h):
                self._bg_fbo = self._framebuffer(w, h)
            self._bg_fbo.bind()
            GL.glViewport(0, 0, w, h)
            self._paint_items(static, region, clear=True)
            self._bg_key = key
        QtOpenGL.QOpenGLFramebufferObject.blitFramebuffer(self._fbo, self._bg_fbo, GL.GL_COLOR_BUFFER_BIT, GL.GL_NEAREST)
        self._fbo.bind()
        GL.glViewport(0, 0, w, h)
        GL.glClear(GL.GL_DEPTH_BUFFER_BIT)
        self._paint_items([item for item in self.items if not any(item is s for s in static)], region, clear=False)

    def _paint_items(self, items: list[Any], region: tuple[int, int, int, int], clear: bool) -> None:
        """GLViewMixin.paint for some of the items (in their usual order), optionally on a cleared buffer."""
        self.setProjection(region, region)
        self.setModelview()
        if clear:
            GL.glClearColor(*self.opts["bgcolor"])
            GL.glClear(GL.GL_DEPTH_BUFFER_BIT | GL.GL_COLOR_BUFFER_BIT)
        everything = self.items
        self.items = items
        try:
            self.drawItemTree()
        finally:
            self.items = everything

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        if self.error is None:
            try:
                self._render_if_dirty()
            except GLUnavailableError as e:  # said once, on screen and in the log; the rest of the window works
                self.error = str(e)
                log.error("3D view: %s", e)
        painter = QtGui.QPainter(self)
        if self.error is not None:
            painter.fillRect(self.rect(), QtGui.QColor(12, 12, 16))
            painter.setPen(QtGui.QColor(230, 120, 120))
            painter.drawText(self.rect().adjusted(10, 10, -10, -10), int(QtCore.Qt.TextFlag.TextWordWrap),
                             f"3D view unavailable: {self.error}")
        elif self._image is not None:
            painter.drawImage(QtCore.QPoint(0, 0), self._image)  # device px 1:1: a plain copy
        painter.end()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802 (Qt's name)
        self._scene_dirty = True
        super().resizeEvent(event)
