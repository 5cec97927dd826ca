"""A benchmark module for the harness tests: its figures say whether `--quick` reached it."""

from __future__ import annotations

import os

from bench.figure import Baseline, Figure, Goal


def figures(quick: bool) -> list[Figure]:
    """Two figures, one meeting its goal and one missing it (or raising, when SAMPLE_FIGURES_FAIL is set)."""
    if os.environ.get("SAMPLE_FIGURES_FAIL"):
        raise RuntimeError("the benchmark broke")
    print("noise a module may print before its figures")
    return [
        Figure("sample.rate", 1520, "req/s", baseline=Baseline("bare", 2000), goal=Goal(">=", 0.7, on="ratio")),
        Figure("sample.lag", 75.5, "ms", goal=Goal("<=", 50), note="quick" if quick else "full"),
    ]
