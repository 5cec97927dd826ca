"""Errors that say Redis or the database is not answering, and which of the two.

The worker leaves a deployment whose attempt met one of these PROCESSING for the reaper (`jobs.deploy`), and the
API answers SERVICE_UNAVAILABLE for them (`graphql_api.errors`): an outage, not a bug.
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tortoise.exceptions import DBConnectionError

__all__ = ["DATABASE_ERRORS", "REDIS_ERRORS", "unavailable_service"]

#: What a lost Redis connection raises (redis-py wraps socket errors into these).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
#: What a lost PostgreSQL connection raises through Tortoise, which passes asyncpg's errors on as they are: a
#: refused or cut connect (class 08), a closed or dropped connection, a server starting up or shutting down.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    DBConnectionError,
)
#: Which service a bare socket error came from, by the package of the code it was raised through.
_SERVICE_PACKAGES = {"asyncpg": "The database", "tortoise": "The database", "redis": "Redis", "saq": "Redis"}


def unavailable_service(error: BaseException | None, *, implicit_context: bool) -> str | None:
    """ "Redis", "The database" (or "The database or Redis") when `error` says that service is not answering;
    None otherwise.

    Explicit causes (`raise … from`) count. With `implicit_context`, so does the exception being handled when
    `error` was raised. A bare socket error (refused, reset, timed out: asyncpg raises those when it cannot
    connect at all) is told apart by the code it was raised through.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, REDIS_ERRORS):
            return "Redis"
        if isinstance(error, DATABASE_ERRORS):
            return "The database"
        if isinstance(error, OSError):
            return _socket_error_service(error)
        error = (error.__cause__ or error.__context__) if implicit_context else error.__cause__
    return None


def _socket_error_service(error: BaseException) -> str:
    """The service a bare socket error was raised from, told by the frames it passed on its way up."""
    frame = error.__traceback__
    while frame is not None:
        package = str(frame.tb_frame.f_globals.get("__name__", "")).partition(".")[0]
        if package in _SERVICE_PACKAGES:
            return _SERVICE_PACKAGES[package]
        frame = frame.tb_next
    return "The database or Redis"
