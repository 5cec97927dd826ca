"""API tokens: who is calling, and whether their token grants the scope an operation needs.

With no `DEPLOYER_API_TOKENS` configured, auth is off and every caller is `anonymous` with every scope. When
tokens are configured, HTTP requests carry `Authorization: Bearer <token>`, and WebSocket clients send the
token in the `connection_init` payload (`{"Authorization": "Bearer …"}` or `{"authToken": "…"}`) or in
the upgrade request's header. Tokens are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from graphql_api.errors import ForbiddenError, UnauthenticatedError
from settings import ApiToken

READ = "read"
DEPLOY = "deploy"
ENV = "env"
ADMIN = "admin"
ALL_SCOPES = frozenset({READ, DEPLOY, ENV, ADMIN})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the token's name (never the token) and its scopes."""

    name: str
    scopes: frozenset[str]


ANONYMOUS = Caller(name="anonymous", scopes=ALL_SCOPES)


class Authenticator:
    """Maps a presented token to a `Caller`, or to None when it is missing or unknown."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = tuple(tokens)

    @property
    def enabled(self) -> bool:
        """Whether tokens are configured (auth is off otherwise)."""
        return bool(self._tokens)

    def authenticate(self, token: str | None) -> Caller | None:
        """The caller a token belongs to; `ANONYMOUS` when auth is off; None when missing or unknown."""
        if not self.enabled:
            return ANONYMOUS
        if not token:
            return None
        presented = token.encode()
        found: ApiToken | None = None
        for candidate in self._tokens:  # compare against every token, so timing says nothing about which
            if hmac.compare_digest(candidate.token.encode(), presented) and found is None:
                found = candidate
        return None if found is None else Caller(name=found.name, scopes=found.scopes)


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def connection_params_token(params: Mapping[str, Any] | None) -> str | None:
    """The token of a WebSocket `connection_init` payload, or None when it carries none."""
    if not params:
        return None
    for key in ("Authorization", "authorization"):
        value = params.get(key)
        if isinstance(value, str):
            return bearer_token(value)
    for key in ("authToken", "token"):
        value = params.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def require_scope(caller: Caller | None, scope: str) -> Caller:
    """Return the caller when it holds `scope`; raise UNAUTHENTICATED or FORBIDDEN otherwise."""
    if caller is None:
        raise UnauthenticatedError()
    if scope not in caller.scopes:
        raise ForbiddenError(scope)
    return caller


class _ScopePermission(BasePermission):
    """A Strawberry permission that requires one scope of the context's caller."""

    scope: str = ADMIN

    def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        """Raise the contract's error (rather than Strawberry's generic one) when the scope is missing."""
        require_scope(getattr(info.context, "caller", None), self.scope)
        return True


class CanRead(_ScopePermission):
    """Queries and the progress subscription need the `read` scope."""

    scope = READ


class CanDeploy(_ScopePermission):
    """The `deploy` mutation needs the `deploy` scope."""

    scope = DEPLOY


class CanChangeEnv(_ScopePermission):
    """The env mutations (`setEnv`, `bulkSetEnv`, `deleteEnv`) need the `env` scope."""

    scope = ENV
