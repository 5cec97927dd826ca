"""The whole system through the real path: `deployer sandbox`, `deployer serve` and `deployer worker` processes,
real Redis, the database (SQLite, or PostgreSQL when DATABASE_URL is set), HTTP and websockets."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.processes import Stack, running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SUBSCRIPTION = """subscription($id: ID!, $after: Int) {
  deploymentProgress(id: $id, afterSequence: $after) { sequence deploymentId status stage message at }
}"""
SECRET = "s3cr3t-value-never-logged"


@pytest.fixture
def stack(tmp_path: Path, redis_url: str, database_url: str, queue_name: str) -> Iterator[Stack]:
    """A running sandbox + API + worker."""
    with running_stack(
        tmp_path, redis_url=redis_url, database_url=database_url, queue=queue_name,
        env={"DEPLOYER_DEFAULT_ENV": "APP_ENV=production"},
    ) as running:  # fmt: skip
        yield running


async def gql(stack: Stack, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST a GraphQL operation to the API."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    body: dict[str, Any] = response.json()
    return body


async def subscribe_transport_ws(stack: Stack, deployment_id: str, after: int | None = None) -> list[dict[str, Any]]:
    """Follow a deployment over `graphql-transport-ws` until the server completes the subscription."""
    events: list[dict[str, Any]] = []
    url = stack.api_url.replace("http", "ws") + "/graphql"
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": SUBSCRIPTION, "variables": {"id": deployment_id, "after": after}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "next":
                assert "errors" not in message["payload"], message
                events.append(message["payload"]["data"]["deploymentProgress"])
            elif message["type"] == "complete":
                return events
            elif message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            else:
                raise AssertionError(message)


async def subscribe_graphql_ws(stack: Stack, deployment_id: str) -> list[dict[str, Any]]:
    """Follow a deployment over the legacy `graphql-ws` protocol until the server completes it."""
    events: list[dict[str, Any]] = []
    url = stack.api_url.replace("http", "ws") + "/graphql"
    async with connect(url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        payload = {"query": SUBSCRIPTION, "variables": {"id": deployment_id}}
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": payload}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "data":
                assert "errors" not in message["payload"], message
                events.append(message["payload"]["data"]["deploymentProgress"])
            elif message["type"] == "complete":
                return events
            elif message["type"] == "ka":
                continue
            else:
                raise AssertionError(message)


async def sandbox_state(stack: Stack) -> dict[str, Any]:
    """The sandbox's world: droplets, servers, applications, envs, deployments."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as client:
        state: dict[str, Any] = (await client.get("/sandbox/_control/state")).json()
    return state


async def deploy(stack: Stack, **input_fields: Any) -> str:
    """Call `deploy` and return the new deployment's id."""
    body = await gql(
        stack,
        "mutation($input: DeployInput) { deploy(input: $input) { id status } }",
        {"input": input_fields},
    )
    assert "errors" not in body, body
    assert body["data"]["deploy"]["status"] == "QUEUED"
    return str(body["data"]["deploy"]["id"])


def assert_contiguous(events: list[dict[str, Any]], start: int = 1) -> None:
    """Sequences are start, start+1, ... with no gap and no duplicate."""
    assert [e["sequence"] for e in events] == list(range(start, start + len(events)))


