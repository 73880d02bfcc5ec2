"""Lab analyses of recorded sessions: gait, cylinder, corridor and rotation, with quality first.

    from analysis.loader import load_session
    from analysis.pipeline import analyse_session
    session = load_session("sessions/rat07", {"lesion_side": "left", "test_type": "open_walk"})
    result = analyse_session(session)      # result.summary (JSON-ready), result.gait.strides (DataFrame)

Command line: `ratrig analyze SESSION... [--out DIR]` (`analysis.cli.main`).

Modules: `session` (the in-memory input: PoseSession, SessionMeta, Apparatus), `loader` (session
folders and Anipose CSVs), `quality`, `contacts` (stance/swing from paw height and speed), `bouts`
(straight walking), `gait` (strides, CatWalk parameters, step sequences, phases, asymmetry),
`cylinder`, `corridor`, `rotation`, `pipeline` (which analyses a test calls for), `outputs`
(CSV/JSON), `report` (HTML with figures), `cli`. Imports only the shared `ratrig` package.
"""
