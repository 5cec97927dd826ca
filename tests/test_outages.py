"""Backing services going away under running deployments (real processes, HTTP and websockets):

- Redis restarts with no persistence: every key is lost. Workers and APIs reconnect on their own, running
  deployments take their leases back, queued ones whose job was lost are re-queued from the database, and
  every subscriber sees every event exactly once.
- PostgreSQL is cut away (through a TCP proxy the test controls): `/readyz` answers 503 with the reason, and
  everything recovers without a restart once it is back.
- Both clouds answer 503 for a few seconds: the deployment rides it out.

Each test prints what it measured (the README's table of what survives what quotes them).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from deployer.embedded_redis import EmbeddedRedis
from tests.conftest import postgres_url, report
from tests.outage_support import STATUS, Subscriber, TcpProxy, event_time, gql, wait_for
from tests.processes import Stack
from tests.test_end_to_end import sandbox_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DEPLOY = "mutation($input: DeployInput) { deploy(input: $input) { id } }"
#: Production's heartbeat, sweep and reaper settings (their defaults), so the recovery times measured are the
#: ones the README quotes; polls slow enough for five processes on two cores.
OUTAGE_ENV = {
    "MAX_ACTIVE_DROPLETS": "10",
    "DROPLET_POLL_INTERVAL_S": "0.1",
    "SERVER_POLL_INTERVAL_S": "0.1",
    "BUILD_POLL_INTERVAL_S": "0.1",
    "SERVER_TIMEOUT_S": "30",
    "BUILD_TIMEOUT_S": "30",
    "DROPLET_TIMEOUT_S": "30",
}
SLOW_BUILD = {"SANDBOX_SERVER_VALIDATION_S": "1", "SANDBOX_BUILD_S": "2", "SANDBOX_COOLIFY_RATE_LIMIT_PER_MINUTE": "0"}


async def readyz(url: str) -> tuple[int, dict[str, Any]]:
    """GET /readyz: (status, body); (0, {}) when the API does not answer at all."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            response = await client.get("/readyz")
        return response.status_code, response.json()
    except httpx.HTTPError:
        return 0, {}


async def deploy(url: str, **fields: Any) -> str:
    """Start a deployment through the API at `url`."""
    body = await gql(url, DEPLOY, {"input": fields})
    assert "errors" not in body, body
    return str(body["data"]["deploy"]["id"])