async def test_a_deployment_runs_to_completed_and_streams_every_event(stack: Stack) -> None:
    """deploy → droplet → Coolify server → application → build ends COMPLETED; both websocket protocols see
    every event once, in order, and the stream completes after the final event; destroy then deletes it all."""
    deployment_id = await deploy(stack, name="hello", env=[{"key": "API_TOKEN", "value": SECRET}], ports=[8080])
    live, legacy = await asyncio.gather(
        subscribe_transport_ws(stack, deployment_id), subscribe_graphql_ws(stack, deployment_id)
    )
    assert_contiguous(live)
    assert live == legacy
    assert live[-1]["status"] == "COMPLETED"
    stages = [e["stage"] for e in live]
    for stage in ("CREATE_DROPLET", "WAIT_DROPLET", "REGISTER_SERVER", "VALIDATE_SERVER", "CREATE_APPLICATION",
                  "START_DEPLOYMENT", "WAIT_BUILD", "DONE"):  # fmt: skip
        assert stage in stages

    body = await gql(
        stack,
        """query($id: ID!) { deployment(id: $id) { status stage error dropletId dropletName ipAddress serverUuid
           applicationUuid events { sequence } } dropletCount { active limit available } }""",
        {"id": deployment_id},
    )
    deployment = body["data"]["deployment"]
    assert deployment["status"] == "COMPLETED"
    assert deployment["dropletName"] == f"eliza-{deployment_id}"
    assert deployment["ipAddress"] and deployment["serverUuid"] and deployment["applicationUuid"]
    assert len(deployment["events"]) == len(live)
    assert body["data"]["dropletCount"] == {"active": 1, "limit": 3, "available": 2}

    world = await sandbox_state(stack)
    droplets = world["droplets"]
    assert [d["name"] for d in droplets] == [f"eliza-{deployment_id}"]
    envs = {e["key"] for e in world["envs"] if e.get("application_uuid", deployment["applicationUuid"])}
    assert {"APP_ENV", "API_TOKEN"} <= envs

    replay = await subscribe_transport_ws(stack, deployment_id, after=3)
    assert replay == live[3:]

    app_uuid = deployment["applicationUuid"]
    result = " { appliedKeys restart { mode deploymentUuid } }"
    env_changes = [
        ("setEnv", "$app: ID!, $v: String!", 'setEnv(applicationUuid: $app, key: "ONE", value: $v)'),
        ("bulkSetEnv", "$app: ID!, $v: String!",
         'bulkSetEnv(applicationUuid: $app, variables: [{key: "TWO", value: $v}, {key: "THREE", value: $v}])'),
        ("deleteEnv", "$app: ID!", 'deleteEnv(applicationUuid: $app, key: "ONE")'),
    ]  # fmt: skip
    for name, declarations, field in env_changes:
        variables = {"app": app_uuid, "v": SECRET} if "$v" in declarations else {"app": app_uuid}
        changed = await gql(stack, f"mutation({declarations}) {{ {field}{result} }}", variables)
        assert "errors" not in changed, changed
        assert changed["data"][name]["restart"]["mode"] == "RESTART"
        assert changed["data"][name]["restart"]["deploymentUuid"]
        assert SECRET not in json.dumps(changed)
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as client:
        restarts = (
            await client.get("/sandbox/_control/requests", params={"method": "POST", "path": "/restart$"})
        ).json()
    assert len(restarts) == 3
    keys = {e["key"] for e in (await sandbox_state(stack))["envs"]}
    assert {"APP_ENV", "API_TOKEN", "TWO", "THREE"} <= keys
    assert "ONE" not in keys

    body = await gql(stack, "mutation($id: ID!) { destroyDeployment(id: $id) { status } }", {"id": deployment_id})
    assert body["data"]["destroyDeployment"]["status"] == "DESTROYING"
    tail = await subscribe_transport_ws(stack, deployment_id, after=len(live))
    assert_contiguous(tail, start=len(live) + 1)
    assert tail[-1]["status"] == "DESTROYED"
    world = await sandbox_state(stack)
    assert world["droplets"] == []
    assert world["servers"] == []
    body = await gql(stack, "{ dropletCount { active available } }")
    assert body["data"]["dropletCount"] == {"active": 0, "available": 3}
    logs = stack.logs()
    assert "✓ DigitalOcean API access: works" in logs  # the worker's start-up doctor checks
    assert "✓ Coolify API access: works (Coolify 4.3.11)" in logs
    assert "✗" not in logs
    assert SECRET not in logs
    assert SECRET not in json.dumps(body)


