"""Tests for deployment logs: the JSON string Coolify keeps, growing as the build runs, with hidden entries."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from sandbox import ManualClock, World
from sandbox.buildlog import BuildInfo, deployment_logs

CO = "/sandbox/coolify/api/v1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
KEYS = {"command", "output", "type", "timestamp", "hidden", "batch", "order"}


@pytest.fixture
async def app(client: httpx.AsyncClient, clock: ManualClock) -> str:
    """A nixpacks application on a server that passed install validation."""
    server = await client.post(f"{CO}/servers", json={"ip": "203.0.113.20", "private_key_uuid": "sandbox-private-key"})
    uuid = server.json()["uuid"]
    await client.post(f"{CO}/servers/{uuid}/validate", json={"install": True})
    clock.advance(5)
    body = {
        "project_uuid": "sandbox-project",
        "environment_name": "production",
        "server_uuid": uuid,
        "name": "web",
        "git_repository": "https://github.com/acme/shop",
        "git_branch": "main",
        "build_pack": "nixpacks",
        "base_directory": "/web",
    }
    created = await client.post(f"{CO}/applications/public", json=body)
    return str(created.json()["uuid"])


async def _logs(client: httpx.AsyncClient, deployment: str) -> tuple[str, list[dict[str, Any]]]:
    body = (await client.get(f"{CO}/deployments/{deployment}")).json()
    assert isinstance(body["logs"], str)  # a JSON-encoded string, not a list
    return body["status"], json.loads(body["logs"])


async def _deploy(client: httpx.AsyncClient, app: str) -> str:
    response = await client.post(f"{CO}/deploy", json={"uuid": app})
    return str(response.json()["deployments"][0]["deployment_uuid"])


async def test_logs_grow_as_the_build_runs(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """Queued: no entries; in progress: some; finished: all, ordered, in ApplicationDeploymentQueue's shape."""
    deployment = await _deploy(client, app)
    status, entries = await _logs(client, deployment)
    assert (status, entries) == ("queued", [])
    clock.advance(1 + 2)
    status, middle = await _logs(client, deployment)
    assert status == "in_progress"
    assert middle[0]["output"] == "Starting deployment of acme/shop:main to " + middle[0]["output"].split(" to ")[1]
    clock.advance(3)
    status, entries = await _logs(client, deployment)
    assert status == "finished"
    assert len(entries) > len(middle) > 1
    assert entries[: len(middle)] == middle
    assert all(set(e) == KEYS for e in entries)
    assert [e["order"] for e in entries] == list(range(1, len(entries) + 1))
    assert {e["type"] for e in entries} == {"stdout", "stderr"}
    visible = [e["output"] for e in entries if not e["hidden"]]
    assert "Rolling update completed." in visible
    assert visible[-1] == f"Gracefully shutting down build container: {deployment}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entries[0]["timestamp"])


async def test_logs_have_hidden_command_entries(client: httpx.AsyncClient, app: str, clock: ManualClock) -> None:
    """Remote commands' output is logged with the command, hidden ones flagged, some with ANSI colours."""
    deployment = await _deploy(client, app)
    clock.advance(10)
    _, entries = await _logs(client, deployment)
    hidden = [e for e in entries if e["hidden"]]
    assert hidden
    assert all(e["command"] and e["command"].startswith("docker") for e in hidden)
    assert all(e["command"] is None and e["batch"] == 1 for e in entries if not e["hidden"])
    assert any(ANSI.search(e["output"]) for e in entries)
    assert any("/artifacts/" + deployment + "/web" in (e["command"] or "") for e in entries)  # the base directory


async def test_a_failed_build_logs_real_looking_output(
    client: httpx.AsyncClient, app: str, world: World, clock: ManualClock
) -> None:
    """build_fails ends failed with docker build's error in a visible stderr entry, over 20 lines in all."""
    world.faults.add_spec("build_fails:1")
    deployment = await _deploy(client, app)
    clock.advance(10)
    status, entries = await _logs(client, deployment)
    assert status == "failed"
    lines = [line for e in entries for line in e["output"].splitlines()]
    assert len(lines) > 20
    visible = [e for e in entries if not e["hidden"]]
    failure = next(e for e in visible if e["output"].startswith("Deployment failed: Command execution failed"))
    assert failure["type"] == "stderr"
    assert failure["output"].endswith(
        'ERROR: failed to solve: process "/bin/sh -c npm ci" did not complete successfully: exit code: 1'
    )
    assert ANSI.search(failure["output"])  # npm's red "npm error"
    assert [e["output"] for e in visible[-3:]] == [
        "========================================",
        "Deployment failed. Removing the new version of your application.",
        f"Gracefully shutting down build container: {deployment}",
    ]
    assert any(e["hidden"] and e["output"].startswith("Error type: ") for e in entries)


async def test_a_deployment_on_an_unusable_server_says_so(client: httpx.AsyncClient, clock: ManualClock) -> None:
    """On a server that never passed validation the deployment fails at once: "Server is not functional."."""
    server = (
        await client.post(f"{CO}/servers", json={"ip": "203.0.113.21", "private_key_uuid": "sandbox-private-key"})
    ).json()
    body = {
        "project_uuid": "sandbox-project",
        "environment_name": "production",
        "server_uuid": server["uuid"],
        "docker_registry_image_name": "nginx",
    }
    app = (await client.post(f"{CO}/applications/dockerimage", json=body)).json()["uuid"]
    deployment = await _deploy(client, app)
    clock.advance(1.01)
    status, entries = await _logs(client, deployment)
    assert status == "failed"
    visible = [e["output"] for e in entries if not e["hidden"]]
    assert visible[:2] == [visible[0], "Server is not functional."]
    assert "Deployment failed: Server is not functional." in visible


async def test_cancelled_deployment_logs_stop_at_the_cancel(
    client: httpx.AsyncClient, app: str, clock: ManualClock
) -> None:
    """After a cancel no build line is added, only the cancel notice."""
    deployment = await _deploy(client, app)
    clock.advance(2)
    await client.post(f"{CO}/deployments/{deployment}/cancel")
    _, at_cancel = await _logs(client, deployment)
    clock.advance(60)
    _, later = await _logs(client, deployment)
    assert later == at_cancel
    assert later[-1]["output"] == "Deployment cancelled by user, stopping execution."


def test_a_hanging_build_stalls_midway() -> None:
    """A deployment that never ends stops adding lines halfway through its build."""
    info = BuildInfo("d1", "a1", "web", "nixpacks", "acme/shop", "main", "", "/", "srv", False, "hang", "build")
    entries = deployment_logs(info, start=0.0, duration=None, cancelled_at=None, now=1e9, timestamp=str)
    outputs = [e["output"] for e in entries]
    assert "Building docker image started." in outputs
    assert "Building docker image completed." not in outputs


def test_a_failed_image_pull_fails_the_rolling_update() -> None:
    """A dockerimage app's failure is the pull in docker compose up: "Failed to start container: ..."."""
    info = BuildInfo("d1", "a1", "img", "dockerimage", "", "", "nginx:9.9", "/", "srv", False, "failed", "build")
    entries = deployment_logs(info, start=0.0, duration=4.0, cancelled_at=None, now=10.0, timestamp=str)
    failure = next(e["output"] for e in entries if e["output"].startswith("Deployment failed: "))
    assert failure.startswith("Deployment failed: Failed to start container: Command execution failed (exit code 1)")
    assert failure.endswith("manifest for nginx:9.9 not found: manifest unknown: manifest unknown")
