"""`/metrics`: Prometheus gauges read from the database, the queue and the hub; admin scope when auth is on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import httpx
from starlette.applications import Starlette

from sandbox.state import World
from settings import Settings
from tests.graphql_api.conftest import ADMIN_TOKEN, READ_TOKEN, TOKENS, GraphQLClient, running


async def test_metrics_count_deployments_slots_and_jobs(app: Starlette, gql: GraphQLClient) -> None:
    """After two deploys the gauges show two QUEUED deployments, two held slots and two queued jobs."""
    for _ in range(2):
        await gql("mutation { deploy { id } }")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = response.text.splitlines()
    assert 'deployer_deployments{status="QUEUED"} 2' in lines
    assert 'deployer_deployments{status="COMPLETED"} 0' in lines
    assert "deployer_droplet_slots_active 2" in lines
    assert "deployer_droplet_slots_limit 3" in lines
    assert 'deployer_queue_jobs{state="queued"} 2' in lines
    assert "deployer_progress_listeners 0" in lines
    assert "# TYPE deployer_deployments gauge" in lines


async def test_metrics_need_the_admin_scope_when_auth_is_on(make_app: Callable[..., Starlette]) -> None:
    """Without a token 401, with a read-only token 403, with an admin token 200."""
    app = make_app(api_tokens=TOKENS)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        assert (await http.get("/metrics")).status_code == 401
        read = await http.get("/metrics", headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert read.status_code == 403
        admin = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status_code == 200
        assert READ_TOKEN not in admin.text and ADMIN_TOKEN not in admin.text


async def test_the_api_draws_from_the_shared_budgets_and_reports_them(
    make_app: Callable[..., Starlette], settings: Settings, api_world: World
) -> None:
    """The API's DigitalOcean catalog reads go through the shared budget; /metrics counts them per cloud."""
    token = f"do-{uuid.uuid4().hex}"  # a bucket of this test's own
    app = make_app(digitalocean=replace(settings.digitalocean, api_key=token, requests_per_minute=6000))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as http:
        gql = GraphQLClient(http)
        await gql("mutation { deploy { id } }")  # checks region, size and image against the catalog
        sent = len([r for r in api_world.requests if r.api == "digitalocean"])
        text = (await http.get("/metrics")).text
    assert sent > 0
    lines = text.splitlines()
    assert f'deployer_budget_requests_total{{cloud="digitalocean"}} {sent}' in lines
    assert 'deployer_budget_rate_limited_total{cloud="digitalocean"} 0' in lines
    assert 'deployer_budget_quota_holds_total{cloud="digitalocean"} 0' in lines
    assert "# TYPE deployer_budget_wait_seconds_total counter" in lines
    assert any(line.startswith('deployer_budget_requests_total{cloud="coolify"}') for line in lines)
    assert token not in text
