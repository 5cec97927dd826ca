"""Shared list polls: many deployments waiting at one stage cost one list call per interval, counted exactly in
the sandbox's request log, across two "processes" (separate clients and PollLists sharing one Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from jobs.context import Deps
from jobs.polls import PollLists, SharedList, polls_prefix
from jobs.run import Run
from jobs.steps import OWNER_TAG, wait_droplet
from models.deployment import Deployment, DeploymentStatus
from models.slot import ensure_slots, reserve_slot
from sandbox.state import World
from settings import Settings
from tests.conftest import FAST_WORLD
from tests.jobs.conftest import deps_for, run
from tests.processes import Stack

LIST = r"/v2/droplets$"
ONE = r"/v2/droplets/\d+$"
INTERVAL = 0.05


def unlimited(**changes: float) -> World:
    """A fast sandbox world without rate limits (these tests count calls, not 429s) and room for many droplets."""
    values: dict[str, float] = {"do_rate_limit_per_minute": 0, "coolify_rate_limit_per_minute": 0, "droplet_limit": 400}
    return World(replace(FAST_WORLD, **{**values, **changes}))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def processes(
    world: World, redis: Redis, settings: Settings, count: int, *, interval: float = INTERVAL
) -> AsyncIterator[list[Deps]]:
    """`count` workers' dependencies: each its own clients and PollLists, all sharing one Redis prefix.

    `interval` is the droplet poll interval: a long one lets every deployment of a test see the same snapshot
    however long the database takes to record their first events.
    """
    prefix = f"test-polls:{uuid.uuid4().hex}"
    async with contextlib.AsyncExitStack() as stack:
        built = []
        for _ in range(count):
            deps = await stack.enter_async_context(deps_for(world, redis, settings))
            timings = replace(deps.config.timings, droplet_poll_interval_s=interval, droplet_timeout_s=30.0)
            polls = PollLists(redis, deps.digitalocean, deps.coolify, prefix=prefix, droplet_tag=OWNER_TAG)
            built.append(replace(deps, polls=polls, config=replace(deps.config, timings=timings)))
        yield built


async def waiting_droplets(deps: Deps, count: int) -> list[Deployment]:
    """`count` deployments whose droplets exist (tagged like deployer's), each waiting for its droplet."""
    rows = []
    for n in range(count):
        deployment_id = uuid.uuid4()
        droplet = await deps.digitalocean.create_droplet(
            name=f"eliza-{n}",
            region="nyc3",
            size="s-1vcpu-1gb",
            image="ubuntu-24-04-x64",
            ssh_keys=[],
            tags=[OWNER_TAG, f"deployer-{deployment_id}"],
        )
        rows.append(
            await Deployment.create(
                id=deployment_id, droplet_name=f"eliza-{n}", spec={}, droplet_id=droplet.id, status="PROCESSING"
            )
        )
    return rows


async def wait_all(workers: list[Deps], rows: list[Deployment]) -> None:
    """Run `wait_droplet` for every row at once, spread over the workers."""
    await asyncio.gather(*(wait_droplet(Run(row, workers[i % len(workers)])) for i, row in enumerate(rows)))


async def test_listed_droplets_answer_every_waiting_deployment_with_one_call(
    redis: Redis, settings: Settings, db: str
) -> None:
    """60 deployments in two processes, droplets active and listed: one list call, no read by id."""
    world = unlimited()
    async with processes(world, redis, settings, 2, interval=30.0) as workers:
        rows = await waiting_droplets(workers[0], 60)
        world.advance(5.0)  # booted, addressed and listed
        before = len(world.requests)
        await wait_all(workers, rows)
    calls = world.requests[before:]
    assert sum(1 for c in calls if c.method == "GET" and c.path.endswith("/v2/droplets")) == 1
    assert [c for c in calls if c.method == "GET" and "/v2/droplets/" in c.path] == []
    for row in rows:
        await row.refresh_from_db()
        assert row.ip_address


async def test_the_tag_list_is_read_page_by_page(redis: Redis, settings: Settings, db: str) -> None:
    """250 waiting deployments: the tag list takes two pages of 200, still nothing read by id."""
    world = unlimited()
    async with processes(world, redis, settings, 2, interval=30.0) as workers:
        rows = await waiting_droplets(workers[0], 250)
        world.advance(5.0)
        before = len(world.requests)
        await wait_all(workers, rows)
    lists = [c.path for c in world.requests[before:] if c.method == "GET" and "/v2/droplets" in c.path]
    assert lists == ["/sandbox/digitalocean/v2/droplets"] * 2


async def test_droplets_the_list_does_not_show_yet_are_read_by_id(redis: Redis, settings: Settings, db: str) -> None:
    """A list lagging every create: one list call, then each deployment reads its own droplet once."""
    world = unlimited(list_lag_s=60.0)
    async with processes(world, redis, settings, 2, interval=30.0) as workers:
        rows = await waiting_droplets(workers[0], 20)
        world.advance(5.0)  # active with an address, yet not listed
        before = len(world.requests)
        await wait_all(workers, rows)
    calls = world.requests[before:]
    assert len([c for c in calls if c.method == "GET" and c.path.endswith("/v2/droplets")]) == 1
    assert sorted(c.path for c in calls if c.method == "GET" and "/v2/droplets/" in c.path) == sorted(
        f"/sandbox/digitalocean/v2/droplets/{row.droplet_id}" for row in rows
    )


async def test_a_failing_list_falls_back_to_reads_by_id(redis: Redis, settings: Settings, db: str) -> None:
    """The list answers 500 (after the client's retries): every deployment reads its droplet by id instead."""
    world = unlimited()
    async with processes(world, redis, settings, 2, interval=30.0) as workers:
        rows = await waiting_droplets(workers[0], 10)
        world.advance(5.0)
        world.faults.add_spec("server_error=500@GET:/v2/droplets$")
        before = len(world.requests)
        await wait_all(workers, rows)
    calls = world.requests[before:]
    failed = [c for c in calls if c.path.endswith("/v2/droplets")]
    assert failed and all(c.status == 500 for c in failed)
    assert len(failed) <= 3  # one fetch (with the client's retries) for everyone, not one per deployment
    assert len([c for c in calls if "/v2/droplets/" in c.path and c.status == 200]) == 10


async def test_polling_while_droplets_boot_does_not_grow_with_the_fleet(
    redis: Redis, settings: Settings, db: str
) -> None:
    """40 deployments waiting ~2 s for their droplets poll the list at most once per interval, and never by id;
    the old per-deployment path reads every droplet on every poll."""
    interval = 0.2
    world = unlimited(droplet_boot_s=2.0)
    async with processes(world, redis, settings, 2, interval=interval) as workers:
        rows = await waiting_droplets(workers[0], 40)
        world.advance(0.1)  # listed, still booting
        before = len(world.requests)
        started = time.monotonic()
        await wait_all(workers, rows)
        elapsed = time.monotonic() - started
    calls = world.requests[before:]
    lists = [c for c in calls if c.path.endswith("/v2/droplets")]
    assert [c for c in calls if "/v2/droplets/" in c.path] == []
    # Consecutive fetches start about one interval apart, whichever process makes them. The times are the
    # sandbox's arrival times, which a loaded machine delays by tens of milliseconds (a 50 ms interval failed
    # CI twice, at 0.9 and then at 0.5 of it), so the interval here is long enough for that not to matter.
    assert 1 <= len(lists) <= elapsed / interval + 1
    gaps = [round(b.at - a.at, 3) for a, b in itertools.pairwise(lists)]
    assert all(gap >= interval * 0.5 for gap in gaps), gaps

    world = unlimited(droplet_boot_s=0.6)
    async with processes(world, redis, settings, 1) as (worker,):
        rows = await waiting_droplets(worker, 40)
        world.advance(0.1)
        before = len(world.requests)
        await wait_all([replace(worker, polls=None)], rows)
    singles = [c for c in world.requests[before:] if "/v2/droplets/" in c.path]
    assert len(singles) >= 2 * 40  # every deployment polled its own droplet at least twice


async def test_builds_and_validations_share_coolify_lists(redis: Redis, settings: Settings, db: str) -> None:
    """Eight whole deployments at once: each build is read by uuid at most twice (the list stood in for the
    rest), and no validation was asked for while one ran or after the server was usable."""
    world = unlimited(build_s=0.5, docker_install_s=0.5)
    count = 8
    await ensure_slots(count)
    async with processes(world, redis, settings, 2) as workers:
        workers = [
            replace(w, config=replace(w.config, timings=replace(w.config.timings, build_timeout_s=5.0)))
            for w in workers
        ]
        rows = []
        for _ in range(count):
            deployment_id = uuid.uuid4()
            assert await reserve_slot(deployment_id, count) is not None
            rows.append(await Deployment.create(id=deployment_id, droplet_name=f"eliza-{deployment_id}", spec={}))
        done = await asyncio.gather(*(run(workers[i % 2], row) for i, row in enumerate(rows)))
    assert [d.status for d in done] == [DeploymentStatus.COMPLETED] * count, [d.error for d in done]
    builds = {str(d.coolify_deployment_uuid) for d in done}
    reads = [c.path.rsplit("/", 1)[1] for c in world.calls("GET", r"/api/v1/deployments/[a-z0-9]+$")]
    assert set(reads) == builds
    assert all(reads.count(b) <= 2 for b in builds), reads
    assert world.calls("GET", r"/api/v1/deployments$")
    assert world.validation_totals["overlapping"] == 0
    assert world.validation_totals["after_usable"] == 0


async def test_docker_install_is_followed_on_the_server_list(redis: Redis, settings: Settings, db: str) -> None:
    """While Coolify installs Docker (1.5 s, ~30 polls), the server itself is read only every few polls: less
    than half the reads of the old path, which read it on every poll."""
    await ensure_slots(3)
    reads = []
    for shared in (True, False):
        world = unlimited(docker_install_s=1.5)
        async with processes(world, redis, settings, 1) as (worker,):
            worker = replace(worker, polls=worker.polls if shared else None)
            row = await Deployment.create(id=uuid.uuid4(), droplet_name="eliza-install", spec={})
            assert await reserve_slot(row.id, 3) is not None
            done = await run(worker, row)
        assert done.status == DeploymentStatus.COMPLETED, done.error
        assert world.validation_totals["overlapping"] == 0
        reads.append(len(world.calls("GET", r"/api/v1/servers/[a-z0-9]+$")))
    with_list, alone = reads
    assert alone >= 25
    assert with_list <= alone / 2, reads


async def test_a_snapshot_is_shared_through_redis(redis: Redis) -> None:
    """Two SharedLists (two processes) asked at once make one fetch; a later ask within max_age makes none."""
    prefix = f"test-polls:{uuid.uuid4().hex}"
    fetches: list[float] = []

    async def fetch() -> dict[str, dict[str, object]]:
        fetches.append(time.time())
        await asyncio.sleep(0.05)
        return {"a": {"n": len(fetches)}}

    one = SharedList(redis, prefix, fetch, lambda d: d["n"])
    two = SharedList(redis, prefix, fetch, lambda d: d["n"])
    got = await asyncio.gather(*(lst.item("a", 10.0) for lst in (one, two) for _ in range(50)))
    assert got == [1] * 100
    assert len(fetches) == 1
    assert await two.item("a", 10.0) == 1 and len(fetches) == 1
    await asyncio.sleep(0.06)
    assert await one.item("a", 0.05) == 2  # older than max_age: fetched again
    assert await two.item("missing", 10.0) is None


@pytest.mark.parametrize("cancelled_first", [True, False])
async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(redis: Redis, cancelled_first: bool) -> None:
    """A waiting job that is cancelled leaves the fetch running for the others."""
    started = asyncio.Event()

    async def fetch() -> dict[str, dict[str, object]]:
        started.set()
        await asyncio.sleep(0.05)
        return {"a": {"n": 1}}

    shared = SharedList(redis, f"test-polls:{uuid.uuid4().hex}", fetch, lambda d: d["n"])
    first = asyncio.create_task(shared.item("a", 10.0))
    await started.wait()
    second = asyncio.create_task(shared.item("a", 10.0))
    await asyncio.sleep(0)
    (first if cancelled_first else second).cancel()
    survivor = second if cancelled_first else first
    assert await survivor == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_worker_processes_share_the_droplet_list(
    tmp_path: Path, redis_url: str, database_url: str, queue_name: str
) -> None:
    """Twelve deployments in two `deployer worker` processes (six each) wait 3 s for their droplets, polling every
    0.1 s: the tag list is fetched about once per interval for all of them, and droplets are read by id only
    while the list has not caught up with their create (the old path read each one about 30 times)."""
    count, interval = 12, 0.1
    stack = Stack(
        tmp_path,
        redis_url=redis_url,
        database_url=database_url,
        queue=queue_name,
        env={"MAX_ACTIVE_DROPLETS": str(count), "WORKER_CONCURRENCY": "6", "DROPLET_POLL_INTERVAL_S": str(interval)},
    )
    try:
        stack.start_sandbox(
            SANDBOX_DROPLET_BOOT_S="3",
            SANDBOX_DO_RATE_LIMIT_PER_MINUTE="0",
            SANDBOX_COOLIFY_RATE_LIMIT_PER_MINUTE="0",
        )
        stack.start_api()
        workers = [stack.start_worker("worker-1"), stack.start_worker("worker-2")]
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as api:
            started = time.monotonic()
            ids = []
            for _ in range(count):
                response = await api.post("/graphql", json={"query": "mutation { deploy { id } }"})
                ids.append(response.json()["data"]["deploy"]["id"])
            query = "query($id: ID!) { deployment(id: $id) { status error } }"
            while True:
                rows = [
                    (await api.post("/graphql", json={"query": query, "variables": {"id": i}})).json()["data"][
                        "deployment"
                    ]
                    for i in ids
                ]
                if all(r["status"] in ("COMPLETED", "FAILED") for r in rows):
                    break
                assert time.monotonic() - started < 90, rows
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
        assert [r["status"] for r in rows] == ["COMPLETED"] * count, rows
        async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=10) as sandbox:
            log = (await sandbox.get("/sandbox/_control/requests", params={"method": "GET"})).json()
        for worker in workers:
            assert "Waiting for the droplet to boot" in worker.output(), stack.logs()
    finally:
        stack.stop()
    by_id = [r for r in log if re.search(r"/v2/droplets/\d+$", r["path"])]
    lists = [r for r in log if r["path"].endswith("/v2/droplets")]
    # One tag lookup per deployment before its create, then the shared list: at most one fetch per interval.
    assert len(lists) <= count + elapsed / interval + 1, (len(lists), elapsed)
    assert len(by_id) <= 3 * count, len(by_id)
    assert len(by_id) + len(lists) < count * 3.0 / interval / 3


