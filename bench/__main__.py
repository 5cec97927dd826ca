"""`make bench`: every benchmark of issue 10, each in its own process, one line per figure.

    .venv/bin/python -m bench [--quick] [--only NAME ...]

Each module in `MODULES` exposes ``figures(quick: bool) -> list[bench.figure.Figure]``. It is run as
``python -m bench.run_one MODULE`` so that memory and event-loop figures are not disturbed by the others; the
child prints one JSON figure per line after the marker. The exit status is 1 when a goal was missed or a module
failed, so a CI job could gate on it (ours does not: benchmarks are not timed tests on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from bench.figure import Figure
from bench.run_one import MARKER

#: The benchmark modules `make bench` runs, in order.
MODULES: list[str] = [
    "bench.graphql_overhead",
    "bench.budget",
    "bench.polls",
    "bench.fleet",
    "bench.subscribers",
    "bench.events",
    "bench.cpu",
]


def _machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.machine()}, {os.cpu_count()} vCPU{mem}, Python {platform.python_version()}"


def selected(only: Sequence[str] | None, modules: Sequence[str] = MODULES) -> list[str]:
    """The modules `--only` names (by full name or last part), in `modules` order; all when none is named."""
    if only:
        unknown = [name for name in only if not any(name in (m, m.rsplit(".", 1)[-1]) for m in modules)]
        if unknown:
            raise SystemExit(f"unknown benchmark module(s): {', '.join(unknown)} (known: {', '.join(modules)})")
    return [m for m in modules if not only or m in only or m.rsplit(".", 1)[-1] in only]


def run_module(module: str, *, quick: bool) -> tuple[list[Figure], str | None]:
    """Run one module's figures in a process of its own: (figures, None), or ([], why it failed)."""
    start = time.monotonic()
    command = [sys.executable, "-m", "bench.run_one", module] + (["--quick"] if quick else [])
    proc = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 (our modules)
    took = time.monotonic() - start
    _, marker, tail = proc.stdout.partition(MARKER)
    if proc.returncode != 0 or not marker:
        return [], f"FAILED after {took:.0f} s (exit {proc.returncode})\n{(proc.stderr or proc.stdout)[-3000:]}"
    return [Figure.from_json(text) for text in tail.splitlines() if text.strip()], None


def main(argv: Sequence[str] | None = None, modules: Sequence[str] = MODULES) -> int:
    """Run the selected modules one after the other, print every figure, and say which goals were missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not figures to record)")
    parser.add_argument("--only", nargs="*", default=None, help="module names (or their last part) to run")
    args = parser.parse_args(argv)
    print(f"# make bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_machine()}", flush=True)
    figures: list[Figure] = []
    failed: list[str] = []
    for module in selected(args.only, modules):
        found, problem = run_module(module, quick=args.quick)
        if problem is not None:
            failed.append(module)
            head, _, detail = problem.partition("\n")
            print(f"{module}: {head}", flush=True)
            print(detail, file=sys.stderr, flush=True)
            continue
        for figure in found:
            figures.append(figure)
            print(figure.line(), flush=True)
    missed = [f.name for f in figures if f.met is False]
    print(
        f"# {len(figures)} figures, {len(missed)} missed goals{': ' + ', '.join(missed) if missed else ''}"
        f"{'; failed: ' + ', '.join(failed) if failed else ''}"
    )
    return 1 if missed or failed else 0


if __name__ == "__main__":
    sys.exit(main())
