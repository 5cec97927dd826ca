"""Tests for clients/errors.py: the tree, the status mapping and what str() shows."""

from __future__ import annotations

import pickle

import pytest

from clients.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthError,
    CloudAPIError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    UpstreamServerError,
    status_error_class,
)


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (APIStatusError, CloudAPIError),
        (NotFoundError, APIStatusError),
        (ConflictError, APIStatusError),
        (RateLimitedError, APIStatusError),
        (AuthError, APIStatusError),
        (UpstreamServerError, APIStatusError),
        (APIConnectionError, CloudAPIError),
        (APITimeoutError, APIConnectionError),
    ],
)
def test_tree(child: type[Exception], parent: type[Exception]) -> None:
    """Every error class sits where the module docstring draws it."""
    assert issubclass(child, parent)


def test_status_and_connection_branches_are_separate() -> None:
    """Connection errors are not status errors, so callers can tell "no answer" from "bad answer"."""
    assert not issubclass(APIConnectionError, APIStatusError)
    assert not issubclass(APIStatusError, APIConnectionError)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, APIStatusError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (405, APIStatusError),
        (409, ConflictError),
        (422, ConflictError),
        (429, RateLimitedError),
        (500, UpstreamServerError),
        (501, UpstreamServerError),
        (503, UpstreamServerError),
    ],
)
def test_status_error_class(status: int, cls: type[APIStatusError]) -> None:
    """Each HTTP status maps to exactly the documented class."""
    assert status_error_class(status) is cls


def test_str_with_every_part() -> None:
    """str() reads '<api> <METHOD> <path> -> <status> <error id>: <message> (request id …)'."""
    err = ConflictError(
        "digitalocean",
        "creating this/these droplet(s) will exceed your droplet limit",
        status_code=422,
        error_id="unprocessable_entity",
        request_id="req-1",
        method="POST",
        path="/v2/droplets",
    )
    assert str(err) == (
        "digitalocean POST /v2/droplets -> 422 unprocessable_entity: "
        "creating this/these droplet(s) will exceed your droplet limit (request id req-1)"
    )
    assert err.status_code == 422
    assert err.error_id == "unprocessable_entity"
    assert err.request_id == "req-1"


def test_str_without_optional_parts() -> None:
    """Without an error id or request id the str() leaves those parts out."""
    err = NotFoundError("coolify", "Server not found.", status_code=404, method="GET", path="/api/v1/servers/x")
    assert str(err) == "coolify GET /api/v1/servers/x -> 404: Server not found."


def test_str_lists_field_names_not_messages() -> None:
    """Validation errors show which fields failed but keep the per-field messages out of str()."""
    err = ConflictError(
        "coolify",
        "Validation failed.",
        status_code=422,
        errors={"value": ("The value must not contain s3cr3t",), "key": ("bad",)},
        method="POST",
        path="/api/v1/applications/a/envs",
    )
    assert str(err) == "coolify POST /api/v1/applications/a/envs -> 422: Validation failed. [fields: key, value]"
    assert "s3cr3t" not in str(err)
    assert err.errors["value"] == ("The value must not contain s3cr3t",)


def test_base_error_without_request() -> None:
    """A base error not tied to a request reads '<api>: <message>'."""
    assert str(CloudAPIError("coolify", "boom")) == "coolify: boom"


def test_connection_and_timeout_str() -> None:
    """Connection and timeout errors say which kind of failure they are."""
    conn = APIConnectionError("digitalocean", "ConnectError: refused", method="GET", path="/v2/account")
    timeout = APITimeoutError("digitalocean", "ReadTimeout", method="GET", path="/v2/account")
    assert str(conn) == "digitalocean GET /v2/account -> connection error: ConnectError: refused"
    assert str(timeout) == "digitalocean GET /v2/account -> timed out: ReadTimeout"


def test_rate_limited_carries_retry_after() -> None:
    """RateLimitedError defaults to status 429 and keeps the wait the API asked for."""
    err = RateLimitedError("coolify", "Too Many Attempts.", retry_after=60.0)
    assert err.status_code == 429
    assert err.retry_after == 60.0


def test_with_class_keeps_every_field() -> None:
    """with_class re-classifies a status error without losing its details."""
    err = APIStatusError(
        "coolify",
        "A server with this IP/Domain is already in use.",
        status_code=400,
        request_id="r",
        method="POST",
        path="/api/v1/servers",
    )
    conflict = err.with_class(ConflictError)
    assert isinstance(conflict, ConflictError)
    assert str(conflict) == str(err)
    assert (conflict.status_code, conflict.request_id) == (400, "r")


def test_pickle_round_trip() -> None:
    """Errors survive pickling (job queues store them) with their fields and message intact."""
    err = RateLimitedError(
        "digitalocean",
        "API Rate limit exceeded.",
        error_id="too_many_requests",
        method="GET",
        path="/v2/droplets",
        retry_after=3.0,
    )
    clone = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object
    assert type(clone) is RateLimitedError
    assert str(clone) == str(err)
    assert clone.retry_after == 3.0
    assert clone.args == err.args


def test_repr_is_the_message() -> None:
    """repr() shows the class and the same safe text as str()."""
    err = NotFoundError("coolify", "Not found.", status_code=404, method="GET", path="/api/v1/x")
    assert repr(err) == f"NotFoundError({str(err)!r})"
