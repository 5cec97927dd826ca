"""The short path for hot queries answers exactly what Strawberry's full path answers, errors included."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from graphql_api.app import create_app
from graphql_api.auth import ANONYMOUS, Caller
from graphql_api.hotpath import HotQueries
from graphql_api.queries import HOT_ROOTS
from graphql_api.schema import QUERY_LIMIT_RULES, schema
from jobs.progress import record
from models import Deployment, DeploymentStage, DeploymentStatus
from models.slot import reserve_slot
from settings import Settings
from tests.graphql_api.conftest import ADMIN_TOKEN, DEPLOY_TOKEN, READ_TOKEN, TOKENS, running

ALL_LEAVES = """
  id status stage failedStage error dropletId dropletName ipAddress serverUuid applicationUuid applicationUrl
  domains coolifyDeploymentUuid createdAt updatedAt finishedAt name region size image envKeys ports __typename
  source { kind image tag repository branch buildPack baseDirectory description __typename }
"""
#: Documents the short path answers when all goes well.
HOT = [
    ("{ dropletCount { active limit available } }", None),
    ("query Count { dropletCount { available a: active __typename } }", None),
    ("query Count { dropletCount { available } }", "Count"),
    ("query($id: ID!) { deployment(id: $id) {" + ALL_LEAVES + "} }", None),
    ("query One($id: ID!) { d: deployment(id: $id) { id status stage ipAddress domains } }", "One"),
    ('{ deployment(id: "%(id)s") { id status finishedAt } }', None),
]
#: Documents it leaves to Strawberry (resolvers below the root, fragments, directives, several fields, ...).
COLD = [
    ("{ dropletCount { active holders { id } } }", None),
    ("query($id: ID!) { deployment(id: $id) { id events { sequence } } }", None),
    ("{ dropletCount { ...F } } fragment F on DropletCount { active }", None),
    ("query($s: Boolean!) { dropletCount { active @include(if: $s) } }", None),
    ("{ dropletCount { active } deployments { totalCount } }", None),
    ('query($id: ID = "x") { deployment(id: $id) { id } }', None),
    ("{ deployments { totalCount } }", None),
    ("{ __typename }", None),
    ("{ dropletCount { active } a1: dropletCount { limit } }", None),
]
#: Requests the full path refuses; the short path must give up on them and the answers must match.
ERRORS = [
    ("{ dropletCount { active limit available } ", None),  # syntax error
    ("{ dropletCount { nope } }", None),  # validation
    ("query A { dropletCount { active } }", "B"),  # unknown operation
    ("query($id: ID!) { deployment(id: $id) { id } }", None),  # missing variable
    ("query($id: ID) { deployment(id: $id) { id } }", None),  # nullable variable for ID!
    ('{ deployment(id: "00000000-0000-0000-0000-000000000000") { id } }', None),  # NOT_FOUND
    ('{ deployment(id: "not-a-uuid") { id status } }', None),  # NOT_FOUND (malformed)
    ('mutation { cancelDeployment(id: "x") { id } }', None),
]


@pytest.fixture
async def stored(db: str) -> Deployment:
    """A deployment with every column filled and a held slot."""
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
    await record(None, row, "queued")
    await record(
        None,
        row,
        "running",
        status=DeploymentStatus.COMPLETED,
        stage=DeploymentStage.DONE,
        droplet_id=4_000_000_123,
        ip_address="203.0.113.7",
        application_domains="https://shop.example.com,https://www.shop.example.com",
    )
    assert await reserve_slot(row.id, 3) is not None
    return row


@contextlib.asynccontextmanager
async def _client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as c:
        yield c


async def _post(client: httpx.AsyncClient, body: object, token: str | None, **headers: str) -> tuple[int, str, bytes]:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post("/graphql", content=content, headers={"content-type": "application/json", **headers})
    return response.status_code, response.headers["content-type"], response.content


def _requests(deployment_id: str) -> list[tuple[object, str | None]]:
    """(body, token) pairs: every document with and without variables, good and bad, for every kind of caller."""
    good = {"id": deployment_id}
    bodies: list[object] = []
    for query, name in HOT + COLD + ERRORS:
        text = query.replace("%(id)s", deployment_id)
        bodies.append({"query": text, "operationName": name, "variables": good})
        bodies.append({"query": text, "operationName": name})
    bodies += [
        {"query": HOT[3][0], "variables": {"id": 12}},
        {"query": HOT[3][0], "variables": {"id": True}},
        {"query": HOT[3][0], "variables": {"id": ["x"]}},
        {"query": HOT[3][0], "variables": {"id": deployment_id}, "extensions": {"x": 1}},
        {"query": HOT[3][0], "variables": "nope"},
        {"query": HOT[0][0], "operationName": 3},
        b'{"query": "{ dropletCount { active } }", "query": 1}',
        b"[]",
        b"not json",
        b'{"query": "{ dropletCount { active } }\\u0000"}',
    ]
    return [(body, token) for body in bodies for token in (None, READ_TOKEN, DEPLOY_TOKEN, ADMIN_TOKEN, "wrong")]


@pytest.mark.parametrize("with_tokens", [False, True], ids=["open", "tokens"])
async def test_both_paths_answer_the_same_bytes(settings: Settings, stored: Deployment, with_tokens: bool) -> None:
    """Status, content type and body are identical with and without the short path, for every request."""
    app_settings = settings.with_overrides(api_tokens=TOKENS) if with_tokens else settings
    async with (
        _client(create_app(app_settings)) as hot,
        _client(create_app(app_settings, hot_queries=False)) as full,
    ):
        for body, token in _requests(str(stored.id)):
            assert await _post(hot, body, token) == await _post(full, body, token), (body, token)
        for accept in ("multipart/mixed", "text/event-stream", "application/json"):
            body = {"query": HOT[0][0]}
            hot_answer = await _post(hot, body, READ_TOKEN, accept=accept)
            assert hot_answer == await _post(full, body, READ_TOKEN, accept=accept)


@pytest.fixture
def hot() -> HotQueries:
    """The short path on the real schema."""
    return HotQueries(schema, HOT_ROOTS, rules=QUERY_LIMIT_RULES)


async def test_hot_documents_are_answered_by_the_short_path(
    settings: Settings, stored: Deployment, hot: HotQueries
) -> None:
    """Each hot document gets a plan, the plan answers, and its answer is the full path's body byte for byte."""
    async with _client(create_app(settings, hot_queries=False)) as full:
        for query, name in HOT:
            text = query.replace("%(id)s", str(stored.id))
            variables = {"id": str(stored.id)}
            assert hot.plan(text, name) is not None, text
            answer = await hot.answer(text, name, variables, ANONYMOUS, settings)
            assert answer is not None, text
            status, _, body = await _post(full, {"query": text, "operationName": name, "variables": variables}, None)
            assert (status, json.dumps(answer, separators=(",", ":")).encode()) == (200, body)
    assert answer["data"]["deployment"]["finishedAt"] is None  # a null leaf made it through


