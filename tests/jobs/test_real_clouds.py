"""The pipeline against a sandbox that behaves like the real clouds (issue 6): sshd answering after the IP,
Coolify's validation state, per-token rate limits, list lag, uncertain creates and failed builds."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis

from jobs.context import Deps
from jobs.pipeline import run_pipeline
from jobs.progress import stored_events
from jobs.run import Run
from jobs.steps import create_droplet, register_server, wait_droplet
from models.deployment import Deployment, DeploymentStage, DeploymentStatus
from sandbox.state import World
from settings import Settings
from tests.conftest import FAST_WORLD
from tests.jobs.conftest import deps_for, new_deployment, run


async def messages(deployment: Deployment) -> list[str]:
    """The stored progress messages of a deployment."""
    return [e.message for e in await stored_events(deployment.id)]


def servers(world: World) -> list[dict[str, Any]]:
    """The sandbox's servers as its snapshot shows them."""
    return list(world.snapshot()["servers"])  # type: ignore[call-overload]


async def test_a_late_sshd_is_waited_for(deps: Deps, world: World) -> None:
    """The first validation meets a refusing sshd; the pipeline asks again later and the deployment completes."""
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    assert len(world.calls("POST", r"/validate$")) >= 2
    said = await messages(done)
    assert any(
        "Coolify could not reach the server yet (Server is not reachable: ssh: connect to host" in m
        and "Connection refused" in m
        for m in said
    ), said
    assert done.server_validated_at is not None


async def test_never_asks_while_a_validation_runs(deps: Deps, world: World) -> None:
    """A validation left running by an interrupted attempt is waited for, never doubled."""
    deployment = await new_deployment()
    steps_run = Run(deployment=deployment, deps=deps)
    for step in (create_droplet, wait_droplet, register_server):
        await step(steps_run)
    server_uuid = str(deployment.server_uuid)
    # The interrupted attempt asked for a validation (sshd is up by now) and died.
    while not world.droplets or world.now() < next(iter(world.droplets.values())).created_at + 2:
        world.advance(0.5)
    await deps.coolify.validate_server(server_uuid, install=True)
    world.advance(FAST_WORLD.validation_pickup_s)
    assert (await deps.coolify.get_server(server_uuid)).is_validating
    resumed = Run(deployment=await Deployment.get(id=deployment.id), deps=deps)
    await run_pipeline(resumed)
    done = await Deployment.get(id=deployment.id)
    assert done.status == DeploymentStatus.COMPLETED, done.error
    assert len(world.calls("POST", r"/validate$")) == 1
    assert all(s["overlapping_validations"] == 0 for s in servers(world))


async def test_sshd_that_never_answers_times_out_with_the_reason(deps: Deps, world: World) -> None:
    """A droplet whose sshd never answers is asked about with backoff until SERVER_TIMEOUT_S, then fails saying
    what Coolify saw; nothing is left behind, and no two validations ever ran at once."""
    world.faults.add_spec("sshd_never")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.FAILED
    assert done.failed_stage == DeploymentStage.VALIDATE_SERVER
    assert done.error is not None
    assert "Timed out after 5 s waiting for Coolify to validate the server" in done.error
    assert "Connection timed out" in done.error
    posts = world.calls("POST", r"/validate$")
    assert 3 <= len(posts) <= 20  # asked again, but backing off rather than hammering
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    assert gaps[-1] > gaps[0]
    assert world.snapshot()["droplets"] == [] and servers(world) == []


async def test_a_wrong_key_fails_at_once(deps: Deps, world: World) -> None:
    """A droplet refusing Coolify's key fails VALIDATE_SERVER at the first validation that reaches sshd."""
    world.faults.add_spec("wrong_key")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.FAILED
    assert done.failed_stage == DeploymentStage.VALIDATE_SERVER
    assert done.error is not None
    assert "refused Coolify's SSH key" in done.error and "Permission denied (publickey)" in done.error
    assert "COOLIFY_SSH_PUBLIC_KEY" in done.error
    assert "Timed out" not in done.error
    assert world.snapshot()["droplets"] == []


