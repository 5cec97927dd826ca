"""Error codes as extensions, request-error redaction, and masking of unexpected errors."""

from __future__ import annotations

import logging

import asyncpg
import pytest
import strawberry
from graphql import GraphQLError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tortoise import Tortoise
from tortoise.exceptions import DBConnectionError, OperationalError

from graphql_api.errors import (
    BadUserInputError,
    DeployerError,
    DropletLimitReachedError,
    ErrorPolicy,
    ForbiddenError,
    NotFoundError,
    UnauthenticatedError,
    UpstreamError,
    is_unexpected,
    outage,
    redact_request_error,
)
from models import Deployment
from tests.graphql_api.conftest import GraphQLClient


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (BadUserInputError([("input.ports[0]", "must be between 1 and 65535")]), "BAD_USER_INPUT", 400),
        (UnauthenticatedError(), "UNAUTHENTICATED", 401),
        (ForbiddenError("deploy"), "FORBIDDEN", 403),
        (NotFoundError("deployment", "x"), "NOT_FOUND", 404),
        (DropletLimitReachedError(3), "DROPLET_LIMIT_REACHED", 429),
        (UpstreamError("DigitalOcean refused: 422 droplet limit"), "UPSTREAM_ERROR", 502),
    ],
)
def test_each_error_carries_its_code_and_status(error: DeployerError, code: str, status: int) -> None:
    """Every named error maps to the contract's code and HTTP-like status."""
    assert error.extensions["code"] == code
    assert error.extensions["status"] == status
    assert GraphQLError(error.message, original_error=error).extensions == error.extensions


def test_upstream_error_details_become_extensions() -> None:
    """Details (such as the applied and failed keys of an env change) sit next to code and status."""
    error = UpstreamError("incomplete", details={"appliedKeys": ["A"], "failedKeys": ["B"], "code": "X"})
    assert error.extensions == {"appliedKeys": ["A"], "failedKeys": ["B"], "code": "UPSTREAM_ERROR", "status": 502}


def test_bad_user_input_lists_fields() -> None:
    """BAD_USER_INPUT names each field in its message and in `extensions.fields`."""
    error = BadUserInputError([("input.ports[1]", "must be between 1 and 65535"), ("input.name", "too long")])
    assert error.message == "Invalid input: input.ports[1]: must be between 1 and 65535; input.name: too long"
    assert error.extensions["fields"] == [
        {"field": "input.ports[1]", "message": "must be between 1 and 65535"},
        {"field": "input.name", "message": "too long"},
    ]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "Variable '$input' has invalid value.env[0].value: String cannot represent a non string value: 12345",
            "Variable '$input' has invalid value.env[0].value: String cannot represent a non string value.",
        ),
        (
            "Variable '$input' has invalid value: Expected value of type 'DeployInput' not to include unknown"
            " field 'x', found: {'x': 'secret'}.",
            "Variable '$input' has invalid value: Expected value of type 'DeployInput' not to include unknown"
            " field 'x'.",
        ),
        (
            "Expected value of type 'Int!', found \"secret\"; Int cannot represent",
            "Expected value of type 'Int!'.",
        ),
        ("Cannot query field 'nope' on type 'Query'.", "Cannot query field 'nope' on type 'Query'."),
    ],
)
def test_request_error_messages_lose_echoed_values(message: str, expected: str) -> None:
    """graphql-core's echoed input values are cut from request-error messages."""
    assert redact_request_error(message) == expected
    assert "secret" not in redact_request_error(message)


def test_unexpected_resolver_error_is_masked() -> None:
    """A bug in a resolver reaches the client as INTERNAL_SERVER_ERROR without its message."""

    @strawberry.type
    class Query:
        @strawberry.field
        def boom(self) -> str:
            raise RuntimeError("password=hunter2")

        @strawberry.field
        def missing(self) -> str:
            raise NotFoundError("deployment", "abc")

    schema = strawberry.Schema(Query, extensions=[ErrorPolicy])
    result = schema.execute_sync("{ boom }")
    assert result.errors is not None
    [error] = result.errors
    assert error.message == "Internal server error"
    assert error.extensions == {"code": "INTERNAL_SERVER_ERROR", "status": 500}
    result = schema.execute_sync("{ missing }")
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "NOT_FOUND", "status": 404}


