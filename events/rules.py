"""A tiny, safe rule language for triggers without code.

A rule is a name and a condition, e.g. in the rig TOML::

    [[events.rules]]
    name = "far_end"
    when = "nose.x > 800 mm"

    [[events.rules]]
    name = "rearing"
    when = "nose.z > 150 mm for 0.3 s"
    cooldown_ms = 1000

A rule fires once when its condition becomes true and has stayed true for the optional
``for`` duration (a rising edge: "nose.x > 800 mm" fires when the nose crosses x = 800 mm, not on
every frame beyond it); it re-arms when the condition is false again, and not before `cooldown_ms`
has passed since it fired. The event is published as ``event/<name>``; its subject and position are
those of the first keypoint the condition names.

Grammar (parsed here by a small recursive-descent parser; nothing is ever evaluated as Python)::

    rule       := expr [ "for" NUMBER ("s" | "ms") ]
    expr       := conj { "or" conj }
    conj       := neg { "and" neg }
    neg        := "not" neg | "(" expr ")" | comparison
    comparison := value ("<" | "<=" | ">" | ">=") value
    value      := [-]NUMBER [unit] | KEYPOINT "." ("x" | "y" | "z")
                | "speed" "(" KEYPOINT ")" | "distance" "(" KEYPOINT "," KEYPOINT ")"
    unit       := "mm" | "cm" | "m" | "mm/s" | "cm/s" | "m/s"

Positions and distances are lengths (mm), speed(kp) is a speed (mm/s, over the last 100 ms); both
sides of a comparison must have the same dimension (a bare number takes the other side's). A
comparison with an unseen (NaN) keypoint is false.
"""
from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ratrig.clock import now_ns
from ratrig.messages import EventPacket

RESERVED_NAMES = ("touchdown", "liftoff")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,63}")
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))|(?P<unit>mm/s|cm/s|m/s)(?![A-Za-z0-9_])"
    r"|(?P<op><=|>=|<|>)|(?P<punct>[().,])|(?P<word>[A-Za-z_][A-Za-z0-9_]*))"
)
_LENGTH_UNITS = {"mm": 1.0, "cm": 10.0, "m": 1000.0}
_SPEED_UNITS = {"mm/s": 1.0, "cm/s": 10.0, "m/s": 1000.0}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3}
_AXES = {"x": 0, "y": 1, "z": 2}
_KEYWORDS = {"and", "or", "not", "for", "speed", "distance"}
LENGTH, SPEED = "length", "speed"
SPEED_WINDOW_NS = 100_000_000


class RuleError(ValueError):
    """A rule that cannot be parsed or refers to something unknown; the message says where."""


@dataclass(frozen=True)
class _Frame:
    """What a condition is evaluated on: positions (K, 3) mm and speeds (K,) mm/s."""

    positions_mm: np.ndarray
    speeds_mm_s: np.ndarray


Value = Callable[[_Frame], float]
Condition = Callable[[_Frame], bool]


