"""Database wiring: the Tortoise config for a URL, and opening/closing it once per process."""

from __future__ import annotations

from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url

#: Every module that declares models; one Tortoise app called "models".
MODULES = ["models.deployment", "models.env", "models.slot"]
SQLITE_BUSY_TIMEOUT_MS = 15000


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
        "apps": {"models": {"models": MODULES, "default_connection": "default"}},
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
        await Tortoise.init(config=tortoise_config(db_url), _enable_global_fallback=True)
        if create_schema:
            await Tortoise.generate_schemas(safe=True)
    _users += 1


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
