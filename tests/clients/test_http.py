"""Tests for clients/http.py: auth, bodies, error mapping, retries, backoff and logging."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from pytest_httpx import HTTPXMock

from clients.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthError,
    CloudAPIError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RequestBudgetError,
    UpstreamServerError,
)
from clients.http import DEFAULT_TIMEOUT, ApiHTTP, RetryPolicy, current_deadline, request_deadline, retry_delay_hint
from tests.clients.conftest import FakeSleep

BASE = "https://api.example.test/v2"
TOKEN = "dop_v1_supersecrettoken"
LOGGER = "deployer.clients.test"
NOW = 1_700_000_000.0


@pytest.fixture
def make_http(sleep: FakeSleep) -> Callable[..., ApiHTTP]:
    """Factory for an ApiHTTP with no jitter, a fixed clock and the fake sleep."""

    def make(**overrides: object) -> ApiHTTP:
        options: dict[str, object] = {
            "api": "digitalocean",
            "base_url": BASE,
            "token": TOKEN,
            "logger": logging.getLogger(LOGGER),
            "retry": RetryPolicy(jitter=0.0),
            "sleep": sleep,
            "clock": lambda: NOW,
        }
        options.update(overrides)
        return ApiHTTP(**options)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def http(make_http: Callable[..., ApiHTTP]) -> AsyncIterator[ApiHTTP]:
    """A default ApiHTTP, closed after the test."""
    client = make_http()
    yield client
    await client.aclose()


# -- requests ------------------------------------------------------------------------------------------


async def test_get_sends_bearer_token_and_accept(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """Every request carries the bearer token and asks for JSON."""
    httpx_mock.add_response(
        method="GET",
        url=f"{BASE}/account",
        match_headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        json={"account": {}},
    )
    assert await http.send_json("GET", "/account") == {"account": {}}


async def test_default_timeout_is_explicit(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """Without a timeout argument the client uses DEFAULT_TIMEOUT, never httpx's implicit one."""
    httpx_mock.add_response(url=f"{BASE}/account", json={})
    await http.send("GET", "/account")
    request = httpx_mock.get_requests()[0]
    assert request.extensions["timeout"] == DEFAULT_TIMEOUT.as_dict()


