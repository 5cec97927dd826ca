"""API tokens: who is calling, and whether their token grants the scope an operation needs.

With no token configured (neither `DEPLOYER_API_TOKENS` nor `DEPLOYER_API_TOKENS_FILE`), auth is off and every
caller is `anonymous` with every scope; `deployer serve` runs like that only with `DEPLOYER_ALLOW_ANONYMOUS`.
When tokens are configured, HTTP requests carry `Authorization: Bearer <token>`, and WebSocket clients send the
token in the `connection_init` payload (`{"Authorization": "Bearer …"}` or `{"authToken": "…"}`) or in
the upgrade request's header. A presented token is hashed (SHA-256) and the hash compared in constant time
with every configured one, so the settings may hold hashes only. Tokens are never logged or echoed.

The tokens of `DEPLOYER_API_TOKENS_FILE` can be replaced while the process runs (`reload`, on SIGHUP).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from strawberry.permission import BasePermission
from strawberry.types import Info

from graphql_api.errors import ForbiddenError, UnauthenticatedError
from settings import ApiToken, merge_tokens, read_tokens_file

READ = "read"
DEPLOY = "deploy"
ENV = "env"
ADMIN = "admin"
ALL_SCOPES = frozenset({READ, DEPLOY, ENV, ADMIN})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the token's name (never the token) and its scopes.

    `digest` is the SHA-256 of the token it presented (empty for `ANONYMOUS`): a websocket opened with a token
    that is later removed is found by it, and closed.
    """

    name: str
    scopes: frozenset[str]
    digest: str = field(default="", repr=False, compare=False)


ANONYMOUS = Caller(name="anonymous", scopes=ALL_SCOPES)


def token_digest(token: str) -> str:
    """The hex SHA-256 of a token, as `DEPLOYER_API_TOKENS` accepts it (`name:sha256:<hex>`)."""
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Maps a presented token to a `Caller`, or to None when it is missing or unknown.

    Args:
        tokens: `DEPLOYER_API_TOKENS`, kept by a reload.
        file_tokens: the tokens `tokens_file` held at start; `reload()` reads the file again.
        tokens_file: `DEPLOYER_API_TOKENS_FILE`, or "" when there is none.
    """

    def __init__(
        self, tokens: Sequence[ApiToken], *, file_tokens: Sequence[ApiToken] = (), tokens_file: str = ""
    ) -> None:
        self._static = tuple(tokens)
        self._tokens = (*self._static, *file_tokens)
        self._file = tokens_file
        # Fixed at start: a reload that empties the file must lock everybody out, never open the API.
        self._enabled = bool(self._tokens) or bool(tokens_file)

    @property
    def enabled(self) -> bool:
        """Whether tokens are required (auth is off only when none was configured at start)."""
        return self._enabled

    @property
    def tokens_file(self) -> str:
        """The file `reload()` reads, or "" when there is none."""
        return self._file

    def reload(self) -> tuple[ApiToken, ...]:
        """Read the tokens file again and use it from now on; returns the new tokens.

        Raises:
            SettingsError: the file cannot be read or is invalid (the tokens in use stay as they were).
        """
        tokens = merge_tokens(self._static, read_tokens_file(self._file), "DEPLOYER_API_TOKENS_FILE")
        self._tokens = tokens
        return tokens

    def is_current(self, digest: str) -> bool:
        """Whether a token (by its digest) is still configured."""
        return any(hmac.compare_digest(candidate.digest, digest) for candidate in self._tokens)

    def authenticate(self, token: str | None) -> Caller | None:
        """The caller a token belongs to; `ANONYMOUS` when auth is off; None when missing or unknown."""
        if not self.enabled:
            return ANONYMOUS
        if not token:
            return None
        presented = token_digest(token)
        found: ApiToken | None = None
        for candidate in self._tokens:  # compare against every token, so timing says nothing about which
            if hmac.compare_digest(candidate.digest, presented) and found is None:
                found = candidate
        return None if found is None else Caller(name=found.name, scopes=found.scopes, digest=presented)


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


class ScopePermission(BasePermission):
    """A Strawberry permission that requires one scope of the context's caller."""

    scope: str = ADMIN

    def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        """Raise the contract's error (rather than Strawberry's generic one) when the scope is missing."""
        require_scope(getattr(info.context, "caller", None), self.scope)
        return True


class CanRead(ScopePermission):
    """Queries and the progress subscription need the `read` scope."""

    scope = READ


class CanDeploy(ScopePermission):
    """The `deploy` mutation needs the `deploy` scope."""

    scope = DEPLOY


class CanChangeEnv(ScopePermission):
    """The env mutations (`setEnv`, `bulkSetEnv`, `deleteEnv`) need the `env` scope."""

    scope = ENV
