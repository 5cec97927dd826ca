"""Orchestration CPU per deployment: process CPU time of the API and the worker per completed deployment.

Real processes, as in production: `deployer sandbox` with every delay at zero and its rate limits off,
`deployer serve` and `deployer worker` on an embedded Redis and a SQLite file. After one warm-up deployment
(imports, first connections, caches), `--deployments` are deployed through the API, `--parallel` at a time,
and the benchmark waits for all of them to be COMPLETED by reading the database file itself (polling the API
would add its own CPU to the API's). The figure is the CPU time (user + system) the API and the worker used
between the first `deploy` and the last COMPLETED, divided by the deployments; the worker's idle CPU per
second (its queue polls and heartbeats, measured before) is reported in the note, with the cloud requests
(from the sandbox's request log) and progress events per deployment.

    .venv/bin/python -m bench.cpu [--deployments 50] [--parallel 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.figure import Figure, Goal
from deployer.embedded_redis import EmbeddedRedis
from tests.processes import Process, Stack

GOAL_MS = 10.0
ZERO_SANDBOX = {
    "SANDBOX_DROPLET_BOOT_S": "0",
    "SANDBOX_DROPLET_IP_DELAY_S": "0",
    "SANDBOX_SSHD_DELAY_S": "0",
    "SANDBOX_DROPLET_LIST_LAG_S": "0",
    "SANDBOX_VALIDATION_PICKUP_S": "0",
    "SANDBOX_SSH_TRIES_SPAN_S": "0",
    "SANDBOX_DOCKER_INSTALL_S": "0",
    "SANDBOX_BUILD_QUEUE_S": "0",
    "SANDBOX_BUILD_S": "0",
    "SANDBOX_APP_DELETE_S": "0",
    "SANDBOX_DO_RATE_LIMIT_PER_HOUR": "0",
    "SANDBOX_DO_RATE_LIMIT_PER_MINUTE": "0",
    "SANDBOX_COOLIFY_RATE_LIMIT_PER_MINUTE": "0",
    "SANDBOX_DROPLET_LIMIT": "10000",
}
DEPLOY = "mutation { deploy(input: {}) { id status } }"
IDLE_S = 3.0


def _cpu_s(process: Process) -> float:
    """User + system CPU seconds of a process and its children so far."""
    proc = psutil.Process(process.popen.pid)
    times = proc.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def _counts(db_path: Path, sandbox_url: str) -> tuple[int, int]:
    """(progress events stored, cloud requests served) so far."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        events = int(conn.execute("SELECT COUNT(*) FROM deployment_event").fetchone()[0])
    requests = len(httpx.get(f"{sandbox_url}/sandbox/_control/requests", timeout=30).json())
    return events, requests


def _completed(db_path: Path) -> tuple[int, int]:
    """(COMPLETED, FAILED) deployments, read from the SQLite file directly."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
        rows = dict(conn.execute("SELECT status, COUNT(*) FROM deployment GROUP BY status").fetchall())
    return int(rows.get("COMPLETED", 0)), int(rows.get("FAILED", 0) + rows.get("CANCELLED", 0))


async def _deploy_all(api_url: str, count: int, parallel: int) -> None:
    limit = asyncio.Semaphore(parallel)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:

        async def one() -> None:
            async with limit:
                body = (await client.post("/graphql", json={"query": DEPLOY})).json()
                if "errors" in body:
                    raise RuntimeError(f"deploy failed: {body['errors']}")

        await asyncio.gather(*(one() for _ in range(count)))


def _wait_for(db_path: Path, completed: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, failed = _completed(db_path)
        if failed:
            raise RuntimeError(f"{failed} deployment(s) failed")
        if done >= completed:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {_completed(db_path)[0]} of {completed} deployments completed in {timeout:.0f} s")


def measure(deployments: int, parallel: int) -> dict[str, float]:
    """CPU milliseconds per deployment (API, worker, both) and the worker's idle CPU per second."""
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "bench.sqlite3"
        stack = Stack(
            Path(tmp),
            redis_url=redis_server.url,
            database_url=f"sqlite://{db_path}",
            queue="bench-cpu",
            env={"MAX_ACTIVE_DROPLETS": str(deployments + 10), "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "INFO")},
        )
        try:
            stack.start_sandbox(**ZERO_SANDBOX)
            api = stack.start_api()
            worker = stack.start_worker()
            asyncio.run(_deploy_all(stack.api_url, 1, 1))  # warm-up
            _wait_for(db_path, 1, 60)
            time.sleep(1.0)
            idle_start = (_cpu_s(api), _cpu_s(worker))
            time.sleep(IDLE_S)
            idle_api, idle_worker = _cpu_s(api) - idle_start[0], _cpu_s(worker) - idle_start[1]
            counted = _counts(db_path, stack.sandbox_url)
            start = (_cpu_s(api), _cpu_s(worker))
            began = time.monotonic()
            asyncio.run(_deploy_all(stack.api_url, deployments, parallel))
            _wait_for(db_path, deployments + 1, 120 + deployments)
            took = time.monotonic() - began
            api_s, worker_s = _cpu_s(api) - start[0], _cpu_s(worker) - start[1]
            events, requests = (
                after - before for before, after in zip(counted, _counts(db_path, stack.sandbox_url), strict=True)
            )
        except Exception:
            print(stack.logs()[-5000:])
            raise
        finally:
            stack.stop()
    return {
        "api_ms": api_s * 1000 / deployments,
        "worker_ms": worker_s * 1000 / deployments,
        "total_ms": (api_s + worker_s) * 1000 / deployments,
        "idle_api_ms_per_s": idle_api * 1000 / IDLE_S,
        "idle_worker_ms_per_s": idle_worker * 1000 / IDLE_S,
        "seconds": took,
        "events": events / deployments,
        "cloud_requests": requests / deployments,
    }


def figures(quick: bool) -> list[Figure]:
    """For `make bench`: CPU per deployment, API and worker together (goal ≤ 10 ms)."""
    deployments = 10 if quick else 50
    result = measure(deployments, 10)
    note = (
        f"{deployments} deployments in {result['seconds']:.1f} s, each {result['cloud_requests']:.1f} cloud requests"
        f" and {result['events']:.1f} events; idle CPU api {result['idle_api_ms_per_s']:.1f},"
        f" worker {result['idle_worker_ms_per_s']:.1f} ms/s (included)"
    )
    return [
        Figure("cpu.per_deployment", result["total_ms"], "ms", goal=Goal("<=", GOAL_MS), note=note),
        Figure("cpu.api_per_deployment", result["api_ms"], "ms"),
        Figure("cpu.worker_per_deployment", result["worker_ms"], "ms"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=10)
    args = parser.parse_args()
    for key, value in measure(args.deployments, args.parallel).items():
        print(f"{key}: {value:.2f}")