async def test_cold_documents_and_errors_take_the_full_path(
    settings: Settings, stored: Deployment, hot: HotQueries
) -> None:
    """Documents outside the short path's reach get no plan; failing requests give up instead of answering."""
    for query, name in COLD + ERRORS[:3]:
        assert hot.plan(query, name) is None, query
    variables = {"id": str(stored.id)}
    for query, name in ERRORS[3:7]:
        assert await hot.answer(query, name, {}, ANONYMOUS, settings) is None, query
    for bad in ({"id": True}, {"id": 1.5}, {"id": None}, {}):
        assert await hot.answer(HOT[3][0], None, bad, ANONYMOUS, settings) is None
    deployer = Caller(name="deployer", scopes=frozenset({"deploy"}))
    for caller in (None, deployer):
        assert await hot.answer(HOT[3][0], None, variables, caller, settings) is None
    assert await hot.answer(HOT[3][0], None, variables, ANONYMOUS, settings) is not None


async def test_a_bug_in_a_root_takes_the_full_path(settings: Settings, stored: Deployment) -> None:
    """An exception from the root function is never answered by the short path (the full path masks it)."""

    async def broken(settings: Settings, arguments: object) -> object:
        raise ZeroDivisionError

    hot = HotQueries(schema, {"dropletCount": broken}, rules=QUERY_LIMIT_RULES)
    assert hot.plan(HOT[0][0], None) is not None
    assert await hot.answer(HOT[0][0], None, None, ANONYMOUS, settings) is None


async def test_the_plan_cache_is_bounded(hot: HotQueries) -> None:
    """Distinct documents beyond the cache size push the oldest out."""
    from graphql_api import hotpath

    for n in range(hotpath.PLAN_CACHE_SIZE + 10):
        hot.plan(f"{{ dropletCount {{ a{n}: active }} }}", None)
    assert len(hot._plans) == hotpath.PLAN_CACHE_SIZE
