"""The app: health and readiness, the routes, extra routes, and several API processes sharing one limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from deployer.embedded_redis import free_port
from graphql_api.context import Services
from models import Deployment
from settings import Settings
from tests.conftest import REPO_ROOT, SECRET_KEY
from tests.graphql_api.conftest import running


async def _get(app: Starlette, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        return await http.get(path)


async def test_healthz_and_readyz(app: Starlette) -> None:
    """`/healthz` is 200 while the process lives; `/readyz` is 200 when the database and Redis answer."""
    health = await _get(app, "/healthz")
    assert health.status_code == 200
    ready = await _get(app, "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_readyz_is_503_with_the_reason_when_redis_is_down(app: Starlette) -> None:
    """When Redis does not answer, `/readyz` is 503 and says so, without the URL."""
    services: Services = app.state.services
    healthy = services.redis
    services.redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        ready = await _get(app, "/readyz")
    finally:
        await services.redis.aclose()
        services.redis = healthy
    assert ready.status_code == 503
    assert ready.json()["reason"].startswith("redis not answering")
    assert "127.0.0.1" not in ready.text
    assert (await _get(app, "/healthz")).status_code == 200


async def test_readyz_is_503_before_startup(make_app: Any) -> None:
    """Before the lifespan has opened anything, the app is alive but not ready."""
    app: Starlette = make_app()
    assert (await _get(app, "/healthz")).status_code == 200
    ready = await _get(app, "/readyz")
    assert ready.status_code == 503


async def test_extra_routes_are_mounted_after_the_api(settings: Settings) -> None:
    """Routes passed by the composition root are served next to the API's own."""
    from graphql_api.app import create_app

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = create_app(settings, extra_routes=[Route("/sandbox/hello", hello)])
    async with running(app):
        assert (await _get(app, "/sandbox/hello")).text == "hello"
        assert (await _get(app, "/healthz")).status_code == 200


async def test_lifespan_creates_missing_slots(make_app: Any) -> None:
    """Starting with a higher MAX_ACTIVE_DROPLETS creates the extra slot rows."""
    app: Starlette = make_app(max_active_droplets=5)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http,
    ):
        response = await http.post("/graphql", json={"query": "{ dropletCount { active limit available } }"})
    assert response.json()["data"]["dropletCount"] == {"active": 0, "limit": 5, "available": 5}


def _start_api(port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "graphql_api.app:app_from_env",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(int(timeout / 0.1)):
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise AssertionError(f"API process exited: {err[-2000:]}")
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"API at {url} did not become ready")


@pytest.mark.slow
async def test_two_api_processes_share_the_droplet_limit(db: str, redis_url: str, queue_name: str) -> None:
    """Twenty concurrent deploys over two API processes: 3 accepted, 17 get DROPLET_LIMIT_REACHED."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DO_", "COOLIFY_", "DEPLOYER_"))}
    env.update(DATABASE_URL=db, REDIS_URL=redis_url, DEPLOYER_QUEUE=queue_name, MAX_ACTIVE_DROPLETS="3")
    env.update(DEPLOYER_ALLOW_ANONYMOUS="true", DEPLOYER_SECRET_KEY=SECRET_KEY)
    ports = [free_port(), free_port()]
    processes = [_start_api(port, env) for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        await asyncio.gather(*(_wait_ready(url, process) for url, process in zip(urls, processes, strict=True)))
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
        try:
            responses = await asyncio.gather(
                *(clients[i % 2].post("/graphql", json={"query": "mutation { deploy { id } }"}) for i in range(20))
            )
        finally:
            for client in clients:
                await client.aclose()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
            if process.stderr:
                process.stderr.close()
    bodies = [response.json() for response in responses]
    codes = [body["errors"][0]["extensions"]["code"] if "errors" in body else "OK" for body in bodies]
    assert codes.count("OK") == 3, bodies
    assert codes.count("DROPLET_LIMIT_REACHED") == 17
    assert await Deployment.all().count() == 3
