"""`deployer doctor`'s checks against the sandbox: each problem is one ✗ line saying what to fix."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from clients.http import RetryPolicy
from jobs.doctor import Check, run_checks
from sandbox.app import create_app as create_sandbox
from sandbox.state import SandboxConfig, World
from settings import Settings
from tests.conftest import make_settings


async def doctor(world: World, settings: Settings, *, do_token: str | None = None) -> dict[str, Check]:
    """Run every check against `world` (with `do_token` instead of the settings' token, if given)."""
    transport = httpx.ASGITransport(app=create_sandbox(world))
    retry = RetryPolicy(max_attempts=1)
    token = do_token or settings.digitalocean.api_key
    async with (
        DigitalOceanClient(api_url=settings.digitalocean.api_url, token=token, transport=transport, retry=retry) as do,
        CoolifyClient(api_url=settings.coolify.api_url, token=settings.coolify.api_key, transport=transport) as coolify,
    ):
        checks = await run_checks(settings, do, coolify)
    assert len(checks) == 8
    return {check.name: check for check in checks}


@pytest.fixture
def settings() -> Settings:
    """Settings pointing at the sandbox (no database or Redis needed)."""
    return make_settings(database_url="sqlite://:memory:", redis_url="redis://unused")


async def test_a_good_setup_passes_every_check(settings: Settings) -> None:
    """With the sandbox's own key, project and catalog every line is a ✓."""
    checks = await doctor(World(), settings)
    assert all(c.ok for c in checks.values()), [c.line() for c in checks.values()]
    assert checks["Coolify API access"].detail == "works (Coolify 4.3.11)"


async def test_a_read_only_token_cannot_write() -> None:
    """A DigitalOcean token that may only read is caught before any droplet is paid for."""
    settings = make_settings(database_url="sqlite://:memory:", redis_url="redis://unused")
    checks = await doctor(World(SandboxConfig(do_read_only_tokens="viewer")), settings, do_token="viewer")
    assert not checks["DigitalOcean write access"].ok
    assert checks["DigitalOcean API access"].ok


async def test_a_droplet_limit_below_the_slots(settings: Settings) -> None:
    """An account allowing fewer droplets than MAX_ACTIVE_DROPLETS is a ✗ naming both numbers."""
    checks = await doctor(World(SandboxConfig(droplet_limit=2)), settings)
    check = checks["DigitalOcean droplet limit"]
    assert not check.ok
    assert "allows 2 droplets but MAX_ACTIVE_DROPLETS is 3" in check.detail


async def test_bad_defaults_and_coolify_settings(settings: Settings) -> None:
    """An unknown default region, a missing environment and a key whose halves differ are each a ✗."""
    other_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINkpihDRsHNYN9xL2F2sZBsPPO8npH5dU6VPLz9bL8/6 other"
    bad = settings.with_overrides(
        digitalocean=replace(settings.digitalocean, region="mars1"),
        coolify=replace(settings.coolify, environment_name="staging", ssh_public_key=other_key),
    )
    checks = await doctor(World(), bad)
    assert checks["Default droplet"].detail.startswith("DROPLET_REGION is not a DigitalOcean region")
    assert "has no environment 'staging' (it has: production)" in checks["Coolify project and environment"].detail
    assert "Permission denied (publickey)" in checks["Coolify private key"].detail
    assert not any(
        checks[name].ok for name in ("Default droplet", "Coolify project and environment", "Coolify private key")
    )


async def test_an_unreachable_cloud_is_a_failed_check_not_a_crash(settings: Settings) -> None:
    """When a cloud cannot be reached each of its checks is a ✗ with the reason; the others still run."""
    unreachable = settings.with_overrides(coolify=replace(settings.coolify, api_url="http://127.0.0.1:9"))
    transport = httpx.ASGITransport(app=create_sandbox(World()))
    async with (
        DigitalOceanClient(api_url=settings.digitalocean.api_url, token="t", transport=transport) as do,
        CoolifyClient(api_url="http://127.0.0.1:9", token="t", retry=RetryPolicy(max_attempts=1)) as coolify,
    ):
        checks = await run_checks(unreachable, do, coolify)
    by_name = {c.name: c for c in checks}
    assert by_name["DigitalOcean API access"].ok
    assert not by_name["Coolify API access"].ok and "connection error" in by_name["Coolify API access"].detail