class _Parser:
    def __init__(self, text: str, keypoints: Sequence[str]) -> None:
        self.text = text
        self.keypoints = list(keypoints)
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN_RE.match(text, pos)
            if m is None or m.end() == pos:
                raise RuleError(f"unexpected character {text[pos:].lstrip()[:1]!r} at column {pos + 1}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0
        self.referenced: list[int] = []

    # token helpers
    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise RuleError("unexpected end of the rule")
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok[1] != value:
            raise RuleError(f"expected {value!r} at column {tok[2] + 1}, got {tok[1]!r}")

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == value

    # grammar
    def rule(self) -> tuple[Condition, float]:
        cond = self.expr()
        hold_s = 0.0
        if self.at("for"):
            self.take()
            kind, num, col = self.take()
            if kind != "num":
                raise RuleError(f"expected a duration after 'for' at column {col + 1}, got {num!r}")
            kind, unit, col = self.take()
            if unit not in _TIME_UNITS:
                raise RuleError(f"expected 's' or 'ms' at column {col + 1}, got {unit!r}")
            hold_s = float(num) * _TIME_UNITS[unit]
        tok = self.peek()
        if tok is not None:
            raise RuleError(f"unexpected {tok[1]!r} at column {tok[2] + 1}")
        return cond, hold_s

    def expr(self) -> Condition:
        parts = [self.conj()]
        while self.at("or"):
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else (lambda f, ps=tuple(parts): any(p(f) for p in ps))

    def conj(self) -> Condition:
        parts = [self.neg()]
        while self.at("and"):
            self.take()
            parts.append(self.neg())
        return parts[0] if len(parts) == 1 else (lambda f, ps=tuple(parts): all(p(f) for p in ps))

    def neg(self) -> Condition:
        if self.at("not"):
            self.take()
            inner = self.neg()
            return lambda f: not inner(f)
        if self.at("("):
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Condition:
        left, ldim = self.value()
        kind, op, col = self.take()
        if kind != "op":
            raise RuleError(f"expected a comparison (<, <=, >, >=) at column {col + 1}, got {op!r}")
        right, rdim = self.value()
        if ldim and rdim and ldim != rdim:
            raise RuleError(f"comparison at column {col + 1} compares a {ldim} with a {rdim}")
        cmp = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}[op]
        # NaN compares false with every operator: an unseen keypoint never satisfies a condition
        return lambda f: cmp(float(left(f)), float(right(f)))

    def keypoint(self) -> int:
        kind, name, col = self.take()
        if kind != "word" or name in _KEYWORDS:
            raise RuleError(f"expected a keypoint name at column {col + 1}, got {name!r}")
        if name not in self.keypoints:
            raise RuleError(f"unknown keypoint {name!r} at column {col + 1}; known: {self.keypoints}")
        k = self.keypoints.index(name)
        self.referenced.append(k)
        return k

    def value(self) -> tuple[Value, str | None]:
        tok = self.peek()
        if tok is None:
            raise RuleError("unexpected end of the rule, expected a value")
        kind, text, col = tok
        if kind == "num":
            self.take()
            number = float(text)
            nxt = self.peek()
            if nxt is not None and nxt[1] in _LENGTH_UNITS:
                self.take()
                v = number * _LENGTH_UNITS[nxt[1]]
                return (lambda f: v), LENGTH
            if nxt is not None and nxt[1] in _SPEED_UNITS:
                self.take()
                v = number * _SPEED_UNITS[nxt[1]]
                return (lambda f: v), SPEED
            return (lambda f: number), None
        if text == "speed":
            self.take()
            self.expect("(")
            k = self.keypoint()
            self.expect(")")
            return (lambda f: f.speeds_mm_s[k]), SPEED
        if text == "distance":
            self.take()
            self.expect("(")
            a = self.keypoint()
            self.expect(",")
            b = self.keypoint()
            self.expect(")")
            return (lambda f: float(np.linalg.norm(f.positions_mm[a] - f.positions_mm[b]))), LENGTH
        k = self.keypoint()
        self.expect(".")
        kind, axis, col = self.take()
        if axis not in _AXES:
            raise RuleError(f"expected x, y or z at column {col + 1}, got {axis!r}")
        ax = _AXES[axis]
        return (lambda f: f.positions_mm[k, ax]), LENGTH


def parse_condition(text: str, keypoints: Sequence[str]) -> tuple[Condition, float, int]:
    """Rule text -> (condition over a frame, hold duration s, index of the first keypoint named).

    Raises RuleError with the column of the problem.
    """
    if not isinstance(text, str) or not text.strip():
        raise RuleError(f"expected a condition such as 'nose.x > 800 mm', got {text!r}")
    parser = _Parser(text, keypoints)
    cond, hold_s = parser.rule()
    if not parser.referenced:
        raise RuleError("the condition names no keypoint")
    return cond, hold_s, parser.referenced[0]


@dataclass(frozen=True)
class RuleSpec:
    """A validated rule: `name` (event name and topic suffix), `when` (condition text)."""

    name: str
    when: str
    cooldown_ms: float = 0.0


