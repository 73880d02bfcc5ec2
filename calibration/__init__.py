"""Calibration stage: board -> detections -> checked multi-camera calibration -> world frame on the floor.

Modules: `board` (board.toml, drawing), `detect` (parallel board detection in videos / image folders),
`solve` (aniposelib start + joint refinement, determinism, degeneracy checks), `world` (floor frame,
frame changes, similarity alignment), `report` (numbers, verdict, figure), `capture` (recording
synchronised calibration videos from the live rig), and the commands `cli_board`, `cli_calibrate`,
`cli_set_floor` (each `main(argv) -> int`).
"""
