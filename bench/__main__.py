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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not figures to record)")
    parser.add_argument("--only", nargs="*", default=None, help="module names (or their last part) to run")
    args = parser.parse_args()
    modules = [m for m in MODULES if not args.only or m in args.only or m.rsplit(".", 1)[-1] in args.only]
    print(f"# make bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {_machine()}", flush=True)
    figures: list[Figure] = []
    failed: list[str] = []
    for module in modules:
        start = time.monotonic()
        command = [sys.executable, "-m", "bench.run_one", module] + (["--quick"] if args.quick else [])
        proc = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 (our modules)
        took = time.monotonic() - start
        _, marker, tail = proc.stdout.partition(MARKER)
        if proc.returncode != 0 or not marker:
            failed.append(module)
            print(f"{module}: FAILED after {took:.0f} s (exit {proc.returncode})", flush=True)
            print((proc.stderr or proc.stdout)[-3000:], file=sys.stderr, flush=True)
            continue
        for text in tail.splitlines():
            if text.strip():
                figure = Figure.from_json(text)
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
