"""The shared request budgets (`jobs.budget`) against real Redis: spacing, sharing, deadlines, 429 push-back,
atomicity across processes, and a fleet of deployments against the sandbox with its rate limits on."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import SimpleNamespace

import httpx
import pytest
from redis.asyncio import Redis

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from clients.errors import RequestBudgetError
from clients.http import RetryPolicy, request_deadline
from deployer.embedded_redis import EmbeddedRedis
from jobs.budget import (
    HEADROOM,
    MAX_PUSH_BACK_S,
    MAX_QUOTA_HOLD_S,
    QUOTA_RESERVE,
    RequestBudget,
    budget_for,
    client_hooks,
    read_budget_stats,
)
from jobs.context import Deps, PipelineConfig, WorkerContext
from jobs.worker import worker_settings
from models.deployment import Deployment, DeploymentStatus
from models.slot import ensure_slots, reserve_slot
from sandbox.app import create_app as create_sandbox
from sandbox.state import World
from settings import Settings
from tests.conftest import FAST_WORLD, REPO_ROOT, fast_timings
from tests.jobs.conftest import new_deployment, run


class FixedClock:
    """A clock the test moves by hand, shared by every budget of a test (as Redis's clock would be)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """Records the waits a budget asks for instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def token() -> str:
    """A cloud token no other test uses, so each test has a bucket of its own on a shared Redis."""
    return f"tok-{uuid.uuid4().hex}"


@pytest.fixture
async def second_redis(redis_url: str) -> AsyncIterator[Redis]:
    """Another connection to the same Redis, standing for another process."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def interval(per_minute: int) -> float:
    return 60.0 / per_minute * (1.0 + HEADROOM)


async def test_two_clients_share_one_bucket_evenly_spaced(redis: Redis, second_redis: Redis, token: str) -> None:
    """Two processes drawing from one token's bucket get slots one interval apart, in the order they asked."""
    clock, sleeps = FixedClock(), Sleeps()
    a = RequestBudget(redis, api="digitalocean", token=token, per_minute=250, clock=clock, sleep=sleeps)
    b = RequestBudget(second_redis, api="digitalocean", token=token, per_minute=250, clock=clock, sleep=sleeps)
    for budget in (a, b, a, b, b, a):
        await budget.acquire()
    step = interval(250)
    assert sleeps.calls == pytest.approx([step * k for k in range(1, 6)])  # the first slot is now: no sleep
    stats = await a.stats()
    assert (stats.requests, stats.wait_s) == (6, pytest.approx(15 * step))


async def test_other_tokens_and_clouds_have_their_own_buckets(redis: Redis, token: str) -> None:
    """Limits are per token and per cloud: a busy DigitalOcean token does not slow Coolify or another token."""
    clock = FixedClock()
    busy = RequestBudget(redis, api="digitalocean", token=token, per_minute=60, clock=clock)
    for _ in range(3):
        await busy.reserve()
    other_cloud = RequestBudget(redis, api="coolify", token=token, per_minute=60, clock=clock)
    other_token = RequestBudget(redis, api="digitalocean", token=token + "-2", per_minute=60, clock=clock)
    assert await other_cloud.reserve() == 0.0
    assert await other_token.reserve() == 0.0
    assert token not in busy.key  # only a digest of the token reaches Redis


def _max_in_window(times: list[float], window: float) -> int:
    best, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_rate_over_time_never_exceeds_the_budget_and_nearly_reaches_it(redis: Redis, token: str) -> None:
    """Forty greedy callers over ten (injected) minutes: no 60 s window holds more than the budget, the rate
    reached is within the headroom of it, and after an idle spell nobody bursts."""
    clock = FixedClock()
    per_minute = 250
    budgets = [RequestBudget(redis, api="digitalocean", token=token, per_minute=per_minute, clock=clock)]
    sends: list[float] = []
    next_try = [clock.now] * 40

    async def simulate(until: float, callers: int) -> None:
        while clock.now < until:
            for i in range(callers):
                if next_try[i] <= clock.now:
                    sent_at = clock.now + await budgets[0].reserve()
                    sends.append(sent_at)
                    next_try[i] = sent_at  # each caller sends again as soon as it has sent
            clock.now += 0.05

    await simulate(clock.now + 600, 40)
    in_ten_minutes = [t for t in sends if t < 1_600.0]
    assert _max_in_window(sorted(sends), 60.0) <= per_minute
    assert 10 * per_minute / (1 + HEADROOM) - 2 <= len(in_ten_minutes) <= 10 * per_minute
    # Idle for two minutes, then forty callers at once: still one interval apart, no saved-up burst.
    clock.now = start = max(sends) + 120.0
    sends.clear()
    next_try[:] = [clock.now] * 40
    await simulate(clock.now + 1.0, 40)
    sends.sort()
    spacing = [b - a for a, b in itertools.pairwise(sends)]
    assert sends[0] == start and min(spacing) == pytest.approx(max(spacing)) == pytest.approx(interval(per_minute))
    assert len([t for t in sends if t < start + 1.0]) == math.ceil(1.0 / interval(per_minute))  # not forty at once


async def test_a_slot_past_the_deadline_is_refused_and_not_reserved(redis: Redis, token: str) -> None:
    """Inside a request_deadline a slot that would come too late raises RequestBudgetError without taking it."""
    clock, now = FixedClock(), [50.0]
    budget = RequestBudget(
        redis, api="coolify", token=token, per_minute=60, clock=clock, monotonic=lambda: now[0], max_wait_s=5.0
    )
    for _ in range(4):  # the next free slot is now 4 intervals (about 4.1 s) away
        await budget.reserve()
    with request_deadline(2.0, clock=lambda: now[0]), pytest.raises(RequestBudgetError) as caught:
        await budget.acquire()
    assert caught.value.wait_s == pytest.approx(4 * interval(60))
    assert "may wait (2.0 s" in str(caught.value) and caught.value.api == "coolify"
    assert await budget.reserve() == pytest.approx(4 * interval(60))  # the refused call took nothing
    with pytest.raises(RequestBudgetError):  # outside a deadline, max_wait_s bounds the wait
        await budget.reserve()
    with request_deadline(60.0, clock=lambda: now[0]):
        assert await budget.reserve() == pytest.approx(5 * interval(60))
    assert (await budget.stats()).refused == 2


async def test_a_429_pushes_the_bucket_back_for_every_process(
    redis: Redis, second_redis: Redis, token: str, world: World
) -> None:
    """A 429 seen by one process's client pauses the other process's requests for the wait the cloud asked."""
    world.faults.add_spec("rate_limit=3:1@GET:/v2/account")
    transport = httpx.ASGITransport(app=create_sandbox(world))
    sleeps = Sleeps()
    refused = RequestBudget(redis, api="digitalocean", token=token, per_minute=250, sleep=sleeps)
    other = RequestBudget(second_redis, api="digitalocean", token=token, per_minute=250, sleep=sleeps)
    retry = RetryPolicy(max_attempts=2, base_delay_s=0.0, jitter=0)
    async with DigitalOceanClient(
        api_url="http://sandbox/sandbox/digitalocean",
        token=token,
        transport=transport,
        retry=retry,
        sleep=sleeps,
        **client_hooks(refused),
    ) as client:
        await client.get_account()  # 429 with Retry-After: 3, then sent again after that wait
    assert [r.status for r in world.calls("GET", "/v2/account")] == [429, 200]
    wait = await other.reserve()
    assert 2.5 < wait <= 3.0 + interval(250)
    stats = await read_budget_stats(redis, "digitalocean", token)
    assert stats.rate_limited == 1


async def test_one_429_pauses_everyone_for_at_most_a_minute(redis: Redis, token: str) -> None:
    """A far-off Retry-After pauses the bucket for MAX_PUSH_BACK_S, not an hour; a shorter one never shortens it."""
    clock = FixedClock()
    budget = RequestBudget(redis, api="coolify", token=token, per_minute=200, clock=clock, max_wait_s=1e9)
    await budget.push_back(3600.0)
    await budget.push_back(5.0)
    assert await budget.reserve() == MAX_PUSH_BACK_S
    assert (await budget.stats()).rate_limited == 2


async def test_a_low_hourly_quota_holds_everyone_until_its_oldest_request_expires(
    redis: Redis, second_redis: Redis, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A response leaving more than QUOTA_RESERVE requests changes nothing; one leaving QUOTA_RESERVE or fewer
    holds every process until `ratelimit-reset` (longer than a 429's minute, at most an hour), warning once."""
    clock = FixedClock()
    budget = RequestBudget(redis, api="digitalocean", token=token, per_minute=250, clock=clock, max_wait_s=1e9)
    other = RequestBudget(second_redis, api="digitalocean", token=token, per_minute=250, clock=clock, max_wait_s=1e9)
    with caplog.at_level(logging.DEBUG, logger="deployer.budget"):
        await budget.on_quota(QUOTA_RESERVE + 1, 900.0)
        assert await other.reserve() == 0.0
        await budget.on_quota(QUOTA_RESERVE, 900.0)
        assert await other.reserve() == pytest.approx(900.0)
        await budget.on_quota(3, 7200.0)  # a reset further off than any hour is a broken header: capped
        assert await other.reserve() == pytest.approx(MAX_QUOTA_HOLD_S)
        await budget.on_quota(QUOTA_RESERVE + 1, 10.0)
    stats = await budget.stats()
    assert (stats.quota_holds, stats.rate_limited) == (2, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # low (once, not per response), then recovered
    assert warnings[0].startswith(f"digitalocean hourly quota: {QUOTA_RESERVE} requests left")
    assert "requests left again" in warnings[1]


async def test_a_client_spends_the_hourly_quota_as_it_frees_up_without_a_429(redis: Redis, token: str) -> None:
    """Against the sandbox's rolling hour (90 requests, an hour lasting 1 s): 100 requests in a row through the
    budget never earn a 429; they wait for the oldest requests to expire. Without the quota hook the same
    requests meet the limit."""
    limit = QUOTA_RESERVE + 40
    world = World(replace(FAST_WORLD, time_scale=3600, do_rate_limit_per_hour=limit, do_rate_limit_per_minute=250))
    budget = RequestBudget(redis, api="digitalocean", token=token, per_minute=250 * 3600)
    started = time.monotonic()
    async with DigitalOceanClient(
        api_url="http://sandbox/sandbox/digitalocean",
        token=token,
        transport=httpx.ASGITransport(app=create_sandbox(world)),
        **client_hooks(budget),
    ) as client:
        for _ in range(100):
            await client.get_account()
    elapsed = time.monotonic() - started
    calls = world.calls("GET", "/v2/account")
    assert [c.status for c in calls] == [200] * 100
    assert elapsed >= 1.0  # the first requests had to expire: 100 do not fit in one hour of 90
    assert (await budget.stats()).quota_holds >= 1


async def test_without_redis_requests_go_unbudgeted(
    private_redis: EmbeddedRedis, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis is down a request waits for no slot (one warning), and the budget resumes when it is back."""
    redis = Redis.from_url(private_redis.url, socket_connect_timeout=0.5)
    sleeps = Sleeps()
    budget = RequestBudget(redis, api="digitalocean", token=token, per_minute=60, clock=FixedClock(), sleep=sleeps)
    try:
        private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="deployer.budget"):
            await budget.acquire()
            await budget.acquire()
            await budget.push_back(10.0)
        assert sleeps.calls == []
        warnings = [r.message for r in caplog.records if "unreachable" in r.message]
        assert warnings == [
            "digitalocean budget: Redis unreachable (ConnectionError);"
            " sending without the shared budget until it is back"
        ]
        private_redis.start()
        await budget.acquire()
        await budget.acquire()
        assert sleeps.calls == [pytest.approx(interval(60))]
        assert "reachable again" in caplog.records[-1].message
    finally:
        await redis.aclose()


def test_budget_off_builds_nothing(redis: Redis) -> None:
    """DO_REQUESTS_PER_MINUTE=0: no budget, and the clients get no hooks."""
    assert budget_for(redis, api="digitalocean", token="t", per_minute=0) is None
    assert client_hooks(None) == {}


_RESERVE_IN_A_PROCESS = """
import asyncio, json, sys, time
from redis.asyncio import Redis
from jobs.budget import RequestBudget

async def main(url, token, start_at, count):
    redis = Redis.from_url(url)
    budget = RequestBudget(redis, api="digitalocean", token=token, per_minute=600, clock=lambda: 5000.0, max_wait_s=1e9)
    await budget.reserve()  # connect and load the script before the start line
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    waits = [await budget.reserve() for _ in range(count)]
    await redis.aclose()
    print(json.dumps(waits))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


def test_slots_are_taken_atomically_across_processes(redis_url: str, token: str) -> None:
    """Two processes reserving at once never get the same slot: every slot from 0 on is handed out exactly once
    (a read-then-write outside one script would hand some out twice)."""
    start_at = time.time() + 1.5
    count = 300
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RESERVE_IN_A_PROCESS, redis_url, token, str(start_at), str(count)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in results]
    waits = sorted(w for out, _ in results for w in json.loads(out))
    step = interval(600)
    slots = [round(w / step) for w in waits]
    assert slots == list(range(2, 2 * count + 2))  # slots 0 and 1 went to the warm-up reserves
    assert waits == pytest.approx([k * step for k in slots])


# ------------------------------------------------------------------ a fleet against the sandbox's limits

#: The sandbox's windows run this much faster than real time, so the budgets are this much larger.
TIME_SCALE = 20
DEPLOYMENTS = 8


def _limited_world() -> World:
    """The sandbox enforcing DigitalOcean's 250 and Coolify's 200 requests a minute, 20x faster, with droplets
    and builds slow enough that polls every 50 ms add up to more than that."""
    slow = replace(FAST_WORLD, droplet_boot_s=1.0, docker_install_s=0.5, build_s=1.0)
    return World(replace(slow, time_scale=TIME_SCALE, do_rate_limit_per_hour=0))


async def _new_deployment() -> Deployment:
    deployment_id = uuid.uuid4()
    assert await reserve_slot(deployment_id, 2 * DEPLOYMENTS) is not None
    return await Deployment.create(id=deployment_id, droplet_name=f"eliza-{deployment_id}", spec={})


async def _run_fleet(
    world: World, redis: Redis, settings: Settings, hooks: Callable[[str], dict[str, object]]
) -> list[Deployment]:
    """Run DEPLOYMENTS deployments at once through one pair of budgeted clients; return the rows."""
    transport = httpx.ASGITransport(app=create_sandbox(world))
    config = replace(
        PipelineConfig.from_settings(
            settings.with_overrides(timings=fast_timings(droplet_timeout_s=30, server_timeout_s=30, build_timeout_s=30))
        ),
        step_retry_delay_s=0.01,
    )
    digitalocean = DigitalOceanClient(
        api_url=settings.digitalocean.api_url,
        token="do-token",
        transport=transport,
        **hooks("digitalocean"),  # type: ignore[arg-type]
    )
    coolify = CoolifyClient(
        api_url=settings.coolify.api_url,
        token="1|coolify-token",
        transport=transport,
        **hooks("coolify"),  # type: ignore[arg-type]
    )
    deps = Deps(digitalocean=digitalocean, coolify=coolify, redis=redis, config=config)
    await ensure_slots(2 * DEPLOYMENTS)
    try:
        deployments = [await _new_deployment() for _ in range(DEPLOYMENTS)]
        return list(await asyncio.gather(*(run(deps, d) for d in deployments)))
    finally:
        await digitalocean.aclose()
        await coolify.aclose()


async def test_a_fleet_within_the_budgets_gets_no_429(redis: Redis, settings: Settings, token: str) -> None:
    """Eight deployments polling every 50 ms against the sandbox's real limits (time-scaled): with the budgets
    every deployment completes and the sandbox never answers 429; without them the same fleet is refused."""
    world = _limited_world()
    budgets = {
        "digitalocean": RequestBudget(redis, api="digitalocean", token=token, per_minute=250 * TIME_SCALE),
        "coolify": RequestBudget(redis, api="coolify", token=token, per_minute=200 * TIME_SCALE),
    }
    done = await _run_fleet(world, redis, settings, lambda api: dict(client_hooks(budgets[api])))
    assert [d.status for d in done] == [DeploymentStatus.COMPLETED] * DEPLOYMENTS, [d.error for d in done]
    assert [r for r in world.requests if r.status == 429] == []
    assert (await budgets["digitalocean"].stats()).requests == len(
        [r for r in world.requests if r.api == "digitalocean"]
    )

    unbudgeted = _limited_world()
    done = await _run_fleet(unbudgeted, redis, settings, lambda api: {})
    refused = [r for r in unbudgeted.requests if r.status == 429]
    assert refused  # the limits are real: the budgets made the difference
    # ... and a 429 is "not yet" in every step: none of these deployments failed for one, their deadlines had room.
    assert [d.status for d in done] == [DeploymentStatus.COMPLETED] * DEPLOYMENTS, [d.error for d in done]
    print(f"429s without budgets: {len(refused)}, on", sorted({f"{r.method} {r.path}" for r in refused})[:20])


async def test_a_worker_draws_every_request_from_the_shared_budgets(
    redis: Redis, settings: Settings, world: World
) -> None:
    """The worker's clients are wired to the budgets: its start-up checks of both clouds are counted in the
    buckets of the settings' tokens, one per request the sandbox saw."""
    do_token, coolify_token = f"do-{uuid.uuid4().hex}", f"1|{uuid.uuid4().hex}"
    settings = settings.with_overrides(
        digitalocean=replace(settings.digitalocean, api_key=do_token, requests_per_minute=3000),
        coolify=replace(settings.coolify, api_key=coolify_token, requests_per_minute=3000),
    )
    options = worker_settings(settings, transport=httpx.ASGITransport(app=create_sandbox(world)))
    ctx: WorkerContext = {"worker": SimpleNamespace(id="budget-test-worker")}  # type: ignore[typeddict-item]
    await options["startup"](ctx)
    await options["shutdown"](ctx)
    for api, token in (("digitalocean", do_token), ("coolify", coolify_token)):
        sent = [r for r in world.requests if r.api == api]
        assert sent and (await read_budget_stats(redis, api, token)).requests == len(sent)


# ------------------------------------------------------------------ a 429 anywhere is "not yet"

#: One 429 on each kind of request a deployment sends, polls and creates alike.
EVERY_STEP = (
    "GET:/v2/droplets$",
    "GET:/v2/account/keys",
    "POST:/v2/droplets$",
    "GET:/v2/droplets/[0-9]+$",
    "POST:/servers$",
    "GET:/servers/[a-z0-9]+$",
    "POST:/validate$",
    "POST:/applications/",
    "PATCH:/envs/bulk$",
    "POST:/deploy$",
    "GET:/deployments/",
)


async def test_a_429_at_every_step_delays_the_deployment_without_failing_it(deps: Deps, world: World) -> None:
    """Every kind of request of the pipeline refused once with 429 is sent again within the step's deadline."""
    # DigitalOcean's Retry-After is whole seconds: give the droplet steps the room to wait one out.
    deps.config = replace(deps.config, timings=fast_timings(droplet_timeout_s=10.0))
    world.faults.add_spec(",".join(f"rate_limit=0.01:1@{where}" for where in EVERY_STEP))
    done = await run(deps, await new_deployment(), env=[["GREETING", "hello"]])
    assert done.status == DeploymentStatus.COMPLETED, done.error
    refused = [f"{r.method} {r.path}" for r in world.requests if r.status == 429]
    assert len(refused) == len(EVERY_STEP), "\n".join(refused)  # every fault was hit, once


async def test_a_429_during_cleanup_does_not_leave_anything_behind(deps: Deps, world: World) -> None:
    """A failed build's cleanup, refused once per delete and per confirmation, still deletes everything."""
    cleanup = ("DELETE:/servers/", "DELETE:/v2/droplets/", "GET:/v2/droplets/[0-9]+$")
    world.faults.add_spec("build_fails:1," + ",".join(f"rate_limit=0.01:1@{where}" for where in cleanup))
    done = await run(deps, await new_deployment())
    assert done.status == DeploymentStatus.FAILED and done.resources_released, done.error
    # A refused request shows in an error as "-> 429" (a bare "429" also matches the uuids in the build log).
    error = done.error or ""
    assert "-> 429" not in error and "rate limit" not in error.lower() and "cleanup incomplete" not in error
    assert len([r for r in world.requests if r.status == 429]) == len(cleanup)
    assert world.snapshot()["droplets"] == []
