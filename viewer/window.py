"""The viewer window (Qt): 3D corridor view, four camera panels, paw traces and a status bar.

It draws a `viewer.model.ViewState`; it never talks to sockets itself. Each camera panel shows the
frame that its overlays (2D detections, reprojected 3D pose) were computed from, so the keypoints sit
on the rat of that image however far the pipeline lags; the status bar says how old that is.

Keys: R resets the 3D view, Space pauses the display (never the pipeline: the sockets keep being
drained), S / Ctrl+S saves a PNG of the whole window. Mouse in the 3D view: left-drag rotates,
middle-drag (or Ctrl+left) pans, wheel zooms (pyqtgraph's GLViewWidget habits).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pyqtgraph.opengl as gl
from OpenGL import GL
from PySide6 import QtCore, QtGui, QtWidgets

from ratrig.config import CorridorConfig
from ratrig.skeleton import PAWS
from viewer.glview import OffscreenGLView
from viewer.model import (
    PanelContent,
    ViewState,
    confidence_alpha,
    corridor_geometry,
    keypoint_colors,
    quad_mesh,
    segment_vertex_colors,
    segment_vertices,
    skeleton_index_pairs,
)
from viewer.panels import CameraGrid, CameraPanel

PAW_COLORS = {p: tuple(int(c) for c in keypoint_colors([p])[0]) for p in PAWS}
FLOOR_RGBA = (0.22, 0.22, 0.25, 1.0)
WALL_RGBA = (0.55, 0.65, 0.8, 0.07)
EDGE_RGBA = (0.6, 0.7, 0.85, 0.8)
STATUS_HZ = 4.0


def _no_depth() -> dict:
    """GL state for flat overlays: alpha blending, no depth test (so they write no depth either).

    The framebuffer's own alpha must stay 1: Qt composites a QOpenGLWidget with that alpha, and a
    plain glBlendFunc leaves a*a + (1 - a) there, which lets the widget background bleed through
    (wrong colours on screen and in screenshots).
    """
    return {GL.GL_DEPTH_TEST: False, GL.GL_BLEND: True, GL.GL_CULL_FACE: False,
            "glBlendFuncSeparate": (GL.GL_SRC_ALPHA, GL.GL_ONE_MINUS_SRC_ALPHA, GL.GL_ONE, GL.GL_ONE_MINUS_SRC_ALPHA)}


def _rgba(rgb: Sequence[int], alpha: float = 1.0) -> tuple[float, float, float, float]:
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0, float(alpha))


class StyleCache:
    """Pens and brushes reused across redraws.

    pyqtgraph's scatter symbol atlas is keyed by the pen/brush *object*: a fresh mkPen per spot per
    redraw renders a new symbol every time and grows the atlas without bound.
    """

    def __init__(self) -> None:
        self._pens: dict[tuple, QtGui.QPen] = {}
        self._brushes: dict[tuple, QtGui.QBrush] = {}
        self._keypoint_styles: dict[tuple, list] = {}

    def keypoint_styles(self, kind: str, names: Sequence[str], alpha: np.ndarray) -> list:
        """One pen ("pen") or brush ("brush") per keypoint, coloured by name, faded by `alpha`.

        The same few combinations come back 30-60 times a second per camera: looked up whole.
        """
        alpha_255 = np.round(255 * np.asarray(alpha, np.float64)).astype(np.int64)
        key = (kind, tuple(names), alpha_255.tobytes())
        styles = self._keypoint_styles.get(key)
        if styles is None:
            if len(self._keypoint_styles) > 1024:  # many distinct faded patterns: start over
                self._keypoint_styles.clear()
            make = self.pen if kind == "pen" else self.brush
            styles = [make(rgb, a / 255.0) for rgb, a in zip(keypoint_colors(names), alpha_255.tolist())]
            self._keypoint_styles[key] = styles
        return styles

    def pen(self, rgb: Sequence[int], alpha: float = 1.0, width: float = 2.0) -> QtGui.QPen:
        key = (int(rgb[0]), int(rgb[1]), int(rgb[2]), int(round(255 * alpha)), float(width))
        if key not in self._pens:
            self._pens[key] = pg.mkPen(key[:4], width=width)
        return self._pens[key]

    def brush(self, rgb: Sequence[int], alpha: float = 1.0) -> QtGui.QBrush:
        key = (int(rgb[0]), int(rgb[1]), int(rgb[2]), int(round(255 * alpha)))
        if key not in self._brushes:
            self._brushes[key] = pg.mkBrush(key)
        return self._brushes[key]


class ViewerWindow(QtWidgets.QMainWindow):
    """The live/replay window. `state` is read at every `redraw()`; nothing here blocks.

    Args:
        state: what to draw.
        camera_names: panels, in order (at most four are shown).
        camera_sizes: full-frame (w, h) px per camera (from the calibration; refined by frames).
        corridor: floor and walls of the 3D view.
        image_scale: camera images are shown at most this fraction of their full size (and never
            larger than their panel on screen).
        screenshot_dir: where S / Ctrl+S writes PNGs.
        title: window title.
    """

    def __init__(
        self,
        state: ViewState,
        camera_names: Sequence[str],
        camera_sizes: dict[str, tuple[int, int]],
        corridor: CorridorConfig,
        image_scale: float = 0.5,
        screenshot_dir: str | Path = ".",
        title: str = "ratrig viewer",
    ) -> None:
        super().__init__()
        self.state = state
        self.image_scale = image_scale
        self.screenshot_dir = Path(screenshot_dir)
        self.corridor = corridor
        self.paused = False
        self.session_is_local = False  # True: the rig's monotonic clock is ours (show display latency)
        self.redraws = 0
        self.redraw_s_total = 0.0
        self.styles = StyleCache()
        self._drawn_traces = -1  # ViewState.trace_version the traces show
        self._drawn_version = -1  # ViewState.version fully drawn
        self._drawn_pose: Any = None
        self._drawn_marks: Any = None
        self._last_status = 0.0
        self._speed_top = 0.0
        self.on_pause_changed: Callable[[bool], None] | None = None
        self.setWindowTitle(title)
        self.resize(1600, 950)

        # 3D view --------------------------------------------------------------------------------
        self.gl_view = OffscreenGLView()
        self.gl_view.setBackgroundColor((12, 12, 16))
        self._build_corridor(corridor)
        self.skeleton = gl.GLLinePlotItem(mode="lines", width=3, antialias=True, glOptions="translucent")
        self.joints = gl.GLScatterPlotItem(size=14, pxMode=True, glOptions="translucent")
        self.trails = {
            paw: gl.GLLinePlotItem(mode="line_strip", width=2, antialias=True, glOptions="translucent") for paw in PAWS
        }
        # Paw placements lie on the floor: a depth-tested sprite would be half hidden by the floor
        # in front of it, so they are blended on top of the floor, before the rat.
        self.placements = gl.GLScatterPlotItem(size=9, pxMode=True, glOptions=_no_depth())
        for item in (self.placements, *self.trails.values(), self.skeleton, self.joints):
            self.gl_view.addItem(item)
        self.reset_view()

        # camera panels ----------------------------------------------------------------------------
        self.camera_view = CameraGrid(list(camera_names)[:4], camera_sizes)
        self.panels: dict[str, CameraPanel] = self.camera_view.panels

        # traces -----------------------------------------------------------------------------------
        self.trace_view = pg.GraphicsLayoutWidget()
        self.height_plot = self.trace_view.addPlot(row=0, col=0, title="paw height (mm)")
        self.speed_plot = self.trace_view.addPlot(row=0, col=1, title="body speed (mm/s)")
        for plot in (self.height_plot, self.speed_plot):
            plot.setXRange(-state.trace_s, 0.0, padding=0.01)
            plot.setLabel("bottom", "time (s)")
            plot.showGrid(x=True, y=True, alpha=0.25)
            # The axes draw the grid across the plot, so they repaint with every new trace; cached
            # as pixmaps that is a blit, not a replay of every tick, label and grid line.
            for side in ("left", "bottom"):
                plot.getAxis(side).setCacheMode(QtWidgets.QGraphicsItem.CacheMode.DeviceCoordinateCache)
            plot.setMouseEnabled(x=False, y=True)
        legend = self.height_plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        # Plain curve items (not `plot()`'s PlotDataItem wrappers): set 60 times a second, the
        # wrapper's bookkeeping cost more than the curves themselves.
        self.height_curves = {}
        for paw in PAWS:
            curve = pg.PlotCurveItem(pen=pg.mkPen(PAW_COLORS[paw], width=1.5), connect="finite")
            self.height_plot.addItem(curve)
            legend.addItem(curve, paw.replace("_paw", ""))
            self.height_curves[paw] = curve
        self.height_plot.setYRange(0, 60)
        self.touchdown_marks = pg.ScatterPlotItem(symbol="t", size=10, pen=None)  # down-pointing triangle
        self.liftoff_marks = pg.ScatterPlotItem(symbol="t1", size=10, pen=None)  # up-pointing triangle
        self.height_plot.addItem(self.touchdown_marks)
        self.height_plot.addItem(self.liftoff_marks)
        self.speed_curve = pg.PlotCurveItem(pen=pg.mkPen((220, 220, 220), width=1.5), connect="finite")
        self.speed_plot.addItem(self.speed_curve)

        # layout -----------------------------------------------------------------------------------
        top = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        top.addWidget(self.gl_view)
        top.addWidget(self.camera_view)
        top.setSizes([900, 700])
        main = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.trace_view)
        main.setSizes([680, 230])
        self.setCentralWidget(main)
        self.status_label = QtWidgets.QLabel("waiting for data")
        self.status_label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.process_label = QtWidgets.QLabel("")
        self.process_label.setStyleSheet("color: #999")
        status = QtWidgets.QWidget()
        lines = QtWidgets.QVBoxLayout(status)
        lines.setContentsMargins(4, 0, 4, 0)
        lines.setSpacing(0)
        lines.addWidget(self.status_label)
        lines.addWidget(self.process_label)
        self.statusBar().addWidget(status, 1)
        self.extra_status: Callable[[], str] | None = None

        # keys -------------------------------------------------------------------------------------
        self._shortcut(QtCore.Qt.Key.Key_R, self.reset_view)
        self._shortcut(QtCore.Qt.Key.Key_Space, self.toggle_pause)
        self._shortcut(QtCore.Qt.Key.Key_F, self.toggle_follow)
        self._shortcut(QtCore.Qt.Key.Key_S, self.save_screenshot_dialogless)
        self._shortcut(QtGui.QKeySequence.StandardKey.Save, self.save_screenshot_dialogless)

    # -- construction ------------------------------------------------------------------------------

    def _shortcut(self, key: Any, slot: Callable[[], Any]) -> None:
        sc = QtGui.QShortcut(QtGui.QKeySequence(key), self)
        sc.setContext(QtCore.Qt.ShortcutContext.WindowShortcut)
        sc.activated.connect(slot)

    def _build_corridor(self, c: CorridorConfig) -> None:
        geo = corridor_geometry(c.length_mm, c.width_mm, c.wall_height_mm)
        verts, faces = quad_mesh(geo["floor"][None])
        # No depth from the floor either: everything drawn is on or above it, and depth-tested sprites
        # of paws on the floor would otherwise be cut in half by the floor in front of them.
        self.floor = gl.GLMeshItem(vertexes=verts, faces=faces, color=FLOOR_RGBA, smooth=False, glOptions=_no_depth())
        verts, faces = quad_mesh(geo["walls"])
        # Clear walls: blended without depth test (so they write no depth), drawn before the rat. Both
        # walls stay evenly faint from any angle, and the rat behind one is never hidden or tinted.
        self.walls = gl.GLMeshItem(vertexes=verts, faces=faces, color=WALL_RGBA, smooth=False, glOptions=_no_depth())
        self.edges = gl.GLLinePlotItem(pos=geo["edges"], mode="lines", color=EDGE_RGBA, width=1, glOptions="translucent")
        for item in (self.floor, self.walls, self.edges):
            self.gl_view.addItem(item)
        self.gl_view.set_static([self.floor, self.walls, self.edges])  # rendered once per camera position

    # -- actions -----------------------------------------------------------------------------------

    def reset_view(self) -> None:
        """R: the default 3D camera, looking at the corridor centre from above one side."""
        c = self.corridor
        self.gl_view.opts["center"] = QtGui.QVector3D(0.0, 0.0, c.wall_height_mm * 0.2)
        # From the side (camera at -y), the whole corridor in the horizontal field of view.
        self.gl_view.setCameraPosition(distance=max(400.0, 0.95 * c.length_mm), elevation=25.0, azimuth=-90.0)
        self.follow = False

    def toggle_follow(self) -> None:
        """F: keep the 3D view centred on the rat (zoomed in) or go back to the whole corridor."""
        follow = not self.follow
        if follow:
            self.gl_view.setCameraPosition(distance=max(300.0, 0.3 * self.corridor.length_mm))
        else:
            self.reset_view()
        self.follow = follow
        self.statusBar().showMessage("following the rat (F)" if follow else "whole corridor (F)", 2000)

    def toggle_pause(self) -> None:
        """Space: freeze the display; the sockets keep being drained so nothing backs up."""
        self.paused = not self.paused
        if self.on_pause_changed is not None:
            self.on_pause_changed(self.paused)
        self.redraw(force=not self.paused)

    def save_screenshot_dialogless(self) -> Path:
        """S / Ctrl+S: a PNG of the whole window into `screenshot_dir`, named by the time."""
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / time.strftime("ratrig-%Y%m%d-%H%M%S.png")
        n = 1
        while path.exists():
            path = path.with_name(f"{path.stem.split('_')[0]}_{n}.png")
            n += 1
        self.save_screenshot(path)
        self.statusBar().showMessage(f"saved {path}", 4000)
        return path

    def save_screenshot(self, path: str | Path) -> Path:
        """Render and write a PNG of the whole window (3D view included). Raises OSError on failure."""
        path = Path(path)
        pixmap = self.grab()
        if pixmap.isNull() or not pixmap.save(str(path), "PNG"):
            raise OSError(f"could not write screenshot {path}")
        return path

    def layout_report(self) -> dict[str, Any]:
        """Where things are in the window, for checking screenshots: the 3D view's rectangle and its
        own view and projection matrices (column-major 4x4, pyqtgraph's), each panel's image->window map."""
        gv = self.gl_view
        tl = gv.mapTo(self, QtCore.QPoint(0, 0))
        region = (0, 0, gv.deviceWidth(), gv.deviceHeight())
        proj = gv.projectionMatrix(region, region)
        view = gv.viewMatrix()
        return {
            "window_size": [self.width(), self.height()],
            "gl": {
                "rect": [tl.x(), tl.y(), gv.width(), gv.height()],
                "view": [float(v) for v in view.data()],
                "projection": [float(v) for v in proj.data()],
            },
            "panels": {name: self.camera_view.image_to_window(name, self) for name in self.panels},
        }

    # -- drawing -----------------------------------------------------------------------------------

    def redraw(self, force: bool = False) -> bool:
        """Draw what changed since the last redraw; returns True if anything new was drawn.

        Every part follows its data: the 3D view every new pose, a camera panel the parts whose
        frame, 2D keypoints or pose changed, the traces every pose or mark. Only the status text is
        refreshed at most `STATUS_HZ` (text that changes 60 times a second cannot be read). A state
        unchanged since the last redraw costs nothing but that check.
        """
        if self.paused and not force:
            self.status_label.setText("PAUSED (Space): the display is frozen, the pipeline keeps running")
            return False
        now = time.perf_counter()
        t0 = now
        drew = False
        st = self.state
        version = st.version
        if force or version != self._drawn_version:
            pose = st.pose
            if pose is not self._drawn_pose or force:
                self._drawn_pose = pose
                self._draw_pose()
                drew = True
            marks_key = (len(st.marks), st.marks[-1] if st.marks else None)
            if marks_key != self._drawn_marks or force:
                self._drawn_marks = marks_key
                self._draw_marks()
                drew = True
            for panel in self.panels.values():
                if force:
                    panel.drawn_frame = panel.drawn_keypoints = panel.drawn_pose = False
                drew |= self._draw_camera(panel)
            if force or st.trace_version != self._drawn_traces:
                self._drawn_traces = st.trace_version
                self._draw_traces()
                drew = True
            self._drawn_version = version
        if force or now - self._last_status >= 1.0 / STATUS_HZ:
            self._last_status = now
            self._draw_status()
        if drew:
            self.redraws += 1
            self.redraw_s_total += time.perf_counter() - t0
        return drew

    def up_to_date(self) -> bool:
        """True when the window shows everything its state holds, the status text aside (a redraw
        draws every change; only a paused display falls behind)."""
        return not self.paused and self._drawn_version == self.state.version

    def _draw_pose(self) -> None:
        st = self.state
        pose = st.pose
        if pose is None:
            return
        names = tuple(pose.keypoint_names)
        pts = np.asarray(pose.filtered_mm, np.float64).reshape(-1, 3)
        if self.follow and np.isfinite(pts).all(axis=1).any():
            x_mm = float(np.nanmean(pts[:, 0]))
            self.gl_view.opts["center"] = QtGui.QVector3D(x_mm, 0.0, self.corridor.wall_height_mm * 0.2)
            self.gl_view.update()
        rgba = np.concatenate([keypoint_colors(names) / 255.0, confidence_alpha(pose.score)[:, None]], axis=1)
        ok = np.all(np.isfinite(pts), axis=1)
        self.joints.setData(pos=pts[ok] if ok.any() else np.zeros((0, 3)), color=rgba[ok])
        pairs = skeleton_index_pairs(names)
        seg = segment_vertices(pts, pairs)
        seg_rgba = segment_vertex_colors(rgba, pairs, pts)
        self.skeleton.setData(pos=seg if len(seg) else np.zeros((0, 3)), color=seg_rgba if len(seg) else (1, 1, 1, 0))
        for paw, track in st.paw_trails().items():
            item = self.trails[paw]
            if len(track) < 2:
                item.setData(pos=np.zeros((0, 3)))
                continue
            col = np.tile(_rgba(PAW_COLORS[paw]), (len(track), 1))
            col[:, 3] = np.linspace(0.1, 0.9, len(track))  # older = fainter
            item.setData(pos=track, color=col)

    def _draw_marks(self) -> None:
        """Touchdowns as discs on the floor, coloured by paw (the newest `max_marks` of them)."""
        marks = [m for m in self.state.marks if m.kind == "touchdown" and all(math.isfinite(v) for v in m.position_mm)]
        if marks:
            pos = np.array([[m.position_mm[0], m.position_mm[1], 0.0] for m in marks])
            col = np.array([_rgba(PAW_COLORS.get(m.paw, (255, 255, 255)), 0.8) for m in marks])
            self.placements.setData(pos=pos, color=col)
        else:
            self.placements.setData(pos=np.zeros((0, 3)))

    def _draw_camera(self, panel: CameraPanel) -> bool:
        """Draw what `ViewState.panel_content` says this panel shows; only the parts that changed."""
        st = self.state
        content: PanelContent = st.panel_content(panel.name)
        drew = False
        frame, kp, pose = content.frame, content.keypoints, content.pose
        if frame is not panel.drawn_frame:
            panel.drawn_frame = frame
            if frame is not None:
                panel.set_image(np.asarray(frame.image), self.image_scale)
            drew = True
        if kp is not panel.drawn_keypoints:
            panel.drawn_keypoints = kp
            drew = True
            if kp is not None:
                xy = np.asarray(kp.keypoints, np.float64)[:, :2]
                lik = np.asarray(kp.keypoints, np.float64)[:, 2]
                pens = self.styles.keypoint_styles("pen", kp.keypoint_names, confidence_alpha(lik))
                ok = np.all(np.isfinite(xy), axis=1)
                panel.set_detections(xy[ok], [pens[i] for i in np.flatnonzero(ok).tolist()])
            else:
                panel.set_detections(None, [])
        if pose is not panel.drawn_pose:
            panel.drawn_pose = pose
            drew = True
            uv = st.reprojection(panel.name, pose) if pose is not None else None
            if uv is not None:
                names = tuple(pose.keypoint_names)
                brushes = self.styles.keypoint_styles("brush", names, confidence_alpha(pose.score))
                ok = np.all(np.isfinite(uv), axis=1)
                panel.set_reprojection(uv[ok], [brushes[i] for i in np.flatnonzero(ok).tolist()],
                                       segment_vertices(uv, skeleton_index_pairs(names)))
            else:
                panel.set_reprojection(None, [], np.zeros((0, 2)))
        if drew:
            shown = frame if frame is not None else kp if kp is not None else pose
            panel.shown_ns = int(shown.capture_ns) if shown is not None else None
            panel.set_title(panel.name if content.matched else f"{panel.name} (newest frame, none for the pose)")
            self.camera_view.refresh(panel)
        return drew

    def _draw_traces(self) -> None:
        t, heights, speed = self.state.traces()
        for j, paw in enumerate(PAWS):
            self.height_curves[paw].setData(t, heights[:, j] if len(t) else np.zeros(0))
        self.speed_curve.setData(t, speed)
        # Fixed floor at 0 and a range that only grows in steps: an autoscaled axis makes sensor
        # noise on a still rat look like motion.
        top = float(np.nanmax(speed)) if np.isfinite(speed).any() else 0.0
        top = max(200.0, 100.0 * math.ceil(1.1 * top / 100.0))
        if top != self._speed_top:
            self._speed_top = top
            self.speed_plot.setYRange(0.0, top, padding=0)
        td: list[tuple[float, float, QtGui.QBrush]] = []
        lo: list[tuple[float, float, QtGui.QBrush]] = []
        for dt, h, m in self.state.trace_marks():
            spot = (dt, h, self.styles.brush(PAW_COLORS.get(m.paw, (255, 255, 255))))
            (lo if m.kind == "liftoff" else td).append(spot)
        for item, spots in ((self.touchdown_marks, td), (self.liftoff_marks, lo)):
            if spots:
                item.setData(x=[s[0] for s in spots], y=[s[1] for s in spots], brush=[s[2] for s in spots])
            else:
                item.setData([], [])

    def shown_ns(self) -> int | None:
        """Capture time of what is on display: the 3D pose's moment (the camera panels show the frames
        of that moment when they have them), else the newest camera panel's; None if nothing is."""
        if self.state.pose is not None:
            return int(self.state.pose.capture_ns)
        times = [p.shown_ns for p in self.panels.values() if p.shown_ns is not None]
        return max(times) if times else None

    def _draw_status(self) -> None:
        local_now = time.monotonic_ns() if self.session_is_local else None
        fields = self.state.status_fields(local_now, self.shown_ns())
        text = "   ".join(f"{k}: {v}" for k, v in fields) if fields else "waiting for data"
        if self.extra_status is not None:
            text = f"{self.extra_status()}   {text}"
        self.status_label.setText(text)
        self.process_label.setText(" | ".join(self.state.process_lines()))


