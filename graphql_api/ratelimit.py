"""Mutations per API token, limited across every API process through Redis (RATE_LIMITED, HTTP 429).

A generic cell rate algorithm (GCRA) in one Lua script: per token, Redis keeps the "theoretical arrival time"
of the next mutation. A token may burst `per_minute` mutations, then goes on at `per_minute` per minute. The
script reads Redis's clock, so every API process agrees on time. Each top-level field of a mutation
operation costs one (aliases count), so one request with thirty aliased `deploy`s is thirty mutations.

`MutationRateLimit` is a schema extension: it runs after validation and before graphql-core coerces
variables or calls a resolver, so a refused operation costs one Redis round trip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import FieldNode, FragmentSpreadNode, GraphQLError, InlineFragmentNode, SelectionSetNode
from graphql.utilities import get_operation_ast
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from graphql_api.errors import RateLimitedError

logger = logging.getLogger("deployer.graphql")

_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allowed_at = new_tat - burst * interval
if allowed_at > now then
  return tostring(allowed_at - now)
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return '0'
"""


class RateLimiter:
    """A GCRA limiter in Redis: `per_minute` units per minute per name, with bursts of `per_minute`.

    Args:
        namespace: separates installations sharing one Redis (the queue name).
    """

    def __init__(self, redis: Redis, *, per_minute: int, namespace: str, what: str = "mutations") -> None:
        self._script = redis.register_script(_GCRA)
        self._per_minute = per_minute
        self._prefix = f"deployer:{namespace}:rate:{what}:"

    async def acquire(self, name: str, cost: int = 1) -> float:
        """Take `cost` units for `name`; 0 when allowed, else the seconds until they would be."""
        cost = max(1, min(cost, self._per_minute))
        interval = 60.0 / self._per_minute
        wait = await self._script(keys=[self._prefix + name], args=[interval, self._per_minute, cost])
        return float(wait)


def mutation_cost(document: object, operation_name: str | None) -> int:
    """Top-level fields of the operation (aliases and fragments expanded; `__typename` is free)."""
    operation = get_operation_ast(document, operation_name)  # type: ignore[arg-type]
    if operation is None:
        return 1
    fragments = {
        definition.name.value: definition
        for definition in getattr(document, "definitions", ())
        if definition.kind == "fragment_definition"
    }

    def count(selection_set: SelectionSetNode, seen: frozenset[str]) -> int:
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += selection.name.value != "__typename"
            elif isinstance(selection, InlineFragmentNode):
                total += count(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    total += count(fragment.selection_set, seen | {selection.name.value})
        return total

    return max(1, count(operation.selection_set, frozenset()))


class MutationRateLimit(SchemaExtension):
    """Refuse a mutation operation with RATE_LIMITED (HTTP 429 and `Retry-After` over HTTP) when over budget."""

    async def on_execute(self) -> AsyncIterator[None]:
        """Charge the caller for the operation's mutations before anything runs."""
        execution = self.execution_context
        context = execution.context
        if execution.operation_type is OperationType.MUTATION and hasattr(context, "settings"):
            caller = context.caller.name if context.caller is not None else "anonymous"
            limiter = RateLimiter(
                context.redis,
                per_minute=context.settings.limits.mutations_per_minute,
                namespace=context.settings.queue_name,
            )
            try:
                wait = await limiter.acquire(
                    caller, mutation_cost(execution.graphql_document, execution.operation_name)
                )
            except RedisError as exc:  # the mutation needs Redis anyway and will report it; do not block here
                logger.warning("rate limiter unavailable (%s); letting the mutation through", type(exc).__name__)
                wait = 0.0
            if wait > 0:
                error = RateLimitedError(max(1, math.ceil(wait)))
                logger.info("rate limited %s: retry after %s s", caller, error.retry_after_s)
                execution.result = GraphQLExecutionResult(
                    data=None, errors=[GraphQLError(error.message, original_error=error)]
                )
                response = getattr(context, "response", None)
                if isinstance(response, Response):
                    response.status_code = 429
                    response.headers["Retry-After"] = str(error.retry_after_s)
        yield
