"""Polling calls per minute with many deployments waiting at one stage: shared list polls against the old path.

N deployments run the real pipeline (`jobs.pipeline.run_pipeline`) in two simulated worker processes (each
its own DigitalOcean and Coolify clients and its own `PollLists`, one shared Redis), against an in-process
sandbox whose timings hold every deployment at one stage: a droplet that never finishes booting
(WAIT_DROPLET), a Docker install that never ends (VALIDATE_SERVER), a build that never ends (WAIT_BUILD). Once
all N are there, the sandbox's request log counts the GET requests of a window. The old path is the same run
with `polls=None`: every deployment reads its own droplet, server or build on every poll.

Time is scaled: polls every `5 s / SCALE` and a window of `60 s / SCALE` stand for a minute at the default 5 s
interval, so the count in the window is the calls per minute. The sandbox's rate limits are off: this counts
what deployer asks for, not what a cloud would let through (bench/budget.py and bench/fleet.py do that).

    .venv/bin/python -m bench.polls [--deployments 200] [--scale 10] [--stages WAIT_DROPLET ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from redis.asyncio import BlockingConnectionPool, Redis

from bench.figure import Baseline, Figure, Goal
from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from deployer.embedded_redis import EmbeddedRedis
from jobs.context import Deps, PipelineConfig
from jobs.pipeline import run_pipeline
from jobs.polls import PollLists
from jobs.run import Run
from jobs.steps import OWNER_TAG
from models.db import close_db, init_db
from models.deployment import Deployment, DeploymentStage
from models.slot import ensure_slots, release_slot, reserve_slot
from sandbox.app import create_app as create_sandbox
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY, SandboxConfig, World
from settings import Timings

#: The default poll interval of every waiting stage.
REAL_INTERVAL_S = 5.0
WORKERS = 2
FOREVER = 1e6
DO_URL = "http://sandbox/sandbox/digitalocean"
COOLIFY_URL = "http://sandbox/sandbox/coolify"

#: Sandbox timings that hold every deployment at the stage (rate limits off everywhere).
_OPEN = SandboxConfig(
    droplet_boot_s=0.0,
    droplet_ip_delay_s=0.0,
    sshd_delay_s=0.0,
    list_lag_s=0.0,
    validation_pickup_s=0.0,
    ssh_tries_span_s=0.0,
    docker_install_s=0.0,
    build_queue_s=0.0,
    build_s=0.0,
    droplet_limit=100_000,
    do_rate_limit_per_hour=0,
    do_rate_limit_per_minute=0,
    do_keys_list_per_minute=0,
    coolify_rate_limit_per_minute=0,
)
STAGES: dict[DeploymentStage, SandboxConfig] = {
    DeploymentStage.WAIT_DROPLET: replace(_OPEN, droplet_boot_s=FOREVER),
    DeploymentStage.VALIDATE_SERVER: replace(_OPEN, docker_install_s=FOREVER),
    DeploymentStage.WAIT_BUILD: replace(_OPEN, build_s=FOREVER),
}


@dataclass(frozen=True)
class Count:
    """GET requests per minute (at the real interval) to each cloud while N deployments waited."""

    digitalocean: float
    coolify: float


class _StoppedError(Exception):
    """Ends a benchmark's pipeline between two polls."""


@dataclass
class _Stopper:
    """The pipelines' sleep, which ends them once `stop` is set.

    Cancelling a task instead could land inside Tortoise's SQLite `BEGIN`, which leaks its transaction lock.
    """

    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        if self.stop.is_set():
            raise _StoppedError


@contextlib.asynccontextmanager
async def _workers(world: World, redis: Redis, interval: float, *, shared: bool) -> AsyncIterator[list[Deps]]:
    transport = httpx.ASGITransport(app=create_sandbox(world))
    timings = Timings(
        droplet_poll_interval_s=interval,
        droplet_timeout_s=FOREVER,
        server_poll_interval_s=interval,
        server_timeout_s=FOREVER,
        build_poll_interval_s=interval,
        build_timeout_s=FOREVER,
    )
    config = PipelineConfig(
        timings=timings,
        region="nyc3",
        size="s-1vcpu-1gb",
        image="ubuntu-24-04-x64",
        name_prefix="bench",
        coolify_project_uuid="sandbox-project",
        coolify_environment_name="production",
        coolify_private_key_uuid="sandbox-private-key",
        ssh_public_key=DEFAULT_COOLIFY_PUBLIC_KEY,
    )
    prefix = f"bench-polls:{uuid.uuid4().hex}"
    async with contextlib.AsyncExitStack() as stack:
        built = []
        for _ in range(WORKERS):
            do = DigitalOceanClient(api_url=DO_URL, token="bench-do", transport=transport)  # noqa: S106 - sandbox
            coolify = CoolifyClient(api_url=COOLIFY_URL, token="1|bench", transport=transport)  # noqa: S106 - sandbox
            stack.push_async_callback(do.aclose)
            stack.push_async_callback(coolify.aclose)
            polls = PollLists(redis, do, coolify, prefix=prefix, droplet_tag=OWNER_TAG) if shared else None
            built.append(Deps(digitalocean=do, coolify=coolify, redis=redis, config=config, polls=polls))
        yield built


