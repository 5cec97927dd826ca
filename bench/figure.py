"""One benchmark figure, its same-run baseline and its goal, printed the way `make bench` prints them.

A bench module that `make bench` runs (see `bench/__main__.py`) exposes ``figures(quick: bool) -> list[Figure]``
and is run in a process of its own, so one figure's memory or event loop does not disturb another's. Goals
are checked on the ratio to the baseline where the goal is a ratio, and on the value otherwise:

    Figure("graphql.dropletCount", 1520, "req/s", baseline=Baseline("bare starlette", 2010),
           goal=Goal(">=", 0.7, on="ratio"))
    -> graphql.dropletCount: 1520 req/s (baseline bare starlette 2010 req/s, ratio 0.76, goal ratio >= 0.7) ok
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass
from typing import Literal

Comparison = Literal["<=", ">="]
_COMPARE = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Baseline:
    """What the figure is compared with, measured in the same run (a bare Starlette route, the old path…)."""

    name: str
    value: float
    unit: str | None = None  # the figure's unit when None


@dataclass(frozen=True)
class Goal:
    """The issue's target: `value <= 50` (on="value") or `ratio >= 0.7` (on="ratio", ratio = value / baseline)."""

    comparison: Comparison
    threshold: float
    on: Literal["value", "ratio"] = "value"

    def describe(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.comparison} {self.threshold:g}"
        return f"{self.comparison} {self.threshold:g} {unit}"


@dataclass(frozen=True)
class Figure:
    """A measured value with its unit, an optional same-run baseline and an optional goal."""

    name: str
    value: float
    unit: str
    baseline: Baseline | None = None
    goal: Goal | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.value == 0:
            return None
        return self.value / self.baseline.value

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None when there is no goal (or a ratio goal without a baseline)."""
        if self.goal is None:
            return None
        measured = self.ratio if self.goal.on == "ratio" else self.value
        if measured is None:
            return None
        return bool(_COMPARE[self.goal.comparison](measured, self.goal.threshold))

    def line(self) -> str:
        """`name: value unit (baseline …, ratio …, goal …) ok|MISSED`."""
        parts = []
        if self.baseline is not None:
            parts.append(f"baseline {self.baseline.name} {_num(self.baseline.value)} {self.baseline.unit or self.unit}")
        if self.ratio is not None:
            parts.append(f"ratio {self.ratio:.2f}")
        if self.goal is not None:
            parts.append(f"goal {self.goal.describe(self.unit)}")
        detail = f" ({', '.join(parts)})" if parts else ""
        verdict = {True: " ok", False: " MISSED", None: ""}[self.met]
        note = f" [{self.note}]" if self.note else ""
        return f"{self.name}: {_num(self.value)} {self.unit}{detail}{verdict}{note}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Figure:
        data = json.loads(text)
        baseline = Baseline(**data.pop("baseline")) if data.get("baseline") else None
        goal = Goal(**data.pop("goal")) if data.get("goal") else None
        data.pop("baseline", None)
        data.pop("goal", None)
        return cls(baseline=baseline, goal=goal, **data)


def _num(value: float) -> str:
    if value == int(value) and abs(value) >= 100:
        return f"{int(value)}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"
