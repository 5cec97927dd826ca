"""The one request path both API clients share: auth, timeouts, error mapping, throttling and retries.

:class:`ApiHTTP` owns (or borrows) an ``httpx.AsyncClient`` and sends every request with a bearer token and an
explicit timeout. A non-2xx answer becomes the matching :mod:`clients.errors` class; httpx transport failures
become :class:`~clients.errors.APIConnectionError` / :class:`~clients.errors.APITimeoutError`.

Retries follow :class:`RetryPolicy`:

- **429 is "not yet", for every method.** Both clouds refuse an over-limit request before processing it
  (DigitalOcean's rate limiter, Laravel's throttle middleware in front of every Coolify route), so even a POST
  that got a 429 is sent again after the wait the API asked for: ``Retry-After`` (seconds or an HTTP date)
  first, then DigitalOcean's ``ratelimit-reset`` epoch when ``ratelimit-remaining`` is 0, else backoff.
  Inside :func:`request_deadline` (the pipeline opens one per step) a 429 is retried for as long as the wait
  fits before the deadline, however many times that takes; outside one, :attr:`RetryPolicy.max_attempts` and
  :attr:`RetryPolicy.max_delay_s` bound it.
- **Ambiguous failures are retried only where repeating is safe**: GET, PUT, DELETE and HEAD, on a timeout, a
  connection error or a 5xx other than 501. POST and PATCH are then never repeated, because a create that
  timed out may still have happened (a second droplet, a second Coolify app); the caller looks before it
  creates again.

Every wait goes through an injectable ``sleep`` so tests never sleep for real. An optional ``throttle`` is
awaited before every attempt (a shared request budget), and an optional ``on_rate_limited`` after every 429 with
the seconds the API asked for (or the backoff when it did not say), so the shared budget pauses every process
that draws from it, not only the one refused. An optional ``on_quota`` hears what every response says of the
token's longer quota (DigitalOcean's ``ratelimit-remaining`` / ``ratelimit-reset``: 5,000 requests a rolling
hour), so the budget can slow down before that quota runs out. Each attempt is logged with method, path (no query),
status, request id and attempt number; never headers, bodies or values.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json as jsonlib
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import httpx

from clients.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    CloudAPIError,
    RateLimitedError,
    status_error_class,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "RETRYABLE_METHODS",
    "ApiHTTP",
    "JSONObject",
    "QuotaHook",
    "RateLimitHook",
    "RetryPolicy",
    "Sleep",
    "Throttle",
    "current_deadline",
    "path_segment",
    "quota_left",
    "request_deadline",
    "retry_delay_hint",
]

JSONObject = dict[str, Any]
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
#: Awaited before every attempt: waits until the shared request budget allows one more request.
Throttle = Callable[[], Awaitable[None]]
#: Awaited after every 429 with the seconds to pause: pushes the shared request budget back that far.
RateLimitHook = Callable[[float], Awaitable[None]]
#: Told after every response that reports a request quota: (requests left, seconds until one more frees up).
QuotaHook = Callable[[int, float], Awaitable[None]]

#: Methods that may be sent again after an ambiguous failure (timeout, connection error, 5xx). POST and PATCH
#: are deliberately absent; any method is sent again after a 429, which the APIs answer before processing.
RETRYABLE_METHODS = frozenset({"GET", "PUT", "DELETE", "HEAD"})

#: Monotonic time by which the current unit of work (a pipeline step) must be done; None outside one.
_DEADLINE: ContextVar[float | None] = ContextVar("cloud_request_deadline", default=None)


@contextlib.contextmanager
def request_deadline(seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Iterator[float]:
    """Let rate-limited requests in this block wait for the API as long as the wait ends within ``seconds``.

    Nested blocks keep the earlier of the two deadlines. Yields the absolute deadline (``clock`` time). The
    deadline travels with the context, so tasks started inside the block inherit it.
    """
    at = clock() + max(0.0, seconds)
    outer = _DEADLINE.get()
    token = _DEADLINE.set(at if outer is None else min(outer, at))
    try:
        yield at if outer is None else min(outer, at)
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    """The deadline set by the innermost :func:`request_deadline` block, if any."""
    return _DEADLINE.get()


#: Used when the caller gives neither a timeout nor a ready client.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

_MAX_MESSAGE_CHARS = 500
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently idempotent requests are retried.

    Args:
        max_attempts: total tries per request, the first included (1 disables retries); a 429 inside a
            :func:`request_deadline` block is not bound by it, only by the deadline.
        base_delay_s: wait after the first failure; it doubles with each further failure.
        max_delay_s: cap on any single wait, including waits the API asked for (except a 429's inside a
            :func:`request_deadline` block, which may wait as long as the API asked if the deadline allows).
        jitter: fraction (0..1) of the backoff removed at random, so parallel workers do not retry in step.
    """

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")

    def backoff(self, failed_attempt: int, rand: float) -> float:
        """Seconds to wait after failure number ``failed_attempt`` (1-based); ``rand`` is in [0, 1)."""
        delay = min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempt - 1))
        return delay * (1.0 - self.jitter * rand)


