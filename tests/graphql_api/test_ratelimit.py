"""Mutations per token are rate-limited through Redis: RATE_LIMITED, HTTP 429, `Retry-After` and
`extensions.retryAfter`; the budget is shared by every API process and kept apart per token."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette

from graphql_api.ratelimit import RateLimiter, mutation_cost
from settings import Limits
from tests.graphql_api.conftest import ADMIN_TOKEN, DEPLOY_TOKEN, TOKENS, running, served, ws_client

CANCEL = 'mutation { cancelDeployment(id: "00000000-0000-4000-8000-000000000000") { id } }'


async def _post(client: httpx.AsyncClient, query: str, token: str) -> httpx.Response:
    return await client.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"})


def test_mutation_cost_counts_top_level_fields() -> None:
    """Aliases and fragments count once per field; `__typename` is free."""
    from graphql import parse

    document = parse(
        "mutation M { a: cancelDeployment(id: 1) { id } b: cancelDeployment(id: 2) { id } ...F __typename }"
        " fragment F on Mutation { c: cancelDeployment(id: 3) { id } ... on Mutation { d: deleteEnv { deleted } } }"
    )
    assert mutation_cost(document, "M") == 4


async def test_over_the_budget_a_mutation_gets_429_with_retry_after(make_app: Callable[..., Starlette]) -> None:
    """Three mutations pass (their own errors aside); the fourth is RATE_LIMITED with HTTP 429 and a retry time;
    queries are not limited, and another token has its own budget."""
    app = make_app(api_tokens=TOKENS, limits=Limits(mutations_per_minute=3))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        for _ in range(3):
            response = await _post(http, CANCEL, DEPLOY_TOKEN)
            assert response.status_code == 200
            assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        limited = await _post(http, CANCEL, DEPLOY_TOKEN)
        query = await _post(http, "{ dropletCount { limit } }", ADMIN_TOKEN)
        other = await _post(http, CANCEL, ADMIN_TOKEN)
    assert limited.status_code == 429
    error = limited.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["status"] == 429
    retry_after = error["extensions"]["retryAfter"]
    assert isinstance(retry_after, int) and 1 <= retry_after <= 60
    assert limited.headers["retry-after"] == str(retry_after)
    assert limited.json()["data"] is None
    assert query.status_code == 200
    assert other.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_aliased_mutations_count_one_each(make_app: Callable[..., Starlette]) -> None:
    """One request carrying four aliased mutations is four mutations: a budget of five allows it once."""
    app = make_app(api_tokens=TOKENS, limits=Limits(mutations_per_minute=5))
    aliased = "mutation {" + " ".join(f"m{i}: {CANCEL.removeprefix('mutation { ')[:-2]}" for i in range(4)) + " }"
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        first = await _post(http, aliased, DEPLOY_TOKEN)
        second = await _post(http, aliased, DEPLOY_TOKEN)
    assert (first.status_code, second.status_code) == (200, 429)


async def test_the_budget_is_shared_by_api_processes(make_app: Callable[..., Starlette]) -> None:
    """Two API servers on one Redis draw on one budget per token (the limiter keeps nothing in memory)."""
    limits = Limits(mutations_per_minute=3)
    async with (
        served(make_app(api_tokens=TOKENS, limits=limits)) as first,
        served(make_app(api_tokens=TOKENS, limits=limits)) as second,
        httpx.AsyncClient(base_url=first) as one,
        httpx.AsyncClient(base_url=second) as two,
    ):
        statuses = [(await _post(client, CANCEL, DEPLOY_TOKEN)).status_code for client in (one, two, one, two)]
    assert statuses == [200, 200, 200, 429]


async def test_a_mutation_over_websocket_is_limited_too(make_app: Callable[..., Starlette]) -> None:
    """Over graphql-transport-ws the refused mutation's error is RATE_LIMITED with retryAfter."""
    app = make_app(api_tokens=TOKENS, limits=Limits(mutations_per_minute=1))
    async with served(app) as url, ws_client(url, "graphql-transport-ws") as client:
        assert (await client.init({"authToken": DEPLOY_TOKEN}))["type"] == "connection_ack"
        codes = []
        for op_id in ("1", "2"):
            await client.subscribe(op_id, CANCEL, {})
            payloads = [payload async for payload in client.results(op_id)]
            codes.append(payloads[0]["errors"][0]["extensions"]["code"])
    assert codes == ["NOT_FOUND", "RATE_LIMITED"]


async def test_the_limiter_refills_at_its_rate(redis: Redis, queue_name: str) -> None:
    """At 60 a minute, a spent budget allows the next unit after about a second (Redis's clock, not ours)."""
    limiter = RateLimiter(redis, per_minute=60, namespace=queue_name)
    for _ in range(60):
        assert await limiter.acquire("t") == 0
    wait = await limiter.acquire("t")
    assert 0 < wait <= 1.0
    assert await limiter.acquire("other") == 0
