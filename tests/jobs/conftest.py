"""Fixtures for job tests: a fast sandbox world and clients wired to it through ASGI."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from clients.http import RetryPolicy
from jobs.context import Deps, PipelineConfig, WorkerContext
from jobs.deploy import deploy
from jobs.envstash import stash_values
from jobs.polls import PollLists
from jobs.steps import OWNER_TAG
from models.deployment import Deployment
from models.slot import reserve_slot
from sandbox.app import create_app as create_sandbox
from sandbox.state import World
from settings import Settings
from tests.conftest import FAST_WORLD, fast_timings


@pytest.fixture
def world() -> World:
    """A fresh sandbox world with fast, real-time transitions."""
    return World(FAST_WORLD)


@contextlib.asynccontextmanager
async def deps_for(world: World, redis: Redis, settings: Settings) -> AsyncIterator[Deps]:
    """Clients wired to `world` through ASGI, with fast timings and quick client retries."""
    transport = httpx.ASGITransport(app=create_sandbox(world))
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0)
    timings = fast_timings(droplet_timeout_s=1.0, build_timeout_s=1.0)
    config = replace(
        PipelineConfig.from_settings(settings.with_overrides(timings=timings)),
        step_retry_delay_s=0.01,
        create_lookup_s=0.5,
    )
    digitalocean = DigitalOceanClient(
        api_url=settings.digitalocean.api_url, token="do-token", transport=transport, retry=retry
    )
    coolify = CoolifyClient(api_url=settings.coolify.api_url, token="1|coolify-token", transport=transport, retry=retry)
    try:
        polls = PollLists(redis, digitalocean, coolify, prefix=f"test-polls:{uuid.uuid4().hex}", droplet_tag=OWNER_TAG)
        yield Deps(digitalocean=digitalocean, coolify=coolify, redis=redis, config=config, polls=polls)
    finally:
        await digitalocean.aclose()
        await coolify.aclose()


@pytest.fixture
async def deps(world: World, redis: Redis, settings: Settings) -> AsyncIterator[Deps]:
    """Clients wired to the test's sandbox world."""
    async with deps_for(world, redis, settings) as built:
        yield built


async def new_deployment(**spec: Any) -> Deployment:
    """A QUEUED deployment holding a slot, as `deploy` leaves it."""
    deployment_id = uuid.uuid4()
    assert await reserve_slot(deployment_id, 3) is not None
    return await Deployment.create(id=deployment_id, droplet_name=f"eliza-{deployment_id}", spec=spec)


async def run(deps: Deps, deployment: Deployment, env: list[list[str]] | None = None) -> Deployment:
    """Run the deploy job directly and reload the row."""
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    variables = [{"key": k, "value": v} for k, v in env or []]
    ref = await stash_values(deps.redis, variables, ttl_s=60, secret_key=deps.config.secret_key) if env else None
    await deploy(ctx, deployment_id=str(deployment.id), env_ref=ref)
    return await Deployment.get(id=deployment.id)