def _parse_retry_after(value: str, now: float) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def retry_delay_hint(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the API asked us to wait, or ``None`` when it did not say.

    ``Retry-After`` (delta seconds or HTTP date) wins; otherwise DigitalOcean's ``ratelimit-reset`` (Unix
    epoch seconds) counts, but only when ``ratelimit-remaining`` is 0.
    """
    retry_after = headers.get("retry-after")
    if retry_after:
        parsed = _parse_retry_after(retry_after, now)
        if parsed is not None:
            return parsed
    quota = quota_left(headers, now)
    return quota[1] if quota is not None and quota[0] == 0 else None


def quota_left(headers: httpx.Headers, now: float) -> tuple[int, float] | None:
    """DigitalOcean's hourly quota as a response reports it: (requests left, seconds until the oldest counted
    request expires and one more is allowed), or None when the response does not say (Coolify never does)."""
    remaining = headers.get("ratelimit-remaining")
    reset = headers.get("ratelimit-reset")
    if remaining is None or reset is None:
        return None
    try:
        return int(remaining), max(0.0, float(reset) - now)
    except ValueError:
        return None


def _field_errors(raw: object) -> dict[str, tuple[str, ...]]:
    """Normalise Coolify's ``errors`` ({field: [msg, ...]} or {field: msg}) into tuples of strings."""
    if not isinstance(raw, Mapping):
        return {}
    result: dict[str, tuple[str, ...]] = {}
    for field, messages in raw.items():
        if isinstance(messages, str):
            result[str(field)] = (messages,)
        elif isinstance(messages, list):
            result[str(field)] = tuple(str(m) for m in messages)
        else:
            result[str(field)] = ()
    return result