class ReplayControls:
    """Play/pause, a time slider and a speed choice under the window, driving a `viewer.replay.ReplaySource`.

    Space (the window's display pause) pauses and resumes playback too.
    """

    SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

    def __init__(self, win: ViewerWindow, replay: Any) -> None:
        self.win = win
        self.replay = replay
        bar = QtWidgets.QToolBar("replay")
        bar.setMovable(False)
        win.addToolBar(QtCore.Qt.ToolBarArea.BottomToolBarArea, bar)
        self.play_button = QtWidgets.QPushButton("Pause")
        self.play_button.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.play_button.clicked.connect(lambda: self.set_playing(not self.replay.playing))
        bar.addWidget(self.play_button)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, max(1, int(round(replay.duration_s * 1000))))
        self.slider.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.slider.valueChanged.connect(self._slider_moved)
        bar.addWidget(self.slider)
        self.time_label = QtWidgets.QLabel()
        self.time_label.setMinimumWidth(150)
        bar.addWidget(self.time_label)
        self.speed_box = QtWidgets.QComboBox()
        self.speed_box.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        for s in self.SPEEDS:
            self.speed_box.addItem(f"{s:g}x", s)
        self.speed_box.setCurrentIndex(self.SPEEDS.index(1.0))
        self.speed_box.currentIndexChanged.connect(lambda i: setattr(self.replay, "speed", self.SPEEDS[i]))
        bar.addWidget(self.speed_box)
        win.on_pause_changed = lambda paused: self.set_playing(not paused)
        win.extra_status = lambda: f"replay {self.replay.path.name}"
        self.update()

    def set_playing(self, playing: bool) -> None:
        self.replay.set_playing(playing)
        if self.win.paused == playing:  # keep the display running while playing
            self.win.paused = not playing
        self.update()

    def _slider_moved(self, value: int) -> None:
        target = self.replay.start_ns + int(value) * 1_000_000
        if abs(target - self.replay.t_ns) >= 1_000_000:  # a user move, not our own update()
            self.replay.seek(target)
            self.replay.feed(self.win.state, self.replay.t_ns)
            self.win.redraw(force=True)
            self.update()

    def update(self) -> None:
        """Follow the cursor (slider signals blocked: this is not a user seek)."""
        r = self.replay
        self.slider.blockSignals(True)
        self.slider.setValue(int((r.t_ns - r.start_ns) // 1_000_000))
        self.slider.blockSignals(False)
        self.time_label.setText(f"{(r.t_ns - r.start_ns) / 1e9:7.2f} / {r.duration_s:.2f} s")
        self.play_button.setText("Pause" if r.playing else "Play")
