"""ratrig: real-time multi-camera 3D pose tracking for rats.

The shared package: command line, configuration, wire messages, clock, camera model and process
supervisor. Every stage (acquisition, inference, fusion, events, viewer, recorder, calibration,
analysis) may import it; it imports no stage.
"""
from __future__ import annotations

__version__ = "0.1.0"
