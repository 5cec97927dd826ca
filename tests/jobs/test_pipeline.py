"""The pipeline against the sandbox (through ASGI): success, failure at each step with full cleanup,
timeouts, and resuming without duplicates."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest

from jobs.context import Deps
from jobs.progress import stored_events
from models.deployment import Deployment, DeploymentStage, DeploymentStatus
from models.slot import slot_usage
from sandbox.state import World
from tests.conftest import SSH_PUBLIC_KEY
from tests.jobs.conftest import new_deployment, run


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
        ("server_unreachable", DeploymentStage.VALIDATE_SERVER, "Connection timed out"),
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
    """A retry after a crash between the droplet POST and storing its id adopts the tagged droplet, although
    DigitalOcean's list does not show it yet when the retry starts."""
    deployment = await new_deployment()
    # As the crashed attempt left it: in the CREATE_DROPLET step, with no droplet id stored.
    await Deployment.filter(id=deployment.id).update(
        status=DeploymentStatus.PROCESSING, stage=DeploymentStage.CREATE_DROPLET
    )
    deployment = await Deployment.get(id=deployment.id)
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


async def test_a_resumed_job_adopts_the_application_it_created(deps: Deps, world: World) -> None:
    """A retry after a crash between the application POST and storing its uuid adopts that application, even
    under a user-chosen name that another application also has."""
    deployment = await new_deployment(name="shop")
    done = await run(deps, deployment)
    other = await new_deployment(name="shop")  # same user-chosen name, different deployment
    await run(deps, other)
    # Forget the application uuid, as if the worker died right after Coolify created it.
    await Deployment.filter(id=done.id).update(
        application_uuid=None, coolify_deployment_uuid=None, status=DeploymentStatus.PROCESSING
    )
    again = await run(deps, await Deployment.get(id=done.id))
    assert again.status == DeploymentStatus.COMPLETED
    assert again.application_uuid == done.application_uuid
    assert len(world.snapshot()["applications"]) == 2  # type: ignore[arg-type]


def other_public_key() -> str:
    """A valid ed25519 public key that is not the half of Coolify's private key."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
    return "ssh-ed25519 " + base64.b64encode(blob).decode() + " someone-else"


async def test_a_refused_key_fails_at_once_naming_the_key(deps: Deps, world: World) -> None:
    """A droplet that refuses Coolify's key fails VALIDATE_SERVER after one validation, saying which key to check."""
    deps.config = replace(deps.config, ssh_public_key=other_public_key())
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.FAILED
    assert done.failed_stage == DeploymentStage.VALIDATE_SERVER
    assert done.error is not None
    assert "Permission denied (publickey)" in done.error
    assert "COOLIFY_SSH_PUBLIC_KEY" in done.error and "sandbox-private-key" in done.error
    assert "Asking again will not help" in done.error
    # One validation may find sshd not up yet ("Connection refused"); the one that meets the key is the last.
    assert 1 <= len(world.calls("POST", r"/validate$")) <= 2
    assert world.snapshot()["droplets"] == []


async def test_a_validated_server_is_never_validated_again(deps: Deps, world: World) -> None:
    """A job resumed after validation (the build not started yet) skips the validation entirely."""
    done = await run(deps, await new_deployment())
    assert done.server_validated_at is not None
    validations = len(world.calls("POST", r"/validate$"))
    await Deployment.filter(id=done.id).update(
        status=DeploymentStatus.PROCESSING, stage=DeploymentStage.CREATE_APPLICATION, coolify_deployment_uuid=None
    )
    again = await run(deps, await Deployment.get(id=done.id))
    assert again.status == DeploymentStatus.COMPLETED, again.error
    assert len(world.calls("POST", r"/validate$")) == validations


async def test_a_429_on_validate_is_not_yet(deps: Deps, world: World) -> None:
    """Coolify refusing the validate POST with 429 twice delays the deployment; the POST is sent again."""
    world.faults.add_spec("rate_limit=0:2@POST:/validate$")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    statuses = [c.status for c in world.calls("POST", r"/validate$")]
    assert statuses[:3] == [429, 429, 201]
    assert set(statuses[3:]) <= {201}  # later requests, if sshd was not up yet at the first


async def test_a_server_at_a_reused_ip_is_a_conflict(deps: Deps, world: World) -> None:
    """A Coolify server at the droplet's IP that another deployment registered is not adopted."""
    first = await run(deps, await new_deployment())
    second = await new_deployment()
    await Deployment.filter(id=second.id).update(
        status=DeploymentStatus.PROCESSING, stage=DeploymentStage.REGISTER_SERVER,
        droplet_id=999_999, ip_address=first.ip_address,
    )  # fmt: skip
    done = await run(deps, await Deployment.get(id=second.id))
    assert done.status == DeploymentStatus.FAILED
    assert done.failed_stage == DeploymentStage.REGISTER_SERVER
    assert done.error is not None
    assert f"already has a server at {first.ip_address}" in done.error and first.server_uuid in done.error
    assert [s["uuid"] for s in world.snapshot()["servers"]] == [first.server_uuid]  # type: ignore[index]


async def test_a_resumed_job_adopts_its_own_server(deps: Deps, world: World) -> None:
    """A retry after a crash between the server POST and storing its uuid adopts the server it registered."""
    done = await run(deps, await new_deployment())
    await Deployment.filter(id=done.id).update(
        status=DeploymentStatus.PROCESSING, stage=DeploymentStage.REGISTER_SERVER, server_uuid=None,
        server_validated_at=None, application_uuid=None, coolify_deployment_uuid=None,
    )  # fmt: skip
    again = await run(deps, await Deployment.get(id=done.id))
    assert again.status == DeploymentStatus.COMPLETED, again.error
    assert again.server_uuid == done.server_uuid
    assert len(world.snapshot()["servers"]) == 1  # type: ignore[arg-type]


async def test_a_first_attempt_creates_without_listing_everything(deps: Deps, world: World) -> None:
    """A deployment's first attempt registers its server and creates its application without first reading
    every server and application of the team (once per deployment, that grows with the fleet)."""
    await run(deps, await new_deployment())  # someone else's server and application exist
    world.requests.clear()
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    calls = [(r.method, r.path) for r in world.requests]
    register = calls.index(("POST", "/sandbox/coolify/api/v1/servers"))
    assert ("GET", "/sandbox/coolify/api/v1/servers") not in calls[:register]
    assert world.calls("GET", r"/applications$") == []


async def test_an_application_create_whose_answer_was_lost_is_adopted_on_the_step_retry(
    deps: Deps, world: World
) -> None:
    """Coolify created the application but its answer was lost (a 500): the step's retry finds it by its
    description instead of creating a second one."""
    world.faults.add_spec("response_lost:1@POST:/applications/dockerimage$")
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.COMPLETED, done.error
    assert len(world.snapshot()["applications"]) == 1  # type: ignore[arg-type]
    assert len(world.calls("POST", r"/applications/dockerimage$")) == 1
