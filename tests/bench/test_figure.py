"""`bench.figure`: ratios, goals, the printed line and the JSON a module's process hands to `make bench`."""

from __future__ import annotations

import pytest

from bench.figure import Baseline, Figure, Goal


def test_a_ratio_goal_is_judged_on_value_over_baseline() -> None:
    """`ratio >= 0.7` compares value / baseline, and the line shows both numbers, the ratio and the verdict."""
    figure = Figure(
        "query.dropletCount", 1520, "req/s", baseline=Baseline("bare starlette", 2010), goal=Goal(">=", 0.7, "ratio")
    )
    assert figure.ratio == pytest.approx(1520 / 2010)
    assert figure.met is True
    assert figure.line() == (
        "query.dropletCount: 1520 req/s (baseline bare starlette 2010 req/s, ratio 0.76, goal ratio >= 0.7) ok"
    )
    slower = Figure("q", 1000, "req/s", baseline=Baseline("bare", 2010), goal=Goal(">=", 0.7, "ratio"))
    assert slower.met is False
    assert slower.line().endswith("goal ratio >= 0.7) MISSED")


def test_a_value_goal_ignores_the_baseline() -> None:
    """`<= 50 ms` is judged on the value itself, whatever the baseline; the baseline may have its own unit."""
    figure = Figure("lag.p99", 12.5, "ms", baseline=Baseline("old path", 400, unit="ms"), goal=Goal("<=", 50))
    assert figure.met is True
    assert figure.line() == "lag.p99: 12.5 ms (baseline old path 400 ms, ratio 0.03, goal <= 50 ms) ok"
    assert Figure("lag.p99", 50.0, "ms", goal=Goal("<=", 50)).met is True  # the threshold itself meets it
    assert Figure("lag.p99", 50.01, "ms", goal=Goal("<=", 50)).met is False


def test_no_goal_or_no_baseline_gives_no_verdict() -> None:
    """Without a goal there is nothing to judge; a ratio goal without a (non-zero) baseline cannot be judged."""
    assert Figure("rss", 120, "MiB").met is None
    assert Figure("rss", 120, "MiB").line() == "rss: 120 MiB"
    assert Figure("r", 5, "x", goal=Goal(">=", 0.7, "ratio")).met is None
    zero = Figure("r", 5, "x", baseline=Baseline("b", 0), goal=Goal(">=", 0.7, "ratio"))
    assert zero.ratio is None and zero.met is None
    assert Figure("n", 3, "x", note="machine loaded").line() == "n: 3 x [machine loaded]"


@pytest.mark.parametrize(
    ("value", "text"),
    [(2010, "2010"), (2010.4, "2010"), (150.6, "151"), (12.345, "12.3"), (1.2345, "1.23"), (0.0123, "0.0123")],
)
def test_numbers_are_printed_to_a_sensible_precision(value: float, text: str) -> None:
    """Large numbers without decimals, small ones with three significant digits."""
    assert Figure("n", value, "u").line() == f"n: {text} u"


def test_json_round_trip_keeps_everything() -> None:
    """A figure printed by a module's process is read back equal, with or without baseline and goal."""
    full = Figure("a", 1.5, "s", baseline=Baseline("b", 3.0, unit="s"), goal=Goal("<=", 2, "value"), note="n")
    bare = Figure("c", 7, "x")
    for figure in (full, bare):
        assert Figure.from_json(figure.to_json()) == figure
