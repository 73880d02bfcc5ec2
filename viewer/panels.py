"""The four camera panels: one plain widget that paints each camera's image and overlays itself.

Each panel shows a frame letterboxed into its cell, the reprojected 3D skeleton (lines), the reprojected
keypoints (filled dots), the 2D detections (crosses) and the camera's name. The image is resized to the
cell's size on screen once per new frame (`viewer.model.fit_image`, already in Qt's native 32-bit pixel
layout), so painting it is a plain copy; a panel whose content changed repaints only its own cell.

Why not a pyqtgraph `GraphicsLayoutWidget` with a `ViewBox` and an `ImageItem` per camera: the panels
need no zoom or pan, and the scene-graph machinery (item traversal, per-item transforms, `ImageItem`'s
own image conversion at every new frame) cost several times the pixels' copy, in Python, 30 to 60
times a second.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from viewer.model import fit_image

BACKGROUND_RGB = (20, 20, 20)
SPACING_PX = 2


def letterbox(cell: tuple[int, int, int, int], frame_size_px: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) cell and (W, H) frame -> (x, y, w, h) integer rectangle of the frame, aspect kept,
    as large as fits, centred in the cell."""
    x, y, cw, ch = cell
    fw, fh = frame_size_px
    s = min(cw / fw, ch / fh)
    w, h = max(1, int(round(fw * s))), max(1, int(round(fh * s)))
    return x + (cw - w) // 2, y + (ch - h) // 2, w, h


