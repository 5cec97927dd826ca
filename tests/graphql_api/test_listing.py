"""`deployments` (a Relay connection, newest first), `dropletCount { holders }` and the limit error's message."""

from __future__ import annotations

import base64
from typing import Any

from redis.asyncio import Redis

from jobs.progress import record
from models import Deployment, DeploymentStage, DeploymentStatus
from tests.graphql_api.conftest import GraphQLClient

LIST = """
query($status: [DeploymentStatus!], $first: Int, $after: String) {
  deployments(status: $status, first: $first, after: $after) {
    totalCount
    edges { cursor node { id status name } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def stored(redis: Redis, count: int, status: DeploymentStatus = DeploymentStatus.QUEUED) -> list[str]:
    """Store deployments one after another; returns their ids, oldest first."""
    ids = []
    for n in range(count):
        row = await Deployment.create(spec={"name": f"app-{n}"})
        stage = DeploymentStage.DONE if status != DeploymentStatus.QUEUED else DeploymentStage.QUEUED
        await record(redis, row, "stored", status=status, stage=stage)
        ids.append(str(row.id))
    return ids


async def page(gql: GraphQLClient, **variables: Any) -> dict[str, Any]:
    """One page of `deployments`."""
    status, body = await gql(LIST, variables)
    assert status == 200 and "errors" not in body, body
    result: dict[str, Any] = body["data"]["deployments"]
    return result


async def test_pages_walk_every_deployment_newest_first(gql: GraphQLClient, redis: Redis) -> None:
    """Following endCursor visits every deployment once, newest first, and the last page says it is last."""
    ids = await stored(redis, 5)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        result = await page(gql, first=2, after=after)
        pages += 1
        assert result["totalCount"] == 5
        seen += [edge["node"]["id"] for edge in result["edges"]]
        assert result["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not result["pageInfo"]["hasNextPage"]:
            break
        after = result["pageInfo"]["endCursor"]
        assert after == result["edges"][-1]["cursor"]
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_new_deployments_do_not_shift_a_page_in_progress(gql: GraphQLClient, redis: Redis) -> None:
    """A deployment created between two pages neither repeats nor hides a row of the next page."""
    ids = await stored(redis, 4)
    first = await page(gql, first=2)
    await stored(redis, 1)
    second = await page(gql, first=2, after=first["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in second["edges"]] == [ids[1], ids[0]]
    assert second["pageInfo"]["hasNextPage"] is False


async def test_status_filter_and_total_count(gql: GraphQLClient, redis: Redis) -> None:
    """`status` keeps only deployments in those statuses, and totalCount counts them over all pages."""
    queued = await stored(redis, 2)
    done = await stored(redis, 3, DeploymentStatus.COMPLETED)
    result = await page(gql, status=["COMPLETED"], first=1)
    assert result["totalCount"] == 3
    assert result["edges"][0]["node"]["id"] == done[-1]
    both = await page(gql, status=["QUEUED", "COMPLETED"])
    assert both["totalCount"] == 5 and len(both["edges"]) == 5
    assert {e["node"]["id"] for e in both["edges"]} == set(queued + done)


async def test_defaults_and_an_empty_list(gql: GraphQLClient) -> None:
    """No deployments: no edges, no cursors, totalCount 0."""
    result = await page(gql)
    assert result == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


async def test_first_is_at_most_100_and_cursors_are_checked(gql: GraphQLClient, redis: Redis) -> None:
    """first above 100 (or negative) and a cursor this API did not write are BAD_USER_INPUT naming the field."""
    for variables, field in (({"first": 101}, "first"), ({"first": -1}, "first"), ({"after": "bm9wZQ"}, "after")):
        _, body = await gql(LIST, variables)
        error = body["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["fields"][0]["field"] == field
    forged = base64.urlsafe_b64encode(b'd1:["yesterday","x"]').decode()
    _, body = await gql(LIST, {"after": forged})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_droplet_count_lists_holders_and_the_limit_error_says_how_to_free_one(
    gql: GraphQLClient, redis: Redis
) -> None:
    """At the limit, dropletCount names the holders, and DROPLET_LIMIT_REACHED says how many hold slots and
    that destroyDeployment frees one."""
    created = []
    for _ in range(3):
        _, body = await gql("mutation { deploy { id } }")
        created.append(body["data"]["deploy"]["id"])
    _, body = await gql("mutation { deploy { id } }")
    error = body["errors"][0]
    assert error["extensions"]["code"] == "DROPLET_LIMIT_REACHED"
    assert error["extensions"]["held"] == 3 and error["extensions"]["limit"] == 3
    assert "3 deployments hold" in error["message"]
    assert "destroyDeployment" in error["message"]
    _, body = await gql("{ dropletCount { active limit available holders { id status } } }")
    count = body["data"]["dropletCount"]
    assert count["active"] == 3 and count["available"] == 0
    assert [h["id"] for h in count["holders"]] == created
    assert {h["status"] for h in count["holders"]} == {"QUEUED"}
