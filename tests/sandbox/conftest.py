"""Fixtures for sandbox tests: a world on a manual clock and a client talking to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox import ManualClock, World, create_app


@pytest.fixture
def clock() -> ManualClock:
    """A clock that only moves when told to."""
    return ManualClock()


@pytest.fixture
def world(clock: ManualClock) -> World:
    """A world with default timings on the manual clock."""
    return World(clock=clock)


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client talking to the sandbox in-process (any non-empty token is accepted)."""
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox.test", headers={"Authorization": "Bearer 1|token"}
    ) as http:
        yield http
