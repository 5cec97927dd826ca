"""GraphQL overhead against bare Starlette, in one run on one machine (compare the ratio, not the numbers).

Both endpoints answer the same question with the same database call (`slot_usage`): a bare Starlette route
returning JSON, and `{ dropletCount { active limit available } }` through the full deployer app (strawberry,
error masking, depth limit, context). Requests go through httpx's ASGI transport, so the network is not
measured. Rounds alternate between the two so machine noise hits both alike.

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
from models.slot import slot_usage
from settings import Settings

QUERY = {"query": "{ dropletCount { active limit available } }"}


async def _bare(request: Request) -> JSONResponse:
    usage = await slot_usage(3)
    return JSONResponse({"data": {"dropletCount": {"active": usage.active, "limit": 3, "available": usage.available}}})


async def _time(client: httpx.AsyncClient, path: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        response = await client.post(path, json=QUERY)
        assert response.status_code == 200
    return n / (time.perf_counter() - start)


async def measure(requests: int, rounds: int) -> tuple[float, float]:
    """Median requests per second of the bare route and of GraphQL, rounds alternating."""
    with EmbeddedRedis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite://{tmp}/bench.sqlite3", redis_url=redis_server.url)
        app = create_app(settings, extra_routes=[Route("/bare", _bare, methods=["POST"])])
        bare_app = Starlette(routes=[Route("/bare", _bare, methods=["POST"])])
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            bare_transport = httpx.ASGITransport(app=bare_app)
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://localhost") as gql,
                httpx.AsyncClient(transport=bare_transport, base_url="http://localhost") as bare,
            ):
                await _time(gql, "/graphql", 100)  # warm-up
                await _time(bare, "/bare", 100)
                gql_rates, bare_rates = [], []
                for _ in range(rounds):
                    bare_rates.append(await _time(bare, "/bare", requests))
                    gql_rates.append(await _time(gql, "/graphql", requests))
    return statistics.median(bare_rates), statistics.median(gql_rates)


def figures(quick: bool) -> list[Figure]:
    """For `make bench`: `{ dropletCount }` against a bare Starlette route doing the same read (goal: 0.7x)."""
    bare_rps, gql_rps = asyncio.run(measure(200 if quick else 2000, 2 if quick else 5))
    return [
        Figure(
            "query.dropletCount",
            gql_rps,
            "req/s",
            baseline=Baseline("bare starlette", bare_rps),
            goal=Goal(">=", 0.7, on="ratio"),
        )
    ]


async def main(requests: int, rounds: int) -> None:
    """Run the benchmark and print requests per second for both and their ratio."""
    bare_rps, gql_rps = await measure(requests, rounds)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}")
    print(f"bare starlette : {bare_rps:8.0f} req/s (median of {rounds} x {requests})")
    print(f"graphql        : {gql_rps:8.0f} req/s")
    print(f"graphql/bare   : {gql_rps / bare_rps:8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
