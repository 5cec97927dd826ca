"""Simulated Coolify: application environment variables, with the real API's sharp edges.

- POST creates (409 if the key exists in that scope); unknown keys such as ``is_build_time`` give 422.
- PATCH finds the row by ``key`` (+ ``is_preview``), never upserts (404), answers 201 with the row, and
  resets ``is_literal``/``is_multiline``/``is_shown_once`` to false when omitted while ``is_runtime``,
  ``is_buildtime`` and ``comment`` change only when sent.
- PATCH ``/envs/bulk`` upserts item by item without a transaction (an invalid item N leaves 1..N-1 saved)
  and silently drops unknown item keys.
- DELETE works by env uuid only.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.laravel import Rule, check, message, read_json, truthy
from sandbox.laravel import validation_failed as failed
from sandbox.state import EnvVar, World, isoformat

__all__ = ["CoolifyEnvsAPI"]

API = "/api/v1"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_FIELDS = (
    "key",
    "value",
    "is_preview",
    "is_literal",
    "is_multiline",
    "is_shown_once",
    "is_runtime",
    "is_buildtime",
    "comment",
)
_RULES = {
    "key": Rule("string", required=True),
    "value": Rule("string", nullable=True),
    "is_preview": Rule("boolean"),
    "is_literal": Rule("boolean"),
    "is_multiline": Rule("boolean"),
    "is_shown_once": Rule("boolean"),
    "is_runtime": Rule("boolean"),
    "is_buildtime": Rule("boolean"),
    "comment": Rule("string", nullable=True, max=256),
}
_RESET_WHEN_OMITTED = ("is_literal", "is_multiline", "is_shown_once")
_KEPT_WHEN_OMITTED = ("is_runtime", "is_buildtime")


def _validate(item: dict[str, Any], *, strict: bool) -> dict[str, list[str]]:
    """Validation errors of one env body (the key is trimmed in place first)."""
    if isinstance(item.get("key"), str):
        item["key"] = item["key"].strip()
    errors = check(item, _RULES, allowed=_FIELDS if strict else None)
    key = item.get("key")
    if "key" not in errors and isinstance(key, str) and (len(key) > 255 or not _KEY.match(key)):
        errors["key"] = ["The key field format is invalid."]
    return errors


class CoolifyEnvsAPI:
    """Route handlers for ``/applications/{uuid}/envs...``, bound to one world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def routes(self) -> list[Route]:
        """The routes served, with paths relative to the ``/sandbox/coolify`` mount."""
        base = f"{API}/applications/{{uuid}}/envs"
        return [
            Route(base, self.list_envs, methods=["GET"]),
            Route(base, self.create_env, methods=["POST"]),
            Route(base, self.update_env, methods=["PATCH"]),
            Route(f"{base}/bulk", self.bulk_update, methods=["PATCH"]),
            Route(f"{base}/{{env_uuid}}", self.delete_env, methods=["DELETE"]),
        ]

    def _env_json(self, env: EnvVar) -> dict[str, Any]:
        body: dict[str, Any] = {
            "uuid": env.uuid,
            "key": env.key,
            "value": env.value,
            "real_value": env.value,
            "is_preview": env.is_preview,
            "is_literal": env.is_literal,
            "is_multiline": env.is_multiline,
            "is_shown_once": env.is_shown_once,
            "is_runtime": env.is_runtime,
            "is_buildtime": env.is_buildtime,
            "is_shared": False,
            "comment": env.comment,
            "version": self.world.config.coolify_version,
            "created_at": isoformat(env.created_at, micro=True),
            "updated_at": isoformat(env.updated_at, micro=True),
        }
        if env.is_shown_once:  # hidden even from a read:sensitive token
            del body["value"], body["real_value"]
        return body

    def _update(self, env: EnvVar, item: dict[str, Any]) -> None:
        """PATCH semantics: the value and three flags are always written, the rest only when sent."""
        env.value = item.get("value")
        for flag in _RESET_WHEN_OMITTED:
            setattr(env, flag, bool(truthy(item.get(flag, False))))
        for flag in _KEPT_WHEN_OMITTED:
            if flag in item:
                setattr(env, flag, bool(truthy(item[flag])))
        if "comment" in item:
            env.comment = item["comment"]
        env.updated_at = self.world.now()

    def _create(self, app_uuid: str, item: dict[str, Any]) -> EnvVar:
        flags: dict[str, object] = {f: bool(truthy(item[f])) for f in _FIELDS[2:8] if f in item}
        flags["is_preview"] = bool(truthy(item.get("is_preview", False)))
        if "comment" in item:
            flags["comment"] = item["comment"]
        return self.world.add_env(app_uuid, item["key"], item.get("value"), **flags)

    async def _app_and_body(self, request: Request) -> tuple[str, dict[str, Any]] | Response:
        """The application uuid and the JSON body of a write, or the 404/400 Coolify answers instead."""
        uuid = request.path_params["uuid"]
        if uuid not in self.world.applications:
            return message(404, "Application not found.")
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        return uuid, body

    async def list_envs(self, request: Request) -> Response:
        """GET /applications/{uuid}/envs: production rows first, then preview rows."""
        uuid = request.path_params["uuid"]
        if uuid not in self.world.applications:
            return message(404, "Application not found.")
        return JSONResponse([self._env_json(e) for e in self.world.app_envs(uuid)])

    async def create_env(self, request: Request) -> Response:
        """POST /applications/{uuid}/envs: 201 ``{uuid}``; 409 when the key already exists."""
        found = await self._app_and_body(request)
        if isinstance(found, Response):
            return found
        uuid, body = found
        errors = _validate(body, strict=True)
        if errors:
            return failed(errors)
        is_preview = bool(truthy(body.get("is_preview", False)))
        if self.world.find_env(uuid, body["key"], is_preview) is not None:
            return message(409, "Environment variable already exists. Use PATCH request to update it.")
        env = self._create(uuid, body)
        return JSONResponse({"uuid": env.uuid}, 201)

    async def update_env(self, request: Request) -> Response:
        """PATCH /applications/{uuid}/envs: the row is found by key; 201 with the row; 404 if absent."""
        found = await self._app_and_body(request)
        if isinstance(found, Response):
            return found
        uuid, body = found
        errors = _validate(body, strict=True)
        if errors:
            return failed(errors)
        env = self.world.find_env(uuid, body["key"], bool(truthy(body.get("is_preview", False))))
        if env is None:
            return message(404, "Environment variable not found.")
        self._update(env, body)
        return JSONResponse(self._env_json(env), 201)

    async def bulk_update(self, request: Request) -> Response:
        """PATCH /applications/{uuid}/envs/bulk: ordered upserts, no transaction; 201 with the rows."""
        found = await self._app_and_body(request)
        if isinstance(found, Response):
            return found
        uuid, body = found
        data = body.get("data")
        if not data or not isinstance(data, list):
            return message(400, "Bulk data is required.")
        saved: list[EnvVar] = []
        for raw in data:
            if not isinstance(raw, dict):
                return failed({"data": ["Each item must be an object."]})
            item = {k: v for k, v in raw.items() if k in _FIELDS}  # unknown item keys are dropped silently
            errors = _validate(item, strict=False)
            if errors:
                return failed(errors)  # the items before this one stay saved
            env = self.world.find_env(uuid, item["key"], bool(truthy(item.get("is_preview", False))))
            if env is None:
                env = self._create(uuid, item)
            else:
                self._update(env, item)
            saved.append(env)
        return JSONResponse([self._env_json(e) for e in saved], 201)

    async def delete_env(self, request: Request) -> Response:
        """DELETE /applications/{uuid}/envs/{env_uuid}: by uuid only."""
        uuid, env_uuid = request.path_params["uuid"], request.path_params["env_uuid"]
        if uuid not in self.world.applications:
            return message(404, "Application not found.")
        env = next((e for e in self.world.envs if e.app_uuid == uuid and e.uuid == env_uuid), None)
        if env is None:
            return message(404, "Environment variable not found.")
        self.world.envs.remove(env)
        return message(200, "Environment variable deleted.")
