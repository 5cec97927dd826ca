"""GraphQL overhead against bare Starlette, in one run on one machine (compare the ratio, not the numbers).

Two questions, each asked of a bare Starlette route returning JSON and of the full deployer app (edge guard,
auth, the hot-query short path or Strawberry): `{ dropletCount { active limit available } }` (the
`slot_usage` read) and `deployment(id: $id) { id status stage ipAddress createdAt }` (one row by primary key).
Requests go through httpx's ASGI transport, so the network is not measured. Rounds alternate between the
bare route and GraphQL so machine noise hits both alike.

    .venv/bin/python -m bench.graphql_overhead [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bench.figure import Baseline, Figure, Goal
from deployer.embedded_redis import EmbeddedRedis
from graphql_api.app import create_app
from models.deployment import Deployment
from models.slot import slot_usage
from settings import Settings

COUNT = "{ dropletCount { active limit available } }"
ONE = "query($id: ID!) { deployment(id: $id) { id status stage ipAddress createdAt } }"


async def _bare_count(request: Request) -> JSONResponse:
    usage = await slot_usage(3)
    return JSONResponse({"data": {"dropletCount": {"active": usage.active, "limit": 3, "available": usage.available}}})


async def _bare_one(request: Request) -> JSONResponse:
    body = await request.json()
    row = await Deployment.get_or_none(id=body["variables"]["id"])
    if row is None:
        return JSONResponse({"data": {"deployment": None}})
    found = {
        "id": str(row.id),
        "status": row.status.value,
        "stage": row.stage.value,
        "ipAddress": row.ip_address,
        "createdAt": row.created_at.isoformat(),
    }
    return JSONResponse({"data": {"deployment": found}})


async def _time(client: httpx.AsyncClient, path: str, body: dict[str, object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        response = await client.post(path, json=body)
        assert response.status_code == 200 and b'"errors"' not in response.content, response.text
    return n / (time.perf_counter() - start)


async def measure(requests: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Per question, the median requests per second of the bare route and of GraphQL, rounds alternating."""
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite://{tmp}/bench.sqlite3", redis_url=redis_server.url)
        app = create_app(settings)
        bare_app = Starlette(
            routes=[Route("/count", _bare_count, methods=["POST"]), Route("/one", _bare_one, methods=["POST"])]
        )
        results: dict[str, tuple[float, float]] = {}
        async with app.router.lifespan_context(app):
            row = await Deployment.create(spec={"name": "bench"}, ip_address="203.0.113.7")
            questions = {
                "dropletCount": ("/count", {"query": COUNT}),
                "deployment": ("/one", {"query": ONE, "variables": {"id": str(row.id)}}),
            }
            transport = httpx.ASGITransport(app=app)
            bare_transport = httpx.ASGITransport(app=bare_app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://localhost") as gql,
                httpx.AsyncClient(transport=bare_transport, base_url="http://localhost") as bare,
            ):
                for name, (path, body) in questions.items():
                    await _time(gql, "/graphql", body, 100)  # warm-up
                    await _time(bare, path, body, 100)
                    gql_rates, bare_rates = [], []
                    for _ in range(rounds):
                        bare_rates.append(await _time(bare, path, body, requests))
                        gql_rates.append(await _time(gql, "/graphql", body, requests))
                    results[name] = (statistics.median(bare_rates), statistics.median(gql_rates))
    return results


def figures(quick: bool) -> list[Figure]:
    """For `make bench`: each query against a bare Starlette route doing the same read (goal: 0.7x)."""
    results = asyncio.run(measure(200 if quick else 2000, 2 if quick else 5))
    return [
        Figure(
            f"query.{name}",
            gql_rps,
            "req/s",
            baseline=Baseline("bare starlette", bare_rps),
            goal=Goal(">=", 0.7, on="ratio"),
        )
        for name, (bare_rps, gql_rps) in results.items()
    ]


async def main(requests: int, rounds: int) -> None:
    """Run the benchmark and print requests per second for both and their ratio."""
    results = await measure(requests, rounds)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}")
    for name, (bare_rps, gql_rps) in results.items():
        print(f"{name}: bare {bare_rps:.0f} req/s, graphql {gql_rps:.0f} req/s, graphql/bare {gql_rps / bare_rps:.2f}")
    print(f"(medians of {rounds} rounds of {requests} requests)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
