"""The session summary: a stable JSON contract that scripts and CI read.

Keys (a stage that did not run leaves its keys out rather than writing zeros):

    ratrig_version, duration_s, config
    cameras.<name>.{captured, published, received, dropped, fps, inferred, skipped, restarts, failed}
    latency_ms.{transport, capture_to_2d, capture_to_3d, capture_to_event, capture_to_behaviour}.{p50, p99}
    fusion.{frame_sets, fps}
    behaviour.{frame_sets, fps, segmenter, fit_s}                ([behaviour] enabled only)
    accuracy.pose2d_error_px.{median, p95}                       (synthetic rig only)
    accuracy.pose3d_error_mm.{raw, filtered}.{median, p95}       (synthetic rig only)
    accuracy.pose3d_coverage.{raw, filtered, n}                  (synthetic rig only: keypoint-moments the
                                                                 truth shows in >= 2 cameras; sampled moments)
    accuracy.pose3d_coverage_seen_by_1 / _seen_by_0 / _all_keypoints   (see synthetic/evaluate.py)
    events.touchdown.{precision, recall, timing_error_ms_median} (synthetic rig only)
    processes.<name>.{state, restarts, exit_codes}
    problems: [lines]

Definitions: `captured` counts frames the camera grabbed from t0; `published` those sent; `received`
those the first consumer (inference worker, or the probe without one) took off the wire; `dropped`
= captured - received. Transport latency (publish -> received) is measured by the probe, a consumer
that reads every frame the moment it arrives. Latency percentiles are per camera in the stages; the summary reports the
median of the per-camera p50s and the worst per-camera p99.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ratrig import __version__
from ratrig.config import RigConfig


def _combine(parts: list[Mapping[str, Any] | None]) -> dict[str, float] | None:
    parts = [p for p in parts if p]
    if not parts:
        return None
    return {"p50": round(float(np.median([p["p50"] for p in parts])), 3),
            "p99": round(float(max(p["p99"] for p in parts)), 3)}


def build_summary(
    rig: RigConfig,
    stats: Mapping[str, Mapping[str, Any]],
    processes: Mapping[str, Mapping[str, Any]],
    duration_s: float,
    config_path: str,
    events: list[str] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Newest stats per process -> the summary dict documented above."""
    out: dict[str, Any] = {"ratrig_version": __version__, "duration_s": round(duration_s, 3), "config": config_path}
    workers = {name: s for name, s in stats.items() if name.startswith("inference/")}
    probe = stats.get("probe")
    # `received` comes from the first real consumer (the inference workers) when they run, else the
    # probe; transport latency always from the probe, which reads frames as they arrive
    receivers = workers or ({"probe": probe} if probe is not None else {})
    cameras: dict[str, Any] = {}
    transport, to2d = [], []
    for cam in rig.camera_names:
        c: dict[str, Any] = {}
        cs = stats.get(f"camera/{cam}")
        if cs is not None:
            c["captured"] = int(cs.get("captured", 0))
            c["published"] = int(cs.get("published", 0))
            c["fps"] = float(cs.get("fps", 0.0))
            if cs.get("failed"):
                c["failed"] = cs["failed"]
        proc = processes.get(f"camera/{cam}")
        if proc is not None:
            c["restarts"] = int(proc.get("restarts", 0))
        for rs in receivers.values():
            per = rs.get("cameras", {}).get(cam)
            if per is None:
                continue
            c["received"] = int(per.get("received", 0))
            for key in ("inferred", "skipped"):
                if key in per:
                    c[key] = int(per[key])
            to2d.append(per.get("capture_to_2d_ms"))
        if probe is not None and cam in probe.get("cameras", {}):
            transport.append(probe["cameras"][cam].get("transport_ms"))
        elif receivers:
            for rs in receivers.values():
                per = rs.get("cameras", {}).get(cam)
                if per is not None:
                    transport.append(per.get("transport_ms") or per.get("transport_latency_ms"))
        if "captured" in c and "received" in c:
            c["dropped"] = max(0, c["captured"] - c["received"])
        cameras[cam] = c
    out["cameras"] = cameras

    latency: dict[str, Any] = {}
    for key, parts in (("transport", transport), ("capture_to_2d", to2d)):
        combined = _combine(parts)
        if combined:
            latency[key] = combined
    fusion = stats.get("fusion")
    if fusion is not None:
        if fusion.get("capture_to_3d_ms"):
            latency["capture_to_3d"] = _combine([fusion["capture_to_3d_ms"]])
        out["fusion"] = {"frame_sets": int(fusion.get("frame_sets", 0)), "fps": float(fusion.get("fps", 0.0))}
        for key in ("late", "views_used_mean"):
            if key in fusion:
                out["fusion"][key] = fusion[key]
    ev = stats.get("events")
    if ev is not None and ev.get("capture_to_event_ms_p50") is not None:
        latency["capture_to_event"] = {"p50": round(float(ev["capture_to_event_ms_p50"]), 3),
                                       "p99": round(float(ev["capture_to_event_ms_p99"]), 3)}
    beh = stats.get("behaviour")
    if beh is not None and beh.get("capture_to_behaviour_ms"):
        lat = beh["capture_to_behaviour_ms"]
        latency["capture_to_behaviour"] = {"p50": lat["p50"], "p99": lat["p99"]}
    if beh is not None:
        out["behaviour"] = {"frame_sets": int(beh.get("frames", 0)), "fps": float(beh.get("fps", 0.0)),
                            "segmenter": beh.get("segmenter"), "fit_s": beh.get("fit_s")}
    if latency:
        out["latency_ms"] = latency

    evaluator = stats.get("evaluator")
    if evaluator is not None:
        if evaluator.get("accuracy"):
            out["accuracy"] = dict(evaluator["accuracy"])
        if evaluator.get("events"):
            out["events"] = dict(evaluator["events"])
    if ev is not None and ev.get("events"):
        out.setdefault("events", {})["counts"] = dict(ev["events"])
    out["processes"] = {k: dict(v) for k, v in processes.items()}
    out["problems"] = list(events or [])
    if facts:
        out.update({k: v for k, v in facts.items() if k not in out})
    return out
