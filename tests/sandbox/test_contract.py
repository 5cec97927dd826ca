"""Contract tests: every route the sandbox serves, and every body it sends or accepts, matches the specs.

The specs live outside the repo (``<repo>/../shared/specs``, or ``$DEPLOYER_SPECS_DIR``); the tests skip when
they are absent. Where the real code differs from the spec, ``DEVIATIONS`` lists the documented exceptions
(with the research reference); the sandbox follows the code there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from starlette.routing import Mount, Route

from sandbox import ManualClock, World, create_app
from sandbox.gate import ApiGate
from sandbox.state import DEFAULT_COOLIFY_PUBLIC_KEY
from tests.loud import loud_skip

RESEARCH = "shared/research/coolify-api.md"


@dataclass(frozen=True)
class Deviation:
    """A documented difference between the spec and the real code, which the sandbox follows."""

    key: str
    ref: str
    what: str


DEVIATIONS = {
    d.key: d
    for d in (
        Deviation(
            "deployments-by-app-shape",
            f"{RESEARCH} §6, §8",
            "GET /deployments/applications/{uuid} returns {count, deployments}; the spec says Array<Application>",
        ),
        Deviation(
            "app-create-environment",
            f"{RESEARCH} §4, §8",
            "app create needs one of environment_name/environment_uuid; the spec requires both",
        ),
        Deviation(
            "env-extra-flags",
            f"{RESEARCH} §7, §8",
            "env POST/PATCH/bulk accept is_runtime, is_buildtime and comment, which the spec does not list",
        ),
        Deviation(
            "app-delete-message",
            f"{RESEARCH} §5, §8",
            'DELETE /applications/{uuid} says "Application deletion request queued.", not "Application deleted."',
        ),
        Deviation(
            "too-many-attempts",
            f"{RESEARCH} §1, §8",
            'Laravel\'s 429 body is "Too Many Attempts."; operations do not list 429 (checked against '
            "components.responses.429)",
        ),
        Deviation(
            "post-only-405",
            f"{RESEARCH} §1, §1a, §9.1",
            "GET on /deploy, start/stop/restart and /servers/{uuid}/validate answers 405 "
            "(POST-only since v4.2.0); "
            "the spec has no GET there",
        ),
        Deviation(
            "undocumented-status",
            f"{RESEARCH} §1",
            "the code answers 422 (validation, strict allow-list), 409 (env exists) and 400 where "
            "the operation "
            "does not list them; checked against components.responses.<status> or {message: string}",
        ),
        Deviation(
            "validation-logs-null",
            f"{RESEARCH} §3",
            "Server.validation_logs is null until a validation fails (ready = logs null); the spec types it string",
        ),
        Deviation(
            "nullable-columns",
            f"{RESEARCH} §3, §6 (optional server description; deployment commit_message)",
            "nullable database columns come back null (Server.description when not sent, "
            "ApplicationDeploymentQueue.commit_message for API deployments); the spec types them string",
        ),
        Deviation(
            "dockerimage-build-pack",
            f"{RESEARCH} §5 (dockerimage: no git)",
            'the code stores build_pack "dockerimage" for /applications/dockerimage apps; the spec enum lacks it',
        ),
        Deviation(
            "api-health-outside-v1",
            f"{RESEARCH} §1 (probes)",
            "GET /api/health (outside /api/v1, so outside the spec's server URL) returns plain OK",
        ),
        Deviation(
            "errors-single-string",
            f"{RESEARCH} §1, §8",
            "some 422s give errors[field] as one string, not a list (e.g. domains with the dockercompose build pack)",
        ),
        Deviation(
            "deploy-json-body",
            f"{RESEARCH} §6",
            "POST /deploy also reads uuid/force from a JSON body; the spec documents only query parameters",
        ),
    )
}

_GENERIC_MESSAGE = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
_NULLABLE_IN_CODE = {
    "validation_logs": "validation-logs-null",
    "description": "nullable-columns",
    "commit_message": "nullable-columns",
}
_DEPLOYMENTS_BY_APP = {
    "type": "object",
    "required": ["count", "deployments"],
    "properties": {
        "count": {"type": "integer"},
        "deployments": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/ApplicationDeploymentQueue"},
        },
    },
}


def _specs_dir() -> Path:
    """``$DEPLOYER_SPECS_DIR``, else ``../shared/specs`` from the repo root (``../../shared`` from a worktree)."""
    env = os.environ.get("DEPLOYER_SPECS_DIR")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[2]
    candidates = [root.parent / "shared" / "specs", root.parent.parent / "shared" / "specs"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _nullable_to_json_schema(node: Any) -> Any:
    """OpenAPI ``nullable: true`` -> ``anyOf [schema, null]``, everywhere in the document."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


