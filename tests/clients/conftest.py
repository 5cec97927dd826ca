"""Fixtures for client tests: a sleep that records waits instead of sleeping."""

from __future__ import annotations

import pytest


class FakeSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleep() -> FakeSleep:
    """A fake sleep shared by the client and the test."""
    return FakeSleep()
