"""The rule language: parsing, edge triggering, hold durations, cooldown, safety."""
from __future__ import annotations

import numpy as np
import pytest

from events.rules import RuleEngine, RuleError, RuleSpec, parse_condition, parse_rule_specs
from ratrig.skeleton import KEYPOINTS

DT = 33_334_000  # a little over 1/30 s, so 9 frames are >= 0.3 s
NOSE = KEYPOINTS.index("nose")


def frames(nose_xyz):
    """(T, 3) nose positions -> (T, K, 3) poses with other keypoints at the origin."""
    out = np.zeros((len(nose_xyz), len(KEYPOINTS), 3))
    out[:, NOSE] = nose_xyz
    return out


def run(engine, poses):
    events = []
    for k, p in enumerate(poses):
        events += engine.feed(k * DT, p, k)
    return events


def test_crossing_fires_once_per_crossing():
    x = np.concatenate([np.linspace(700, 900, 20), np.linspace(900, 700, 20), np.linspace(700, 900, 20)])
    poses = frames(np.stack([x, np.zeros_like(x), np.full_like(x, 60)], axis=1))
    events = run(RuleEngine([RuleSpec("far_end", "nose.x > 800 mm")], KEYPOINTS, clock=lambda: 1), poses)
    assert [e.name for e in events] == ["far_end", "far_end"]
    assert all(e.subject == "nose" and e.position_mm[0] > 800 for e in events)
    first = events[0].frame_set_index
    assert x[first] > 800 and x[first - 1] <= 800


def test_hold_duration_and_cooldown():
    z = np.array([50] * 5 + [160] * 5 + [50] * 3 + [160] * 15 + [50] * 3 + [160] * 15, float)
    poses = frames(np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=1))
    rearing = RuleSpec("rearing", "nose.z > 15 cm for 0.3 s")
    events = run(RuleEngine([rearing], KEYPOINTS), poses)
    # the first 5-frame (0.17 s) rear is too short; the two 15-frame rears fire 0.3 s in
    assert [e.frame_set_index for e in events] == [13 + 9, 31 + 9]
    assert events[0].extra["onset_ns"] == 13 * DT
    cooled = run(RuleEngine([RuleSpec("rearing", "nose.z > 150 for 300 ms", cooldown_ms=2000)], KEYPOINTS), poses)
    assert [e.frame_set_index for e in cooled] == [22]


def test_speed_distance_logic_and_nan():
    kp = list(KEYPOINTS)
    cond, hold, subject = parse_condition(
        "speed(nose) > 0.2 m/s and not (distance(nose, tail_base) < 150 mm) or nose.z >= 1 m", kp)
    assert hold == 0 and subject == NOSE
    eng = RuleEngine([RuleSpec("fast", "speed(nose) > 200 mm/s")], kp)
    slow = frames(np.stack([np.arange(10) * 2.0, np.zeros(10), np.zeros(10)], axis=1))  # 60 mm/s
    assert run(eng, slow) == []
    eng = RuleEngine([RuleSpec("fast", "speed(nose) > 200 mm/s")], kp)
    fast = frames(np.stack([np.arange(10) * 20.0, np.zeros(10), np.zeros(10)], axis=1))  # 600 mm/s
    assert len(run(eng, fast)) == 1
    eng = RuleEngine([RuleSpec("low", "nose.z < 100")], kp)
    unseen = frames(np.full((5, 3), np.nan))
    assert run(eng, unseen) == []  # NaN never satisfies a comparison


@pytest.mark.parametrize("text, message", [
    ("nose.x > 1 m/s", "compares a length with a speed"),
    ("snout.x > 3", "unknown keypoint 'snout'"),
    ("nose.w > 3", "expected x, y or z"),
    ("nose.x >", "unexpected end"),
    ("nose.x > 3 for 2 h", "expected 's' or 'ms'"),
    ("__import__('os').system('ls')", "unexpected character"),
    ("nose.x > 3 nose.y < 2", "unexpected 'nose'"),
    ("3 > 2", "names no keypoint"),
    ("", "expected a condition"),
])
def test_bad_rules_are_rejected_with_a_column(text, message):
    with pytest.raises(RuleError, match=message):
        parse_condition(text, KEYPOINTS)


def test_rule_specs_validation_names_the_key():
    ok = parse_rule_specs([{"name": "rearing", "when": "nose.z > 150 mm for 0.3 s", "cooldown_ms": 500}], KEYPOINTS)
    assert ok == [RuleSpec("rearing", "nose.z > 150 mm for 0.3 s", 500.0)]
    with pytest.raises(RuleError, match=r"events\.rules\[0\]\.name: 'touchdown' is reserved"):
        parse_rule_specs([{"name": "touchdown", "when": "nose.z > 1"}], KEYPOINTS)
    with pytest.raises(RuleError, match=r"events\.rules\[1\]\.when: unknown keypoint 'snout'"):
        parse_rule_specs([{"name": "a", "when": "nose.z > 1"}, {"name": "b", "when": "snout.z > 1"}], KEYPOINTS)
    with pytest.raises(RuleError, match=r"events\.rules\[0\]\.whn: unknown key"):
        parse_rule_specs([{"name": "a", "whn": "nose.z > 1"}], KEYPOINTS)
    with pytest.raises(RuleError, match=r"events\.rules\[1\]\.name: rule 'a' is defined twice"):
        parse_rule_specs([{"name": "a", "when": "nose.z > 1"}, {"name": "a", "when": "nose.z > 2"}], KEYPOINTS)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ALPHABET = st.sampled_from(list("nosexyz.()<>=,-_ 0123456789abdfmrt/") + ["nose", "speed(", "distance(", " and ",
                                                                            " or ", " not ", " for ", " mm", " s"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=25).map("".join))
def test_parser_fails_only_with_rule_errors(text):
    """Any text either parses into a condition that evaluates to a bool, or raises RuleError."""
    try:
        cond, hold_s, subject = parse_condition(text, KEYPOINTS)
    except RuleError:
        return
    assert hold_s >= 0 and 0 <= subject < len(KEYPOINTS)
    eng = RuleEngine([RuleSpec("r", text)], KEYPOINTS)
    for k in range(3):
        out = eng.feed(k * DT, np.random.default_rng(k).normal(0, 100, (len(KEYPOINTS), 3)), k)
        assert all(e.name == "r" for e in out)