async def test_a_failed_build_cleans_up_everything_and_frees_the_slot(stack: Stack) -> None:
    """With the build_fails fault the deployment ends FAILED at WAIT_BUILD, and no droplet or server is left."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as client:
        response = await client.post("/sandbox/_control/faults", json={"spec": "build_fails"})
        assert response.status_code in (200, 201), response.text
    deployment_id = await deploy(stack)
    events = await subscribe_transport_ws(stack, deployment_id)
    assert_contiguous(events)
    assert events[-1]["status"] == "FAILED"
    body = await gql(
        stack,
        "query($id: ID!) { deployment(id: $id) { status failedStage error } dropletCount { active available } }",
        {"id": deployment_id},
    )
    assert body["data"]["deployment"]["failedStage"] == "WAIT_BUILD"
    error = body["data"]["deployment"]["error"]
    assert "ended with status failed; last lines of its output:" in error
    assert "Deployment failed" in error  # Coolify's own words from the build's output
    assert body["data"]["dropletCount"] == {"active": 0, "available": 3}
    world = await sandbox_state(stack)
    assert world["droplets"] == []
    assert world["servers"] == []


async def set_fault(stack: Stack, spec: str) -> None:
    """Switch a sandbox fault on through its control API."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as client:
        response = await client.post("/sandbox/_control/faults", json={"spec": spec})
        assert response.status_code in (200, 201), response.text


async def test_a_wrong_key_fails_at_validate_server_and_leaves_nothing(stack: Stack) -> None:
    """A droplet that refuses Coolify's key fails at VALIDATE_SERVER saying which key to check; the droplet and
    server are deleted and the slot is free."""
    await set_fault(stack, "wrong_key")
    deployment_id = await deploy(stack)
    events = await subscribe_transport_ws(stack, deployment_id)
    assert events[-1]["status"] == "FAILED"
    body = await gql(
        stack,
        "query($id: ID!) { deployment(id: $id) { failedStage error } dropletCount { active available } }",
        {"id": deployment_id},
    )
    assert body["data"]["deployment"]["failedStage"] == "VALIDATE_SERVER"
    error = body["data"]["deployment"]["error"]
    assert "Permission denied (publickey)" in error and "COOLIFY_SSH_PUBLIC_KEY" in error
    assert body["data"]["dropletCount"] == {"active": 0, "available": 3}
    world = await sandbox_state(stack)
    assert world["droplets"] == [] and world["servers"] == []


async def test_an_unknown_region_is_refused_at_deploy(stack: Stack) -> None:
    """`region: "mars1"` is BAD_USER_INPUT naming input.region: nothing is queued and no slot is taken."""
    body = await gql(stack, 'mutation { deploy(input: {region: "mars1"}) { id } }')
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["fields"][0]["field"] == "input.region"
    assert "nyc3" in error["extensions"]["fields"][0]["message"]  # it says what would be accepted
    body = await gql(stack, "{ dropletCount { active available } }")
    assert body["data"]["dropletCount"] == {"active": 0, "available": 3}
    assert (await sandbox_state(stack))["droplets"] == []


def test_doctor_checks_the_configured_clouds(stack: Stack) -> None:
    """`deployer doctor` prints one ✓ line per check and exits 0; with a key Coolify does not hold it says so
    with a ✗ and exits 1."""
    good = subprocess.run(
        [sys.executable, "-m", "deployer.cli", "doctor"], env=stack.env, capture_output=True, text=True, timeout=60
    )
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert len(lines) == 8 and all(line.startswith("✓ ") for line in lines), good.stdout
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
    other = "ssh-ed25519 " + base64.b64encode(blob).decode()
    bad = subprocess.run(
        [sys.executable, "-m", "deployer.cli", "doctor"],
        env={**stack.env, "COOLIFY_SSH_PUBLIC_KEY": other},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "✗ Coolify private key: the public half of sandbox-private-key is not COOLIFY_SSH_PUBLIC_KEY" in bad.stdout
