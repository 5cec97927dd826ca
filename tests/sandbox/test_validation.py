"""Tests for Coolify's server validation as the sandbox plays it: SSH coming up late, retries, install, logs."""

from __future__ import annotations

import httpx
import pytest

from sandbox import ManualClock, SandboxConfig, World
from sandbox.records import Droplet, Server
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY
from sandbox.validation import (
    docker_missing_log,
    is_retryable_ssh_error,
    purify,
    unreachable_log,
)

DO, CO, CONTROL = "/sandbox/digitalocean/v2", "/sandbox/coolify/api/v1", "/sandbox/_control"
# Default timings: IP at 5 s after create, sshd at 8 s; pickup 0.2 s, SSH tries over 0.6 s, install 2 s.
IP_AT, SSHD_AT = 5.0, 8.0


@pytest.fixture
def world(clock: ManualClock) -> World:
    """A world with the default (realistic) timings on a manual clock."""
    return World(clock=clock)


def _droplet(world: World, *, image: str = "ubuntu-24-04-x64", **faults: bool) -> Droplet:
    key = world.add_ssh_key("coolify", DEFAULT_COOLIFY_PUBLIC_KEY)
    return world.create_droplet(
        name="d", region="nyc3", size="s-1vcpu-1gb", image=image, tags=[], ssh_keys=[key], user_data=None, **faults
    )


def _server(world: World, ip: str, *, user: str = "root", port: int = 22) -> Server:
    return world.create_server(
        name="s",
        description=None,
        ip=ip,
        port=port,
        user=user,
        private_key_uuid="sandbox-private-key",
        proxy_type="traefik",
        is_build_server=False,
    )


def _at(world: World, created: float, seconds: float) -> None:
    """Move the world to ``seconds`` after ``created``."""
    world.advance(created + seconds - world.now())


# ---------------------------------------------------------------- texts


def test_unreachable_log_is_the_install_jobs_text_after_purifier() -> None:
    """The install job's message, with the reason escaped and the link as HTMLPurifier stores it."""
    assert unreachable_log("ssh: connect to host 198.18.0.3 port 22: Connection refused", install=True) == (
        "Server is not reachable. Please validate your configuration and connection.<br>Check this "
        '<a target="_blank" class="underline" href="https://coolify.io/docs/knowledge-base/server/openssh" '
        'rel="noreferrer noopener">documentation</a> for further help. <br><br>Error: '
        "ssh: connect to host 198.18.0.3 port 22: Connection refused"
    )


def test_plain_validation_texts_drop_the_dark_class_token() -> None:
    """ValidateServer's link class loses ``dark:text-white`` (not an NMTOKEN) and its error sits in a div."""
    text = unreachable_log("root@1.2.3.4: Permission denied (publickey).", install=False)
    assert 'class="text-black underline" href="https://coolify.io/docs/knowledge-base/server/openssh"' in text
    assert text.endswith('<div class="text-error">Error: root@1.2.3.4: Permission denied (publickey).</div>')
    assert docker_missing_log().startswith("Docker Engine is not installed. Please install Docker manually")
    assert "dark:" not in docker_missing_log()


def test_reasons_are_html_escaped() -> None:
    """ssh's stderr goes through htmlspecialchars: ``<`` and ``&`` are escaped, quotes survive the purifier."""
    assert unreachable_log("a<b & 'c'", install=True).endswith("Error: a&lt;b &amp; 'c'")
    assert purify('<br><p class="x y:z">') == '<br><p class="x">'


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        ("ssh: connect to host 1.2.3.4 port 22: Connection refused", True),
        ("ssh: connect to host 1.2.3.4 port 22: Connection timed out", True),
        ("ssh: connect to host 1.2.3.4 port 22: No route to host", True),
        ("root@1.2.3.4: Permission denied (publickey).", False),
        ("Connection to 1.2.3.4 closed by remote host.", False),  # Coolify's 'Connection to .* closed' is literal
    ],
)
def test_retryable_errors_follow_coolifys_list(reason: str, retried: bool) -> None:
    """SshRetryable retries connection errors, not a refused key (nor texts its regex-looking entries miss)."""
    assert is_retryable_ssh_error(reason) is retried


# ---------------------------------------------------------------- the install job


def test_install_validation_right_after_the_ip_fails_with_connection_refused(world: World) -> None:
    """The job waits for pickup, tries SSH over the span, then writes "Connection refused" and stops."""
    droplet = _droplet(world)
    created = world.now()
    _at(world, created, IP_AT)
    server = _server(world, world.droplet_public_ip(droplet) or "")
    world.start_validation(server, install=True)
    assert world.server_state(server).is_validating is False  # not picked up yet
    world.advance(0.21)
    assert world.server_state(server).is_validating is True
    world.advance(0.57)
    assert world.server_state(server).validation_logs is None  # still trying
    world.advance(0.04)
    state = world.server_state(server)
    assert (state.is_validating, state.is_reachable, state.is_usable) == (False, False, False)
    assert state.validation_logs == unreachable_log(
        f"ssh: connect to host {droplet.public_ipv4} port 22: Connection refused", install=True
    )
    world.advance(60)  # it never tries again by itself
    assert world.server_state(server) == state


