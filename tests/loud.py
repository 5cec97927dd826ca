"""Skips that must never go unnoticed: `loud_skip` marks them, and the summary hook in conftest.py prints them
in a banner at the end of the run (besides pytest's own `-ra` lines)."""

from __future__ import annotations

from typing import NoReturn

import pytest

PREFIX = "NOT RUN: "


def loud_skip(reason: str) -> NoReturn:
    """Skip with a reason that the end-of-run banner repeats."""
    pytest.skip(PREFIX + reason)
