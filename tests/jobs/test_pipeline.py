"""The pipeline against the sandbox (through ASGI): success, failure at each step with full cleanup,
timeouts, and resuming without duplicates."""

from __future__ import annotations

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
from jobs.progress import stored_events
from models.deployment import Deployment, DeploymentStage, DeploymentStatus
from models.slot import reserve_slot, slot_usage
from sandbox.app import create_app as create_sandbox
from sandbox.state import SandboxConfig, World
from settings import Settings
from tests.conftest import SSH_PUBLIC_KEY, fast_timings

FAST_WORLD = SandboxConfig(
    droplet_boot_s=0.1,
    droplet_ip_delay_s=0.05,
    server_validation_s=0.05,
    build_queue_s=0.05,
    build_s=0.1,
    app_delete_s=0.05,
)


@pytest.fixture
def world() -> World:
    """A fresh sandbox world with fast, real-time transitions."""
    return World(FAST_WORLD)


@pytest.fixture
async def deps(world: World, redis: Redis, settings: Settings) -> AsyncIterator[Deps]:
    """Clients wired to the sandbox through ASGI, with no real sleeping between client retries."""
    transport = httpx.ASGITransport(app=create_sandbox(world))
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0)
    timings = fast_timings(droplet_timeout_s=1.0, build_timeout_s=1.0)
    config = replace(PipelineConfig.from_settings(settings.with_overrides(timings=timings)), step_retry_delay_s=0.01)
    digitalocean = DigitalOceanClient(
        api_url=settings.digitalocean.api_url, token="do-token", transport=transport, retry=retry
    )
    coolify = CoolifyClient(api_url=settings.coolify.api_url, token="1|coolify-token", transport=transport, retry=retry)
    yield Deps(digitalocean=digitalocean, coolify=coolify, redis=redis, config=config)
    await digitalocean.aclose()
    await coolify.aclose()


async def new_deployment(**spec: Any) -> Deployment:
    """A QUEUED deployment holding a slot, as `deploy` leaves it."""
    deployment_id = uuid.uuid4()
    assert await reserve_slot(deployment_id, 3) is not None
    return await Deployment.create(id=deployment_id, droplet_name=f"eliza-{deployment_id}", spec=spec)


async def run(deps: Deps, deployment: Deployment, env: list[list[str]] | None = None) -> Deployment:
    """Run the deploy job directly and reload the row."""
    ctx: WorkerContext = {"deps": deps}  # type: ignore[typeddict-item]
    ref = await stash_values(deps.redis, [{"key": k, "value": v} for k, v in env], ttl_s=60) if env else None
    await deploy(ctx, deployment_id=str(deployment.id), env_ref=ref)
    return await Deployment.get(id=deployment.id)


async def assert_events_contiguous(deployment: Deployment) -> list[str]:
    """Event sequences are 1..n; returns the messages."""
    events = await stored_events(deployment.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    return [e.message for e in events]


async def test_success_creates_droplet_server_application_with_env(deps: Deps, world: World) -> None:
    """A deployment ends COMPLETED with its droplet, server, application and environment in place."""
    deployment = await new_deployment(source={"kind": "docker", "image": "nginx", "tag": "alpine"}, ports="80")
    done = await run(deps, deployment, env=[["APP_ENV", "production"], ["SECRET_KEY", "hunter2"]])
    assert done.status == DeploymentStatus.COMPLETED, done.error
    assert done.stage == DeploymentStage.DONE
    assert done.droplet_id and done.ip_address and done.server_uuid and done.application_uuid
    state = world.snapshot()
    assert [d["name"] for d in state["droplets"]] == [f"eliza-{deployment.id}"]  # type: ignore[index]
    assert len(state["servers"]) == 1  # type: ignore[arg-type]
    envs = {e.key: e.value for e in world.app_envs(done.application_uuid)}
    assert envs == {"APP_ENV": "production", "SECRET_KEY": "hunter2"}
    messages = await assert_events_contiguous(done)
    assert not any("hunter2" in m for m in messages)
    assert (await slot_usage(3)).active == 1  # a live droplet keeps its slot


async def test_the_droplet_gets_the_public_ip_not_the_private_one(deps: Deps, world: World) -> None:
    """The stored address is the droplet's public IPv4, although the private one is listed first."""
    done = await run(deps, await new_deployment())
    droplet = world.snapshot()["droplets"][0]  # type: ignore[index]
    assert done.ip_address == droplet["public_ipv4"] != droplet["private_ipv4"]


@pytest.mark.parametrize(
    ("fault", "stage", "reason"),
    [
        ("droplet_create_rejected", DeploymentStage.CREATE_DROPLET, "droplet limit"),
        ("droplet_no_ip", DeploymentStage.WAIT_DROPLET, "Timed out"),
        ("server_error=500@POST:/servers$", DeploymentStage.REGISTER_SERVER, "500"),
        ("server_unreachable", DeploymentStage.VALIDATE_SERVER, "could not validate"),
        ("server_error=500@POST:/applications/", DeploymentStage.CREATE_APPLICATION, "500"),
        ("server_error=500@POST:/deploy$", DeploymentStage.START_DEPLOYMENT, "500"),
        ("build_fails", DeploymentStage.WAIT_BUILD, "failed"),
        ("build_hangs", DeploymentStage.WAIT_BUILD, "Timed out"),
    ],
)
async def test_failure_at_each_step_cleans_up_everything(
    deps: Deps, world: World, fault: str, stage: DeploymentStage, reason: str
) -> None:
    """A failure at any step ends FAILED with that stage and reason, deletes the server and droplet, frees the slot."""
    world.faults.add_spec(fault)
    deployment = await new_deployment()
    done = await run(deps, deployment)
    assert done.status == DeploymentStatus.FAILED
    assert done.failed_stage == stage
    assert done.error is not None and reason in done.error
    assert done.resources_released
    state = world.snapshot()
    assert state["droplets"] == []
    assert state["servers"] == []
    assert (await slot_usage(3)).active == 0
    await assert_events_contiguous(done)


async def test_a_resumed_job_adopts_the_droplet_instead_of_creating_another(deps: Deps, world: World) -> None:
    """A retry after a crash between the droplet POST and storing its id adopts the tagged droplet."""
    deployment = await new_deployment()
    key = await deps.digitalocean.ensure_ssh_key(name="deployer-coolify", public_key=SSH_PUBLIC_KEY)
    first = await deps.digitalocean.create_droplet(
        name=f"eliza-{deployment.id}", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64",
        ssh_keys=[key.fingerprint], tags=["deployer", f"deployer-{deployment.id}"],
    )  # fmt: skip
    done = await run(deps, deployment)
    assert done.status == DeploymentStatus.COMPLETED
    assert done.droplet_id == first.id
    assert len(world.snapshot()["droplets"]) == 1  # type: ignore[arg-type]


async def test_a_resumed_job_skips_recorded_steps(deps: Deps, world: World) -> None:
    """Running the job twice (the second time after COMPLETED) changes nothing and creates nothing."""
    deployment = await new_deployment()
    done = await run(deps, deployment)
    before = world.snapshot()
    again = await run(deps, done)
    assert again.status == DeploymentStatus.COMPLETED
    after = world.snapshot()
    assert len(after["droplets"]) == len(before["droplets"]) == 1  # type: ignore[arg-type]
    assert len(after["applications"]) == 1  # type: ignore[arg-type]


async def test_rate_limits_on_polls_are_waited_out(deps: Deps, world: World) -> None:
    """429s with Retry-After on droplet polls delay the deployment but do not fail it."""
    world.faults.add_spec("rate_limit=0:4@GET:/v2/droplets/")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
