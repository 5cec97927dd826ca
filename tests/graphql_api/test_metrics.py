"""`/metrics`: Prometheus gauges read from the database, the queue and the hub; admin scope when auth is on."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.applications import Starlette

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
