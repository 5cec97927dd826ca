"""Tests for the rate windows (rolling for DigitalOcean, Laravel's fixed window for Coolify) and their headers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox import ManualClock, SandboxConfig, World, create_app
from sandbox.ratelimit import FixedWindow, PerCaller, RollingWindow, header_seconds

CO = "/sandbox/coolify/api/v1"


def test_rolling_window_frees_each_request_a_period_after_it() -> None:
    """Each counted request expires one period after it was made; reset_at is the oldest's expiry."""
    window = RollingWindow(2, 60)
    assert window.hit(0) and window.hit(30)
    assert not window.hit(59)
    assert (window.retry_after(59), window.reset_at(59)) == (1, 60)
    assert window.hit(60)  # the first one expired
    assert not window.hit(61)
    assert window.remaining(91) == 1


def test_fixed_window_opens_at_the_first_hit_and_resets_whole() -> None:
    """Laravel's limiter: the first hit opens a window; when it closes every hit is forgotten at once."""
    window = FixedWindow(2, 60)
    assert window.hit(10) and window.hit(50)
    assert not window.hit(69)
    assert (window.retry_after(69), window.reset_at(69), window.remaining(69)) == (1, 70, 0)
    assert window.hit(70) and window.hit(71)  # a fresh window: both fit, unlike a rolling one
    assert not window.hit(72)


def test_zero_limit_turns_windows_off() -> None:
    """A limit of 0 admits everything."""
    assert all(RollingWindow(0, 60).hit(0) for _ in range(1000))
    assert all(FixedWindow(0, 60).hit(0) for _ in range(1000))


def test_per_caller_keeps_one_window_per_key() -> None:
    """Windows are made on first use, one per caller key."""
    windows = PerCaller(lambda: FixedWindow(1, 60))
    assert windows["a"].hit(0)
    assert not windows["a"].hit(1)
    assert windows["b"].hit(1)
    assert len(windows) == 2


@pytest.mark.parametrize(
    ("value", "scale", "text"),
    [(29.2, 1, "30"), (30.0, 1, "30"), (4.5, 10, "4.5"), (0.0001, 10, "0.001"), (6.0, 10, "6"), (0, 1, "0")],
)
def test_header_seconds(value: float, scale: float, text: str) -> None:
    """Whole seconds rounded up at scale 1 (what the real APIs send); milliseconds at other scales."""
    assert header_seconds(value, scale) == text


# ---------------------------------------------------------------- Coolify's throttle over HTTP


@pytest.fixture
async def http(clock: ManualClock) -> AsyncIterator[tuple[World, httpx.AsyncClient]]:
    """A world with API_RATE_LIMIT 2 and a client without a default token."""
    world = World(SandboxConfig(coolify_rate_limit_per_minute=2), clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(world)), base_url="http://t") as c:
        yield world, c


async def test_coolify_limits_each_token_apart(http: tuple[World, httpx.AsyncClient]) -> None:
    """Two tokens have two throttle windows (Laravel keys by the token's user)."""
    _, client = http
    a, b = {"Authorization": "Bearer 1|a"}, {"Authorization": "Bearer 2|b"}
    assert [(await client.get(f"{CO}/servers", headers=a)).status_code for _ in range(3)] == [200, 200, 429]
    assert (await client.get(f"{CO}/servers", headers=b)).headers["x-ratelimit-remaining"] == "1"


async def test_coolify_429_shape_and_fixed_window(http: tuple[World, httpx.AsyncClient], clock: ManualClock) -> None:
    """The 429 has Retry-After and X-RateLimit-Reset for the window opened by the first request."""
    world, client = http
    token = {"Authorization": "Bearer 1|a"}
    await client.get(f"{CO}/servers", headers=token)
    clock.advance(50)
    await client.get(f"{CO}/servers", headers=token)
    limited = await client.get(f"{CO}/servers", headers=token)
    assert limited.json() == {"message": "Too Many Attempts."}
    assert (limited.headers["retry-after"], limited.headers["x-ratelimit-remaining"]) == ("10", "0")
    assert int(limited.headers["x-ratelimit-reset"]) == int(world.now()) + 10
    clock.advance(10)
    assert [(await client.get(f"{CO}/servers", headers=token)).status_code for _ in range(3)] == [200, 200, 429]


async def test_coolify_401_carries_no_throttle_headers(http: tuple[World, httpx.AsyncClient]) -> None:
    """auth:sanctum answers before the throttle: a 401 has no X-RateLimit headers and is not counted."""
    _, client = http
    refused = await client.get(f"{CO}/servers")
    assert refused.status_code == 401
    assert "x-ratelimit-limit" not in refused.headers


async def test_coolify_health_is_throttled_by_ip(http: tuple[World, httpx.AsyncClient]) -> None:
    """/api/health has its own 1000/minute; /api/v1/health counts against API_RATE_LIMIT by IP, token or not."""
    _, client = http
    health = "/sandbox/coolify/api/health"
    assert (await client.get(health)).headers["x-ratelimit-limit"] == "1000"
    statuses = [(await client.get(f"{CO}/health", headers={"Authorization": f"Bearer {n}"})).status_code for n in "abc"]
    assert statuses == [200, 200, 429]
    assert (await client.get(f"{CO}/servers", headers={"Authorization": "Bearer a"})).status_code == 200


async def test_coolify_time_scale(clock: ManualClock) -> None:
    """At time_scale 10 the throttle minute lasts 6 s and Retry-After may be fractional."""
    world = World(SandboxConfig(coolify_rate_limit_per_minute=1, time_scale=10), clock=clock)
    transport = httpx.ASGITransport(app=create_app(world))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"Authorization": "Bearer x"}) as c:
        await c.get(f"{CO}/servers")
        clock.advance(0.25)
        limited = await c.get(f"{CO}/servers")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "5.75")
        clock.advance(5.75)
        assert (await c.get(f"{CO}/servers")).status_code == 200