class ApiSpec:
    """One OpenAPI document, ready to validate the sandbox's exchanges for one API."""

    def __init__(self, name: str, document: dict[str, Any], prefix: str, validator: type[Any]) -> None:
        self.name = name
        self.prefix = prefix
        self.doc: dict[str, Any] = _nullable_to_json_schema(document)
        self.validator = validator
        patterns = []
        for template in self.doc["paths"]:
            parts = ("[^/]+" if seg.startswith("{") else re.escape(seg) for seg in template.split("/"))
            patterns.append((re.compile("^" + "/".join(parts) + "$"), template))
        self.patterns = sorted(patterns, key=lambda p: p[1].count("{"))  # literal segments win

    def template(self, path: str) -> str | None:
        """The spec path template matching a concrete path (relative to the API prefix)."""
        return next((t for pattern, t in self.patterns if pattern.match(path)), None)

    def operation(self, method: str, template: str | None) -> dict[str, Any] | None:
        """The operation object, or None when the spec lacks that path or method."""
        if template is None:
            return None
        op: dict[str, Any] | None = self.doc["paths"][template].get(method.lower())
        return op

    def deref(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow an internal ``$ref`` chain."""
        while "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        """Schema violations of ``instance`` (internal refs resolve against the whole document)."""
        wrapper = {"allOf": [schema], "components": self.doc["components"]}
        checker = self.validator(wrapper, format_checker=jsonschema.FormatChecker())
        found = []
        for top in checker.iter_errors(instance):
            error = jsonschema.exceptions.best_match([top]) if top.context else top
            while error.context:
                error = jsonschema.exceptions.best_match(error.context)
            where = "/".join(str(p) for p in error.absolute_path)
            found.append(f"{where or '<root>'}: {error.message[:300]}")
        return found


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    """The shared specs folder, or a skip when it is absent."""
    folder = _specs_dir()
    if not (folder / "digitalocean-openapi.yaml").is_file() or not (folder / "coolify-openapi.json").is_file():
        loud_skip(f"contract tests: the OpenAPI specs are not in {folder} (set DEPLOYER_SPECS_DIR)")
    return folder


@pytest.fixture(scope="session")
def do_spec(specs_dir: Path) -> ApiSpec:
    """The DigitalOcean spec (3 MB of YAML, loaded once per session)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (specs_dir / "digitalocean-openapi.yaml").open(encoding="utf-8") as fh:
        document = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    return ApiSpec("digitalocean", document, "/sandbox/digitalocean", jsonschema.Draft4Validator)


@pytest.fixture(scope="session")
def coolify_spec(specs_dir: Path) -> ApiSpec:
    """The Coolify spec (OpenAPI 3.1: schemas are JSON Schema 2020-12)."""
    document = json.loads((specs_dir / "coolify-openapi.json").read_text(encoding="utf-8"))
    return ApiSpec("coolify", document, "/sandbox/coolify/api/v1", jsonschema.Draft202012Validator)


class ContractClient:
    """Sends requests through the sandbox and checks each one against the spec, recording problems."""

    def __init__(self, client: httpx.AsyncClient, specs: list[ApiSpec]) -> None:
        self.client = client
        self.specs = specs
        self.problems: list[str] = []
        self.hits: set[tuple[str, str, str]] = set()
        self.deviations: set[str] = set()

    def _spec(self, path: str) -> tuple[ApiSpec, str] | None:
        for spec in self.specs:
            if path.startswith(spec.prefix):
                return spec, path.removeprefix(spec.prefix)
        return None

    def _note(self, deviation: str) -> None:
        assert deviation in DEVIATIONS, deviation
        self.deviations.add(deviation)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        check_request: bool = True,
        deviation: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; check the request body and the response against the spec."""
        response = await self.client.request(method, path, json=json_body, **kwargs)
        if path.startswith("/sandbox/_control"):  # the sandbox's own API: no spec
            return response
        found = self._spec(path.split("?")[0])
        if found is None:  # outside both spec prefixes: must be a documented deviation
            assert deviation is not None, f"{method} {path} is outside the specs"
            self._note(deviation)
            self.hits.add(("coolify", method, path.removeprefix("/sandbox/coolify")))
            return response
        spec, rel = found
        template = spec.template(rel)
        label = f"{spec.name} {method} {template or rel} -> {response.status_code}"
        self.hits.add((spec.name, method, template or rel))
        op = spec.operation(method, template)
        if op is None:
            if deviation is None:
                self.problems.append(f"{label}: not in the spec")
            else:
                self._note(deviation)
            return response
        if deviation is not None:
            self._note(deviation)
        if check_request and json_body is not None:
            self._check_request(spec, op, json_body, label, deviation)
        self._check_response(spec, op, response, label, deviation)
        return response

    def _check_request(self, spec: ApiSpec, op: dict[str, Any], body: Any, label: str, deviation: str | None) -> None:
        if "requestBody" not in op:
            if deviation != "deploy-json-body":
                self.problems.append(f"{label}: sent a body the spec does not document")
            return
        schema = dict(spec.deref(op["requestBody"])["content"]["application/json"]["schema"])
        if deviation == "app-create-environment":
            schema["required"] = [r for r in schema.get("required", []) if not r.startswith("environment_")]
        self.problems += [f"{label}: request {e}" for e in spec.errors(schema, body)]

    def _check_response(
        self, spec: ApiSpec, op: dict[str, Any], response: httpx.Response, label: str, deviation: str | None
    ) -> None:
        status = str(response.status_code)
        documented = op["responses"].get(status) or op["responses"].get("default")
        schema: dict[str, Any] | None = None
        if documented is None and spec.name == "coolify":
            self._note("too-many-attempts" if status == "429" else "undocumented-status")
            fallback = spec.doc["components"]["responses"].get(status)
            schema = spec.deref(fallback)["content"]["application/json"]["schema"] if fallback else _GENERIC_MESSAGE
        elif documented is None:
            self.problems.append(f"{label}: status not in the spec")
            return
        else:
            content = spec.deref(documented).get("content")
            if not content:
                if response.content:
                    self.problems.append(f"{label}: the spec documents no body, got {response.content[:80]!r}")
                return
            media = next(iter(content))
            if media != "application/json":
                if not response.headers.get("content-type", "").startswith(media):
                    self.problems.append(f"{label}: content-type {response.headers.get('content-type')} != {media}")
                return
            schema = _DEPLOYMENTS_BY_APP if deviation == "deployments-by-app-shape" else content[media].get("schema")
        if not response.headers.get("content-type", "").startswith("application/json"):
            self.problems.append(f"{label}: not JSON ({response.headers.get('content-type')})")
            return
        body = response.json()
        if spec.name == "coolify" and status == "422" and isinstance(body.get("errors"), dict):
            single = {k: [v] for k, v in body["errors"].items() if isinstance(v, str)}
            if single:
                self._note("errors-single-string")
                body["errors"].update(single)
        if schema is not None:
            self.problems += [f"{label}: response {e}" for e in spec.errors(schema, self._tolerate(spec, body))]

    def _tolerate(self, spec: ApiSpec, body: Any) -> Any:
        """Apply the documented field-level deviations before validation."""
        if spec.name != "coolify":
            return body
        items = body if isinstance(body, list) else [body]
        if isinstance(body, dict) and isinstance(body.get("deployments"), list):
            items += body["deployments"]
        for item in items:
            if not isinstance(item, dict):
                continue
            for name, reason in _NULLABLE_IN_CODE.items():
                if name in item and item[name] is None:
                    self._note(reason)
                    item.pop(name)
            if item.get("build_pack") == "dockerimage":
                self._note("dockerimage-build-pack")
                item.pop("build_pack")
        return body


def _served_routes(app: Any) -> Iterator[tuple[str, str, str]]:
    """(api, method, path template relative to the spec prefix) for every route the sandbox serves."""
    prefixes = {"/sandbox/digitalocean": ("digitalocean", ""), "/sandbox/coolify": ("coolify", "/api/v1")}
    for mount in app.routes:
        assert isinstance(mount, Mount)
        if mount.path not in prefixes:
            continue
        api, strip = prefixes[mount.path]
        gate = mount.app
        assert isinstance(gate, ApiGate)
        for route in gate.app.routes:  # type: ignore[attr-defined]
            assert isinstance(route, Route)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                path = route.path.removeprefix(strip) if route.path.startswith(strip + "/") else route.path
                yield api, method, path


def _shape(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", template)


async def _scenario(api: ContractClient, clock: ManualClock) -> None:
    """A realistic run through every served route: keys, droplets, server, apps, envs, deployments."""
    do, co = "/sandbox/digitalocean/v2", "/sandbox/coolify/api/v1"
    call = api.call

    # ---- DigitalOcean
    await call("GET", f"{do}/account")
    key = await call("POST", f"{do}/account/keys", json_body={"name": "c", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
    fingerprint, key_id = key.json()["ssh_key"]["fingerprint"], key.json()["ssh_key"]["id"]
    await call("POST", f"{do}/account/keys", json_body={"name": "c", "public_key": DEFAULT_COOLIFY_PUBLIC_KEY})
    await call("GET", f"{do}/account/keys?per_page=1")
    await call("GET", f"{do}/account/keys/{fingerprint}")
    await call("PUT", f"{do}/account/keys/{key_id}", json_body={"name": "coolify"})
    droplet_ids, action_ids = [], []
    for n in range(3):
        body = {
            "name": f"eliza-{n}",
            "region": "nyc3",
            "size": "s-1vcpu-1gb",
            "image": "ubuntu-24-04-x64",
            "ssh_keys": [fingerprint],
            "tags": ["eliza", f"orch-{n}"],
            "user_data": "#cloud-config\n",
        }
        created = (await call("POST", f"{do}/droplets", json_body=body)).json()
        droplet_ids.append(created["droplet"]["id"])
        action_ids.append(created["links"]["actions"][0]["id"])
    await call("GET", f"{do}/actions/{action_ids[0]}")
    bad = {"name": "bad_name", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"}
    await call("POST", f"{do}/droplets", json_body=bad, check_request=False)
    for refused in ({"region": "mars1"}, {"region": "nyc2"}, {"region": "syd1", "size": "c-2"}, {"image": "win-11"}):
        await call("POST", f"{do}/droplets", json_body={**body, "name": "refused", **refused})
    # ---- catalog
    await call("GET", f"{do}/regions")
    await call("GET", f"{do}/regions?per_page=3&page=2")
    await call("GET", f"{do}/sizes?per_page=200")
    await call("GET", f"{do}/images/ubuntu-24-04-x64")
    docker_image = (await call("GET", f"{do}/images/docker-20-04")).json()["image"]["id"]
    await call("GET", f"{do}/images/{docker_image}")
    await call("GET", f"{do}/images/windows-11")
    # ---- tags: the doctor's write probe (an empty name) and a real create
    await call("POST", f"{do}/tags", json_body={"name": "deployer"})
    await call("POST", f"{do}/tags", json_body={"name": ""}, check_request=False)
    # ---- an uncertain create: carried out, answered 500
    await call("POST", "/sandbox/_control/faults", json_body={"spec": "response_lost:1@POST:/v2/droplets$"})
    await call("POST", f"{do}/droplets", json_body={**body, "name": "lost", "image": docker_image, "tags": ["lost"]})
    await call("GET", f"{do}/droplets?tag_name=eliza&per_page=2&page=2")
    await call("GET", f"{do}/droplets?name=ELIZA-1")
    await call("GET", f"{do}/droplets/{droplet_ids[0]}")
    clock.advance(10)
    droplet = (await call("GET", f"{do}/droplets/{droplet_ids[0]}")).json()["droplet"]
    ip = next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public")
    await call("GET", f"{do}/actions/{action_ids[0]}")
    await call("GET", f"{do}/actions/1")
    await call("DELETE", f"{do}/droplets/{droplet_ids[2]}")
    await call("GET", f"{do}/droplets/{droplet_ids[2]}")
    await call("DELETE", f"{do}/droplets?tag_name=orch-1")
    await call("GET", f"{do}/droplets", headers={"Authorization": ""})

    # ---- Coolify: probes, keys, projects
    await call("GET", f"{co}/health", headers={"Authorization": ""})
    await call("GET", "/sandbox/coolify/api/health", deviation="api-health-outside-v1")
    await call("GET", f"{co}/version")
    await call("GET", f"{co}/security/keys")
    await call("GET", f"{co}/security/keys/sandbox-private-key")
    await call("GET", f"{co}/projects")
    await call("GET", f"{co}/projects/sandbox-project")

    # ---- servers
    server_body = {
        "name": "eliza-0",
        "ip": ip,
        "private_key_uuid": "sandbox-private-key",
        "port": 22,
        "user": "root",
    }
    server = (await call("POST", f"{co}/servers", json_body=server_body)).json()["uuid"]
    await call("POST", f"{co}/servers", json_body={**server_body, "bogus": 1}, check_request=False)
    await call("GET", f"{co}/servers")
    await call("GET", f"{co}/servers/{server}")
    await call("GET", f"{co}/servers/{server}/validate", deviation="post-only-405")
    await call("POST", f"{co}/servers/{server}/validate", json_body={"install": True})
    clock.advance(0.5)
    await call("GET", f"{co}/servers/{server}")  # installing Docker: is_validating true
    await call("POST", f"{co}/servers/{server}/validate", json_body={"install": True})  # overlapping: still 201
    clock.advance(5)
    await call("GET", f"{co}/servers/{server}")
    early = (await call("POST", f"{co}/servers", json_body={**server_body, "ip": "198.18.200.1"})).json()["uuid"]
    await call("POST", f"{co}/servers/{early}/validate", json_body={"install": False})
    clock.advance(1)
    await call("GET", f"{co}/servers/{early}")  # unreachable: validation_logs set

    # ---- applications
    common = {"project_uuid": "sandbox-project", "environment_name": "production", "server_uuid": server}
    public = {
        **common,
        "name": "web",
        "git_repository": "https://github.com/coollabsio/coolify-examples",
        "git_branch": "main",
        "build_pack": "nixpacks",
        "ports_exposes": "3000",
        "instant_deploy": False,
    }
    public["base_directory"] = "/apps/web"
    app = await call("POST", f"{co}/applications/public", json_body=public, deviation="app-create-environment")
    app_uuid = app.json()["uuid"]
    compose = {**public, "name": "compose", "build_pack": "dockercompose", "domains": "https://c.example.com"}
    await call("POST", f"{co}/applications/public", json_body=compose, deviation="app-create-environment")
    image = {
        **common,
        "name": "img",
        "docker_registry_image_name": "nginx",
        "docker_registry_image_tag": "1.27",
    }
    image_uuid = (
        await call("POST", f"{co}/applications/dockerimage", json_body=image, deviation="app-create-environment")
    ).json()["uuid"]
    no_env = {k: v for k, v in public.items() if k != "environment_name"}
    await call("POST", f"{co}/applications/public", json_body=no_env, check_request=False)
    await call("GET", f"{co}/applications")
    await call("GET", f"{co}/applications/{app_uuid}")
    await call("GET", f"{co}/applications/{image_uuid}")

    # ---- envs
    envs = f"{co}/applications/{app_uuid}/envs"
    full = {
        "key": "API_URL",
        "value": "https://x",
        "is_preview": False,
        "is_literal": False,
        "is_multiline": False,
    }
    full |= {"is_shown_once": False, "is_runtime": True, "is_buildtime": True, "comment": None}
    env_uuid = (await call("POST", envs, json_body=full, deviation="env-extra-flags")).json()["uuid"]
    await call("POST", envs, json_body=full, deviation="env-extra-flags")
    await call("PATCH", envs, json_body={**full, "value": "https://y"}, deviation="env-extra-flags")
    bulk = {"data": [{**full, "key": "A", "value": "1"}, {**full, "key": "B", "value": "2"}]}
    await call("PATCH", f"{envs}/bulk", json_body=bulk, deviation="env-extra-flags")
    await call("GET", envs)
    await call("DELETE", f"{envs}/{env_uuid}")

    # ---- deploy, lifecycle, deployments
    deploy = await call(
        "POST", f"{co}/deploy", json_body={"uuid": app_uuid, "force": False}, deviation="deploy-json-body"
    )
    deployment = deploy.json()["deployments"][0]["deployment_uuid"]
    await call("POST", f"{co}/deploy?uuid={app_uuid}")  # deduplicated
    await call("GET", f"{co}/deploy?uuid={app_uuid}", deviation="post-only-405")
    await call("GET", f"{co}/deployments")
    await call("GET", f"{co}/deployments/{deployment}")
    await call("POST", f"{co}/applications/{app_uuid}/restart")  # deduplicated: no deployment_uuid
    await call("GET", f"{co}/deployments/applications/{app_uuid}?skip=0&take=5", deviation="deployments-by-app-shape")
    clock.advance(3)
    await call("GET", f"{co}/deployments/{deployment}")  # in progress, with part of its logs
    clock.advance(30)
    await call("GET", f"{co}/deployments/{deployment}")
    await call("POST", "/sandbox/_control/faults", json_body={"spec": "build_fails:1"})
    failing = (await call("POST", f"{co}/deploy?uuid={app_uuid}&force=true")).json()["deployments"][0]
    clock.advance(30)
    await call("GET", f"{co}/deployments/{failing['deployment_uuid']}")
    await call("POST", f"{co}/applications/{app_uuid}/restart")
    await call("GET", f"{co}/applications/{app_uuid}/restart", deviation="post-only-405")
    await call("POST", f"{co}/applications/{app_uuid}/stop")
    await call("GET", f"{co}/applications/{app_uuid}/stop", deviation="post-only-405")
    started = await call("POST", f"{co}/applications/{image_uuid}/start?force=true")
    await call("GET", f"{co}/applications/{image_uuid}/start", deviation="post-only-405")
    await call("POST", f"{co}/deployments/{started.json()['deployment_uuid']}/cancel")
    await call("GET", f"{co}/deployments/unknown-deployment")

    # ---- rate limit, teardown
    await call("POST", "/sandbox/_control/faults", json_body={"spec": "rate_limit=7:1@GET:/applications$"})
    await call("GET", f"{co}/applications")
    await call("DELETE", f"{co}/applications/{image_uuid}", deviation="app-delete-message")
    await call("DELETE", f"{co}/servers/{server}")
    await call("DELETE", f"{co}/servers/{server}?force=true")
    await call("DELETE", f"{do}/droplets/{droplet_ids[0]}")
    await call("DELETE", f"{do}/account/keys/{fingerprint}")


@pytest.fixture
async def contract_run(do_spec: ApiSpec, coolify_spec: ApiSpec) -> ContractClient:
    """The scenario, run once through a fresh sandbox, with everything it found."""
    clock = ManualClock()
    transport = httpx.ASGITransport(app=create_app(World(clock=clock)))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox.test", headers={"Authorization": "Bearer 1|sandbox"}
    ) as client:
        api = ContractClient(client, [do_spec, coolify_spec])
        await _scenario(api, clock)
    return api


async def test_exchanges_match_the_specs(contract_run: ContractClient) -> None:
    """Every request body and response of the scenario validates against the official spec."""
    assert contract_run.problems == [], "\n".join(contract_run.problems)


async def test_every_served_route_is_exercised_and_in_the_spec(
    contract_run: ContractClient, do_spec: ApiSpec, coolify_spec: ApiSpec
) -> None:
    """Each route the sandbox serves exists in the spec with that method (or is a documented deviation)."""
    specs = {"digitalocean": do_spec, "coolify": coolify_spec}
    hits = {(api, method, _shape(path)) for api, method, path in contract_run.hits}
    served = list(_served_routes(create_app(World())))
    missing_from_spec, not_exercised = [], []
    for api, method, path in served:
        if (api, method, _shape(path)) not in hits:
            not_exercised.append(f"{api} {method} {path}")
        spec = specs[api]
        template = spec.template(re.sub(r"\{[^}]+\}", "x", path))
        if spec.operation(method, template) is None:
            missing_from_spec.append(f"{api} {method} {path}")
    assert not_exercised == []
    documented = {"coolify GET /api/health"} | {
        f"coolify GET {p}"
        for p in (
            "/deploy",
            "/servers/{uuid}/validate",
            *(f"/applications/{{uuid}}/{v}" for v in ("start", "stop", "restart")),
        )
    }
    assert sorted(missing_from_spec) == sorted(documented)


async def test_every_documented_deviation_is_exercised(contract_run: ContractClient) -> None:
    """The allow-list stays honest: each documented deviation is hit by the scenario."""
    assert sorted(contract_run.deviations) == sorted(DEVIATIONS)
