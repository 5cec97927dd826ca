"""A worker killed with SIGKILL mid-deployment: another worker resumes the job, with no duplicate droplet,
server or application, and the deployment ends COMPLETED (real processes, Redis and database)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.processes import Stack
from tests.test_end_to_end import gql, sandbox_state, subscribe_transport_ws

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CRASH_ENV = {"JOB_HEARTBEAT_S": "1", "WORKER_SWEEP_S": "1", "REAPER_INTERVAL_S": "0.5"}


async def wait_for_stage(stack: Stack, deployment_id: str, stage: str, timeout: float = 30) -> dict[str, Any]:
    """Poll `deployment(id)` until it reaches `stage`."""
    deadline = time.monotonic() + timeout
    query = "query($id: ID!) { deployment(id: $id) { status stage dropletId serverUuid applicationUuid } }"
    while time.monotonic() < deadline:
        body = await gql(stack, query, {"id": deployment_id})
        deployment: dict[str, Any] = body["data"]["deployment"]
        if deployment["stage"] == stage:
            return deployment
        assert deployment["status"] not in ("COMPLETED", "FAILED"), deployment
        await asyncio.sleep(0.05)
    raise AssertionError(f"deployment never reached {stage}:\n{stack.logs()}")


@pytest.mark.parametrize(
    ("stage", "how"), [("VALIDATE_SERVER", "SIGKILL"), ("WAIT_BUILD", "SIGKILL"), ("WAIT_BUILD", "SIGTERM")]
)
async def test_a_killed_worker_is_replaced_without_duplicates(
    tmp_path: Path, redis_url: str, database_url: str, queue_name: str, stage: str, how: str
) -> None:
    """Kill (or stop) the worker while the deployment is in `stage`; a second worker finishes it, creating nothing
    twice."""
    stack = Stack(tmp_path, redis_url=redis_url, database_url=database_url, queue=queue_name, env=CRASH_ENV)
    try:
        stack.start_sandbox(SANDBOX_DOCKER_INSTALL_S="1.5", SANDBOX_BUILD_S="2")
        stack.start_api()
        first = stack.start_worker("worker-1")
        body = await gql(stack, "mutation { deploy { id } }")
        deployment_id = body["data"]["deploy"]["id"]
        before = await wait_for_stage(stack, deployment_id, stage)
        if how == "SIGKILL":
            first.kill()
        else:
            first.stop()  # SIGTERM: the worker cancels its job after a short grace and exits
        stack.start_worker("worker-2")
        try:
            events = await subscribe_transport_ws(stack, deployment_id)
        except TimeoutError:
            raise AssertionError(f"no completion after the crash:\n{stack.logs()}") from None
        assert events[-1]["status"] == "COMPLETED", stack.logs()
        assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
        assert any("Resuming after an interrupted attempt" in e["message"] for e in events)
        after = (await gql(stack, "query($id: ID!) { deployment(id: $id) { dropletId serverUuid } }",
                           {"id": deployment_id}))["data"]["deployment"]  # fmt: skip
        assert after["dropletId"] == before["dropletId"]
        assert after["serverUuid"] == before["serverUuid"]
        world = await sandbox_state(stack)
        assert len(world["droplets"]) == 1
        assert len(world["servers"]) == 1
        assert len(world["applications"]) == 1
    finally:
        stack.stop()