def test_install_validation_once_sshd_answers_installs_docker_and_keeps_old_logs(world: World) -> None:
    """After a failed try, a later install validation installs Docker; the old logs stay on success."""
    droplet = _droplet(world)
    created = world.now()
    _at(world, created, IP_AT)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    _at(world, created, SSHD_AT)
    old_logs = world.server_state(server).validation_logs
    assert old_logs is not None
    world.start_validation(server, install=True)
    world.advance(0.21)
    during = world.server_state(server)
    assert (during.is_validating, during.is_reachable, during.is_usable) == (True, True, False)
    world.advance(1.97)
    assert world.server_state(server).is_validating is True
    world.advance(0.04)
    after = world.server_state(server)
    assert (after.is_validating, after.is_reachable, after.is_usable, after.proxy_running) == (False, True, True, True)
    assert after.validation_logs == old_logs


def test_sshd_coming_up_between_tries_is_reached_by_a_later_try(clock: ManualClock) -> None:
    """A try at 1/3 of the span finds sshd up: reachable without a failure log."""
    world = World(SandboxConfig(ssh_tries_span_s=6.0, validation_pickup_s=0), clock=clock)
    droplet = _droplet(world)
    created = world.now()
    _at(world, created, SSHD_AT - 1)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(2.01)  # the second try, at +2 s, is after sshd came up at +1 s
    state = world.server_state(server)
    assert (state.is_reachable, state.is_validating, state.validation_logs) == (True, True, None)


def test_wrong_key_fails_at_the_first_try(world: World) -> None:
    """ "Permission denied (publickey)" is not retried: the job fails at pickup with that reason."""
    droplet = _droplet(world, wrong_key=True)
    created = world.now()
    _at(world, created, SSHD_AT + 1)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(0.21)
    state = world.server_state(server)
    assert (state.is_validating, state.is_reachable) == (False, False)
    assert f"Error: root@{droplet.public_ipv4}: Permission denied (publickey)." in (state.validation_logs or "")


def test_a_droplet_without_the_coolify_key_denies_it(world: World) -> None:
    """A droplet created without the Coolify key's public half refuses it like a wrong key."""
    droplet = world.create_droplet(
        name="d", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64", tags=[], ssh_keys=[], user_data=None
    )
    world.advance(60)
    server = _server(world, droplet.public_ipv4)
    assert world.ssh_error(server, world.now()) == f"root@{droplet.public_ipv4}: Permission denied (publickey)."


def test_sshd_never_times_out_after_the_tries(world: World) -> None:
    """A droplet whose sshd never answers ends "Connection timed out" after the span, every time."""
    droplet = _droplet(world, sshd_never=True)
    world.advance(3600)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(0.78)
    assert world.server_state(server).is_validating is True
    world.advance(0.04)
    assert "port 22: Connection timed out" in (world.server_state(server).validation_logs or "")


@pytest.mark.parametrize(
    ("user", "port", "reason"),
    [("ubuntu", 22, "ubuntu@{ip}: Permission denied (publickey)."), ("root", 2222, "port 2222: Connection refused")],
)
def test_only_root_on_port_22_gets_in(world: World, user: str, port: int, reason: str) -> None:
    """A droplet lets in root on port 22 only, as a fresh DigitalOcean droplet does."""
    droplet = _droplet(world)
    world.advance(60)
    server = _server(world, droplet.public_ipv4, user=user, port=port)
    assert reason.format(ip=droplet.public_ipv4) in (world.ssh_error(server, world.now()) or "")


def test_a_deleted_droplets_address_times_out(world: World) -> None:
    """An address in the droplet range that no droplet holds any more does not answer."""
    droplet = _droplet(world)
    world.advance(60)
    server = _server(world, droplet.public_ipv4)
    del world.droplets[droplet.id]
    assert (world.ssh_error(server, world.now()) or "").endswith("port 22: Connection timed out")


def test_a_docker_image_needs_no_install(world: World) -> None:
    """On the docker marketplace image the install job ends usable as soon as SSH gets in."""
    droplet = _droplet(world, image="docker-20-04")
    world.advance(60)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(0.21)
    state = world.server_state(server)
    assert (state.is_validating, state.is_usable, state.proxy_running) == (False, True, True)


# ---------------------------------------------------------------- plain validation


def test_plain_validation_clears_logs_and_never_sets_is_validating(world: World) -> None:
    """ValidateServer clears validation_logs at pickup, leaves is_validating alone and installs nothing."""
    droplet = _droplet(world)
    created = world.now()
    _at(world, created, IP_AT)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    _at(world, created, SSHD_AT)
    assert world.server_state(server).validation_logs is not None
    world.start_validation(server, install=False)
    world.advance(0.1)
    assert world.server_state(server).validation_logs is not None  # not picked up yet
    world.advance(0.11)
    state = world.server_state(server)
    assert (state.is_validating, state.is_reachable, state.is_usable) == (False, True, False)
    assert state.validation_logs == docker_missing_log()