async def stored_events(url: str, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's events as the database holds them."""
    body = await gql(url, STATUS, {"id": deployment_id})
    events: list[dict[str, Any]] = body["data"]["deployment"]["events"]
    return events


def assert_unavailable(body: dict[str, Any], field: str, service: str) -> None:
    """`field` failed with SERVICE_UNAVAILABLE naming `service` and when to retry (not a masked 500)."""
    assert body.get("data") is None or body["data"].get(field) is None, body
    [error] = body["errors"]
    assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE", "status": 503, "retryAfter": 5}, body
    assert error["message"].startswith(f"{service} is not answering"), body


def assert_each_event_once(seen: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    """The subscriber saw every stored event exactly once, in order."""
    assert [e["sequence"] for e in seen] == list(range(1, len(stored) + 1))
    assert [(e["sequence"], e["message"]) for e in seen] == [(e["sequence"], e["message"]) for e in stored]


async def test_redis_restart_loses_no_deployment_and_no_event(
    tmp_path: Path, private_redis: EmbeddedRedis, database_url: str, queue_name: str
) -> None:
    """Redis restarts empty while two deployments run and two wait in the queue: all four complete with one
    droplet, server and application each, the waiting ones re-queued from the database, and subscribers on the
    other API see every event once."""
    env = {**OUTAGE_ENV, "WORKER_CONCURRENCY": "1"}
    stack = Stack(tmp_path, redis_url=private_redis.url, database_url=database_url, queue=queue_name, env=env)
    try:
        stack.start_sandbox(**SLOW_BUILD)
        api, other = stack.start_api("api"), stack.start_api("api-2")
        assert api.url and other.url
        stack.start_worker("worker-1")
        stack.start_worker("worker-2")
        ids = [await deploy(api.url) for _ in range(4)]
        subscribers = [Subscriber(i, [other.url, api.url]).start() for i in ids]
        await subscribers[0].wait_until(lambda e: e["stage"] == "VALIDATE_SERVER", timeout=60)
        private_redis.stop()
        await wait_for(lambda: _unready(api.url, "redis"), timeout=30, what="/readyz to report Redis down")
        refused = await gql(other.url, DEPLOY, {"input": {}})  # an outage, said as one; nothing is kept of it
        assert_unavailable(refused, "deploy", "Redis")
        private_redis.start()
        restarted = time.time()
        await wait_for(lambda: _ready(api.url), timeout=30, what="/readyz to recover")
        for subscriber in subscribers:
            events = await subscriber.finish(timeout=120)
            assert events[-1]["status"] == "COMPLETED", stack.logs()
            assert_each_event_once(events, await stored_events(api.url, subscriber.deployment_id))
        requeued = [
            event_time(e) - restarted
            for s in subscribers
            for e in s.events
            if "re-queued by the reaper" in e["message"] and event_time(e) > restarted
        ]
        assert requeued, "no deployment waiting in the queue lost its job"
        world = await sandbox_state(stack)
        assert (len(world["droplets"]), len(world["servers"]), len(world["applications"])) == (4, 4, 4)
        created = await _creates(stack)
        assert created == {"droplets": 4, "servers": 4, "applications": 4}
        count = await gql(other.url, "{ dropletCount { active } deployments { totalCount } }")
        assert count["data"]["dropletCount"]["active"] == 4
        assert count["data"]["deployments"]["totalCount"] == 4  # the refused deploy left no row
        late = await deploy(other.url)  # the API's queue reconnected
        assert (await Subscriber(late, [api.url]).start().finish(timeout=60))[-1]["status"] == "COMPLETED"
        report("outages", f"Redis restart: lost jobs re-queued from the database {max(requeued):.1f} s after it")
    finally:
        stack.stop()


@pytest.mark.skipif(postgres_url() is None, reason="needs DATABASE_URL pointing to PostgreSQL (a proxy cuts it)")
async def test_postgres_outage_makes_readyz_fail_and_everything_recovers(
    tmp_path: Path, redis_url: str, database_url: str, queue_name: str
) -> None:
    """PostgreSQL goes away for a few seconds mid-deployment: /readyz says so with 503, and once it is back the
    API answers again and the deployment completes without duplicates, with no process restarted."""
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    proxied = urlunsplit(target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}"))
    stack = Stack(tmp_path, redis_url=redis_url, database_url=proxied, queue=queue_name, env=OUTAGE_ENV)
    try:
        stack.start_sandbox(**SLOW_BUILD)
        api = stack.start_api()
        assert api.url
        stack.start_worker()
        deployment_id = await deploy(api.url)

        async def validating() -> bool:
            body = await gql(api.url, STATUS, {"id": deployment_id})
            return bool(body["data"]["deployment"]["stage"] == "VALIDATE_SERVER")

        await wait_for(validating, timeout=60, what="VALIDATE_SERVER")
        proxy.cut()
        cut = time.time()
        status, body = 0, {}
        while status != 503:
            status, body = await readyz(api.url)
            assert time.time() - cut < 30, (status, body)
        assert body["status"] == "unavailable"
        assert "database" in body["reason"]
        assert_unavailable(await gql(api.url, STATUS, {"id": deployment_id}), "deployment", "The database")
        await asyncio.sleep(3)  # the worker's writes fail meanwhile
        proxy.restore()
        restored = time.time()
        await wait_for(lambda: _ready(api.url), timeout=60, what="/readyz to recover")
        ready_after = time.time() - restored

        async def completed() -> bool:
            body = await gql(api.url, STATUS, {"id": deployment_id})
            return bool(body.get("data") and body["data"]["deployment"]["status"] == "COMPLETED")

        await wait_for(completed, timeout=120, what="the deployment to complete")
        events = await stored_events(api.url, deployment_id)
        resumed = min(t for t in (_at(e) for e in events) if t > restored)
        world = await sandbox_state(stack)
        assert (len(world["droplets"]), len(world["servers"]), len(world["applications"])) == (1, 1, 1)
        assert await _creates(stack) == {"droplets": 1, "servers": 1, "applications": 1}
        late = await deploy(api.url)
        assert (await Subscriber(late, [api.url]).start().finish(timeout=60))[-1]["status"] == "COMPLETED"
        report(
            "outages",
            f"PostgreSQL outage: /readyz 503 ({body['reason']}); 200 again {ready_after:.1f} s after the database"
            f" returned; the deployment progressed again after {resumed - restored:.1f} s",
        )
    finally:
        stack.stop()
        proxy.close()


async def test_a_cloud_outage_is_ridden_out(tmp_path: Path, redis_url: str, database_url: str, queue_name: str) -> None:
    """DigitalOcean and Coolify answer 503 to everything for four seconds while a deployment waits for its server:
    it completes afterwards, creating nothing twice."""
    stack = Stack(tmp_path, redis_url=redis_url, database_url=database_url, queue=queue_name, env=OUTAGE_ENV)
    try:
        stack.start_sandbox(**{**SLOW_BUILD, "SANDBOX_SERVER_VALIDATION_S": "3"})
        api = stack.start_api()
        assert api.url
        stack.start_worker()
        deployment_id = await deploy(api.url)
        subscriber = Subscriber(deployment_id, [api.url]).start()
        await subscriber.wait_until(lambda e: e["stage"] == "VALIDATE_SERVER", timeout=60)
        async with httpx.AsyncClient(base_url=stack.sandbox_url) as client:
            assert (await client.post("/sandbox/_control/faults", json={"spec": "server_error=503"})).status_code == 201
            await asyncio.sleep(4)
            await client.delete("/sandbox/_control/faults")
        cleared = time.time()
        events = await subscriber.finish(timeout=120)
        assert events[-1]["status"] == "COMPLETED", stack.logs()
        assert any("temporary error" in e["message"] for e in events)
        progressed = min(
            t for e, t in zip(events, subscriber.arrivals, strict=True) if t > cleared and "error" not in e["message"]
        )
        assert await _creates(stack) == {"droplets": 1, "servers": 1, "applications": 1}
        report("outages", f"Cloud outage (4 s of 503): progress resumed {progressed - cleared:.1f} s after it ended")
    finally:
        stack.stop()


async def _ready(url: str) -> bool:
    return (await readyz(url))[0] == 200


async def _unready(url: str, what: str) -> bool:
    status, body = await readyz(url)
    return status == 503 and what in str(body.get("reason", ""))


def _at(event: dict[str, Any]) -> float:
    return event_time(event) if "at" in event else 0.0


async def _creates(stack: Stack) -> dict[str, int]:
    """How many droplets, servers and applications the clouds created (successful POSTs)."""
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as client:
        log = (await client.get("/sandbox/_control/requests", params={"method": "POST"})).json()
    ok = [r["path"] for r in log if r["status"] in (201, 202)]
    apps = ("/api/v1/applications/public", "/api/v1/applications/dockerimage")
    return {
        "droplets": sum(p.endswith("/v2/droplets") for p in ok),
        "servers": sum(p.endswith("/api/v1/servers") for p in ok),
        "applications": sum(p.endswith(apps) for p in ok),
    }