async def test_given_timeout_used(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """A timeout passed in is the one sent with each request."""
    timeout = httpx.Timeout(3.0, connect=1.0)
    client = make_http(timeout=timeout)
    httpx_mock.add_response(url=f"{BASE}/account", json={})
    await client.send("GET", "/account")
    await client.aclose()
    assert httpx_mock.get_requests()[0].extensions["timeout"] == timeout.as_dict()


async def test_post_without_body_sends_empty_json_object(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """A POST always has a JSON body and Content-Type, because Coolify rejects empty or non-JSON bodies."""
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/things/1/restart",
        match_headers={"Content-Type": "application/json"},
        match_content=b"{}",
        json={"ok": True},
    )
    await http.send("POST", "/things/1/restart")


async def test_patch_sends_json(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """A PATCH sends the given JSON with Content-Type application/json."""
    httpx_mock.add_response(
        method="PATCH",
        url=f"{BASE}/things",
        match_headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        match_json={"a": 1},
        status_code=201,
        json={"a": 1},
    )
    assert await http.send_json("PATCH", "/things", json={"a": 1}) == {"a": 1}


async def test_query_params_encoded(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """Booleans become 'true'/'false' and ints strings in the query."""
    httpx_mock.add_response(method="DELETE", url=f"{BASE}/servers/s?force=true&take=5", status_code=200)
    await http.send("DELETE", "/servers/s", params={"force": True, "take": 5})


async def test_empty_body_decodes_to_none(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """A 204 without content decodes to None."""
    httpx_mock.add_response(method="DELETE", url=f"{BASE}/droplets/1", status_code=204)
    assert await http.send_json("DELETE", "/droplets/1") is None


async def test_invalid_json_body_is_a_cloud_error(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """A 2xx whose body is not JSON raises CloudAPIError naming the request."""
    httpx_mock.add_response(url=f"{BASE}/version", text="4.3.11", headers={"content-type": "text/plain"})
    with pytest.raises(CloudAPIError, match=r"digitalocean GET /v2/version: expected a JSON body"):
        await http.send_json("GET", "/version")


async def test_empty_token_sends_no_authorization(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """An empty token sends no Authorization header (not 'Bearer ') and leaves error text intact."""
    client = make_http(token="", retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_response(url=f"{BASE}/x", status_code=401, json={"message": "Unauthenticated."})
    with pytest.raises(AuthError) as info:
        await client.send("GET", "/x")
    await client.aclose()
    assert "authorization" not in httpx_mock.get_requests()[0].headers
    assert info.value.message == "Unauthenticated."


def test_transport_and_client_are_exclusive() -> None:
    """Passing both a transport and a ready client is a configuration error."""
    with pytest.raises(ValueError, match="not both"):
        ApiHTTP(
            api="coolify",
            base_url=BASE,
            token=TOKEN,
            logger=logging.getLogger(LOGGER),
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
            http_client=httpx.AsyncClient(),
        )


async def test_transport_is_used() -> None:
    """A transport passed in carries the requests (how tests and the sandbox plug in)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = ApiHTTP(
        api="coolify",
        base_url="http://sandbox/api/v1/",
        token=TOKEN,
        logger=logging.getLogger(LOGGER),
        transport=httpx.MockTransport(handler),
    )
    assert await client.send_json("GET", "/version") == {"ok": True}
    await client.aclose()
    assert str(seen[0].url) == "http://sandbox/api/v1/version"


async def test_borrowed_client_is_not_closed(httpx_mock: HTTPXMock) -> None:
    """aclose() leaves a caller's AsyncClient open; only an owned client is closed."""
    borrowed = httpx.AsyncClient()
    client = ApiHTTP(api="coolify", base_url=BASE, token=TOKEN, logger=logging.getLogger(LOGGER), http_client=borrowed)
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await client.send("GET", "/x")
    await client.aclose()
    assert not borrowed.is_closed
    await borrowed.aclose()


def test_repr_hides_token(http: ApiHTTP) -> None:
    """repr() of the transport helper never shows the token."""
    assert TOKEN not in repr(http)


# -- error mapping -------------------------------------------------------------------------------------


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
        (503, UpstreamServerError),
    ],
)
async def test_status_mapping(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock, status: int, cls: type[APIStatusError]
) -> None:
    """Each non-2xx status raises its class (no retries here: one attempt)."""
    client = make_http(retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_response(url=f"{BASE}/x", status_code=status, json={"message": "nope"})
    with pytest.raises(cls) as info:
        await client.send("GET", "/x")
    await client.aclose()
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert info.value.message == "nope"


async def test_digitalocean_error_body(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """DigitalOcean's {id, message, request_id} fills error_id, message and request_id."""
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/droplets",
        status_code=422,
        json={
            "id": "unprocessable_entity",
            "message": "creating this/these droplet(s) will exceed your droplet limit",
            "request_id": "body-req",
        },
        headers={"x-request-id": "header-req"},
    )
    with pytest.raises(ConflictError) as info:
        await http.send("POST", "/droplets", json={"name": "a"})
    err = info.value
    assert err.error_id == "unprocessable_entity"
    assert err.request_id == "body-req"
    assert str(err) == (
        "digitalocean POST /v2/droplets -> 422 unprocessable_entity: "
        "creating this/these droplet(s) will exceed your droplet limit (request id body-req)"
    )


async def test_request_id_falls_back_to_header(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """Without request_id in the body, the x-request-id header is used."""
    httpx_mock.add_response(
        url=f"{BASE}/droplets/9",
        status_code=404,
        json={"id": "not_found", "message": "The resource you were accessing could not be found."},
        headers={"x-request-id": "hdr-1"},
    )
    with pytest.raises(NotFoundError) as info:
        await http.send("GET", "/droplets/9")
    assert info.value.request_id == "hdr-1"


async def test_coolify_validation_errors(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """Coolify's {message, errors} becomes a ConflictError with per-field tuples (string or list values)."""
    client = make_http(api="coolify", base_url="https://coolify.test/api/v1")
    httpx_mock.add_response(
        method="POST",
        url="https://coolify.test/api/v1/servers",
        status_code=422,
        json={
            "message": "Validation failed.",
            "errors": {"ip": ["The ip field is required."], "name": "bad"},
        },
    )
    with pytest.raises(ConflictError) as info:
        await client.send("POST", "/servers", json={"x": 1})
    await client.aclose()
    assert info.value.errors == {"ip": ("The ip field is required.",), "name": ("bad",)}
    assert info.value.error_id is None
    assert str(info.value) == "coolify POST /api/v1/servers -> 422: Validation failed. [fields: ip, name]"


async def test_coolify_error_detail_appended(http: ApiHTTP, httpx_mock: HTTPXMock) -> None:
    """Coolify's {"message": "Invalid request.", "error": "..."} keeps both parts."""
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/x",
        status_code=400,
        json={"message": "Invalid request.", "error": "Empty JSON."},
    )
    with pytest.raises(APIStatusError, match=r"Invalid request\. \(Empty JSON\.\)"):
        await http.send("POST", "/x", json={"a": 1})


async def test_non_json_error_uses_reason_phrase(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """An HTML error page becomes the reason phrase, not the page text."""
    client = make_http(retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_response(url=f"{BASE}/x", status_code=502, html="<html>upstream sad</html>")
    with pytest.raises(UpstreamServerError) as info:
        await client.send("GET", "/x")
    await client.aclose()
    assert info.value.message == "Bad Gateway"
    assert "<html>" not in str(info.value)


async def test_token_never_in_error_text(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """Even when the server echoes the token in its error, str() and repr() of the error do not contain it."""
    client = make_http(retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_response(
        url=f"{BASE}/x",
        status_code=401,
        json={"message": f"Invalid token Bearer {TOKEN}", "errors": {"token": [f"{TOKEN} is wrong"]}},
    )
    with pytest.raises(AuthError) as info:
        await client.send("GET", "/x")
    await client.aclose()
    err = info.value
    assert TOKEN not in str(err)
    assert TOKEN not in repr(err)
    assert TOKEN not in err.message
    assert all(TOKEN not in m for msgs in err.errors.values() for m in msgs)
    assert "[redacted]" in str(err)


async def test_token_never_in_connection_error_text(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """A transport error whose text contains the token is scrubbed too."""
    client = make_http(retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_exception(httpx.ConnectError(f"failed with {TOKEN}"), url=f"{BASE}/x")
    with pytest.raises(APIConnectionError) as info:
        await client.send("GET", "/x")
    await client.aclose()
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value)


async def test_error_path_has_no_query(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """Errors name the path only, never query values."""
    client = make_http(retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_response(url=f"{BASE}/droplets?name=private-name", status_code=400, json={"message": "x"})
    with pytest.raises(APIStatusError) as info:
        await client.send("GET", "/droplets", params={"name": "private-name"})
    await client.aclose()
    assert info.value.path == "/v2/droplets"
    assert "private-name" not in str(info.value)


# -- retries -------------------------------------------------------------------------------------------


async def test_get_retried_on_5xx_with_exponential_backoff(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """GET is retried on 500/502/503 and the waits double from base_delay_s."""
    for status in (500, 502, 503):
        httpx_mock.add_response(url=f"{BASE}/x", status_code=status, json={"message": "down"})
    httpx_mock.add_response(url=f"{BASE}/x", json={"ok": True})
    assert await http.send_json("GET", "/x") == {"ok": True}
    assert sleep.calls == [0.5, 1.0, 2.0]


async def test_get_gives_up_after_max_attempts(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """After max_attempts failures the last error is raised, with max_attempts - 1 waits."""
    for _ in range(4):
        httpx_mock.add_response(url=f"{BASE}/x", status_code=500, json={"message": "down"})
    with pytest.raises(UpstreamServerError):
        await http.send("GET", "/x")
    assert len(httpx_mock.get_requests()) == 4
    assert sleep.calls == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "HEAD"])
async def test_other_idempotent_methods_retried(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep, method: str
) -> None:
    """PUT, DELETE and HEAD are retried like GET."""
    httpx_mock.add_response(method=method, url=f"{BASE}/x", status_code=503)
    httpx_mock.add_response(method=method, url=f"{BASE}/x", status_code=204)
    await http.send(method, "/x")
    assert len(httpx_mock.get_requests()) == 2
    assert sleep.calls == [0.5]


async def test_501_not_retried(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """501 Not Implemented will not change on retry."""
    httpx_mock.add_response(url=f"{BASE}/x", status_code=501)
    with pytest.raises(UpstreamServerError):
        await http.send("GET", "/x")
    assert sleep.calls == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_4xx_not_retried(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep, status: int) -> None:
    """Client errors other than 429 are raised at once."""
    httpx_mock.add_response(url=f"{BASE}/x", status_code=status, json={"message": "no"})
    with pytest.raises(APIStatusError):
        await http.send("GET", "/x")
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_post_and_patch_never_retried_on_status(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep, method: str, status: int
) -> None:
    """POST and PATCH are sent once on a 5xx: a create may already have happened."""
    httpx_mock.add_response(
        method=method,
        url=f"{BASE}/x",
        status_code=status,
        json={"message": "x"},
        headers={"Retry-After": "1"},
    )
    with pytest.raises(APIStatusError) as info:
        await http.send(method, "/x", json={"a": 1})
    assert info.value.status_code == status
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    ("exc", "cls"),
    [(httpx.ReadTimeout("slow"), APITimeoutError), (httpx.ConnectError("refused"), APIConnectionError)],
)
async def test_post_and_patch_never_retried_on_transport_error(
    http: ApiHTTP,
    httpx_mock: HTTPXMock,
    sleep: FakeSleep,
    method: str,
    exc: Exception,
    cls: type[CloudAPIError],
) -> None:
    """POST and PATCH are sent once on a timeout or connection error too."""
    httpx_mock.add_exception(exc, method=method, url=f"{BASE}/x")
    with pytest.raises(cls):
        await http.send(method, "/x", json={"a": 1})
    assert len(httpx_mock.get_requests()) == 1
    assert sleep.calls == []


async def test_get_retried_on_timeout_and_connect_error(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """GET is retried after a read timeout and a connection error."""
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=f"{BASE}/x")
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=f"{BASE}/x")
    httpx_mock.add_response(url=f"{BASE}/x", json={"ok": 1})
    assert await http.send_json("GET", "/x") == {"ok": 1}
    assert sleep.calls == [0.5, 1.0]


async def test_timeout_exhausted_raises_timeout_error(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """When every attempt times out, APITimeoutError is raised from the httpx exception."""
    for _ in range(4):
        httpx_mock.add_exception(httpx.ConnectTimeout("slow"), url=f"{BASE}/x")
    with pytest.raises(APITimeoutError) as info:
        await http.send("GET", "/x")
    assert isinstance(info.value.__cause__, httpx.ConnectTimeout)
    assert str(info.value) == "digitalocean GET /v2/x -> timed out: ConnectTimeout: slow"
    assert len(sleep.calls) == 3


async def test_local_protocol_error_not_retried(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """A transport error that retrying cannot fix (our own bad request) is raised at once."""
    httpx_mock.add_exception(httpx.LocalProtocolError("bad header"), url=f"{BASE}/x")
    with pytest.raises(APIConnectionError):
        await http.send("GET", "/x")
    assert sleep.calls == []


async def test_retry_after_seconds_honoured(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """A 429 with Retry-After waits exactly that long before the retry."""
    httpx_mock.add_response(
        url=f"{BASE}/x",
        status_code=429,
        json={"id": "too_many_requests", "message": "API Rate limit exceeded."},
        headers={"Retry-After": "7"},
    )
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await http.send("GET", "/x")
    assert sleep.calls == [7.0]


async def test_retry_after_http_date_honoured(http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep) -> None:
    """Retry-After as an HTTP date waits until that moment (by the injected clock)."""
    when = "Tue, 14 Nov 2023 22:13:32 GMT"  # NOW + 12 s
    httpx_mock.add_response(url=f"{BASE}/x", status_code=503, headers={"Retry-After": when})
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await http.send("GET", "/x")
    assert sleep.calls == [12.0]


async def test_ratelimit_reset_honoured_when_remaining_zero(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """Without Retry-After, DigitalOcean's ratelimit-reset epoch is waited for when remaining is 0."""
    httpx_mock.add_response(
        url=f"{BASE}/x",
        status_code=429,
        json={"id": "too_many_requests", "message": "API Rate limit exceeded."},
        headers={"ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW) + 5)},
    )
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await http.send("GET", "/x")
    assert sleep.calls == [5.0]


async def test_ratelimit_reset_ignored_when_remaining_left(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """ratelimit-reset does not count while requests remain; normal backoff applies."""
    httpx_mock.add_response(
        url=f"{BASE}/x",
        status_code=429,
        headers={"ratelimit-remaining": "10", "ratelimit-reset": str(int(NOW) + 20)},
    )
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await http.send("GET", "/x")
    assert sleep.calls == [0.5]


async def test_waits_capped_by_max_delay(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """A Retry-After longer than max_delay_s and long backoffs are capped."""
    client = make_http(retry=RetryPolicy(max_attempts=3, base_delay_s=8.0, max_delay_s=10.0, jitter=0.0))
    httpx_mock.add_response(url=f"{BASE}/x", status_code=429, headers={"Retry-After": "3600"})
    httpx_mock.add_response(url=f"{BASE}/x", status_code=500)
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await client.send("GET", "/x")
    await client.aclose()
    assert sleep.calls == [10.0, 10.0]


async def test_rate_limited_error_reports_retry_after(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """A 429 that reaches the caller says how long the API asked to wait."""
    client = make_http(api="coolify", retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/deploy",
        status_code=429,
        json={"message": "Too Many Attempts."},
        headers={"Retry-After": "60"},
    )
    with pytest.raises(RateLimitedError) as info:
        await client.send("POST", "/deploy", json={"uuid": "a"})
    await client.aclose()
    assert info.value.retry_after == 60.0


async def test_jitter_shrinks_backoff(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """With jitter, the wait is the backoff reduced by jitter * random."""
    client = make_http(retry=RetryPolicy(jitter=0.5), rand=lambda: 0.5)
    httpx_mock.add_response(url=f"{BASE}/x", status_code=500)
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await client.send("GET", "/x")
    await client.aclose()
    assert sleep.calls == [0.375]


def test_retry_policy_defaults_and_validation() -> None:
    """RetryPolicy has the agreed defaults and refuses nonsense values."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay_s, policy.max_delay_s) == (4, 0.5, 30.0)
    assert 0.0 <= policy.jitter <= 1.0
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2.0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay_s=-1)


def test_backoff_is_capped() -> None:
    """Backoff doubles per failure but never exceeds max_delay_s."""
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, jitter=0.0)
    assert [policy.backoff(n, 0.9) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}, 10.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),
        ({"ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW) + 30)}, 30.0),
        ({"ratelimit-remaining": "0", "ratelimit-reset": "later"}, None),
        ({"ratelimit-remaining": "3", "ratelimit-reset": str(int(NOW) + 30)}, None),
        ({"retry-after": "1", "ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW) + 30)}, 1.0),
    ],
)
def test_retry_delay_hint(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After (seconds or date) wins over ratelimit-reset, which counts only at remaining 0."""
    assert retry_delay_hint(httpx.Headers(headers), NOW) == expected


# -- logging -------------------------------------------------------------------------------------------


async def test_logs_attempts_without_secrets(
    http: ApiHTTP, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    """Each attempt logs method, path, status, request id and attempt; never the token, body or query."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    httpx_mock.add_response(
        method="GET",
        url=f"{BASE}/droplets?tag_name=secret-tag",
        status_code=503,
        json={"message": "body-value"},
        headers={"x-request-id": "rid-1"},
    )
    httpx_mock.add_response(
        method="GET",
        url=f"{BASE}/droplets?tag_name=secret-tag",
        json={"droplets": ["body-value"]},
        headers={"x-request-id": "rid-2"},
    )
    await http.send("GET", "/droplets", params={"tag_name": "secret-tag"})
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("GET /v2/droplets -> 503" in line and "rid-1" in line and "attempt 1" in line for line in lines)
    assert any("retrying in 0.50 s" in line for line in lines)
    assert any("GET /v2/droplets -> 200" in line and "rid-2" in line and "attempt 2" in line for line in lines)
    text = "\n".join(lines)
    for secret in (TOKEN, "body-value", "secret-tag", "Bearer"):
        assert secret not in text
    levels = {r.levelno for r in caplog.records if r.name == LOGGER}
    assert levels <= {logging.DEBUG, logging.INFO}


async def test_logs_transport_errors_by_class(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    """A transport failure is logged by its exception class, not its text."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    client = make_http(retry=RetryPolicy(max_attempts=1))
    httpx_mock.add_exception(httpx.ConnectError(f"oops {TOKEN}"), method="POST", url=f"{BASE}/x")
    with pytest.raises(APIConnectionError):
        await client.send("POST", "/x", json={"value": "v"})
    await client.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == ["POST /v2/x -> ConnectError (attempt 1)"]


# -- 429 is "not yet", for every method; deadlines -----------------------------------------------------


class SteppingTime:
    """A monotonic clock that moves forward by exactly what the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.calls: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("method", ["POST", "PATCH", "GET"])
async def test_429_is_retried_for_every_method(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep, method: str
) -> None:
    """A 429 is answered before the request is processed, so even a POST is sent again after Retry-After."""
    httpx_mock.add_response(method=method, url=f"{BASE}/x", status_code=429, headers={"Retry-After": "2"})
    httpx_mock.add_response(method=method, url=f"{BASE}/x", json={"ok": True})
    assert (await http.send_json(method, "/x", json={"a": 1} if method != "GET" else None)) == {"ok": True}
    assert len(httpx_mock.get_requests()) == 2
    assert sleep.calls == [2.0]


async def test_429_without_deadline_gives_up_after_max_attempts(
    http: ApiHTTP, httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """Outside a deadline block, a POST that keeps getting 429 is bounded by the retry policy."""
    for _ in range(4):
        httpx_mock.add_response(method="POST", url=f"{BASE}/x", status_code=429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimitedError):
        await http.send("POST", "/x")
    assert len(httpx_mock.get_requests()) == 4
    assert sleep.calls == [1.0, 1.0, 1.0]


async def test_429_inside_deadline_waits_as_often_as_needed(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock
) -> None:
    """Inside a deadline a POST is retried past max_attempts and waits the full Retry-After past max_delay_s."""
    time = SteppingTime()
    client = make_http(sleep=time.sleep, monotonic=time, retry=RetryPolicy(max_attempts=2, max_delay_s=5, jitter=0))
    for _ in range(6):
        httpx_mock.add_response(method="POST", url=f"{BASE}/x", status_code=429, headers={"Retry-After": "20"})
    httpx_mock.add_response(method="POST", url=f"{BASE}/x", status_code=201, json={"id": 1})
    with request_deadline(200, clock=time):
        assert await client.send_json("POST", "/x") == {"id": 1}
    await client.aclose()
    assert time.calls == [20.0] * 6


async def test_429_inside_deadline_stops_when_the_wait_would_pass_it(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock
) -> None:
    """The retry that would end after the deadline is not waited for: the 429 reaches the caller."""
    time = SteppingTime()
    client = make_http(sleep=time.sleep, monotonic=time)
    for _ in range(3):
        httpx_mock.add_response(method="POST", url=f"{BASE}/x", status_code=429, headers={"Retry-After": "20"})
    with request_deadline(50, clock=time), pytest.raises(RateLimitedError) as info:
        await client.send("POST", "/x")
    await client.aclose()
    assert info.value.retry_after == 20.0
    assert time.calls == [20.0, 20.0]


async def test_429_honours_ratelimit_reset_inside_deadline(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock
) -> None:
    """DigitalOcean's hourly-limit 429 has no Retry-After: the wait runs to ratelimit-reset."""
    time = SteppingTime()
    client = make_http(sleep=time.sleep, monotonic=time)
    httpx_mock.add_response(
        url=f"{BASE}/x",
        status_code=429,
        headers={"ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW + 45))},
    )
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    with request_deadline(100, clock=time):
        await client.send("GET", "/x")
    await client.aclose()
    assert time.calls == [45.0]


async def test_5xx_backoff_never_sleeps_past_the_deadline(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock
) -> None:
    """A GET's backoff after a 5xx that would end after the deadline is not taken."""
    time = SteppingTime()
    client = make_http(sleep=time.sleep, monotonic=time, retry=RetryPolicy(base_delay_s=4.0, jitter=0.0))
    for _ in range(2):
        httpx_mock.add_response(url=f"{BASE}/x", status_code=503)
    with request_deadline(6, clock=time), pytest.raises(UpstreamServerError):
        await client.send("GET", "/x")
    await client.aclose()
    assert time.calls == [4.0]


def test_nested_deadlines_keep_the_earlier() -> None:
    """An inner block cannot extend the outer deadline; leaving a block restores the outer one."""
    time = SteppingTime()
    assert current_deadline() is None
    with request_deadline(10, clock=time) as outer:
        with request_deadline(100, clock=time) as inner:
            assert inner == outer == current_deadline() == 1010.0
        with request_deadline(5, clock=time) as inner:
            assert inner == current_deadline() == 1005.0
        assert current_deadline() == 1010.0
    assert current_deadline() is None


async def test_throttle_awaited_before_every_attempt(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """The shared request budget is drawn from before each attempt, retries included."""
    drawn: list[int] = []

    async def throttle() -> None:
        drawn.append(len(httpx_mock.get_requests()))

    client = make_http(throttle=throttle)
    httpx_mock.add_response(url=f"{BASE}/x", status_code=500)
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await client.send("GET", "/x")
    await client.aclose()
    assert drawn == [0, 1]


async def test_a_429_is_reported_to_the_budget_with_the_wait_asked(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock, sleep: FakeSleep
) -> None:
    """Every 429 awaits `on_rate_limited` with the API's wait (Retry-After, else ratelimit-reset), once per 429,
    before the client's own wait; a success reports nothing."""
    pauses: list[float] = []

    async def on_rate_limited(seconds: float) -> None:
        pauses.append(seconds)
        assert sleep.calls == [7.0] * (len(pauses) - 1)  # reported before this retry's wait

    client = make_http(on_rate_limited=on_rate_limited)
    httpx_mock.add_response(url=f"{BASE}/x", status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(
        url=f"{BASE}/x", status_code=429, headers={"ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW) + 7)}
    )
    httpx_mock.add_response(url=f"{BASE}/x", json={})
    await client.send("GET", "/x")
    await client.aclose()
    assert pauses == [7.0, 7.0]


async def test_a_429_without_a_hint_reports_the_backoff_even_when_it_is_not_retried(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock
) -> None:
    """No Retry-After: the budget pauses for the client's backoff; the last attempt's 429 is reported too."""
    pauses: list[float] = []

    async def on_rate_limited(seconds: float) -> None:
        pauses.append(seconds)

    client = make_http(on_rate_limited=on_rate_limited, retry=RetryPolicy(max_attempts=2, base_delay_s=0.5, jitter=0))
    httpx_mock.add_response(url=f"{BASE}/x", status_code=429)
    httpx_mock.add_response(url=f"{BASE}/x", status_code=429)
    with pytest.raises(RateLimitedError):
        await client.send("POST", "/x")
    await client.aclose()
    assert pauses == [0.5, 1.0]


async def test_every_response_reporting_a_quota_is_told_to_the_budget(
    make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock
) -> None:
    """`on_quota` hears (requests left, seconds until the oldest expires) from every response that carries
    DigitalOcean's quota headers, errors included, but not from a 429 (that is `on_rate_limited`'s) nor from a
    response without them (Coolify's)."""
    quotas: list[tuple[int, float]] = []
    pauses: list[float] = []

    async def on_quota(remaining: int, reset_in_s: float) -> None:
        quotas.append((remaining, reset_in_s))

    async def on_rate_limited(seconds: float) -> None:
        pauses.append(seconds)

    client = make_http(on_quota=on_quota, on_rate_limited=on_rate_limited)
    reset = str(int(NOW) + 1800)
    httpx_mock.add_response(url=f"{BASE}/a", json={}, headers={"ratelimit-remaining": "4999", "ratelimit-reset": reset})
    httpx_mock.add_response(
        url=f"{BASE}/b", status_code=404, headers={"ratelimit-remaining": "12", "ratelimit-reset": reset}
    )
    httpx_mock.add_response(
        url=f"{BASE}/c", status_code=429, headers={"ratelimit-remaining": "0", "ratelimit-reset": reset}
    )
    httpx_mock.add_response(url=f"{BASE}/c", json={})  # no quota headers
    httpx_mock.add_response(url=f"{BASE}/d", json={}, headers={"ratelimit-remaining": "x", "ratelimit-reset": reset})
    await client.send("GET", "/a")
    with pytest.raises(NotFoundError):
        await client.send("GET", "/b")
    await client.send("GET", "/c")
    await client.send("GET", "/d")
    await client.aclose()
    assert quotas == [(4999, 1800.0), (12, 1800.0)]
    assert pauses == [1800.0]


async def test_a_throttle_that_refuses_sends_nothing(make_http: Callable[..., ApiHTTP], httpx_mock: HTTPXMock) -> None:
    """A budget with no slot in time raises its error from the throttle, and no request leaves."""

    async def throttle() -> None:
        raise RequestBudgetError("digitalocean", "no slot for 40.0 s", wait_s=40.0)

    client = make_http(throttle=throttle)
    with pytest.raises(RequestBudgetError, match="no slot"):
        await client.send("GET", "/x")
    await client.aclose()
    assert httpx_mock.get_requests() == []
