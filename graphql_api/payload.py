"""What a request may look like before GraphQL sees it: strict JSON, bounded shapes, clean strings.

Every HTTP body and every websocket message passes `decode_json()`: valid UTF-8, JSON without NaN or
Infinity, nested at most `MAX_DEPTH` levels, no list longer than `MAX_LIST_ITEMS`, and no string (key or value)
holding NUL or a lone surrogate (PostgreSQL, Redis and Coolify all choke on those, and a log line would too).
These checks run before graphql-core coerces variables, so a 200,000-item list costs a linear scan of an
already size-capped body instead of seconds of coercion. The envelope checks (`check_http_envelope`,
`transport_ws_problem`, `graphql_ws_problem`) then say what a GraphQL request or a websocket message must
hold; every problem is a short reason that never repeats the input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

#: Deepest JSON accepted (the schema's deepest input is a few levels; variables add two).
MAX_DEPTH = 32
#: Longest JSON list accepted anywhere in a request. Every list argument of the schema is capped lower
#: (`bulkSetEnv` at 200), and the resolvers say so precisely; this bound keeps coercion cheap before them.
MAX_LIST_ITEMS = 256
#: Longest websocket operation id.
MAX_OPERATION_ID = 128
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class PayloadError(ValueError):
    """A request that is not acceptable JSON or not the expected shape; `reason` is safe to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> float:
    raise PayloadError(f"JSON {name} is not accepted")


def _check_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError("a JSON number is out of range")
    return value


def has_bad_character(text: str) -> bool:
    """Whether a string holds NUL or a lone surrogate."""
    return _BAD_CHARACTER.search(text) is not None


def check_value(value: object, *, depth: int = 0) -> None:
    """Raise `PayloadError` for a too deep or too long structure or a string with NUL or a lone surrogate."""
    if depth > MAX_DEPTH:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels is not accepted")
    if isinstance(value, str):
        if has_bad_character(value):
            raise PayloadError("strings must not contain NUL characters or lone surrogates")
    elif isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise PayloadError(f"lists of more than {MAX_LIST_ITEMS} items are not accepted")
        for item in value:
            check_value(item, depth=depth + 1)
    elif isinstance(value, dict):
        if len(value) > MAX_LIST_ITEMS:
            raise PayloadError(f"objects of more than {MAX_LIST_ITEMS} members are not accepted")
        for key, item in value.items():
            if has_bad_character(key):
                raise PayloadError("strings must not contain NUL characters or lone surrogates")
            check_value(item, depth=depth + 1)


def decode_json(data: str | bytes) -> Any:
    """Parse JSON strictly (see the module docstring); raises `PayloadError`."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("the body is not valid UTF-8") from None
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_check_float)
    except RecursionError:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels is not accepted") from None
    except PayloadError:
        raise
    except ValueError:
        raise PayloadError("the body is not valid JSON") from None
    check_value(value)
    return value


def check_http_envelope(data: object) -> None:
    """A GraphQL-over-HTTP request: an object with a string `query`, object `variables` and so on."""
    if not isinstance(data, dict):
        raise PayloadError('the body must be a JSON object such as {"query": "{ dropletCount { limit } }"}')
    _check_operation_fields(data)


def _check_operation_fields(data: Mapping[str, Any]) -> None:
    if not isinstance(data.get("query"), str) or not data["query"].strip():
        raise PayloadError("`query` must be a non-empty string")
    if not isinstance(data.get("variables"), dict | None):
        raise PayloadError("`variables` must be an object or null")
    if not isinstance(data.get("operationName"), str | None):
        raise PayloadError("`operationName` must be a string or null")
    if not isinstance(data.get("extensions"), dict | None):
        raise PayloadError("`extensions` must be an object or null")


def _check_id(message: Mapping[str, Any]) -> None:
    op_id = message.get("id")
    if not isinstance(op_id, str) or not op_id or len(op_id) > MAX_OPERATION_ID:
        raise PayloadError(f"`id` must be a string of 1 to {MAX_OPERATION_ID} characters")


def _check_optional_object(message: Mapping[str, Any], field: str) -> None:
    if not isinstance(message.get(field), dict | None):
        raise PayloadError(f"`{field}` must be an object or null")


def _check_operation_payload(message: Mapping[str, Any]) -> None:
    payload = message.get("payload")
    if not isinstance(payload, dict):
        raise PayloadError("`payload` must be an object with a `query`")
    _check_operation_fields(payload)


def transport_ws_problem(message: object) -> str | None:
    """Why a `graphql-transport-ws` client message is malformed, or None."""
    try:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise PayloadError("a message must be a JSON object with a string `type`")
        kind = message["type"]
        if kind in ("connection_init", "ping", "pong"):
            _check_optional_object(message, "payload")
        elif kind == "subscribe":
            _check_id(message)
            _check_operation_payload(message)
        elif kind == "complete":
            _check_id(message)
        else:
            raise PayloadError("unknown message type")
    except PayloadError as exc:
        return exc.reason
    return None


def graphql_ws_problem(message: object) -> str | None:
    """Why a legacy `graphql-ws` (subscriptions-transport-ws) client message is malformed, or None."""
    try:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise PayloadError("a message must be a JSON object with a string `type`")
        kind = message["type"]
        if kind == "connection_init":
            _check_optional_object(message, "payload")
        elif kind == "connection_terminate":
            pass
        elif kind == "start":
            _check_id(message)
            _check_operation_payload(message)
        elif kind == "stop":
            _check_id(message)
        else:
            raise PayloadError("unknown message type")
    except PayloadError as exc:
        return exc.reason
    return None
