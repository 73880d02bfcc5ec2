"""Recorder stage: record every stream of a session, replay it, reprocess it offline, export it.

Modules:
    process    the recorder process (`python -m recorder.process --config RIG --out SESSION`)
    writer     SessionWriter: segmented per-camera video + append-only tables, one writer thread per camera
    session    open_session(path) -> Session: the reader API (and repair of a killed session)
    tables     append-only CSV/JSONL with fsync; column layouts; torn-line handling
    video      codec choice and segment writer/reader over OpenCV
    replay     `ratrig replay SESSION`: publish recorded frames as the cameras would
    reprocess  `ratrig reprocess SESSION`: rerun DLC-Live, Anipose-style filters, aniposelib triangulation
    filters    median and Viterbi 2D filters (after anipose's filter_pose)
    align      group recorded frames of all cameras into frame sets by capture time
    export     `ratrig export SESSION --to anipose|dlc|nwb OUT`
    compare    compare the 3D poses of two sessions frame set by frame set

The folder layout is documented in FORMAT.md beside this file.
"""
from __future__ import annotations
