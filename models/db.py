"""Database wiring: the Tortoise config for a URL, migrations, and opening/closing it once per process.

The schema is defined by the migrations in `models/migrations/` (written with Tortoise's `makemigrations`,
see `models/cli_config.py`). Every process applies what is missing when it opens the database, under a lock
shared by all processes on that database (a PostgreSQL advisory lock, or a file lock next to a SQLite file),
so API replicas and workers starting together never race on a migration.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.migrations.executor import MigrationExecutor

#: Every module that declares models; one Tortoise app called "models".
MODULES = ["models.deployment", "models.env", "models.slot"]
SQLITE_BUSY_TIMEOUT_MS = 15000
#: Key of the PostgreSQL advisory lock held while migrating ("deployer" in ASCII, as a bigint).
MIGRATION_LOCK_KEY = int.from_bytes(b"deployer", "big") >> 1
#: The package holding the schema's migrations (`deployer migrate` applies them).
MIGRATIONS = "models.migrations"


def tortoise_config(db_url: str) -> dict[str, Any]:
    """Tortoise's config dict for a `sqlite://path` or `postgres://...` URL.

    SQLite gets WAL and a busy timeout, so several processes (API replicas, workers) can share one file: a
    writer waits for the lock instead of failing with "database is locked".
    """
    connection = expand_db_url(db_url)
    if connection["engine"] == "tortoise.backends.sqlite":
        connection["credentials"].setdefault("busy_timeout", SQLITE_BUSY_TIMEOUT_MS)
        connection["credentials"].setdefault("synchronous", "NORMAL")
    return {
        "connections": {"default": connection},
        "apps": {"models": {"models": MODULES, "default_connection": "default", "migrations": MIGRATIONS}},
        "use_tz": True,
        "timezone": "UTC",
    }


_users = 0


async def init_db(db_url: str, *, create_schema: bool = True) -> None:
    """Open the database for this process (once) and create missing tables.

    Tortoise is one global per process; the API and an in-process worker (`deployer dev`) both call this, so
    opens are counted and only the last `close_db()` closes. The global fallback makes the connection
    visible from every task (Starlette's lifespan, request handlers and SAQ jobs run in different tasks).
    """
    global _users
    if _users == 0 and not Tortoise.is_inited():
        config = tortoise_config(db_url)
        await Tortoise.init(config=config, _enable_global_fallback=True)
        if create_schema:
            await migrate(db_url, config)
    _users += 1


@contextlib.asynccontextmanager
async def _migration_lock(db_url: str) -> AsyncIterator[None]:
    """Hold a lock that every process migrating this database respects."""
    if db_url.startswith("sqlite://"):
        path = expand_db_url(db_url)["credentials"]["file_path"]
        if path == ":memory:":
            yield
            return
        with open(f"{path}.migrate-lock", "a+") as handle:  # noqa: ASYNC230 - a lock file, opened once
            await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return
    conn = await asyncpg.connect(db_url.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def migrate(db_url: str, config: dict[str, Any] | None = None) -> None:
    """Apply the migrations the database lacks (Tortoise must be open on `db_url`)."""
    config = config or tortoise_config(db_url)
    async with _migration_lock(db_url):
        executor = MigrationExecutor(Tortoise.get_connection("default"), config["apps"])
        await executor.migrate()


def is_db_open() -> bool:
    """Whether this process has the database open."""
    return Tortoise.is_inited()


async def close_db() -> None:
    """Release one `init_db()`; the last one closes this process's connections."""
    global _users
    _users = max(0, _users - 1)
    if _users == 0:
        await Tortoise.close_connections()


async def ping_db() -> None:
    """Run a trivial query; raises when the database does not answer."""
    await Tortoise.get_connection("default").execute_query("SELECT 1")