def test_installations_sharing_a_redis_never_share_snapshots() -> None:
    """The key prefix differs by queue and by cloud account, and holds no token."""
    one = polls_prefix("deployer", "https://api.digitalocean.com", "do-token-1", "https://c.example", "1|c")
    assert one == polls_prefix("deployer", "https://api.digitalocean.com", "do-token-1", "https://c.example", "1|c")
    assert one != polls_prefix("deployer", "https://api.digitalocean.com", "do-token-2", "https://c.example", "1|c")
    assert one != polls_prefix("other", "https://api.digitalocean.com", "do-token-1", "https://c.example", "1|c")
    assert "do-token-1" not in one and one.startswith("deployer:polls:deployer:")


async def test_a_list_that_breaks_only_sends_callers_to_their_own_reads(redis: Redis) -> None:
    """A fetch that raises anything at all answers None (each caller reads its item itself), and the next
    ask fetches again."""
    calls = 0

    async def fetch() -> dict[str, dict[str, object]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("unexpected shape")
        return {"a": {"n": calls}}

    shared = SharedList(redis, f"test-polls:{uuid.uuid4().hex}", fetch, lambda d: d["n"])
    assert await asyncio.gather(*(shared.item("a", 10.0) for _ in range(5))) == [None] * 5
    assert await shared.item("a", 10.0) == 2
    assert calls == 2


async def test_a_long_tag_list_is_not_fetched_for_a_few_waiting_deployments(
    redis: Redis, settings: Settings, db: str
) -> None:
    """450 tagged droplets (three pages, live apps' included) and two deployments waiting: after the first fetch
    shows the list's length, they read their own droplets (two reads a poll instead of three pages)."""
    world = unlimited(droplet_boot_s=0.6, droplet_limit=1000)
    async with processes(world, redis, settings, 1) as (worker,):
        await waiting_droplets(worker, 448)
        rows = await waiting_droplets(worker, 2)
        world.advance(0.1)  # listed, still booting
        before = len(world.requests)
        await wait_all([worker], rows)
    calls = world.requests[before:]
    assert len([c for c in calls if c.path.endswith("/v2/droplets")]) == 3  # the one fetch: three pages
    assert len([c for c in calls if "/v2/droplets/" in c.path]) >= 2 * 5
