"""The view builds a typed Context per request, with the caller its token identifies."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from graphql_api.auth import ANONYMOUS, Authenticator
from graphql_api.context import Context, DeployerGraphQL, ServicesProvider
from graphql_api.schema import schema
from tests.graphql_api.conftest import READ_TOKEN, TOKENS


def _request(headers: dict[str, str]) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    return Request(scope)


async def test_context_carries_services_and_caller(app: Any) -> None:
    """`get_context` fills the typed context from the running services and the Authorization header."""
    provider = ServicesProvider()
    provider.set(app.state.services)
    view = DeployerGraphQL(schema, services=provider, authenticator=Authenticator(TOKENS))
    context = await view.get_context(_request({"Authorization": f"Bearer {READ_TOKEN}"}), Response())
    assert isinstance(context, Context)
    assert context.caller is not None
    assert context.caller.name == "reader"
    assert context.queue is app.state.services.queue
    assert context.hub is app.state.services.hub
    anonymous = await view.get_context(_request({}), Response())
    assert anonymous.caller is None


async def test_auth_off_context_is_anonymous(app: Any) -> None:
    """Without tokens configured, the caller is `anonymous`."""
    provider = ServicesProvider()
    provider.set(app.state.services)
    view = DeployerGraphQL(schema, services=provider, authenticator=Authenticator(()))
    context = await view.get_context(_request({}), Response())
    assert context.caller is ANONYMOUS


def test_services_before_startup_raise() -> None:
    """Asking for services before the lifespan started is an explicit error."""
    with pytest.raises(RuntimeError, match="lifespan has not started"):
        ServicesProvider()()
