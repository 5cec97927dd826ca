"""API tokens: the Authenticator, and UNAUTHENTICATED / FORBIDDEN over HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from graphql_api.auth import ANONYMOUS, Authenticator, Caller, bearer_token, connection_params_token
from models import Deployment
from tests.graphql_api.conftest import (
    ADMIN_TOKEN,
    DEPLOY_TOKEN,
    DROPLET_COUNT,
    PROGRESS,
    READ_TOKEN,
    TOKENS,
    GraphQLClient,
    operation_errors,
    running,
    served,
    ws_client,
)


def test_auth_off_means_anonymous_with_every_scope() -> None:
    """Without configured tokens every caller is `anonymous` with all scopes."""
    auth = Authenticator(())
    assert not auth.enabled
    assert auth.authenticate(None) is ANONYMOUS
    assert ANONYMOUS.scopes == {"read", "deploy", "env", "admin"}


def test_known_token_maps_to_its_caller() -> None:
    """A configured token yields its name and scopes; unknown or missing tokens yield None."""
    auth = Authenticator(TOKENS)
    assert auth.authenticate(READ_TOKEN) == Caller(name="reader", scopes=frozenset({"read"}))
    assert auth.authenticate("wrong-token-0123456789") is None
    assert auth.authenticate("") is None
    assert auth.authenticate(None) is None


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None)],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    """Only `Bearer <token>` headers carry a token."""
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("params", "token"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authToken": "abc"}, "abc"),
        ({}, None),
        (None, None),
        ({"authToken": 5}, None),
    ],
)
def test_connection_params_token(params: dict[str, Any] | None, token: str | None) -> None:
    """A `connection_init` payload carries the token as a Bearer header value or as `authToken`."""
    assert connection_params_token(params) == token


@pytest.fixture
async def secured(make_app: Any) -> AsyncIterator[Starlette]:
    """An app with API tokens configured, its lifespan running."""
    app: Starlette = make_app(api_tokens=TOKENS)
    async with running(app):
        yield app


@pytest.fixture
async def client(secured: Starlette) -> AsyncIterator[GraphQLClient]:
    """A client for the secured app."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(secured), base_url="http://localhost") as http:
        yield GraphQLClient(http)


@pytest.mark.parametrize("token", [None, "not-a-configured-token-123"])
async def test_http_without_valid_token_is_401(client: GraphQLClient, token: str | None) -> None:
    """A missing or unknown token gets HTTP 401 with UNAUTHENTICATED, and nothing runs."""
    status, body = await client("mutation { deploy { id } }", token=token)
    assert status == 401
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED", "status": 401}
    assert await Deployment.all().count() == 0
    if token:
        assert token not in str(body)


async def test_http_401_carries_www_authenticate(secured: Starlette) -> None:
    """The 401 response asks for a Bearer token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(secured), base_url="http://localhost") as http:
        response = await http.post("/graphql", json={"query": DROPLET_COUNT})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_http_token_without_scope_is_forbidden(client: GraphQLClient) -> None:
    """A read-only token may query but not deploy (FORBIDDEN 403); a deploy-only token may not read."""
    status, body = await client(DROPLET_COUNT, token=READ_TOKEN)
    assert status == 200
    assert body["data"]["dropletCount"]["limit"] == 3
    _, body = await client("mutation { deploy { id } }", token=READ_TOKEN)
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN", "status": 403}
    assert "deploy" in body["errors"][0]["message"]
    _, body = await client(DROPLET_COUNT, token=DEPLOY_TOKEN)
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN", "status": 403}
    assert await Deployment.all().count() == 0


async def test_http_token_with_scope_may_deploy(client: GraphQLClient) -> None:
    """A token with the `deploy` scope may deploy."""
    _, body = await client("mutation { deploy { id status } }", token=DEPLOY_TOKEN)
    assert body["data"]["deploy"]["status"] == "QUEUED"


async def test_graphiql_page_needs_no_token(secured: Starlette) -> None:
    """A browser may load GraphiQL without a token (operations from it still need one)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(secured), base_url="http://localhost") as http:
        response = await http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


@pytest.fixture
async def secured_url(make_app: Any) -> AsyncIterator[str]:
    """A real server for the secured app."""
    async with served(make_app(api_tokens=TOKENS)) as url:
        yield url


async def test_transport_ws_without_token_closes_4401(secured_url: str) -> None:
    """graphql-transport-ws: a `connection_init` without a valid token closes the socket with 4401."""
    async with ws_client(secured_url, "graphql-transport-ws") as client:
        await client.send({"type": "connection_init", "payload": {"authToken": "wrong-token-0123456789"}})
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_graphql_ws_without_token_gets_connection_error(secured_url: str) -> None:
    """graphql-ws: a `connection_init` without a token gets `connection_error` (UNAUTHENTICATED)."""
    async with ws_client(secured_url, "graphql-ws") as client:
        message = await client.init({})
    assert message["type"] == "connection_error"
    assert message["payload"]["extensions"] == {"code": "UNAUTHENTICATED", "status": 401}


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize(
    "payload",
    [{"Authorization": f"Bearer {READ_TOKEN}"}, {"authToken": READ_TOKEN}],
    ids=["header", "authToken"],
)
async def test_ws_token_in_connection_init_is_accepted(
    secured_url: str, protocol: str, payload: dict[str, str]
) -> None:
    """A valid token in the `connection_init` payload is acknowledged."""
    async with ws_client(secured_url, protocol) as client:
        assert (await client.init(payload))["type"] == "connection_ack"


async def test_ws_token_in_upgrade_header_is_accepted(secured_url: str) -> None:
    """A valid token in the upgrade request's Authorization header is enough."""
    headers = [("Authorization", f"Bearer {ADMIN_TOKEN}")]
    async with ws_client(secured_url, "graphql-transport-ws", headers=headers) as client:
        assert (await client.init())["type"] == "connection_ack"


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_ws_subscription_without_read_scope_is_forbidden(secured_url: str, protocol: str) -> None:
    """A token without `read` may connect but its subscription fails with FORBIDDEN (403)."""
    async with ws_client(secured_url, protocol) as client:
        assert (await client.init({"authToken": DEPLOY_TOKEN}))["type"] == "connection_ack"
        await client.subscribe("1", PROGRESS, {"id": "00000000-0000-4000-8000-000000000000"})
        message = await client.receive()
    errors = operation_errors(message)
    assert errors[0]["extensions"] == {"code": "FORBIDDEN", "status": 403}