class ApiHTTP:
    """Sends requests to one API with auth, timeout, error mapping, retries and request logging.

    Args:
        api: name used in errors and logs (``"digitalocean"`` / ``"coolify"``).
        base_url: URL every ``path`` is appended to, version prefix included (``.../v2``, ``.../api/v1``).
        token: bearer token; sent in the Authorization header only (none when empty), scrubbed from every
            error message.
        logger: where request lines go.
        transport: httpx transport for the client this object creates (tests, the sandbox's ASGI transport).
        http_client: a ready ``httpx.AsyncClient`` to borrow instead; it is not closed by :meth:`aclose`.
        timeout: per-request timeout; defaults to :data:`DEFAULT_TIMEOUT` (or the borrowed client's own).
        retry: the :class:`RetryPolicy`; defaults to ``RetryPolicy()``.
        sleep: awaited between retries; defaults to ``asyncio.sleep``.
        clock: wall-clock seconds, for HTTP-date and epoch rate-limit headers; defaults to ``time.time``.
        rand: source of jitter in [0, 1); defaults to ``random.random``.
        monotonic: the clock :func:`request_deadline` deadlines are read with; defaults to ``time.monotonic``.
        throttle: awaited before every attempt, e.g. a token bucket shared by every process using one token.
            It may raise a :class:`~clients.errors.CloudAPIError` (the request is then not sent).
        on_rate_limited: awaited after every 429 with the seconds the API asked to wait (``Retry-After``,
            ``ratelimit-reset``), or the backoff when it did not say, whether or not the request is retried.
        on_quota: awaited after every other response that reports the token's quota (:func:`quota_left`).
    """

    def __init__(
        self,
        *,
        api: str,
        base_url: str,
        token: str,
        logger: logging.Logger,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        throttle: Throttle | None = None,
        on_rate_limited: RateLimitHook | None = None,
        on_quota: QuotaHook | None = None,
    ) -> None:
        if transport is not None and http_client is not None:
            raise ValueError(f"{api}: pass either transport or http_client, not both")
        self.api = api
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._token = token
        self._log = logger
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock = clock or time.time
        self._rand = rand or random.random
        self._monotonic = monotonic or time.monotonic
        self._throttle = throttle
        self._on_rate_limited = on_rate_limited
        self._on_quota = on_quota
        self._owns_client = http_client is None
        if http_client is None:
            self._timeout: httpx.Timeout | None = None
            self._client = httpx.AsyncClient(transport=transport, timeout=timeout or DEFAULT_TIMEOUT)
        else:
            self._timeout = timeout
            self._client = http_client

    def __repr__(self) -> str:
        return f"ApiHTTP(api={self.api!r}, base_url={self.base_url!r})"

    async def aclose(self) -> None:
        """Close the underlying client if this object created it."""
        if self._owns_client:
            await self._client.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:  # Settings refuses a missing token for real clouds; an empty one sends no header
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _scrub(self, text: str) -> str:
        if self._token:
            text = text.replace(self._token, _REDACTED)
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[:_MAX_MESSAGE_CHARS] + "…"
        return text

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        json: object = None,
    ) -> httpx.Response:
        """Send ``method`` to ``base_url + path`` and return the 2xx response, retrying where safe.

        POST and PATCH always carry a JSON body (``{}`` when ``json`` is None), since Coolify rejects an empty
        or non-JSON body. Raises a :class:`~clients.errors.CloudAPIError` subclass on any failure.
        """
        method = method.upper()
        url = self.base_url + path
        log_path = httpx.URL(url).path
        if json is None and method in ("POST", "PATCH", "PUT"):
            json = {}
        query = {k: _query_value(v) for k, v in (params or {}).items()}
        attempts = self.retry.max_attempts
        extra: dict[str, Any] = {}
        if json is not None:
            extra["json"] = json
        if self._timeout is not None:
            extra["timeout"] = self._timeout

        attempt = 1
        while True:
            if self._throttle is not None:
                await self._throttle()
            started = time.monotonic()
            response: httpx.Response | None = None
            cause: httpx.TransportError | None = None
            error: CloudAPIError
            retryable: bool
            try:
                response = await self._client.request(
                    method, url, params=query or None, headers=self._headers(), **extra
                )
            except httpx.TimeoutException as exc:
                error = APITimeoutError(self.api, self._scrub(_describe_exc(exc)), method=method, path=log_path)
                retryable = method in RETRYABLE_METHODS
                cause = exc
                self._log.info("%s %s -> %s (attempt %d)", method, log_path, type(exc).__name__, attempt)
            except httpx.TransportError as exc:
                error = APIConnectionError(self.api, self._scrub(_describe_exc(exc)), method=method, path=log_path)
                retryable = method in RETRYABLE_METHODS and isinstance(
                    exc, httpx.NetworkError | httpx.RemoteProtocolError
                )
                cause = exc
                self._log.info("%s %s -> %s (attempt %d)", method, log_path, type(exc).__name__, attempt)
            else:
                elapsed_ms = (time.monotonic() - started) * 1000
                request_id = response.headers.get("x-request-id")
                level = logging.DEBUG if response.is_success else logging.INFO
                self._log.log(
                    level,
                    "%s %s -> %d (request id %s, attempt %d, %.0f ms)",
                    method,
                    log_path,
                    response.status_code,
                    request_id or "-",
                    attempt,
                    elapsed_ms,
                )
                if self._on_quota is not None and response.status_code != 429:
                    quota = quota_left(response.headers, self._clock())
                    if quota is not None:
                        await self._on_quota(*quota)
                if response.is_success:
                    return response
                error = self._status_error(response, method, log_path)
                status = response.status_code
                retryable = status == 429 or (method in RETRYABLE_METHODS and 500 <= status <= 599 and status != 501)

            delay = self._next_wait(attempt, attempts, response) if retryable else None
            if response is not None and response.status_code == 429 and self._on_rate_limited is not None:
                await self._on_rate_limited(self._pause_after_429(response, attempt, delay))
            if delay is None:
                if cause is None:
                    raise error
                raise error from cause
            self._log.info("%s %s: retrying in %.2f s (attempt %d failed)", method, log_path, delay, attempt)
            await self._sleep(delay)
            attempt += 1

    async def send_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        json: object = None,
    ) -> Any:
        """Like :meth:`send`, returning the decoded JSON body (``None`` for an empty body such as a 204)."""
        response = await self.send(method, path, params=params, json=json)
        if not response.content.strip():
            return None
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise CloudAPIError(
                self.api,
                f"expected a JSON body, got {response.headers.get('content-type', 'no content type')}",
                method=method.upper(),
                path=response.request.url.path,
            ) from exc

    def parse(self, build: Callable[[JSONObject], T], data: object, what: str, method: str, path: str) -> T:
        """Turn one JSON object of a response into a record, or raise :class:`~clients.errors.CloudAPIError`.

        A missing object or a missing/mistyped field means the API (or the sandbox) broke its contract; the
        error names the record and the request, never the offending value.
        """
        where = {"method": method.upper(), "path": httpx.URL(self.base_url + path).path}
        if not isinstance(data, dict):
            raise CloudAPIError(self.api, f"expected a {what} object in the response", **where)
        try:
            return build(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CloudAPIError(self.api, f"unexpected shape of {what} in the response", **where) from exc

    def fail(self, message: str, method: str, path: str) -> CloudAPIError:
        """Build a :class:`~clients.errors.CloudAPIError` about a response that broke the API contract."""
        return CloudAPIError(self.api, message, method=method.upper(), path=httpx.URL(self.base_url + path).path)

    def _next_wait(self, failed_attempt: int, attempts: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before sending again, or None when the failure should reach the caller.

        A 429 inside a :func:`request_deadline` block waits as long as the API asked (however often) while the
        wait ends before the deadline. Anything else gets at most ``attempts`` tries with capped waits, and
        never a wait past the deadline.
        """
        hint: float | None = None
        if response is not None and response.status_code in (429, 503):
            hint = retry_delay_hint(response.headers, self._clock())
        backoff = self.retry.backoff(failed_attempt, self._rand())
        deadline = _DEADLINE.get()
        if deadline is not None and response is not None and response.status_code == 429:
            delay = max(0.0, hint if hint is not None else backoff)
            return delay if self._monotonic() + delay <= deadline else None
        if failed_attempt >= attempts:
            return None
        delay = min(max(0.0, hint if hint is not None else backoff), self.retry.max_delay_s)
        if deadline is not None and self._monotonic() + delay > deadline:
            return None
        return delay

    def _pause_after_429(self, response: httpx.Response, failed_attempt: int, delay: float | None) -> float:
        """How long a 429 says nobody using this token should send: the API's hint, else our own backoff."""
        hint = retry_delay_hint(response.headers, self._clock())
        if hint is not None:
            return hint
        return delay if delay is not None else self.retry.backoff(failed_attempt, self._rand())

    def _status_error(self, response: httpx.Response, method: str, path: str) -> APIStatusError:
        """Build the error for a non-2xx answer from DO's ``{id, message, request_id}`` or Coolify's body."""
        message: str | None = None
        error_id: str | None = None
        request_id: str | None = None
        errors: dict[str, tuple[str, ...]] = {}
        try:
            body = jsonlib.loads(response.content) if response.content.strip() else None
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            raw_message = body.get("message")
            if isinstance(raw_message, str):
                message = raw_message
            elif isinstance(raw_message, list):
                message = "; ".join(str(m) for m in raw_message)
            detail = body.get("error")  # Coolify: {"message": "Invalid request.", "error": "Empty JSON."}
            if isinstance(detail, str) and detail:
                message = f"{message} ({detail})" if message else detail
            if isinstance(body.get("id"), str):
                error_id = body["id"]
            if isinstance(body.get("request_id"), str):
                request_id = body["request_id"]
            errors = {
                self._scrub(k): tuple(self._scrub(m) for m in v) for k, v in _field_errors(body.get("errors")).items()
            }
        request_id = request_id or response.headers.get("x-request-id")
        text = self._scrub(message or response.reason_phrase or f"HTTP {response.status_code}")
        cls = status_error_class(response.status_code)
        common: dict[str, Any] = {
            "status_code": response.status_code,
            "error_id": error_id,
            "request_id": request_id,
            "errors": errors,
            "method": method,
            "path": path,
        }
        if cls is RateLimitedError:
            return RateLimitedError(
                self.api, text, retry_after=retry_delay_hint(response.headers, self._clock()), **common
            )
        return cls(self.api, text, **common)


def path_segment(value: str | int) -> str:
    """Percent-encode an id for use as one path segment, so a stray ``/`` or ``?`` cannot change the route."""
    return urllib.parse.quote(str(value), safe=":")


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _describe_exc(exc: httpx.HTTPError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class APIClient:
    """What both cloud clients share: one `ApiHTTP` under a versioned base URL, and `async with` support.

    Subclasses set `API` (the name in errors and logs), `VERSION_PATH` (appended to the base URL) and `LOG`.
    """

    API: ClassVar[str]
    VERSION_PATH: ClassVar[str]
    LOG: ClassVar[logging.Logger]

    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        throttle: Throttle | None = None,
        on_rate_limited: RateLimitHook | None = None,
        on_quota: QuotaHook | None = None,
    ) -> None:
        self._http = ApiHTTP(
            api=self.API,
            base_url=api_url.rstrip("/") + self.VERSION_PATH,
            token=token,
            logger=self.LOG,
            transport=transport,
            http_client=http_client,
            timeout=timeout,
            retry=retry,
            sleep=sleep,
            throttle=throttle,
            on_rate_limited=on_rate_limited,
            on_quota=on_quota,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._http.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it."""
        await self._http.aclose()
