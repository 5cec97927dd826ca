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


async def init_db(db_url: str, *, create_schema: bool = True) -> None:
    """Open the database for this process and create missing tables.

    The global fallback makes the connection visible from every task (Starlette's lifespan, request handlers
    and SAQ jobs run in different tasks).
    """
    await Tortoise.init(config=tortoise_config(db_url), _enable_global_fallback=True)
    if create_schema:
        await Tortoise.generate_schemas(safe=True)


async def close_db() -> None:
    """Close this process's database connections."""
    await Tortoise.close_connections()


async def ping_db() -> None:
    """Run a trivial query; raises when the database does not answer."""
    await Tortoise.get_connection("default").execute_query("SELECT 1")
