"""A huge request must not stall everyone else: a `bulkSetEnv` with N variables from a read-only token.

The API runs as its own process (`deployer serve`, embedded Redis, SQLite, one read-only token). This
process polls `{ dropletCount { limit } }` every 20 ms on one connection while, on another, it posts one
`bulkSetEnv` whose `variables` list holds N items (about 24 bytes each, so 200,000 items is a 4.8 MB
body). It reports the big request's status and time, and the slowest poll answered while it was in flight:
that is how long every other client of the process waited.

    .venv/bin/python -m bench.large_request [--items 200000] [--items 40000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deployer.embedded_redis import EmbeddedRedis, free_port

TOKEN = "bench-reader-0123456789abcdef"  # noqa: S105 - a throwaway token of a throwaway server
BULK = 'mutation($vars: [EnvVarInput!]!) { bulkSetEnv(applicationUuid: "abc", variables: $vars) { changeId } }'
POLL = "{ dropletCount { limit } }"


async def _poll(client: httpx.AsyncClient, stop: asyncio.Event, samples: list[tuple[float, float]]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.post("/graphql", json={"query": POLL}, headers=headers)
        assert response.status_code == 200, response.text
        samples.append((started, time.perf_counter()))
        await asyncio.sleep(0.02)


async def measure(base_url: str, items: int) -> dict[str, object]:
    """Post one big request while polling; returns its status, size, time and the slowest concurrent poll."""
    body = json.dumps({"query": BULK, "variables": {"vars": [{"key": "K", "value": "v"}] * items}}).encode()
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    timeout = httpx.Timeout(120)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as poller,
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as sender,
    ):
        poll = asyncio.create_task(_poll(poller, stop, samples))
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        response = await sender.post(
            "/graphql",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        ended = time.perf_counter()
        await asyncio.sleep(0.5)
        stop.set()
        await poll
    during = [end - start for start, end in samples if end >= started and start <= ended]
    try:
        code = response.json()["errors"][0]["extensions"]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        code = None
    return {
        "items": items,
        "body_bytes": len(body),
        "status": response.status_code,
        "code": code,
        "request_s": ended - started,
        "slowest_other_s": max(during, default=0.0),
        "polls_during": len(during),
    }


async def main(sizes: list[int]) -> None:
    """Start a server, run each size once, print one line per size."""
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": f"sqlite://{Path(tmp) / 'bench.sqlite3'}",
            "LOG_LEVEL": "WARNING",
            "DEPLOYER_API_TOKENS": f"reader:{TOKEN}:read",
            "DEPLOYER_SECRET_KEY": "bench-secret-key-0123456789abcdef0123",
        }
        server = subprocess.Popen(  # noqa: S603, ASYNC220 - once, before measuring
            [sys.executable, "-m", "deployer.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(400):
                if server.poll() is not None:
                    raise SystemExit("deployer serve exited at start")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:  # noqa: ASYNC210
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            for items in sizes:
                result = await measure(f"http://127.0.0.1:{port}", items)
                print(
                    f"items={result['items']} body={result['body_bytes'] / 1e6:.2f} MB -> HTTP {result['status']}"
                    f" {result['code'] or ''} in {result['request_s']:.3f} s; slowest other request"
                    f" {result['slowest_other_s']:.3f} s ({result['polls_during']} answered meanwhile)"
                )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, action="append", help="list sizes to try (repeatable)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.items or [200_000, 40_000]))
