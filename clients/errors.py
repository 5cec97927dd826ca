"""Errors raised by the DigitalOcean and Coolify clients.

Every failure of a cloud call is one of these, so callers catch one tree::

    CloudAPIError(api, message)              any failure talking to an API
    ├── APIStatusError(status_code, error_id, request_id)
    │   │                                    the API answered with a non-2xx status
    │   ├── NotFoundError                    404
    │   ├── ConflictError                    409 / 422 (validation, "already in use", droplet limit)
    │   ├── RateLimitedError                 429 (retry_after: float | None)
    │   ├── AuthError                        401 / 403
    │   └── UpstreamServerError              5xx
    ├── APIConnectionError                   no usable answer: connect, read or protocol error
    │   └── APITimeoutError                  the request timed out
    └── RequestBudgetError                   not sent: the shared request budget has no slot in time

``str(err)`` reads ``"<api> <METHOD> <path> -> <status> <error id>: <message> (request id …)"``. It carries
the API's own error message and never a token, a header, a query string or a request/response body value: the
transport layer scrubs the token out of any message before it builds the error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthError",
    "CloudAPIError",
    "ConflictError",
    "NotFoundError",
    "RateLimitedError",
    "RequestBudgetError",
    "UpstreamServerError",
    "status_error_class",
]


def _restore(cls: type[CloudAPIError], state: dict[str, Any]) -> CloudAPIError:
    """Rebuild a pickled error without calling ``__init__`` (its arguments are keyword-only)."""
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, str(err))
    return err


class CloudAPIError(Exception):
    """Base class: a call to a cloud API (``api`` is ``"digitalocean"`` or ``"coolify"``) failed.

    ``method`` and ``path`` name the request (path only, never the query string); they are ``None`` when the
    failure is not tied to one request (for example a malformed response body seen by a client method).
    """

    def __init__(self, api: str, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.api = api
        self.message = message
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _where(self) -> str:
        if self.method and self.path:
            return f"{self.api} {self.method} {self.path}"
        return self.api

    def _describe(self) -> str:
        return f"{self._where()}: {self.message}"

    def __str__(self) -> str:
        return self._describe()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), dict(self.__dict__)))


class APIStatusError(CloudAPIError):
    """The API answered with a status outside 2xx.

    ``error_id`` is DigitalOcean's error slug (``not_found``, ``unprocessable_entity``, ...), ``None`` for
    Coolify. ``request_id`` comes from DigitalOcean's body or the ``x-request-id`` header (support asks).
    ``errors`` holds Coolify's per-field validation messages (``{"key": ("The key field is required.",)}``);
    only the field names appear in ``str()``.
    """

    def __init__(
        self,
        api: str,
        message: str,
        *,
        status_code: int,
        error_id: str | None = None,
        request_id: str | None = None,
        errors: Mapping[str, tuple[str, ...]] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_id = error_id
        self.request_id = request_id
        self.errors: dict[str, tuple[str, ...]] = dict(errors or {})
        super().__init__(api, message, method=method, path=path)

    def _describe(self) -> str:
        text = f"{self._where()} -> {self.status_code}"
        if self.error_id:
            text += f" {self.error_id}"
        text += f": {self.message}"
        if self.errors:
            text += f" [fields: {', '.join(sorted(self.errors))}]"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def with_class(self, cls: type[APIStatusError]) -> APIStatusError:
        """Return a copy of this error as ``cls``, for client methods that re-classify a status.

        Coolify answers 400 for "A server with this IP/Domain is already in use."; the Coolify client turns it
        into a :class:`ConflictError` with this.
        """
        return cls(
            self.api,
            self.message,
            status_code=self.status_code,
            error_id=self.error_id,
            request_id=self.request_id,
            errors=self.errors,
            method=self.method,
            path=self.path,
        )


class NotFoundError(APIStatusError):
    """404: the resource (droplet, key, server, application, env, deployment) does not exist."""


class ConflictError(APIStatusError):
    """409 or 422: the request conflicts with existing state or fails validation.

    Covers DigitalOcean's droplet limit and "SSH Key is already in use", Coolify's "already exists" and its
    "Validation failed." with per-field ``errors``. Retrying the same request will not help.
    """


class RateLimitedError(APIStatusError):
    """429: too many requests. ``retry_after`` is how many seconds the API asked us to wait, if it said."""

    def __init__(
        self,
        api: str,
        message: str,
        *,
        status_code: int = 429,
        error_id: str | None = None,
        request_id: str | None = None,
        errors: Mapping[str, tuple[str, ...]] | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            api,
            message,
            status_code=status_code,
            error_id=error_id,
            request_id=request_id,
            errors=errors,
            method=method,
            path=path,
        )


class AuthError(APIStatusError):
    """401 or 403: the token is missing, wrong, lacks a scope/ability, or (Coolify) the API is disabled."""


class UpstreamServerError(APIStatusError):
    """5xx: the API failed on its side. GETs were already retried when this reaches the caller."""


class APIConnectionError(CloudAPIError):
    """No usable answer: the connection failed, broke, or the peer spoke bad HTTP."""

    def _describe(self) -> str:
        return f"{self._where()} -> connection error: {self.message}"


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, write or pool timeout)."""

    def _describe(self) -> str:
        return f"{self._where()} -> timed out: {self.message}"


class RequestBudgetError(CloudAPIError):
    """The request was not sent: the next slot of the shared request budget comes after the caller's deadline.

    It stands for a 429 whose wait would not fit: sending anyway would only earn a real one. ``wait_s`` is how
    long the next slot was away.
    """

    def __init__(self, api: str, message: str, *, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(api, message)


def status_error_class(status_code: int) -> type[APIStatusError]:
    """Map an HTTP status to the most specific :class:`APIStatusError` subclass."""
    if status_code == 404:
        return NotFoundError
    if status_code in (409, 422):
        return ConflictError
    if status_code == 429:
        return RateLimitedError
    if status_code in (401, 403):
        return AuthError
    if status_code >= 500:
        return UpstreamServerError
    return APIStatusError
