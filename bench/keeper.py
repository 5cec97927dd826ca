"""Cost of one heartbeat for a worker with N deployments in flight: the keeper against renewing job by job.

For each N, a private redis-server holds N leases and N ACTIVE SAQ job records. The benchmark times:

- `keeper`: one `Keeper.beat()`: one script call renewing the worker's alive key, the N leases and the N job
  heartbeats;
- `per job`: what each job used to do on its own every beat: renew its lease (one EVAL) and SAQ's
  `job.update()` (GET, SET, PUBLISH), four round trips per job.

Round trips are counted at the connection (one per command sent, one per pipeline).

    .venv/bin/python -m bench.keeper [--in-flight 1 100 1000] [--beats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
import uuid
from typing import Any

from redis.asyncio import Connection, ConnectionPool, Redis
from saq.job import Job, Status

from deployer.embedded_redis import EmbeddedRedis
from jobs.keeper import Keeper
from jobs.lease import Lease
from jobs.queue import DeployerQueue


class CountingConnection(Connection):
    """Counts what it sends: one per command, or per pipeline."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Count, then send."""
        CountingConnection.sends += 1
        await super().send_packed_command(command, check_health)


async def measure(url: str, in_flight: int, beats: int) -> dict[str, float]:
    """Median milliseconds and round trips per beat, keeper against job by job."""
    redis = Redis.from_pool(ConnectionPool.from_url(url, connection_class=CountingConnection))
    queue = DeployerQueue(redis, name=f"bench-{uuid.uuid4().hex[:8]}")
    keeper = Keeper(redis, ttl_s=30, alive_key=queue.alive_key("bench"))
    leases, jobs = [], []
    for i in range(in_flight):
        lease = Lease(redis, f"bench:{uuid.uuid4().hex}:{i}", ttl_s=30)
        await lease.acquire()
        keeper.hold(lease, lambda: None)
        leases.append(lease)
        job = Job(function="deploy", key=str(uuid.uuid4()), status=Status.ACTIVE, heartbeat=10, queue=queue)
        job.touched = job.started = int(time.time() * 1000)
        await redis.set(job.id, queue.serialize(job), ex=600)
        keeper.track(job.id)
        jobs.append(job)
    await keeper.beat()  # loads the script

    async def per_job() -> None:
        for lease, job in zip(leases, jobs, strict=True):
            await lease.renew()
            await job.update()

    results: dict[str, float] = {}
    for name, beat in (("keeper", keeper.beat), ("per job", per_job)):
        times, trips = [], []
        for _ in range(beats):
            before, started = CountingConnection.sends, time.perf_counter()
            await beat()
            times.append((time.perf_counter() - started) * 1000)
            trips.append(CountingConnection.sends - before)
        results[f"{name} ms"] = statistics.median(times)
        results[f"{name} round trips"] = statistics.median(trips)
    await redis.aclose()
    return results


async def main(in_flight: list[int], beats: int) -> None:
    """Run every size and print a Markdown table."""
    print(f"{platform.machine()}, Python {platform.python_version()}, private redis-server, {beats} beats each")
    print("| in flight | keeper: round trips | keeper: ms per beat | per job: round trips | per job: ms per beat |")
    print("|---|---|---|---|---|")
    with EmbeddedRedis() as server:
        for size in in_flight:
            r = await measure(server.url, size, beats)
            print(
                f"| {size} | {r['keeper round trips']:.0f} | {r['keeper ms']:.2f} | {r['per job round trips']:.0f}"
                f" | {r['per job ms']:.1f} |"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--beats", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.in_flight, args.beats))
