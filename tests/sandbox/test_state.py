"""Tests for sandbox.state: configuration, the clock and the lazily computed transitions of the world."""

from __future__ import annotations

import base64
import hashlib

import pytest

from sandbox.faults import FaultKind
from sandbox.state import (
    DEFAULT_COOLIFY_PUBLIC_KEY,
    Application,
    DeploymentStatus,
    ManualClock,
    SandboxConfig,
    Server,
    World,
    md5_fingerprint,
    ssh_key_blob,
)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that only moves when told to."""
    return ManualClock()


@pytest.fixture
def world(clock: ManualClock) -> World:
    """A world with default timings on the manual clock."""
    return World(clock=clock)


def _droplet_with_key(world: World, *, image: str = "ubuntu-24-04-x64", no_ip: bool = False) -> str:
    """Create a droplet carrying the Coolify key, boot it, and return its public IP (or '')."""
    key = world.find_ssh_key(md5_fingerprint(ssh_key_blob(DEFAULT_COOLIFY_PUBLIC_KEY) or b"")) or world.add_ssh_key(
        "coolify", DEFAULT_COOLIFY_PUBLIC_KEY
    )
    droplet = world.create_droplet(
        name="d",
        region="nyc3",
        size="s-1vcpu-1gb",
        image=image,
        tags=[],
        ssh_keys=[key],
        user_data=None,
        no_ip=no_ip,
    )
    world.advance(10)
    return world.droplet_public_ip(droplet) or ""


def _server(world: World, ip: str = "203.0.113.9") -> Server:
    return world.create_server(
        name="s",
        description=None,
        ip=ip,
        port=22,
        user="root",
        private_key_uuid="sandbox-private-key",
        proxy_type="traefik",
        is_build_server=False,
    )


def _app(world: World, server: Server) -> Application:
    project = world.projects["sandbox-project"]
    app = Application(
        id=world.next_id("application"),
        uuid=world.new_uuid(),
        name="web",
        description=None,
        build_pack="nixpacks",
        git_repository="https://github.com/a/b",
        git_branch="main",
        docker_image=None,
        docker_tag=None,
        ports_exposes="3000",
        fqdn=None,
        server_uuid=server.uuid,
        project_uuid=project.uuid,
        environment=project.environments[0],
        tags=[],
        created_at=world.now(),
    )
    world.add_application(app)
    return app


def test_config_defaults_follow_the_interface() -> None:
    """The default timings, limit and seeded ids are the ones the plan fixes."""
    config = SandboxConfig()
    assert (config.droplet_boot_s, config.droplet_ip_delay_s, config.sshd_delay_s) == (4.0, 1.0, 3.0)
    assert (config.validation_pickup_s, config.ssh_tries_span_s, config.docker_install_s) == (0.2, 0.6, 2.0)
    assert (config.list_lag_s, config.time_scale) == (0.5, 1.0)
    assert (config.build_queue_s, config.build_s, config.droplet_limit) == (1.0, 4.0, 25)
    assert (config.project_uuid, config.environment_name) == ("sandbox-project", "production")
    assert config.private_key_uuid == "sandbox-private-key"


def test_config_from_env_reads_sandbox_variables() -> None:
    """``SANDBOX_*`` variables set floats, ints, strings and the fault spec; others are ignored."""
    config = SandboxConfig.from_env(
        {
            "SANDBOX_BUILD_S": "0.25",
            "SANDBOX_DROPLET_LIMIT": "3",
            "SANDBOX_PROJECT_UUID": "p1",
            "SANDBOX_FAULTS": "build_fails:1",
            "SANDBOX_SEED": "7",
            "UNRELATED": "x",
        }
    )
    assert (config.build_s, config.droplet_limit, config.project_uuid, config.seed) == (0.25, 3, "p1", 7)
    assert config.faults == "build_fails:1"
    assert SandboxConfig.from_env({}) == SandboxConfig()


def test_config_reads_renamed_and_new_variables() -> None:
    """SANDBOX_DROPLET_LIST_LAG_S sets list_lag_s; the old SANDBOX_SERVER_VALIDATION_S sets the install time."""
    config = SandboxConfig.from_env(
        {"SANDBOX_DROPLET_LIST_LAG_S": "2", "SANDBOX_SERVER_VALIDATION_S": "1.5", "SANDBOX_TIME_SCALE": "10"}
    )
    assert (config.list_lag_s, config.docker_install_s, config.time_scale) == (2.0, 1.5, 10.0)
    both = {"SANDBOX_SERVER_VALIDATION_S": "1.5", "SANDBOX_DOCKER_INSTALL_S": "7"}
    assert SandboxConfig.from_env(both).docker_install_s == 7.0
    assert SandboxConfig(server_validation_s=0.05).docker_install_s == 0.05


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"SANDBOX_BUILD_S": "fast"}, "SANDBOX_BUILD_S"),
        ({"SANDBOX_DROPLET_LIMIT": "-1"}, "SANDBOX_DROPLET_LIMIT"),
        ({"SANDBOX_FAULTS": "explode"}, "SANDBOX_FAULTS"),
        ({"SANDBOX_COOLIFY_PUBLIC_KEY": "not a key"}, "SANDBOX_COOLIFY_PUBLIC_KEY"),
        ({"SANDBOX_TIME_SCALE": "0"}, "SANDBOX_TIME_SCALE"),
        ({"SANDBOX_DROPLET_LIST_LAG_S": "-1"}, "SANDBOX_DROPLET_LIST_LAG_S"),
        ({"SANDBOX_SSHD_DELAY_S": "soon"}, "SANDBOX_SSHD_DELAY_S"),
    ],
)
def test_config_from_env_rejects_bad_values_naming_the_variable(environ: dict[str, str], names: str) -> None:
    """An invalid setting raises ValueError whose message names the variable."""
    with pytest.raises(ValueError, match=names):
        SandboxConfig.from_env(environ)


def test_world_time_moves_with_the_clock_and_advance(clock: ManualClock, world: World) -> None:
    """``now()`` is the injected clock plus every ``advance()``, which refuses to go back."""
    start = world.now()
    clock.advance(3)
    world.advance(2)
    assert world.now() == start + 5
    with pytest.raises(ValueError, match="forward"):
        world.advance(-1)


def test_ssh_key_fingerprint_is_md5_of_the_blob() -> None:
    """The fingerprint is the colon-hex MD5 of the base64-decoded key blob; bad keys give None."""
    blob = base64.b64decode(DEFAULT_COOLIFY_PUBLIC_KEY.split()[1])
    expected = hashlib.md5(blob).hexdigest()  # noqa: S324 - this is what DigitalOcean shows
    assert md5_fingerprint(ssh_key_blob(DEFAULT_COOLIFY_PUBLIC_KEY) or b"").replace(":", "") == expected
    assert ssh_key_blob("ssh-ed25519 not-base64!") is None
    assert ssh_key_blob("ssh-rsa " + DEFAULT_COOLIFY_PUBLIC_KEY.split()[1]) is None  # type does not match blob
    assert ssh_key_blob("hello") is None


def test_droplet_boots_then_gets_its_public_ip_later(world: World) -> None:
    """A droplet is new, then active with only a private IPv4, then also has its public IPv4."""
    droplet = world.create_droplet(
        name="d",
        region="nyc3",
        size="s-1vcpu-1gb",
        image="ubuntu-24-04-x64",
        tags=[],
        ssh_keys=[],
        user_data=None,
    )
    assert (world.droplet_status(droplet), world.droplet_private_ip(droplet)) == ("new", None)
    world.advance(4)
    assert world.droplet_status(droplet) == "active"
    assert world.droplet_private_ip(droplet) is not None
    assert world.droplet_public_ip(droplet) is None
    world.advance(1)
    assert world.droplet_public_ip(droplet) == droplet.public_ipv4
    assert world.action_status(world.actions[droplet.action_id]) == "completed"


def test_droplet_without_ip_never_gets_one(world: World) -> None:
    """``no_ip`` keeps a droplet active without a public IPv4 forever."""
    droplet = world.create_droplet(
        name="d",
        region="nyc3",
        size="s-1vcpu-1gb",
        image="x",
        tags=[],
        ssh_keys=[],
        user_data=None,
        no_ip=True,
    )
    world.advance(10_000)
    assert world.droplet_status(droplet) == "active"
    assert world.droplet_public_ip(droplet) is None


def test_tags_keep_their_first_spelling(world: World) -> None:
    """Tags are case-stable: later spellings map to the first one seen."""
    assert world.canonical_tag("Orch-1") == "Orch-1"
    assert world.canonical_tag("orch-1") == "Orch-1"


def test_install_validation_makes_a_server_ready_after_the_delay(world: World) -> None:
    """Validation with install shows ``is_validating`` and then reachable and usable with no logs."""
    server = _server(world, _droplet_with_key(world))
    world.start_validation(server, install=True)
    world.advance(0.21)
    assert world.server_state(server).is_validating
    assert not world.server_state(server).is_usable
    world.advance(2)
    state = world.server_state(server)
    assert (state.is_reachable, state.is_usable, state.is_validating, state.validation_logs) == (
        True,
        True,
        False,
        None,
    )


def test_plain_validation_does_not_install_docker(world: World) -> None:
    """Plain validation leaves a fresh server reachable but unusable, with a Docker message in the logs."""
    server = _server(world, _droplet_with_key(world))
    world.start_validation(server, install=False)
    assert not world.server_state(server).is_validating
    world.advance(2)
    state = world.server_state(server)
    assert (state.is_reachable, state.is_usable) == (True, False)
    assert "Docker Engine is not installed" in (state.validation_logs or "")


def test_plain_validation_passes_on_a_docker_image(world: World) -> None:
    """A droplet made from a docker image passes plain validation."""
    server = _server(world, _droplet_with_key(world, image="docker-20-04"))
    world.start_validation(server, install=False)
    world.advance(2)
    assert world.server_state(server).is_usable


def test_validation_fails_when_the_droplet_lacks_the_coolify_key(world: World) -> None:
    """A droplet created without the Coolify public key refuses SSH: unreachable, with logs."""
    droplet = world.create_droplet(
        name="d", region="nyc3", size="s-1vcpu-1gb", image="x", tags=[], ssh_keys=[], user_data=None
    )
    world.advance(10)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(2)
    state = world.server_state(server)
    assert not state.is_reachable
    assert "Permission denied" in (state.validation_logs or "")


def test_unreachable_validation_writes_logs(world: World) -> None:
    """An unreachable server ends neither reachable nor usable, with validation logs."""
    server = _server(world)
    world.start_validation(server, install=True, unreachable=True)
    world.advance(2)
    state = world.server_state(server)
    assert (state.is_reachable, state.is_usable) == (False, False)
    assert state.validation_logs is not None


def test_deployment_goes_queued_in_progress_finished(world: World) -> None:
    """A deployment is queued for build_queue_s, in progress for build_s, then finished."""
    app = _app(world, _server(world))
    deployment = world.queue_deployment(app, outcome="finished", restart_only=False, force=False)
    assert world.deployment_status(deployment) is DeploymentStatus.QUEUED
    world.advance(1)
    assert world.deployment_status(deployment) is DeploymentStatus.IN_PROGRESS
    assert world.application_status(app) == "exited"
    world.advance(4)
    assert world.deployment_status(deployment) is DeploymentStatus.FINISHED
    assert world.application_status(app) == "running:healthy"


def test_deployments_of_one_app_run_one_after_the_other(world: World) -> None:
    """A second deployment waits for the first to end before it starts."""
    app = _app(world, _server(world))
    first = world.queue_deployment(app, outcome="failed", restart_only=False, force=False)
    second = world.queue_deployment(app, outcome="finished", restart_only=True, force=False)
    world.advance(3)
    assert world.deployment_status(second) is DeploymentStatus.QUEUED
    world.advance(2)
    assert world.deployment_status(first) is DeploymentStatus.FAILED
    assert world.deployment_status(second) is DeploymentStatus.IN_PROGRESS
    world.advance(4)
    assert world.deployment_status(second) is DeploymentStatus.FINISHED


def test_a_hanging_deployment_blocks_the_queue_until_cancelled(world: World) -> None:
    """A hanging build stays in progress forever and holds the next one queued until it is cancelled."""
    app = _app(world, _server(world))
    hung = world.queue_deployment(app, outcome="hang", restart_only=False, force=False)
    after = world.queue_deployment(app, outcome="finished", restart_only=False, force=False)
    world.advance(10_000)
    assert world.deployment_status(hung) is DeploymentStatus.IN_PROGRESS
    assert world.deployment_status(after) is DeploymentStatus.QUEUED
    assert world.active_deployment(app) is after
    hung.cancelled_at = world.now()
    assert world.deployment_status(hung) is DeploymentStatus.CANCELLED
    world.advance(5)
    assert world.deployment_status(after) is DeploymentStatus.FINISHED


def test_application_delete_is_carried_out_lazily(world: World) -> None:
    """A queued delete removes the app with its envs and deployments once app_delete_s has passed."""
    app = _app(world, _server(world))
    world.add_env(app.uuid, "A", "1")
    world.queue_deployment(app, outcome="finished", restart_only=False, force=False)
    world.delete_application(app)
    world.sweep()
    assert app.uuid in world.applications
    world.advance(1)
    world.sweep()
    assert (world.applications, world.envs, world.deployments) == ({}, [], {})


def test_app_envs_list_production_before_preview(world: World) -> None:
    """Env rows come production first, then preview, each in creation order."""
    app = _app(world, _server(world))
    world.add_env(app.uuid, "B", "1", is_preview=True)
    world.add_env(app.uuid, "A", "1")
    world.add_env(app.uuid, "C", "1")
    assert [(e.key, e.is_preview) for e in world.app_envs(app.uuid)] == [
        ("A", False),
        ("C", False),
        ("B", True),
    ]


def test_snapshot_shows_everything_but_env_values(world: World) -> None:
    """The snapshot lists droplets, keys, servers, apps, envs and deployments, never an env value."""
    _droplet_with_key(world)
    app = _app(world, _server(world))
    world.add_env(app.uuid, "SECRET", "hunter2")
    snapshot = world.snapshot()
    assert {k: len(v) for k, v in snapshot.items() if isinstance(v, list)} == {
        "droplets": 1,
        "ssh_keys": 1,
        "servers": 1,
        "applications": 1,
        "envs": 1,
        "deployments": 0,
        "faults": 0,
    }
    assert "hunter2" not in repr(snapshot)


def test_reset_restores_the_seeded_world(world: World) -> None:
    """Reset forgets everything, reseeds the project and key, and re-reads the configured faults."""
    world = World(SandboxConfig(faults="build_fails"), clock=ManualClock())
    world.faults.clear()
    _droplet_with_key(world)
    world.log_request("coolify", "GET", "/x", 200)
    world.reset()
    assert (world.droplets, world.ssh_keys, world.servers, world.requests) == ({}, {}, {}, [])
    assert list(world.projects) == ["sandbox-project"]
    assert list(world.private_keys) == ["sandbox-private-key"]
    assert [f.kind for f in world.faults.active] == [FaultKind.BUILD_FAILS]


def test_calls_filter_the_request_log(world: World) -> None:
    """``calls()`` filters the log by method and path regex."""
    world.log_request("coolify", "POST", "/sandbox/coolify/api/v1/applications/a/restart", 200)
    world.log_request("coolify", "GET", "/sandbox/coolify/api/v1/applications/a", 200)
    assert len(world.calls("POST", r"/restart$")) == 1
    assert len(world.calls(path="/applications/")) == 2
    assert world.calls("DELETE") == []
