"""Fusion stage: synchronise the 2D keypoints of all cameras, triangulate online, filter in 3D.

Modules:
    sync         group per-camera 2D results into frame sets by capture time (pure, no I/O)
    triangulate  undistortion, likelihood-weighted DLT with outlier rejection (numba, batched)
    kalman       per-keypoint Kalman filter (decaying-velocity motion model) with gating, coasting,
                 forward prediction
    process      the fusion process: SUB 2D keypoints -> sync -> one compiled call per frame set
                 (prediction, triangulation, filter step: `fuse_kernel`) -> PUB 3D poses

Numba kernels are compiled with ``cache=True``: the first run of a fresh checkout compiles them
(a few seconds) and writes the cache beside the sources (``__pycache__``); set ``NUMBA_CACHE_DIR``
to a persistent, writable folder when the source tree is read-only or on CI.
"""
from __future__ import annotations
