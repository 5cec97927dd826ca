"""Progress fan-out to websocket subscribers: latency against a bare Starlette broadcast, and memory.

Two servers run as their own processes on one embedded Redis and one SQLite file: `deployer serve`, and
`bench.bare_broadcast` (a bare Starlette websocket broadcast of the same bytes, the baseline). This process
holds N open `graphql-transport-ws` clients of each server. Each round subscribes a server's N clients to
`subscription { deploymentProgress(id) { sequence } }` of a fresh deployment, stores K events with
`jobs.progress.record` (without announcing them) and announces each with `jobs.progress.announce`, as a worker
would; latency is from the announcement to the event's arrival at a client, for every client and event. Every
client must get every event once and in order, then `complete`. Rounds alternate between the two servers (3
per rate), and a figure is the median of the rounds' p99.

Memory is read from the deployer process (RSS): an idle subscription is the growth from N acknowledged
websockets to the same N each holding a subscription to a quiet deployment, per subscription; the churn figure
is the RSS growth over 10,000 subscribe/unsubscribe cycles (after 1,000 to warm up) on 20 websockets, each
cycle following one of 50 deployments.

    .venv/bin/python -m bench --only subscribers [--quick]
    .venv/bin/python -m bench.subscribers [--subscribers 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from bench.figure import Baseline, Figure, Goal
from deployer.embedded_redis import EmbeddedRedis, free_port
from jobs.progress import announce, record
from models.db import close_db, init_db
from models.deployment import Deployment, DeploymentStatus

SUBSCRIPTION = "subscription($id: ID!) { deploymentProgress(id: $id) { sequence } }"


@dataclass
class Round:
    """One round's measurements against one server."""

    p50_ms: float
    p99_ms: float
    complete: int


class Swarm:
    """N open `graphql-transport-ws` clients of one server, subscribed anew (operation `1`) every round."""

    def __init__(self, url: str, replay: bool) -> None:
        self.url = url
        self.replay = replay  # deployer replays the stored event; the bare broadcast has no database
        self.sockets: list[ClientConnection] = []
        self._readers: list[asyncio.Task[None]] = []
        self._ready = 0
        self._done = 0
        self._changed = asyncio.Event()
        self.arrivals: list[dict[int, float]] = []
        self.sequences: list[list[int]] = []

    async def open(self, n: int) -> None:
        for i in range(n):
            self.sockets.append(await _open(self.url))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # do not flood the listen backlog
        self.arrivals = [{} for _ in range(n)]
        self.sequences = [[] for _ in range(n)]
        self._readers = [asyncio.create_task(self._read(i, ws)) for i, ws in enumerate(self.sockets)]

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for ws in self.sockets:
            await ws.close()

    async def _read(self, i: int, ws: ClientConnection) -> None:
        ponged = False
        async for raw in ws:
            now = time.perf_counter()
            message = json.loads(raw)
            kind = message["type"]
            if kind == "next":
                sequence = message["payload"]["data"]["deploymentProgress"]["sequence"]
                self.sequences[i].append(sequence)
                self.arrivals[i][sequence] = now
                if sequence == 1 and ponged:
                    self._ready += 1
                    self._changed.set()
            elif kind == "pong":
                ponged = True
                if self.sequences[i] or not self.replay:
                    self._ready += 1
                    self._changed.set()
            elif kind == "ping":
                await ws.send('{"type":"pong"}')
            elif kind == "complete":
                ponged = False
                self._done += 1
                self._changed.set()

    async def _until(self, count: Callable[[], int], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while count() < len(self.sockets) and time.perf_counter() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)

    async def round(self, redis: Redis, events: int, interval: float) -> Round:
        """Subscribe every client to a fresh deployment, store and announce `events`, measure arrivals."""
        deployment = await Deployment.create()
        await record(redis, deployment, "start")
        self._ready = self._done = 0
        for i, ws in enumerate(self.sockets):
            self.arrivals[i].clear()
            self.sequences[i].clear()
            await _subscribe(ws, "1", str(deployment.id))
            await ws.send('{"type":"ping"}')
        await self._until(lambda: self._ready, 120)
        await asyncio.sleep(0.3)
        sent: dict[int, float] = {}
        for i in range(events):
            final = i == events - 1
            event = await record(None, deployment, f"event {i}", status=DeploymentStatus.COMPLETED if final else None)
            sent[event.sequence] = time.perf_counter()
            await announce(redis, event)
            await asyncio.sleep(interval)
        await self._until(lambda: self._done, 120)
        expected = list(range(2, events + 2))
        complete = sum(1 for seqs in self.sequences if [s for s in seqs if s > 1] == expected)
        latencies = sorted((got[seq] - sent[seq]) * 1000 for got in self.arrivals for seq in sent if seq in got)

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

        return Round(pct(0.5), pct(0.99), complete)


