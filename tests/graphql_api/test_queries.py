"""Queries: `deployment` (fields, events, NOT_FOUND) and `dropletCount`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis

from jobs.progress import record
from models import Deployment, DeploymentStage, DeploymentStatus
from models.slot import reserve_slot
from tests.graphql_api.conftest import DROPLET_COUNT, GraphQLClient

DEPLOYMENT = """
query($id: ID!, $after: Int) {
  deployment(id: $id) {
    id status stage failedStage error dropletId dropletName ipAddress serverUuid applicationUuid
    applicationUrl domains coolifyDeploymentUuid createdAt updatedAt finishedAt name region size image envKeys
    ports source { kind image tag description }
    events(afterSequence: $after) { sequence deploymentId status stage message attempt at }
  }
}
"""


async def _stored_deployment(redis: Redis) -> Deployment:
    row = await Deployment.create(
        spec={
            "name": "shop",
            "source": {"kind": "docker", "image": "ghcr.io/acme/shop", "tag": "v2"},
            "ports": "8080",
            "domains": ["https://shop.example.com"],
            "region": "fra1",
            "size": "s-2vcpu-2gb",
            "image": "ubuntu-24-04-x64",
            "env_keys": ["TOKEN"],
        },
        droplet_name="eliza-x",
    )
    await record(redis, row, "Deployment queued")
    await record(
        redis,
        row,
        "Creating droplet",
        status=DeploymentStatus.PROCESSING,
        stage=DeploymentStage.CREATE_DROPLET,
    )
    await record(
        redis,
        row,
        "Application running",
        status=DeploymentStatus.COMPLETED,
        stage=DeploymentStage.DONE,
        droplet_id=4_000_000_123,
        ip_address="203.0.113.7",
        server_uuid="srv-1",
        application_uuid="app-1",
        application_domains="https://shop.example.com,https://www.shop.example.com",
        coolify_deployment_uuid="dep-1",
        finished_at=datetime.now(UTC),
    )
    return row


async def test_deployment_returns_its_fields_and_events(gql: GraphQLClient, redis: Redis) -> None:
    """`deployment` returns the row's fields, the safe spec fields and the events in order."""
    row = await _stored_deployment(redis)
    status, body = await gql(DEPLOYMENT, {"id": str(row.id)})
    assert status == 200
    assert "errors" not in body, body
    deployment = body["data"]["deployment"]
    assert deployment["status"] == "COMPLETED"
    assert deployment["stage"] == "DONE"
    assert deployment["dropletId"] == "4000000123"
    assert deployment["ipAddress"] == "203.0.113.7"
    assert deployment["applicationUuid"] == "app-1"
    assert deployment["applicationUrl"] == "https://shop.example.com"
    assert deployment["domains"] == ["https://shop.example.com", "https://www.shop.example.com"]
    assert deployment["coolifyDeploymentUuid"] == "dep-1"
    assert deployment["finishedAt"] is not None
    assert deployment["source"]["description"] == "docker ghcr.io/acme/shop:v2"
    assert (deployment["name"], deployment["region"], deployment["size"]) == ("shop", "fra1", "s-2vcpu-2gb")
    assert deployment["ports"] == [8080]
    assert deployment["envKeys"] == ["TOKEN"]
    events = deployment["events"]
    assert [e["sequence"] for e in events] == [1, 2, 3]
    assert [e["status"] for e in events] == ["QUEUED", "PROCESSING", "COMPLETED"]
    assert {e["deploymentId"] for e in events} == {str(row.id)}


async def test_deployment_events_after_sequence(gql: GraphQLClient, redis: Redis) -> None:
    """`events(afterSequence: n)` returns only later events; a negative value is BAD_USER_INPUT."""
    row = await _stored_deployment(redis)
    _, body = await gql(DEPLOYMENT, {"id": str(row.id), "after": 1})
    assert [e["sequence"] for e in body["data"]["deployment"]["events"]] == [2, 3]
    _, body = await gql(DEPLOYMENT, {"id": str(row.id), "after": -1})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_unknown_deployment_is_not_found(gql: GraphQLClient) -> None:
    """An unknown id gives null plus NOT_FOUND (404)."""
    status, body = await gql(DEPLOYMENT, {"id": str(uuid.uuid4())})
    assert status == 200
    assert body["data"] == {"deployment": None}
    [error] = body["errors"]
    assert error["extensions"] == {"code": "NOT_FOUND", "status": 404}
    assert error["path"] == ["deployment"]


async def test_malformed_deployment_id_is_not_found(gql: GraphQLClient) -> None:
    """A malformed id is NOT_FOUND too, and is not echoed back."""
    _status, body = await gql(DEPLOYMENT, {"id": "<script>alert(1)</script>"})
    assert body["data"] == {"deployment": None}
    [error] = body["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert "<script>" not in error["message"]


async def test_droplet_count_counts_held_slots(gql: GraphQLClient) -> None:
    """`dropletCount` reports held slots, the limit and the free ones."""
    _, body = await gql(DROPLET_COUNT)
    assert body["data"]["dropletCount"] == {"active": 0, "limit": 3, "available": 3}
    await reserve_slot(uuid.uuid4(), 3)
    _, body = await gql(DROPLET_COUNT)
    assert body["data"]["dropletCount"] == {"active": 1, "limit": 3, "available": 2}