async def measure(redis_url: str, stage: DeploymentStage, deployments: int, scale: float, *, shared: bool) -> Count:
    """GET requests per minute at `stage`, once all `deployments` wait there."""
    interval, window = REAL_INTERVAL_S / scale, 60.0 / scale
    world = World(STAGES[stage])
    # A bounded pool, as a worker holding hundreds of deployments needs (bench/fleet.py measures that).
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=None))
    await ensure_slots(deployments)
    tasks: list[asyncio.Task[None]] = []
    ids: list[uuid.UUID] = []
    stopper = _Stopper()
    try:
        async with _workers(world, redis, interval, shared=shared) as workers:
            for n in range(deployments):
                ids.append(uuid.uuid4())
                await reserve_slot(ids[-1], deployments)
                row = await Deployment.create(id=ids[-1], droplet_name=f"bench-{n}", spec={})
                run = Run(row, workers[n % WORKERS], sleep=stopper.sleep)
                tasks.append(asyncio.create_task(run_pipeline(run)))
            while await Deployment.filter(id__in=ids).exclude(stage=stage).exists():
                if any(t.done() for t in tasks):
                    raise RuntimeError(f"a deployment ended before {stage.value}: {[t for t in tasks if t.done()]}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(2 * interval)  # past the first look of each wait
            start = world.now()
            await asyncio.sleep(window)
            end = world.now()
            stopper.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for deployment_id in ids:
            await release_slot(deployment_id)
        await redis.aclose()
    gets = [r for r in world.requests if r.method == "GET" and start <= r.at < end]
    per_minute = 60.0 / (window * scale)
    return Count(
        digitalocean=sum(r.api == "digitalocean" for r in gets) * per_minute,
        coolify=sum(r.api == "coolify" for r in gets) * per_minute,
    )


async def run(deployments: int, scale: float, stages: list[DeploymentStage]) -> list[Figure]:
    """Both paths at each stage, old path first, and the figures."""
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        await init_db(f"sqlite://{Path(tmp) / 'bench.sqlite3'}")
        try:
            return await _stages(server.url, deployments, scale, stages)
        finally:
            await close_db()


async def _stages(redis_url: str, deployments: int, scale: float, stages: list[DeploymentStage]) -> list[Figure]:
    figures = []
    for stage in stages:
        old = await measure(redis_url, stage, deployments, scale, shared=False)
        new = await measure(redis_url, stage, deployments, scale, shared=True)
        note = f"{deployments} waiting, 2 workers, polls every {REAL_INTERVAL_S:g} s scaled by {scale:g}"
        # DigitalOcean is polled only while droplets boot; the other stages poll Coolify.
        cloud = "digitalocean" if stage is DeploymentStage.WAIT_DROPLET else "coolify"
        figures.append(
            Figure(
                f"polls.{stage.value.lower()}.{cloud}_calls_per_min",
                getattr(new, cloud),
                "calls/min",
                baseline=Baseline("per-deployment polling", getattr(old, cloud)),
                goal=Goal("<=", 60) if cloud == "digitalocean" else None,
                note=note,
            )
        )
    return figures


def figures(quick: bool) -> list[Figure]:
    """`make bench`: 200 deployments at each waiting stage (quick: 40, over a shorter window)."""
    logging.disable(logging.INFO)
    if quick:
        return asyncio.run(run(40, 40.0, list(STAGES)))
    return asyncio.run(run(200, 10.0, list(STAGES)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--scale", type=float, default=10.0, help="time scale: polls every 5 s / SCALE")
    parser.add_argument("--stages", nargs="+", default=[s.value for s in STAGES], choices=[s.value for s in STAGES])
    args = parser.parse_args()
    logging.disable(logging.INFO)
    for figure in asyncio.run(run(args.deployments, args.scale, [DeploymentStage(s) for s in args.stages])):
        print(figure.line())


if __name__ == "__main__":
    main()
