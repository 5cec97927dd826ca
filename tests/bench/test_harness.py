"""`make bench` (`python -m bench`): each module in a process of its own, one line per figure, exit status 1
when a goal is missed or a module fails."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from bench.__main__ import MODULES, main, run_module, selected
from bench.run_one import MARKER
from tests.processes import REPO_ROOT

SAMPLE = "tests.bench.sample_figures"


def test_every_module_exposes_figures() -> None:
    """Each module `make bench` runs can be imported and has `figures(quick)`."""
    for module in MODULES:
        assert callable(importlib.import_module(module).figures), module


def test_only_selects_by_full_or_short_name_and_refuses_unknown_names() -> None:
    """`--only events bench.cpu` picks those two in MODULES order; a name that matches nothing is an error."""
    modules = ["bench.a", "bench.b", "bench.c"]
    assert selected(None, modules) == modules
    assert selected(["c", "bench.a"], modules) == ["bench.a", "bench.c"]
    with pytest.raises(SystemExit, match="unknown benchmark module"):
        selected(["nope"], modules)


def test_run_one_prints_figures_after_the_marker() -> None:
    """A module's process prints whatever it likes, then the marker, then one JSON figure per line."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run_one", SAMPLE, "--quick"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    noise, marker, tail = proc.stdout.partition(MARKER)
    assert marker and "noise" in noise
    assert len(tail.splitlines()) == 2


def test_a_run_prints_every_figure_and_fails_on_a_missed_goal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every figure gets its line; the summary names the missed goal, and the exit status is 1."""
    monkeypatch.chdir(REPO_ROOT)
    assert main(["--quick"], modules=[SAMPLE]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# make bench, ")
    assert lines[1:] == [
        "sample.rate: 1520 req/s (baseline bare 2000 req/s, ratio 0.76, goal ratio >= 0.7) ok",
        "sample.lag: 75.5 ms (goal <= 50 ms) MISSED [quick]",
        "# 2 figures, 1 missed goals: sample.lag",
    ]


def test_without_quick_the_module_runs_in_full() -> None:
    """`--quick` is passed on to the module only when given."""
    figures, problem = run_module(SAMPLE, quick=False)
    assert problem is None
    assert [f.note for f in figures] == ["", "full"]


def test_a_failing_module_is_reported_and_the_others_still_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that raises is named as FAILED with its traceback on stderr; the exit status is 1."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("SAMPLE_FIGURES_FAIL", "1")
    assert main([], modules=[SAMPLE]) == 1
    captured = capsys.readouterr()
    assert f"{SAMPLE}: FAILED after" in captured.out
    assert "RuntimeError: the benchmark broke" in captured.err
    assert captured.out.splitlines()[-1] == f"# 0 figures, 0 missed goals; failed: {SAMPLE}"
