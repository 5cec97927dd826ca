"""Bad input gets a 4xx, never a 500: strict JSON, the request envelope, strings, lists, subscriptions over
HTTP. The HTTP cases run through a real uvicorn server on one kept-alive connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from starlette.applications import Starlette

from graphql_api.payload import (
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    PayloadError,
    decode_json,
    graphql_ws_problem,
    transport_ws_problem,
)
from tests.graphql_api.conftest import served
from tests.rawhttp import raw_connection

BULK = 'mutation($vars: [EnvVarInput!]!) { bulkSetEnv(applicationUuid: "abc", variables: $vars) { changeId } }'


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        b'{"query": "\xc3"}',
        b"[" * 100_000 + b"]" * 100_000,
        b"[" * (MAX_DEPTH + 2) + b"]" * (MAX_DEPTH + 2),
        b'{"a": NaN}',
        b'{"a": 1e999}',
        b'{"a": "\\u0000"}',
        b'{"a": "\\ud800"}',
        b'{"\\u0000": 1}',
        json.dumps({"a": [0] * (MAX_LIST_ITEMS + 1)}).encode(),
        b"{",
        b"",
    ],
)
def test_decode_json_refuses_with_a_reason(raw: bytes) -> None:
    """Bad UTF-8, deep nesting, NaN, NUL, lone surrogates, huge lists and broken JSON are refused."""
    with pytest.raises(PayloadError) as refused:
        decode_json(raw)
    assert refused.value.reason


def test_decode_json_accepts_ordinary_requests() -> None:
    """A normal request, unicode included, passes unchanged."""
    body = {"query": "{ x }", "variables": {"v": ["é", "🚀", 1.5, None, True]}}
    assert decode_json(json.dumps(body).encode()) == body


@pytest.mark.parametrize(
    "message",
    [
        [],
        "connection_init",
        {"type": 1},
        {"type": "nope"},
        {"type": "connection_init", "payload": "x"},
        {"type": "subscribe", "id": 1, "payload": {"query": "{ x }"}},
        {"type": "subscribe", "id": "", "payload": {"query": "{ x }"}},
        {"type": "subscribe", "id": "x" * 200, "payload": {"query": "{ x }"}},
        {"type": "subscribe", "id": "1", "payload": "{ x }"},
        {"type": "subscribe", "id": "1", "payload": {"query": 5}},
        {"type": "subscribe", "id": "1", "payload": {"query": "{ x }", "variables": []}},
        {"type": "subscribe", "id": "1", "payload": {"query": "{ x }", "operationName": {}}},
        {"type": "complete", "id": None},
    ],
)
def test_transport_ws_problems(message: Any) -> None:
    """Malformed graphql-transport-ws messages are named."""
    assert transport_ws_problem(message)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "connection_init"},
        {"type": "connection_init", "payload": None},
        {"type": "ping"},
        {"type": "subscribe", "id": "1", "payload": {"query": "{ x }", "variables": None}},
        {"type": "complete", "id": "1"},
    ],
)
def test_transport_ws_good_messages(message: Any) -> None:
    """Well-formed graphql-transport-ws messages pass."""
    assert transport_ws_problem(message) is None


@pytest.mark.parametrize(
    ("message", "ok"),
    [
        ({"type": "start", "id": "1", "payload": {"query": "{ x }"}}, True),
        ({"type": "stop", "id": "1"}, True),
        ({"type": "connection_terminate"}, True),
        ({"type": "start", "id": "1", "payload": None}, False),
        ({"type": "stop"}, False),
        ({"type": "subscribe", "id": "1", "payload": {"query": "{ x }"}}, False),
    ],
)
def test_graphql_ws_messages(message: Any, ok: bool) -> None:
    """Legacy graphql-ws messages are checked against their own protocol."""
    assert (graphql_ws_problem(message) is None) is ok


@pytest.fixture
async def url(make_app: Callable[..., Starlette]) -> AsyncIterator[str]:
    """A real server for the open app."""
    async with served(make_app()) as base:
        yield base


def _variables_body(variables: dict[str, Any], query: str = BULK) -> bytes:
    return json.dumps({"query": query, "variables": variables}).encode()


BAD_BODIES: list[tuple[str, bytes]] = [
    ("a JSON list", b"[1, 2]"),
    ("a JSON string", b'"hello"'),
    ("a JSON number", b"42"),
    ("null", b"null"),
    ("bad UTF-8", b'{"query": "{ dropletCount { limit } }\xff"}'),
    ("deep nesting", b'{"query": "{ x }", "variables": {"v": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}"),
    ("not JSON", b"{query"),
    ("empty", b""),
    ("query not a string", b'{"query": 5}'),
    ("no query", b'{"variables": {}}'),
    ("variables a list", b'{"query": "{ dropletCount { limit } }", "variables": []}'),
    ("operationName an object", b'{"query": "{ dropletCount { limit } }", "operationName": {}}'),
    ("unknown operationName", b'{"query": "query A { dropletCount { limit } }", "operationName": "B"}'),
    ("NUL in a variable", _variables_body({"vars": [{"key": "A", "value": "x\u0000y"}]})),
    (
        "a lone surrogate in a variable",
        b'{"query": "query($i: ID!) { deployment(id: $i) { id } }", "variables": {"i": "\\udc00"}}',
    ),
    ("30,000 variables", _variables_body({"vars": [{"key": "K", "value": "v"}] * 30_000})),
    ("a subscription", json.dumps({"query": 'subscription { deploymentProgress(id: "x") { sequence } }'}).encode()),
]
#: Refused by GraphQL itself: HTTP 200 with the error's `extensions.status` 400, like every GraphQL error.
GRAPHQL_BAD_BODIES: list[tuple[str, bytes]] = [
    ("NUL in a literal", json.dumps({"query": '{ deployment(id: "a\\u0000b") { id } }'}).encode()),
    ("a key with a newline", _variables_body({"vars": [{"key": "KEY\n", "value": "v"}]})),
    (
        "a malformed applicationUuid",
        json.dumps({"query": 'mutation { deleteEnv(applicationUuid: "a\\nb", key: "K") { deleted } }'}).encode(),
    ),
    (
        "a long applicationUuid",
        json.dumps(
            {"query": f'mutation {{ deleteEnv(applicationUuid: "{"a" * 65}", key: "K") {{ deleted }} }}'}
        ).encode(),
    ),
]


@pytest.mark.parametrize(
    ("what", "body", "http_status"),
    [(what, body, 400) for what, body in BAD_BODIES] + [(what, body, 200) for what, body in GRAPHQL_BAD_BODIES],
    ids=[what for what, _ in BAD_BODIES + GRAPHQL_BAD_BODIES],
)
async def test_bad_bodies_get_400_and_keep_the_connection(url: str, what: str, body: bytes, http_status: int) -> None:
    """Each bad body gets a JSON error with status 400 and a code; the kept-alive connection serves the next."""
    async with raw_connection(url, host="localhost") as conn:
        answer = await conn.request("POST", "/graphql", body)
        follow_up = await conn.request("POST", "/graphql", json.dumps({"query": "{ dropletCount { limit } }"}).encode())
    assert answer.status == http_status, (what, answer.body)
    error = json.loads(answer.body)["errors"][0]
    assert error["extensions"]["status"] == 400
    assert error["extensions"]["code"] in ("BAD_USER_INPUT", "GRAPHQL_VALIDATION_FAILED", "GRAPHQL_PARSE_FAILED")
    assert "Traceback" not in answer.body.decode(errors="replace")
    assert follow_up.status == 200


async def test_a_mutation_over_get_is_refused(url: str) -> None:
    """GET runs queries only; a mutation gets 400 (a link in a page cannot change anything)."""
    async with raw_connection(url, host="localhost") as conn:
        answer = await conn.request("GET", "/graphql?query=mutation%20%7B%20deploy%20%7B%20id%20%7D%20%7D")
    assert answer.status == 400