@contextlib.contextmanager
def _server(command: list[str], env: dict[str, str], port: int, *, readyz: bool) -> Iterator[psutil.Process]:
    """Start a server process and wait until its port accepts connections (and `/readyz` answers 200)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        for _ in range(400):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        if readyz:
            for _ in range(200):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                time.sleep(0.05)
        yield psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(10)


async def _open(url: str) -> ClientConnection:
    ws = await connect(url, subprotocols=["graphql-transport-ws"], max_queue=None)  # type: ignore[list-item]
    await ws.send('{"type":"connection_init","payload":{}}')
    await ws.recv()
    return ws


async def _subscribe(ws: ClientConnection, op_id: str, deployment_id: str) -> None:
    payload = {"query": SUBSCRIPTION, "variables": {"id": deployment_id}}
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))


async def _idle_memory(url: str, process: psutil.Process, subscribers: int) -> tuple[float, float]:
    """KiB per idle subscription, and per websocket holding one (connection included)."""
    quiet = await Deployment.create()
    await record(None, quiet, "start")
    await asyncio.sleep(1.0)
    before_connections = process.memory_info().rss
    sockets = []
    for i in range(subscribers):
        sockets.append(await _open(url))
        if i % 50 == 49:
            await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)
    before = process.memory_info().rss
    for ws in sockets:
        await _subscribe(ws, "1", str(quiet.id))
    for ws in sockets:
        while json.loads(await ws.recv())["type"] != "next":
            pass
    await asyncio.sleep(1.0)
    after = process.memory_info().rss
    for ws in sockets:
        await ws.close()
    return (after - before) / subscribers / 1024, (after - before_connections) / subscribers / 1024


async def _churn(url: str, process: psutil.Process, warm_up: int, cycles: int) -> tuple[float, float, float]:
    """RSS before and after `cycles` subscribe/unsubscribe cycles (after `warm_up` ones), and cycles/s."""
    pool = []
    for _ in range(50):
        row = await Deployment.create()
        await record(None, row, "start")
        pool.append(str(row.id))
    sockets = [await _open(url) for _ in range(20)]
    counter = iter(range(10**9))

    async def run(ws: ClientConnection, count: int) -> None:
        for _ in range(count):
            n = next(counter)
            op_id = f"c{n}"
            await _subscribe(ws, op_id, pool[n % len(pool)])
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == op_id and message["type"] == "next":
                    break
            await ws.send(json.dumps({"id": op_id, "type": "complete"}))

    await asyncio.gather(*(run(ws, warm_up // len(sockets)) for ws in sockets))
    await asyncio.sleep(1.0)
    start = process.memory_info().rss
    began = time.perf_counter()
    await asyncio.gather(*(run(ws, cycles // len(sockets)) for ws in sockets))
    rate = cycles / (time.perf_counter() - began)
    await asyncio.sleep(1.0)
    end = process.memory_info().rss
    for ws in sockets:
        await ws.close()
    return start / 2**20, end / 2**20, rate


async def measure(subscribers: int, quick: bool) -> list[Figure]:
    """Run every phase and return the figures."""
    slow_events, fast_events, repeats = (6, 20, 2) if quick else (10, 40, 3)
    warm_up, cycles = (200, 1000) if quick else (1000, 10_000)
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite://{Path(tmp) / 'bench.sqlite3'}"
        env = {**os.environ, "REDIS_URL": redis_server.url, "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"}
        env |= {"DEPLOYER_ALLOW_ANONYMOUS": "true", "DEPLOYER_SECRET_KEY": "bench-" + "k" * 32}
        env |= {"DEPLOYER_MAX_WS_PER_IP": "100000", "DEPLOYER_MAX_WS_PER_TOKEN": "100000"}
        env.pop("DO_API_KEY", None)
        deployer_port, bare_port = free_port(), free_port()
        deployer_cmd = [sys.executable, "-m", "deployer.cli", "serve", "--port", str(deployer_port)]
        bare_cmd = [sys.executable, "-m", "bench.bare_broadcast", "--port", str(bare_port)]
        bare_cmd += ["--redis-url", redis_server.url]
        await init_db(db_url)  # creates the schema before the servers open the file
        redis = Redis.from_url(redis_server.url)
        try:
            with (
                _server(deployer_cmd, env, deployer_port, readyz=True) as deployer,
                _server(bare_cmd, env, bare_port, readyz=False),
            ):
                deployer_url = f"ws://127.0.0.1:{deployer_port}/graphql"
                bare_url = f"ws://127.0.0.1:{bare_port}/graphql"
                per_subscription, per_socket = await _idle_memory(deployer_url, deployer, subscribers)
                rss_start, rss_end, cycle_rate = await _churn(deployer_url, deployer, warm_up, cycles)
                swarms = {"bare": Swarm(bare_url, replay=False), "deployer": Swarm(deployer_url, replay=True)}
                for swarm in swarms.values():
                    await swarm.open(subscribers)
                rounds: dict[str, list[Round]] = {}
                for rate, events in ((2, slow_events), (20, fast_events)):
                    for r in range(repeats):  # alternate, so that the machine's noise hits both alike
                        for name in ("bare", "deployer") if r % 2 == 0 else ("deployer", "bare"):
                            result = await swarms[name].round(redis, events, 1 / rate)
                            rounds.setdefault(f"{name}@{rate}", []).append(result)
                for swarm in swarms.values():
                    await swarm.close()
        finally:
            await redis.aclose()
            await close_db()
    incomplete = sum(subscribers - r.complete for results in rounds.values() for r in results)
    p99 = {name: statistics.median(r.p99_ms for r in results) for name, results in rounds.items()}
    p50 = {name: statistics.median(r.p50_ms for r in results) for name, results in rounds.items()}
    note = f"{subscribers} subscribers, median of {repeats} alternating rounds"
    return [
        Figure(
            "subscribers.p99_at_2_events_per_s",
            p99["deployer@2"],
            "ms",
            baseline=Baseline("bare starlette broadcast", p99["bare@2"]),
            goal=Goal("<=", 1.3, on="ratio"),
            note=f"{note}; p50 {p50['deployer@2']:.1f} ms vs bare {p50['bare@2']:.1f} ms",
        ),
        Figure(
            "subscribers.p99_at_20_events_per_s",
            p99["deployer@20"],
            "ms",
            baseline=Baseline("bare starlette broadcast", p99["bare@20"]),
            goal=Goal("<=", 250),
            note=f"{note}; p50 {p50['deployer@20']:.1f} ms vs bare {p50['bare@20']:.1f} ms",
        ),
        Figure(
            "subscribers.incomplete_streams",
            incomplete,
            "streams",
            goal=Goal("<=", 0),
            note="complete: every event once, in order, then `complete` (every round, both servers)",
        ),
        Figure(
            "subscribers.idle_subscription_memory",
            per_subscription,
            "KiB",
            goal=Goal("<=", 50),
            note=f"{per_socket:.1f} KiB per websocket with its subscription, connection included",
        ),
        Figure(
            "subscribers.rss_growth_over_churn",
            (rss_end - rss_start) / rss_start * 100,
            "%",
            goal=Goal("<=", 5),
            note=f"{cycles} subscribe/unsubscribe cycles: {rss_start:.1f} -> {rss_end:.1f} MiB, {cycle_rate:.0f}/s",
        ),
    ]


def figures(quick: bool) -> list[Figure]:
    """For `make bench`: fan-out latency against a bare broadcast, idle subscription memory, RSS over churn."""
    return asyncio.run(measure(100 if quick else 1000, quick))


async def _main(subscribers: int, quick: bool) -> None:
    for figure in await measure(subscribers, quick):
        print(figure.line())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(_main(args.subscribers, args.quick))