def parse_rule_specs(tables: Sequence[Mapping[str, Any]], keypoints: Sequence[str], where: str = "events.rules") -> list[RuleSpec]:
    """TOML tables -> RuleSpecs, checking names and parsing each condition.

    Raises RuleError naming the key, e.g. ``events.rules[1].when: unknown keypoint 'snout' ...``.
    """
    specs: list[RuleSpec] = []
    for i, t in enumerate(tables):
        at = f"{where}[{i}]"
        if not isinstance(t, Mapping):
            raise RuleError(f"{at}: expected a table {{name = ..., when = ...}}, got {t!r}")
        unknown = [k for k in t if k not in ("name", "when", "cooldown_ms")]
        if unknown:
            raise RuleError(f"{at}.{unknown[0]}: unknown key; expected name, when, cooldown_ms")
        name = t.get("name")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise RuleError(f"{at}.name: expected a name of letters, digits, '_' or '-' (starting with a letter), got {name!r}")
        if name in RESERVED_NAMES:
            raise RuleError(f"{at}.name: {name!r} is reserved for the built-in paw events")
        if any(s.name == name for s in specs):
            raise RuleError(f"{at}.name: rule {name!r} is defined twice")
        when = t.get("when")
        try:
            parse_condition(when, keypoints)  # type: ignore[arg-type]
        except RuleError as e:
            raise RuleError(f"{at}.when: {e} (in {when!r})") from None
        cooldown = t.get("cooldown_ms", 0.0)
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not cooldown >= 0:
            raise RuleError(f"{at}.cooldown_ms: expected a number >= 0, got {cooldown!r}")
        specs.append(RuleSpec(name, when, float(cooldown)))  # type: ignore[arg-type]
    return specs


class _Rule:
    __slots__ = ("spec", "cond", "hold_ns", "subject", "true_since_ns", "fired", "last_fired_ns")

    def __init__(self, spec: RuleSpec, keypoints: Sequence[str]) -> None:
        self.spec = spec
        self.cond, hold_s, self.subject = parse_condition(spec.when, keypoints)
        self.hold_ns = int(round(hold_s * 1e9))
        self.true_since_ns: int | None = None
        self.fired = False
        self.last_fired_ns: int | None = None


class RuleEngine:
    """Evaluates rules on every frame set. Not thread-safe.

    Example:
        engine = RuleEngine([RuleSpec("far_end", "nose.x > 800 mm")], KEYPOINTS)
        events = engine.feed(capture_ns, filtered_mm)   # (K, 3) -> list[EventPacket]
    """

    def __init__(self, specs: Sequence[RuleSpec], keypoints: Sequence[str], clock: Callable[[], int] = now_ns) -> None:
        self.keypoints = tuple(keypoints)
        self.rules = [_Rule(s, self.keypoints) for s in specs]
        self._clock = clock
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=64)

    def _speeds(self, t_ns: int, pos: np.ndarray) -> np.ndarray:
        ref_t, ref_p = None, None
        for t_old, p_old in reversed(self._history):
            if ref_t is not None and t_ns - t_old > SPEED_WINDOW_NS:
                break
            ref_t, ref_p = t_old, p_old
        if ref_t is None or t_ns <= ref_t:
            return np.full(len(pos), np.nan)
        return np.linalg.norm(pos - ref_p, axis=1) / ((t_ns - ref_t) * 1e-9)

    def feed(self, capture_ns: int, positions_mm: np.ndarray, frame_set_index: int = -1) -> list[EventPacket]:
        """(K, 3) positions of `keypoints`, world mm, NaN = unseen -> rule events decided now."""
        if not self.rules:
            return []
        pos = np.asarray(positions_mm, np.float64)
        if pos.shape != (len(self.keypoints), 3):
            raise ValueError(f"positions_mm: expected shape ({len(self.keypoints)}, 3), got {pos.shape}")
        t = int(capture_ns)
        if self._history and t <= self._history[-1][0]:
            return []
        frame = _Frame(pos, self._speeds(t, pos))
        self._history.append((t, pos.copy()))
        events = []
        with np.errstate(invalid="ignore"):
            for rule in self.rules:
                if not rule.cond(frame):
                    rule.true_since_ns = None
                    rule.fired = False
                    continue
                if rule.true_since_ns is None:
                    rule.true_since_ns = t
                if rule.fired or t - rule.true_since_ns < rule.hold_ns:
                    continue
                if rule.last_fired_ns is not None and t - rule.last_fired_ns < rule.spec.cooldown_ms * 1e6:
                    continue
                rule.fired = True
                rule.last_fired_ns = t
                p = pos[rule.subject]
                events.append(EventPacket(
                    name=rule.spec.name,
                    subject=self.keypoints[rule.subject],
                    frame_set_index=int(frame_set_index),
                    capture_ns=t,
                    emitted_ns=int(self._clock()),
                    position_mm=(float(p[0]), float(p[1]), float(p[2])),
                    extra={"onset_ns": int(rule.true_since_ns), "rule": rule.spec.when},
                ))
        return events
