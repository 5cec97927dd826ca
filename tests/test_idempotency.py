"""Idempotent `deploy` across processes: retries racing through two API processes (sharing the database: SQLite,
or PostgreSQL when DATABASE_URL is set) and the CLI's `--idempotency-key` produce one deployment, one slot and
one droplet."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from models import Deployment
from tests.processes import Stack, base_env
from tests.test_end_to_end import sandbox_state, subscribe_transport_ws

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DEPLOY = "mutation($input: DeployInput) { deploy(input: $input) { id status } }"


async def post(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST a GraphQL operation to one API process."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as client:
        body: dict[str, Any] = (await client.post("/graphql", json={"query": query, "variables": variables})).json()
    return body


async def test_retries_racing_through_two_apis_create_one_deployment(
    tmp_path: Path, redis_url: str, db: str, queue_name: str
) -> None:
    """Ten concurrent calls with one key, split over two API processes, then a CLI retry: all name the same
    deployment, which completes with exactly one droplet, server and application and holds one slot; the same
    key with another input is refused."""
    stack = Stack(tmp_path, redis_url=redis_url, database_url=db, queue=queue_name, env={})
    try:
        stack.start_sandbox()
        first, second = stack.start_api("api"), stack.start_api("api-2")
        assert first.url and second.url
        variables = {"input": {"idempotencyKey": "release-2024.1", "name": "shop", "ports": [8080]}}
        bodies = await asyncio.gather(*(post((first, second)[i % 2].url or "", DEPLOY, variables) for i in range(10)))
        assert all("errors" not in body for body in bodies), bodies
        ids = {body["data"]["deploy"]["id"] for body in bodies}
        assert len(ids) == 1
        (deployment_id,) = ids
        result = subprocess.run(
            [sys.executable, "-m", "deployer.cli", "deploy", "--url", second.url, "--idempotency-key",
             "release-2024.1", "--name", "shop", "--port", "8080"],
            env=base_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.split()[1] == deployment_id
        other = await post(second.url, DEPLOY, {"input": {"idempotencyKey": "release-2024.1", "name": "other"}})
        assert other["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "input.idempotencyKey" in other["errors"][0]["message"]
        stack.start_worker()
        events = await subscribe_transport_ws(stack, deployment_id)
        assert events[-1]["status"] == "COMPLETED", stack.logs()
        count = await post(first.url, "{ dropletCount { active } }")
        assert count["data"]["dropletCount"]["active"] == 1
        assert await Deployment.all().count() == 1
        world = await sandbox_state(stack)
        assert (len(world["droplets"]), len(world["servers"]), len(world["applications"])) == (1, 1, 1)
    finally:
        stack.stop()
