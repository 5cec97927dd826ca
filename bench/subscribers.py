"""Progress fan-out: N websocket subscribers on one `deployer serve` process, K events, delivery latency.

The API runs as its own process (`deployer serve`, embedded Redis, SQLite). This process opens N
`graphql-transport-ws` subscriptions to one deployment, then stores and announces K events with
`jobs.progress.record` (as a worker would) and measures, for every subscriber and event, the time from
`record()` returning to the event arriving. Every subscriber must receive every event exactly once, in order.

    .venv/bin/python -m bench.subscribers [--subscribers 1000] [--events 20] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from deployer.embedded_redis import EmbeddedRedis, free_port
from jobs.progress import record
from models.db import close_db, init_db
from models.deployment import Deployment, DeploymentStatus

SUBSCRIPTION = "subscription($id: ID!) { deploymentProgress(id: $id) { sequence } }"


async def _subscriber(url: str, deployment_id: str, ready: asyncio.Event, arrivals: list[float]) -> list[int]:
    sequences: list[int] = []
    ws: ClientConnection
    async with connect(url, subprotocols=["graphql-transport-ws"], max_queue=None) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        await ws.recv()
        payload = {"query": SUBSCRIPTION, "variables": {"id": deployment_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "next":
                sequences.append(message["payload"]["data"]["deploymentProgress"]["sequence"])
                arrivals.append(time.perf_counter())
                if len(sequences) == 1:
                    ready.set()
            elif message["type"] == "complete":
                return sequences
            elif message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
    return sequences


async def main(subscribers: int, events: int, interval: float) -> None:
    """Run the benchmark and print connect time and delivery latency percentiles."""
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite://{Path(tmp) / 'bench.sqlite3'}"
        port = free_port()
        env = {**os.environ, "REDIS_URL": redis_server.url, "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"}
        # Open on loopback, with room for every subscriber from this one address.
        env |= {"DEPLOYER_ALLOW_ANONYMOUS": "true", "DEPLOYER_SECRET_KEY": "bench-" + "k" * 32}
        env |= {"DEPLOYER_MAX_WS_PER_IP": "100000", "DEPLOYER_MAX_WS_PER_TOKEN": "100000"}
        server = subprocess.Popen(  # noqa: S603, ASYNC220 - once, before measuring
            [sys.executable, "-m", "deployer.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:  # noqa: ASYNC210
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            await init_db(db_url)
            redis = Redis.from_url(redis_server.url)
            deployment = await Deployment.create()
            await record(redis, deployment, "start")
            url = f"ws://127.0.0.1:{port}/graphql"
            readies = [asyncio.Event() for _ in range(subscribers)]
            arrivals: list[list[float]] = [[] for _ in range(subscribers)]
            started = time.perf_counter()
            tasks = [
                asyncio.create_task(_subscriber(url, str(deployment.id), readies[i], arrivals[i]))
                for i in range(subscribers)
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
            connect_s = time.perf_counter() - started
            sent: list[float] = []
            for i in range(events):
                final = i == events - 1
                await record(redis, deployment, f"event {i}", status=DeploymentStatus.COMPLETED if final else None)
                sent.append(time.perf_counter())
                await asyncio.sleep(interval)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
            await redis.aclose()
            await close_db()
        finally:
            server.terminate()
            server.wait(10)
    expected = list(range(1, events + 2))
    complete = sum(1 for seqs in results if seqs == expected)
    latencies = [
        (arrived[k + 1] - sent[k]) * 1000 for arrived in arrivals if len(arrived) == events + 1 for k in range(events)
    ]
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"subscribers: {subscribers}, events: {events} every {interval * 1000:.0f} ms")
    print(f"all subscribed and replayed in {connect_s:.2f} s")
    print(f"got every event once, in order: {complete}/{subscribers}")
    print(
        f"delivery latency ms: p50 {pct(0.5):.1f}  p95 {pct(0.95):.1f}  p99 {pct(0.99):.1f}  max {latencies[-1]:.1f}"
        f"  (mean {statistics.mean(latencies):.1f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    asyncio.run(main(args.subscribers, args.events, args.interval))