async def test_internal_error_over_http_is_masked_and_logged(
    gql: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt row (a bug, not the client's fault) gives a masked 500 error and a server-side traceback."""
    row = await Deployment.create(spec={})
    conn = Tortoise.get_connection("default")
    postgres = conn.capabilities.dialect == "postgres"
    corrupt = (
        "UPDATE deployment SET stage = 'NO_SUCH_STAGE' WHERE id = $1"
        if postgres
        else "UPDATE deployment SET stage = 'NO_SUCH_STAGE' WHERE id = ?"
    )
    await conn.execute_query(corrupt, [str(row.id)])
    with caplog.at_level(logging.ERROR, logger="deployer.graphql"):
        status, body = await gql("query($id: ID!) { deployment(id: $id) { id stage } }", {"id": str(row.id)})
    assert status == 200
    [error] = body["errors"]
    assert error["message"] == "Internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "status": 500}
    assert "NO_SUCH_STAGE" not in str(body)
    assert any(record.exc_info for record in caplog.records), "the original error is logged with its traceback"


async def test_syntax_and_validation_errors_have_codes(gql: GraphQLClient) -> None:
    """A syntax error is GRAPHQL_PARSE_FAILED and an unknown field GRAPHQL_VALIDATION_FAILED, both 400."""
    _, body = await gql("{ dropletCount { active ")
    assert body["errors"][0]["extensions"] == {"code": "GRAPHQL_PARSE_FAILED", "status": 400}
    _, body = await gql("{ nope }")
    assert body["errors"][0]["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED", "status": 400}


async def test_inline_literal_of_wrong_type_is_not_echoed(gql: GraphQLClient) -> None:
    """A wrongly typed literal in the query text is a validation error that does not repeat the value."""
    query = 'mutation { deploy(input: {env: [{key: "A", value: 5550123}]}) { id } }'
    _, body = await gql(query)
    [error] = body["errors"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "5550123" not in str(body)


def _raised(error: Exception, *, cause: Exception | None = None, context: Exception | None = None) -> Exception:
    """`error` as raised: with an explicit cause (`raise … from`) or an implicit context (raised while handling)."""
    error.__cause__ = cause
    error.__context__ = context if context is not None else cause
    return error


@pytest.mark.parametrize(
    ("error", "service"),
    [
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."), "Redis"),
        (RedisTimeoutError("Timeout reading from socket"), "Redis"),
        (
            asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            "The database",
        ),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), "The database"),
        (DBConnectionError("can't connect"), "The database"),
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"), "The database or Redis"),
        (_raised(OperationalError("lost"), cause=ConnectionResetError(104, "reset")), "The database or Redis"),
        (ValueError("a bug"), None),
        (OperationalError('column "x" does not exist'), None),
        (_raised(KeyError("a bug while handling"), context=ConnectionResetError(104, "reset")), None),
        (None, None),
    ],
)
def test_outages_of_redis_and_the_database_are_told_apart_from_bugs(
    error: Exception | None, service: str | None
) -> None:
    """Lost connections (or errors raised from one) are SERVICE_UNAVAILABLE naming the service; a bug raised
    while handling a socket error, or any other exception, is not."""
    found = outage(error)
    assert (found.service if found else None) == service
    assert is_unexpected(GraphQLError("x", original_error=error)) is (service is None and error is not None)
    if found is not None:
        assert found.extensions == {"code": "SERVICE_UNAVAILABLE", "status": 503, "retryAfter": 5}
        assert found.message == f"{service} is not answering; try again in 5 s"


async def test_a_refused_connection_is_told_by_the_client_it_came_through() -> None:
    """asyncpg raises a bare socket error when nothing listens; its frames name the database. redis-py wraps its
    own. Both against a port nothing listens on."""
    with pytest.raises(ConnectionRefusedError) as refused:
        await asyncpg.connect("postgresql://postgres@127.0.0.1:9/test", timeout=5)
    found = outage(refused.value)
    assert found is not None and found.service == "The database"
    client = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=5)
    with pytest.raises(RedisConnectionError) as lost:
        await client.ping()
    await client.aclose()
    found = outage(lost.value)
    assert found is not None and found.service == "Redis"
