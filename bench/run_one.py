"""Run one benchmark module's ``figures(quick)`` and print its figures as JSON lines after `MARKER`."""

from __future__ import annotations

import argparse
import importlib
import sys

MARKER = "\n--- figures ---\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("module")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = importlib.import_module(args.module).figures(args.quick)
    sys.stdout.write(MARKER)
    for figure in figures:
        sys.stdout.write(figure.to_json() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