def test_plain_validation_unreachable_uses_its_own_text(world: World) -> None:
    """ValidateServer's unreachable message is the one with the error in a div; is_validating stays false."""
    droplet = _droplet(world)
    _at(world, world.now(), IP_AT)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=False)
    world.advance(0.82)
    state = world.server_state(server)
    assert (state.is_validating, state.is_reachable) == (False, False)
    assert (state.validation_logs or "").endswith("Connection refused</div>")


def test_plain_validation_sees_docker_installed_by_an_install_job(world: World) -> None:
    """Docker belongs to the host: after an install validation, plain validation passes."""
    droplet = _droplet(world)
    world.advance(60)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(5)
    world.start_validation(server, install=False)
    world.advance(1)
    state = world.server_state(server)
    assert (state.is_usable, state.validation_logs) == (True, None)


# ---------------------------------------------------------------- overlapping requests


def test_validations_are_counted_and_overlaps_recorded(world: World) -> None:
    """A request while another validation is queued or running is accepted and counted as overlapping."""
    droplet = _droplet(world)
    world.advance(60)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)
    world.advance(0.1)  # queued
    world.start_validation(server, install=True)
    world.advance(1.0)  # the first is installing Docker
    world.start_validation(server, install=False)
    world.advance(10)
    world.start_validation(server, install=True)  # everything finished: not an overlap
    snapshot = world.snapshot()["servers"]
    assert isinstance(snapshot, list)
    assert (snapshot[0]["validations_requested"], snapshot[0]["overlapping_validations"]) == (4, 2)
    assert server.overlapping_validations == 2
    # The last request came for a server already usable; the totals outlive the server.
    world.delete_server(server)
    assert world.snapshot()["validations"] == {"requested": 4, "overlapping": 2, "after_usable": 1}


def test_overlapping_install_jobs_interleave_their_writes(world: World) -> None:
    """Two install jobs: the later one's is_validating true and false land in time order with the first's."""
    droplet = _droplet(world)
    world.advance(60)
    server = _server(world, droplet.public_ipv4)
    world.start_validation(server, install=True)  # installs 0.2 -> 2.2
    world.advance(1.0)
    world.start_validation(server, install=True)  # picked up at 1.2, installs until 3.2
    world.advance(1.5)  # 2.5: the first is done, the second still installing
    assert world.server_state(server).is_validating is False  # the first job's final write came last
    world.advance(1.0)  # 3.5
    state = world.server_state(server)
    assert (state.is_validating, state.is_usable) == (False, True)


# ---------------------------------------------------------------- through the API


async def test_a_pipeline_validating_as_soon_as_the_ip_appears(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """Through both APIs: the first install validation fails "Connection refused"; a second, later, succeeds
    and the old logs stay; asking again while one runs is accepted and counted in the control state."""
    key = await client.post(f"{DO}/account/keys", json={"name": "c", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
    body = {
        "name": "web-1",
        "size": "s-1vcpu-1gb",
        "image": "ubuntu-24-04-x64",
        "ssh_keys": [key.json()["ssh_key"]["id"]],
    }
    droplet_id = (await client.post(f"{DO}/droplets", json=body)).json()["droplet"]["id"]
    ip = None
    while ip is None:
        clock.advance(0.5)
        droplet = (await client.get(f"{DO}/droplets/{droplet_id}")).json()["droplet"]
        ip = next((n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public"), None)
    server = (await client.post(f"{CO}/servers", json={"ip": ip, "private_key_uuid": "sandbox-private-key"})).json()
    url = f"{CO}/servers/{server['uuid']}"
    assert (await client.post(f"{url}/validate", json={"install": True})).status_code == 201
    clock.advance(1)
    failed = (await client.get(url)).json()
    assert (failed["is_validating"], failed["settings"]["is_reachable"]) == (False, False)
    assert failed["validation_logs"].endswith(f"Error: ssh: connect to host {ip} port 22: Connection refused")
    clock.advance(3)
    assert (await client.post(f"{url}/validate", json={"install": True})).status_code == 201
    clock.advance(0.5)
    assert (await client.post(f"{url}/validate", json={"install": True})).status_code == 201  # while running
    clock.advance(5)
    ready = (await client.get(url)).json()
    assert (ready["is_validating"], ready["settings"]["is_reachable"], ready["settings"]["is_usable"]) == (
        False,
        True,
        True,
    )
    assert ready["validation_logs"] == failed["validation_logs"]
    [state] = (await client.get(f"{CONTROL}/state")).json()["servers"]
    assert (state["validations_requested"], state["overlapping_validations"]) == (3, 1)
