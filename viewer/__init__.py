"""The live viewer (`ratrig view`): the only package that imports Qt.

- `viewer.model`: what is shown, as plain data (no Qt): newest pose, trails, traces, status.
- `viewer.source`: the session directory client and the draining ZeroMQ subscriber (no Qt).
- `viewer.replay`: a recorded session as a stream with a time cursor (no Qt).
- `viewer.window`: the Qt window (pyqtgraph 3D view, camera panels, traces, status bar).
- `viewer.app`: the process, `main(argv) -> int`.
"""
