"""The event write path: progress events stored (and announced) per second, on SQLite and on PostgreSQL.

A worker with many deployments in flight records an event per poll of each: `deployments` tasks each call
`jobs.progress.record()` `events` times in a row (one deployment per task, as the pipeline does), all at once,
with a real Redis to announce to. The figure is events stored and announced per second, checked afterwards:
every deployment has exactly 1..events in order and its row matches its last event. The baseline is the same
run with one transaction per event (`ungrouped`: what `record()` did before it grouped writes).

    .venv/bin/python -m bench.events [--deployments 200] [--events 20] [--postgres postgres://…/db]

PostgreSQL is measured when `--postgres` (or `BENCH_POSTGRES_URL`) names a database it may empty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bench.figure import Baseline, Figure, Goal
from deployer.embedded_redis import EmbeddedRedis
from jobs import progress
from jobs.enqueue import redis_from_url
from models.db import close_db, init_db
from models.deployment import Deployment, DeploymentEvent, DeploymentStage, DeploymentStatus

GOAL_EVENTS_PER_S = 2000

Recorder = Callable[..., Awaitable[progress.ProgressEvent]]


async def _reset(db_url: str) -> None:
    await init_db(db_url)
    await DeploymentEvent.all().delete()
    await Deployment.all().delete()


async def _run(recorder: Recorder, redis_url: str, deployments: int, events: int) -> float:
    """Events per second for one pass, checked for gaps and order."""
    rows = [await Deployment.create(spec={"name": f"bench-{n}"}) for n in range(deployments)]
    redis = redis_from_url(redis_url)

    async def one(row: Deployment) -> None:
        for n in range(1, events + 1):
            stage = DeploymentStage.WAIT_DROPLET if n < events else DeploymentStage.DONE
            status = DeploymentStatus.PROCESSING if n < events else DeploymentStatus.COMPLETED
            await recorder(redis, row, f"poll {n}", status=status, stage=stage, attempt=n)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(one(row) for row in rows))
        took = time.perf_counter() - start
    finally:
        await redis.aclose()
    for row in rows:
        stored = (
            await DeploymentEvent.filter(deployment_id=row.id).order_by("sequence").values_list("sequence", "attempt")
        )
        assert stored == [(n, n) for n in range(1, events + 1)], f"gaps or disorder for {row.id}"
        fresh = await Deployment.get(id=row.id)
        assert fresh.status == DeploymentStatus.COMPLETED and fresh.stage == DeploymentStage.DONE
    return deployments * events / took


async def measure(db_url: str, redis_url: str, deployments: int, events: int) -> tuple[float, float]:
    """(grouped, ungrouped) events per second on one database."""
    try:
        await _reset(db_url)
        ungrouped = await _run(progress.record_ungrouped, redis_url, deployments, events)
        await DeploymentEvent.all().delete()
        await Deployment.all().delete()
        grouped = await _run(progress.record, redis_url, deployments, events)
    finally:
        await close_db()
    return grouped, ungrouped


def _figure(name: str, grouped: float, ungrouped: float) -> Figure:
    return Figure(
        name,
        grouped,
        "events/s",
        baseline=Baseline("one transaction per event", ungrouped),
        goal=Goal(">=", GOAL_EVENTS_PER_S),
    )


def figures(quick: bool) -> list[Figure]:
    """For `make bench`: events/s on SQLite (and PostgreSQL with BENCH_POSTGRES_URL); goal 2,000."""
    deployments, events = (50, 10) if quick else (200, 20)
    return run(deployments, events, os.environ.get("BENCH_POSTGRES_URL"))


def _measure_apart(db_url: str, redis_url: str, deployments: int, events: int) -> tuple[float, float]:
    """`measure` in a process of its own (Tortoise is one global per process, bound to one SQL dialect)."""
    command = [sys.executable, "-m", "bench.events", "--measure", db_url, "--redis", redis_url]
    command += ["--deployments", str(deployments), "--events", str(events)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 (our module)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.events --measure failed:\n{proc.stderr[-3000:]}")
    grouped, ungrouped = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(grouped), float(ungrouped)


def run(deployments: int, events: int, postgres_url: str | None) -> list[Figure]:
    """Measure SQLite, and PostgreSQL when a URL is given."""
    out = []
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        sqlite = _measure_apart(f"sqlite://{tmp}/bench.sqlite3", redis_server.url, deployments, events)
        out.append(_figure("events.sqlite", *sqlite))
        if postgres_url:
            pg = _measure_apart(postgres_url, redis_server.url, deployments, events)
            out.append(_figure("events.postgres", *pg))
        else:
            out[0] = replace(out[0], note="events.postgres not measured: set BENCH_POSTGRES_URL")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL"))
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one database, in this process (see run())
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure, args.redis, args.deployments, args.events))))
        sys.exit(0)
    for figure in run(args.deployments, args.events, args.postgres):
        print(figure.line())