def grid_cells(size_px: tuple[int, int], n: int, spacing_px: int = SPACING_PX) -> list[tuple[int, int, int, int]]:
    """(w, h) area, n panels -> n (x, y, w, h) cells, two columns, row by row."""
    cols = 1 if n <= 1 else 2
    rows = max(1, (n + cols - 1) // cols)
    w, h = size_px
    cw = max(1, (w - spacing_px * (cols - 1)) // cols)
    ch = max(1, (h - spacing_px * (rows - 1)) // rows)
    return [((i % cols) * (cw + spacing_px), (i // cols) * (ch + spacing_px), cw, ch) for i in range(n)]


class CameraPanel:
    """What one panel shows, and where (widget coordinates, logical px).

    Overlay positions are kept in full-frame pixels of the camera and mapped at paint time, so a
    resize needs no new data. `drawn_*` are the packets on display (the window compares them by
    identity to redraw only what changed).
    """

    DOT_PX = 4.5
    CROSS_PX = 6.5

    def __init__(self, name: str, size_px: tuple[int, int]) -> None:
        self.name = name
        self.size_px = (int(size_px[0]), int(size_px[1]))  # full frame (w, h)
        self.cell = (0, 0, 1, 1)  # (x, y, w, h) in the grid widget
        self.image_rect = (0, 0, 1, 1)  # where the frame is shown, inside the cell
        self.title_text = name
        self.qimage: QtGui.QImage | None = None
        self._pixels: np.ndarray | None = None  # the QImage borrows this buffer
        self._source: np.ndarray | None = None  # the full frame shown (re-fitted on resize)
        self._max_scale = 1.0
        self._dpr = 1.0
        self.segments = np.zeros((0, 2))  # (2E, 2) start/end pairs, frame px
        self.dots = np.zeros((0, 2))
        self.crosses = np.zeros((0, 2))
        self.dot_brushes: list[QtGui.QBrush] = []
        self.cross_pens: list[QtGui.QPen] = []
        self.drawn_frame: Any = None
        self.drawn_keypoints: Any = None
        self.drawn_pose: Any = None
        self.shown_ns: int | None = None  # capture time of the frame (or overlay) on display

    # -- geometry ------------------------------------------------------------------------------------

    def set_cell(self, cell: tuple[int, int, int, int], dpr: float) -> None:
        self.cell, self._dpr = cell, float(dpr)
        self.image_rect = letterbox(cell, self.size_px)
        if self._source is not None:
            self._fit()

    def frame_to_widget(self) -> tuple[float, float, float, float]:
        """(sx, ox, sy, oy): widget_x = sx * frame_x + ox, widget_y = sy * frame_y + oy."""
        x, y, w, h = self.image_rect
        return w / self.size_px[0], float(x), h / self.size_px[1], float(y)

    # -- content -------------------------------------------------------------------------------------

    def set_image(self, image: np.ndarray, max_scale: float = 1.0) -> None:
        """Show a full frame, resized once to the panel's on-screen size (at most `max_scale` times
        the frame's own size)."""
        h, w = image.shape[:2]
        if (w, h) != self.size_px:
            self.size_px = (w, h)
            self.image_rect = letterbox(self.cell, self.size_px)
        self._source, self._max_scale = image, max(0.01, float(max_scale))
        self._fit()

    def _fit(self) -> None:
        src = self._source
        h, w = src.shape[:2]
        rw, rh = self.image_rect[2:]
        target_w = min(int(round(rw * self._dpr)), int(w * self._max_scale))
        target_h = min(int(round(rh * self._dpr)), int(h * self._max_scale))
        px = fit_image(src, (max(1, target_w), max(1, target_h)))
        fmt = QtGui.QImage.Format.Format_RGB32
        if sys.byteorder != "little":  # Format_RGB32 is 0xffRRGGBB words: other bytes there
            px, fmt = np.ascontiguousarray(px[:, :, [2, 1, 0, 3]]), QtGui.QImage.Format.Format_RGBX8888
        self._pixels = px  # the QImage borrows this buffer
        ih, iw = px.shape[:2]
        img = QtGui.QImage(px.data, iw, ih, 4 * iw, fmt)
        img.setDevicePixelRatio(self._dpr)
        self.qimage = img

    def set_reprojection(self, uv: np.ndarray | None, brushes: list[QtGui.QBrush], segments: np.ndarray) -> None:
        """(N, 2) finite dots (frame px) with one brush each, (2E, 2) skeleton segment ends; None clears."""
        self.dots = np.zeros((0, 2)) if uv is None else np.asarray(uv, np.float64).reshape(-1, 2)
        self.dot_brushes = list(brushes) if uv is not None else []
        self.segments = np.asarray(segments, np.float64).reshape(-1, 2) if uv is not None else np.zeros((0, 2))

    def set_detections(self, xy: np.ndarray | None, pens: list[QtGui.QPen]) -> None:
        """(N, 2) finite 2D detections (frame px) with one pen each; None clears."""
        self.crosses = np.zeros((0, 2)) if xy is None else np.asarray(xy, np.float64).reshape(-1, 2)
        self.cross_pens = list(pens) if xy is not None else []

    def set_title(self, text: str) -> bool:
        """True if the title changed."""
        if text == self.title_text:
            return False
        self.title_text = text
        return True

    # -- painting ------------------------------------------------------------------------------------

    def paint(self, painter: QtGui.QPainter, styles: PanelStyles) -> None:
        x, y, w, h = self.cell
        painter.setClipRect(QtCore.QRect(x, y, w, h))
        painter.fillRect(QtCore.QRect(x, y, w, h), styles.background)
        if self.qimage is not None:
            ix, iy, iw, ih = self.image_rect
            img = self.qimage
            if abs(img.width() / self._dpr - iw) < 0.5 and abs(img.height() / self._dpr - ih) < 0.5:
                painter.drawImage(QtCore.QPoint(ix, iy), img)  # 1:1: a plain copy
            else:  # capped by max_scale: scaled up on screen
                painter.drawImage(QtCore.QRect(ix, iy, iw, ih), img)
        sx, ox, sy, oy = self.frame_to_widget()
        scale, offset = np.array([sx, sy]), np.array([ox, oy])
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        # Plain Python floats (tolist): building Qt points from numpy scalars costs several times more.
        if len(self.segments):
            seg = (self.segments * scale + offset).reshape(-1, 4).tolist()
            painter.setPen(styles.line_pen)
            painter.drawLines([QtCore.QLineF(x0, y0, x1, y1) for x0, y0, x1, y1 in seg])
        r, c = self.DOT_PX, self.CROSS_PX
        if len(self.dots):
            painter.setPen(styles.dot_pen)
            for (px, py), brush in zip((self.dots * scale + offset).tolist(), self.dot_brushes):
                painter.setBrush(brush)
                painter.drawEllipse(QtCore.QPointF(px, py), r, r)
        if len(self.crosses):
            painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            for (px, py), pen in zip((self.crosses * scale + offset).tolist(), self.cross_pens):
                painter.setPen(pen)
                painter.drawLines([QtCore.QLineF(px - c, py, px + c, py), QtCore.QLineF(px, py - c, px, py + c)])
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
        ix, iy = self.image_rect[:2]
        box = styles.metrics.boundingRect(self.title_text).adjusted(-3, -1, 3, 1)
        box.moveTopLeft(QtCore.QPoint(ix + 4, iy + 4))
        painter.fillRect(box, styles.title_fill)
        painter.setPen(styles.title_pen)
        painter.drawText(box, QtCore.Qt.AlignmentFlag.AlignCenter, self.title_text)


class PanelStyles:
    """Pens, brushes and the font metrics the panels paint with (made once)."""

    def __init__(self, font: QtGui.QFont) -> None:
        self.background = QtGui.QColor(*BACKGROUND_RGB)
        self.line_pen = QtGui.QPen(QtGui.QColor(255, 255, 255, 150), 1.0)
        self.dot_pen = QtGui.QPen(QtGui.QColor(255, 255, 255, 200), 1.0)
        self.title_fill = QtGui.QColor(0, 0, 0, 120)
        self.title_pen = QtGui.QPen(QtGui.QColor(230, 230, 230))
        self.metrics = QtGui.QFontMetrics(font)


class CameraGrid(QtWidgets.QWidget):
    """Up to four camera panels in a 2 x 2 grid (one widget, one paint pass over the changed cells).

    Args:
        names: panels in order.
        sizes: full-frame (w, h) px per camera (frames refine them).
    """

    def __init__(self, names: Sequence[str], sizes: dict[str, tuple[int, int]], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.panels: dict[str, CameraPanel] = {n: CameraPanel(n, sizes.get(n, (640, 480))) for n in names}
        self.styles = PanelStyles(self.font())
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent, True)  # we paint every pixel
        self.setMinimumSize(160, 120)

    def sizeHint(self) -> QtCore.QSize:  # noqa: N802 (Qt's name)
        return QtCore.QSize(700, 540)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802 (Qt's name)
        cells = grid_cells((self.width(), self.height()), len(self.panels))
        for panel, cell in zip(self.panels.values(), cells):
            panel.set_cell(cell, self.devicePixelRatioF())
        super().resizeEvent(event)

    def refresh(self, panel: CameraPanel) -> None:
        """Schedule a repaint of `panel`'s cell only."""
        self.update(QtCore.QRect(*panel.cell))

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 (Qt's name)
        painter = QtGui.QPainter(self)
        area = event.rect()
        painter.fillRect(area, self.styles.background)  # spacing between the cells
        for panel in self.panels.values():
            if area.intersects(QtCore.QRect(*panel.cell)):
                panel.paint(painter, self.styles)
        painter.end()

    def image_to_window(self, name: str, window: QtWidgets.QWidget) -> list[float]:
        """[sx, ox, sy, oy]: window_x = sx * image_x + ox, window_y = sy * image_y + oy (full-frame px)."""
        sx, ox, sy, oy = self.panels[name].frame_to_widget()
        origin = self.mapTo(window, QtCore.QPoint(0, 0))
        return [sx, ox + origin.x(), sy, oy + origin.y()]
