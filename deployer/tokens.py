"""`deployer token create`: a new random API token, and the line that configures it by its hash only."""

from __future__ import annotations

import hashlib
import secrets

from settings import parse_token

#: A prefix that makes a leaked token easy to recognise (and to search for in code and logs).
TOKEN_PREFIX = "dpl_"  # noqa: S105 - a prefix, not a secret


def create_token(name: str, scopes: str) -> tuple[str, str]:
    """A new token and its configuration line `name:sha256:<hex>:scope+scope`.

    Args:
        scopes: comma-separated (`read,deploy`).

    Raises:
        SettingsError: a bad name or an unknown scope (the line would not be accepted).
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    scope_list = [scope.strip() for scope in scopes.replace("+", ",").split(",") if scope.strip()]
    line = f"{name}:sha256:{hashlib.sha256(token.encode()).hexdigest()}:{'+'.join(scope_list)}"
    parse_token("the token", line)  # the same rules the server applies at start
    return token, line