async def test_an_uncertain_create_adopts_the_droplet_it_made(deps: Deps, world: World) -> None:
    """A create answered with a 500 although the droplet was made is found by its tag, despite the list lag."""
    world.faults.add_spec("response_lost:1@POST:/v2/droplets$")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    droplets = world.snapshot()["droplets"]
    assert len(droplets) == 1  # type: ignore[arg-type]
    assert done.droplet_id == droplets[0]["id"]  # type: ignore[index]
    assert len(world.calls("POST", r"/v2/droplets$")) == 1
    assert any("exists; adopting it" in m for m in await messages(done))


async def test_a_failed_create_that_made_nothing_is_sent_again(deps: Deps, world: World) -> None:
    """A create refused with a 503 before anything happened is looked for, then sent again once."""
    world.faults.add_spec("server_error=503:1@POST:/v2/droplets$")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    assert [c.status for c in world.calls("POST", r"/v2/droplets$")] == [503, 202]
    assert len(world.snapshot()["droplets"]) == 1  # type: ignore[arg-type]


async def test_a_failed_build_says_why(deps: Deps, world: World) -> None:
    """The error and a progress event carry the end of the build's visible output, without colour codes."""
    world.faults.add_spec("build_fails")
    source = {"kind": "git", "repository": "https://github.com/acme/web", "branch": "main", "build_pack": "nixpacks"}
    deployment = await new_deployment(source=source, ports="3000")
    done = await run(deps, deployment, env=[["NPM_TOKEN", "npm-secret-value"]])
    assert done.status == DeploymentStatus.FAILED
    assert done.failed_stage == DeploymentStage.WAIT_BUILD
    assert done.error is not None
    assert "last lines of its output" in done.error
    assert "did not complete successfully: exit code: 1" in done.error
    assert "\x1b" not in done.error
    assert len(done.error.encode()) < 5000
    assert "npm-secret-value" not in done.error
    assert any(m.startswith("Last lines of the build output:") for m in await messages(done))


async def test_rate_limits_per_token_only_delay(redis: Redis, settings: Settings) -> None:
    """With both clouds allowing 8 requests per (scaled) minute, the pipeline's polls hit 429s and wait them out."""
    world = World(replace(FAST_WORLD, coolify_rate_limit_per_minute=8, do_rate_limit_per_minute=8, time_scale=60))
    async with deps_for(world, redis, settings) as deps:
        done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    refused = [c for c in world.requests if c.status == 429]
    assert refused, "the limits were never reached: the test proves nothing"


async def test_every_deploy_input_field_reaches_the_clouds(deps: Deps, world: World) -> None:
    """Name, repository, branch, build pack, base directory, ports and domains reach Coolify; region, size and
    image reach DigitalOcean."""
    spec = {
        "name": "shop",
        "source": {"kind": "git", "repository": "https://github.com/acme/mono", "branch": "release",
                   "build_pack": "dockerfile", "base_directory": "/apps/web"},
        "ports": "3000,9090",
        "domains": ["https://shop.example.com", "https://www.shop.example.com"],
        "region": "ams3",
        "size": "s-2vcpu-4gb",
        "image": "debian-12-x64",
    }  # fmt: skip
    done = await run(deps, await new_deployment(**spec))
    assert done.status == DeploymentStatus.COMPLETED, done.error
    [droplet] = world.snapshot()["droplets"]  # type: ignore[misc]
    assert (droplet["region"], droplet["size"], droplet["image"]) == ("ams3", "s-2vcpu-4gb", "debian-12-x64")
    app = world.applications[str(done.application_uuid)]
    assert app.name == "shop"
    assert app.git_repository == "acme/mono"  # Coolify stores github.com URLs as owner/repo
    assert (app.git_branch, app.build_pack, app.base_directory) == ("release", "dockerfile", "/apps/web")
    assert app.ports_exposes == "3000,9090"
    assert app.fqdn == "https://shop.example.com,https://www.shop.example.com"
