"""How Coolify (a Laravel app) reads request bodies and words its errors.

Body checks answer 400 ``{"message": "Invalid request.", "error": ...}``; validation answers 422
``{"message": "Validation failed.", "errors": {field: [...]}}`` with Laravel's wording, including the strict
allow-list ("This field is not allowed."); unknown routes answer 404 ``{"message": "Not found.", ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.gate import allowed_methods

__all__ = [
    "Rule",
    "check",
    "http_error",
    "message",
    "optional_json",
    "post_only",
    "query_bool",
    "read_json",
    "truthy",
    "validation_failed",
]

_TRUE = (True, 1, "1", "true", "on", "yes")
_FALSE = (False, 0, "0", "false", "off", "no")


def message(status_code: int, text: str, /, **extra: Any) -> JSONResponse:
    """A Coolify error or status body: ``{"message": text, ...}``."""
    return JSONResponse({"message": text, **extra}, status_code)


def _invalid(error: str) -> JSONResponse:
    return message(400, "Invalid request.", error=error)


async def read_json(request: Request) -> dict[str, Any] | Response:
    """The JSON object body, or Coolify's 400 for a wrong Content-Type, invalid JSON or an empty object."""
    content_type = request.headers.get("content-type", "").lower()
    if "/json" not in content_type and "+json" not in content_type:
        return _invalid("Content-Type must be application/json.")
    try:
        data = json.loads(await request.body())
    except ValueError:
        return _invalid("Invalid JSON.")
    if not isinstance(data, dict):  # PHP's json_decode() is falsy for [], 0, "", null...
        return _invalid("Invalid JSON.")
    if not data:
        return _invalid("Empty JSON.")
    return data


async def optional_json(request: Request) -> dict[str, Any]:
    """The JSON object body when there is one, else ``{}`` (for routes that also read the query)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def truthy(value: object) -> bool | None:
    """Laravel's boolean reading: True, False, or None when the value is not a boolean."""
    if isinstance(value, str):
        value = value.lower()
    if isinstance(value, bool | int | str):
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    return None


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter (``true``/``1``/``false``/``0``)."""
    raw = request.query_params.get(name)
    parsed = truthy(raw) if raw is not None else None
    return default if parsed is None else parsed


@dataclass(frozen=True)
class Rule:
    """One Laravel validation rule set for a field."""

    type: str | None = None  # "string" | "boolean" | "integer" | "array"
    required: bool = False
    nullable: bool = False
    max: int | None = None
    regex: str | None = None
    choices: tuple[str, ...] | None = None


def _type_ok(kind: str, value: object) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return truthy(value) is not None and not isinstance(value, float)
    if kind == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value) is not None)
    if kind == "array":
        return isinstance(value, list | dict)
    return True


_TYPE_MESSAGES = {
    "string": "The {a} field must be a string.",
    "boolean": "The {a} field must be true or false.",
    "integer": "The {a} field must be an integer.",
    "array": "The {a} field must be an array.",
}


def check(
    data: Mapping[str, Any], rules: Mapping[str, Rule], *, allowed: Collection[str] | None
) -> dict[str, list[str]]:
    """Laravel-style validation errors (empty when valid); ``allowed`` is the strict allow-list."""
    errors: dict[str, list[str]] = {}
    for name, rule in rules.items():
        attribute = name.replace("_", " ")
        value = data.get(name)
        if value is None or value == "" or value == []:
            if rule.required:
                errors[name] = [f"The {attribute} field is required."]
                continue
            if name not in data or (value is None and rule.nullable):
                continue
        if rule.type and not _type_ok(rule.type, value):
            errors[name] = [_TYPE_MESSAGES[rule.type].format(a=attribute)]
            continue
        if rule.max is not None and isinstance(value, str) and len(value) > rule.max:
            errors[name] = [f"The {attribute} field must not be greater than {rule.max} characters."]
        elif rule.regex is not None and isinstance(value, str) and not re.search(rule.regex, value):
            errors[name] = [f"The {attribute} field format is invalid."]
        elif rule.choices is not None and value not in rule.choices:
            errors[name] = [f"The selected {attribute} is invalid."]
    if allowed is not None:
        for name in data:
            if name not in allowed:
                errors.setdefault(name, []).append("This field is not allowed.")
    return errors


def validation_failed(errors: Mapping[str, list[str] | str]) -> JSONResponse:
    """422 ``{"message": "Validation failed.", "errors": ...}``."""
    return message(422, "Validation failed.", errors=dict(errors))


async def post_only(request: Request) -> Response:
    """GET on a route that became POST-only in v4.2.0: 405 with ``Allow: POST``."""
    return JSONResponse({"message": "This endpoint has changed to a POST request."}, 405, headers={"Allow": "POST"})


async def http_error(request: Request, exc: Exception) -> Response:
    """Laravel's JSON for unknown routes (404) and wrong methods (405)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return message(404, "Not found.", docs="https://coolify.io/docs")
    if exc.status_code == 405:
        allow = allowed_methods(request)
        route = request.url.path.removeprefix(request.scope.get("root_path", "")).lstrip("/")
        text = f"The {request.method} method is not supported for route {route}. Supported methods: {allow}."
        return JSONResponse({"message": text}, 405, headers={"Allow": allow})
    return message(exc.status_code, exc.detail)
