"""`deploy(input: {idempotencyKey})`: a retry returns the first deployment, racing retries create one, a reused
key with another input is refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from saq import Queue

from models import Deployment, DropletSlot
from tests.graphql_api.conftest import GraphQLClient

DEPLOY = "mutation($input: DeployInput) { deploy(input: $input) { id status } }"


def deploy_input(key: str, **fields: Any) -> dict[str, Any]:
    """A deploy input with an idempotency key."""
    return {"input": {"idempotencyKey": key, **fields}}


async def held_slots() -> int:
    """Slots held right now."""
    return await DropletSlot.filter(deployment_id__isnull=False).count()


async def test_a_retry_returns_the_first_deployment(gql: GraphQLClient, queue: Queue) -> None:
    """The same key and input twice: one deployment, one slot, one job; both calls return it."""
    variables = deploy_input("order-42", name="shop", ports=[8080])
    _, first = await gql(DEPLOY, variables)
    _, second = await gql(DEPLOY, variables)
    assert "errors" not in first, first
    assert second["data"]["deploy"]["id"] == first["data"]["deploy"]["id"]
    assert await Deployment.all().count() == 1
    assert await held_slots() == 1
    assert await queue.count("queued") == 1


async def test_a_retry_when_every_slot_is_held_returns_the_deployment(gql: GraphQLClient) -> None:
    """The key is looked up before a slot is reserved: a retry is not DROPLET_LIMIT_REACHED."""
    _, first = await gql(DEPLOY, deploy_input("fill-1"))
    for _ in range(2):
        _, body = await gql("mutation { deploy { id } }")
        assert "errors" not in body
    _, retry = await gql(DEPLOY, deploy_input("fill-1"))
    assert "errors" not in retry, retry
    assert retry["data"]["deploy"]["id"] == first["data"]["deploy"]["id"]
    _, other = await gql(DEPLOY, deploy_input("fill-2"))
    assert other["errors"][0]["extensions"]["code"] == "DROPLET_LIMIT_REACHED"


async def test_the_same_key_with_another_input_is_refused(gql: GraphQLClient) -> None:
    """BAD_USER_INPUT naming input.idempotencyKey; nothing new is stored."""
    await gql(DEPLOY, deploy_input("k1", name="one"))
    _, body = await gql(DEPLOY, deploy_input("k1", name="two"))
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert [f["field"] for f in error["extensions"]["fields"]] == ["input.idempotencyKey"]
    assert await Deployment.all().count() == 1
    assert await held_slots() == 1


async def test_an_omitted_field_differs_from_its_default_but_env_values_do_not_count(gql: GraphQLClient) -> None:
    """Inputs are compared as given (ports omitted vs [80] differ); env values are never compared."""
    await gql(DEPLOY, deploy_input("k2"))
    _, body = await gql(DEPLOY, deploy_input("k2", ports=[80]))
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    _, first = await gql(DEPLOY, deploy_input("k3", env=[{"key": "TOKEN", "value": "one"}]))
    _, again = await gql(DEPLOY, deploy_input("k3", env=[{"key": "TOKEN", "value": "two"}]))
    assert again["data"]["deploy"]["id"] == first["data"]["deploy"]["id"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [("", "must be 1 to 255 characters"), ("x" * 256, "must be 1 to 255 characters"), ("a\nb", "printable")],
)
async def test_keys_must_be_1_to_255_printable_characters(gql: GraphQLClient, key: str, reason: str) -> None:
    """An empty, too long or unprintable key is refused before anything is stored."""
    _, body = await gql(DEPLOY, deploy_input(key))
    [error] = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert reason in error["message"]
    assert "input.idempotencyKey" in error["message"]
    assert await Deployment.all().count() == 0


async def test_racing_retries_create_one_deployment(gql: GraphQLClient, queue: Queue) -> None:
    """Twenty concurrent calls with one key: all return the same deployment; one row, one slot, one job."""
    results = await asyncio.gather(*(gql(DEPLOY, deploy_input("race", name="raced")) for _ in range(20)))
    ids = {body["data"]["deploy"]["id"] for _, body in results if "errors" not in body}
    assert len(ids) == 1, results
    errors = [body["errors"] for _, body in results if "errors" in body]
    assert errors == []
    assert await Deployment.all().count() == 1
    assert await held_slots() == 1
    assert await queue.count("queued") == 1


async def test_a_key_older_than_a_day_starts_a_new_deployment(gql: GraphQLClient) -> None:
    """After 24 h the key is free again: a new deployment takes it over."""
    _, first = await gql(DEPLOY, deploy_input("daily", name="one"))
    old = first["data"]["deploy"]["id"]
    await Deployment.filter(id=old).update(created_at=datetime.now(UTC) - timedelta(hours=25))
    _, second = await gql(DEPLOY, deploy_input("daily", name="two"))
    assert "errors" not in second, second
    assert second["data"]["deploy"]["id"] != old
    assert (await Deployment.get(id=old)).idempotency_key is None
    assert (await Deployment.get(id=second["data"]["deploy"]["id"])).idempotency_key == "daily"
