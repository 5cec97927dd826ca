"""The dev sandbox behind the API's tokens: it holds env values, so it is no more open than the API.

In `deployer dev` with tokens configured, the simulated clouds are served by the same server as the API. The
worker reaches them with cloud keys made up for this run (`SandboxKeys`), which nobody else knows; a person
or a script (the control API, `curl .../sandbox/_control/state`) needs an API token with the `admin` scope.
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from graphql_api.auth import ADMIN, Authenticator, bearer_token


@dataclass(frozen=True)
class SandboxKeys:
    """The DigitalOcean and Coolify keys of one dev run (random, never printed)."""

    digitalocean: str = field(default_factory=lambda: f"sandbox-do-{secrets.token_urlsafe(24)}", repr=False)
    coolify: str = field(default_factory=lambda: f"1|sandbox-{secrets.token_urlsafe(24)}", repr=False)


class SandboxGuard:
    """ASGI middleware: a request to the sandbox needs one of this run's cloud keys, or an `admin` API token."""

    def __init__(self, app: ASGIApp, *, keys: SandboxKeys, authenticator: Authenticator) -> None:
        self.app = app
        self._keys = (keys.digitalocean, keys.coolify)
        self._authenticator = authenticator

    def _allowed(self, scope: Scope) -> bool:
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), None)
        token = bearer_token(header)
        if token is None:
            return False
        if any(hmac.compare_digest(token.encode(), key.encode()) for key in self._keys):
            return True
        caller = self._authenticator.authenticate(token)
        return caller is not None and ADMIN in caller.scopes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and str(scope.get("path", "")).startswith("/sandbox")
        if not guarded or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"message": "The dev sandbox needs an API token with the admin scope"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})
