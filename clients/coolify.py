"""Coolify v4 API client: private keys, servers, applications, deployments and env vars.

Requests are chosen to work on every Coolify 4.x: lifecycle calls are POST, ``/servers/{uuid}/validate``
falls back to GET on versions before 4.2, ``ports_exposes`` is always sent and env vars always carry their
full flag set (Coolify resets omitted ``is_literal`` / ``is_multiline`` / ``is_shown_once`` to false).
POST and PATCH are never retried (see :mod:`clients.http`).
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from clients.errors import APIStatusError, ConflictError, NotFoundError
from clients.http import APIClient, JSONObject, path_segment

__all__ = [
    "ACTIVE_DEPLOYMENT_STATUSES",
    "TERMINAL_DEPLOYMENT_STATUSES",
    "Application",
    "BuildLogLine",
    "CoolifyClient",
    "CoolifyDeployment",
    "DeployResult",
    "DeploymentStatus",
    "EnvVar",
    "EnvVarSpec",
    "PrivateKey",
    "Project",
    "Server",
    "ValidationFailure",
    "classify_validation_failure",
    "parse_build_logs",
    "validation_text",
]

API = "coolify"
logger = logging.getLogger("deployer.clients.coolify")

#: What ``/deploy``, start and restart answer when a deployment for the same commit is already queued.
DEDUP_MESSAGE = "Deployment already queued for this commit."

ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


class DeploymentStatus(StrEnum):
    """Every status Coolify writes on an application deployment."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED_BY_USER = "cancelled-by-user"


#: A deployment in one of these will not change any more.
TERMINAL_DEPLOYMENT_STATUSES = frozenset(
    {DeploymentStatus.FINISHED, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED_BY_USER}
)
#: A deployment in one of these is waiting or running.
ACTIVE_DEPLOYMENT_STATUSES = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS})


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class PrivateKey:
    """An SSH private key stored in Coolify (only its public half and fingerprint are read)."""

    uuid: str
    name: str
    public_key: str | None
    fingerprint: str | None

    @classmethod
    def from_api(cls, data: JSONObject) -> PrivateKey:
        """Build from an entry of ``GET /security/keys``."""
        return cls(
            uuid=str(data["uuid"]),
            name=str(data.get("name") or ""),
            public_key=_opt_str(data.get("public_key")),
            fingerprint=_opt_str(data.get("fingerprint")),
        )


@dataclass(frozen=True)
class Project:
    """A Coolify project and the names of its environments."""

    uuid: str
    name: str
    environments: tuple[str, ...]

    @classmethod
    def from_api(cls, data: JSONObject) -> Project:
        """Build from ``GET /projects/{uuid}`` (which lists the environments)."""
        envs = data.get("environments") or ()
        return cls(
            uuid=str(data["uuid"]),
            name=str(data.get("name") or ""),
            environments=tuple(str(e["name"]) for e in envs if isinstance(e, dict) and e.get("name")),
        )


@dataclass(frozen=True)
class Server:
    """A Coolify server and the flags that say what its last validation found.

    The list endpoint copies ``is_reachable`` / ``is_usable`` to the top level; the single-server endpoint
    keeps them in ``settings``. Both shapes are read.

    ``validation_logs`` is no verdict on its own: the install validation (``ValidateAndInstallServerJob``)
    never clears it, so a failure written by an early attempt stays after a later attempt succeeds. Judge a
    validation by ``is_validating`` going false after the request, then :attr:`usable`.
    """

    uuid: str
    name: str
    ip: str
    is_reachable: bool
    is_usable: bool
    force_disabled: bool
    is_validating: bool
    validation_logs: str | None
    description: str | None = None

    @classmethod
    def from_api(cls, data: JSONObject) -> Server:
        """Build from ``GET /servers`` or ``GET /servers/{uuid}``."""
        settings = data.get("settings")
        settings = settings if isinstance(settings, dict) else {}

        def flag(name: str) -> bool:
            value = settings.get(name, data.get(name))
            return bool(value) if value is not None else False

        return cls(
            uuid=str(data["uuid"]),
            name=str(data.get("name") or ""),
            ip=str(data["ip"]),
            is_reachable=flag("is_reachable"),
            is_usable=flag("is_usable"),
            force_disabled=flag("force_disabled"),
            is_validating=bool(data.get("is_validating") or False),
            validation_logs=_opt_str(data.get("validation_logs")) or None,
            description=_opt_str(data.get("description")),
        )

    @property
    def usable(self) -> bool:
        """Coolify can deploy to it: reachable over SSH, Docker usable, not disabled."""
        return self.is_reachable and self.is_usable and not self.force_disabled


class ValidationFailure(StrEnum):
    """What a failed Coolify validation means for whoever asked for it."""

    #: sshd did not answer (yet): refused, timed out, no route. Asking again later can succeed.
    UNREACHABLE = "unreachable"
    #: The host answered but refused Coolify's key. Asking again will not help.
    KEY_REJECTED = "key_rejected"
    #: Anything else (unsupported OS, Docker could not be installed, ...).
    OTHER = "other"


#: SSH errors Coolify itself treats as transient (app/Traits/SshRetryable.php), minus the authentication ones.
_UNREACHABLE_PATTERNS = (
    "connection refused",
    "connection timed out",
    "operation timed out",
    "no route to host",
    "network is unreachable",
    "network is down",
    "host is down",
    "connection reset",
    "connection closed",
    "kex_exchange_identification",
    "ssh_exchange_identification",
    "timeout, server not responding",
    "lost connection",
    "broken pipe",
)
#: An answering sshd that refuses the key (ssh's own text; Coolify's "This key is not valid for this server.").
_KEY_PATTERNS = ("permission denied (publickey", "this key is not valid", "too many authentication failures")
_HTML_TAG = re.compile(r"<[^>]+>")


def validation_text(logs: str | None) -> str:
    """Coolify's HTML-ish ``validation_logs`` as one line of plain text."""
    text = _HTML_TAG.sub(" ", html.unescape(logs or ""))
    return " ".join(text.split())


def classify_validation_failure(logs: str | None) -> ValidationFailure:
    """Sort the text of a failed validation into :class:`ValidationFailure` kinds."""
    text = validation_text(logs).lower()
    if any(pattern in text for pattern in _KEY_PATTERNS):
        return ValidationFailure.KEY_REJECTED
    if "server is not reachable" in text or any(pattern in text for pattern in _UNREACHABLE_PATTERNS):
        return ValidationFailure.UNREACHABLE
    return ValidationFailure.OTHER


@dataclass(frozen=True)
class Application:
    """A Coolify application. ``status`` is Coolify's ``state:health`` string, ``None`` when not known yet."""

    uuid: str
    name: str
    status: str | None
    fqdn: str | None
    build_pack: str | None
    description: str | None = None

    @classmethod
    def from_api(cls, data: JSONObject) -> Application:
        """Build from ``GET /applications`` or ``GET /applications/{uuid}``."""
        return cls(
            uuid=str(data["uuid"]),
            name=str(data.get("name") or ""),
            status=_opt_str(data.get("status")),
            fqdn=_opt_str(data.get("fqdn")) or None,
            build_pack=_opt_str(data.get("build_pack")),
            description=_opt_str(data.get("description")),
        )


@dataclass(frozen=True)
class DeployResult:
    """Outcome of asking Coolify to deploy or restart.

    ``already_queued`` means Coolify skipped the request because a deployment of the same commit was queued or
    running; ``deployment_uuid`` is then that live deployment (looked up), or ``None`` if it finished already.
    """

    deployment_uuid: str | None
    already_queued: bool
    message: str


#: Terminal colour and cursor sequences (CSI and OSC), which build output is full of.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
#: Other control characters (a stray backspace or bell): never shown, never stored.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class BuildLogLine:
    """One visible line of a Coolify build log, without terminal escape sequences.

    ``stream`` is ``stdout`` or ``stderr``; ``command`` is the command whose output this is (Coolify logs the
    command itself as an entry with the command set), ``None`` for Coolify's own messages.
    """

    text: str
    stream: str
    timestamp: str | None
    command: str | None


def parse_build_logs(raw: object) -> list[BuildLogLine]:
    """The visible lines of a deployment's ``logs`` field, oldest first.

    Coolify stores ``logs`` as a JSON-encoded string holding a list of ``{command, output, type, timestamp,
    hidden, batch, order}`` entries. Hidden entries are debug output that Coolify's UI shows only in debug mode
    (``decode_remote_command_output`` in ``bootstrap/helpers/remoteProcess.php`` filters ``hidden === false``),
    so they are skipped here too. An entry's output may span several lines; each becomes a line. Anything that
    is not such a list (missing, malformed) gives no lines.
    """
    entries: object = raw
    if isinstance(raw, str | bytes):
        try:
            entries = json.loads(raw)
        except ValueError:
            return []
    if not isinstance(entries, list):
        return []
    lines: list[BuildLogLine] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("hidden") is True:
            continue
        output = entry.get("output")
        if not isinstance(output, str):
            continue
        output = _ANSI.sub("", output).replace("\r\n", "\n").replace("\r", "\n")
        stream = "stderr" if entry.get("type") == "stderr" else "stdout"
        command = _opt_str(entry.get("command")) or None
        for text in output.rstrip("\n").split("\n") if output.strip() else []:
            lines.append(BuildLogLine(_CONTROL.sub("", text), stream, _opt_str(entry.get("timestamp")), command))
    return lines


@dataclass(frozen=True)
class CoolifyDeployment:
    """One application deployment (``ApplicationDeploymentQueue``).

    ``log`` holds the visible build log lines; it is ``None`` when Coolify did not send ``logs`` at all (a token
    without ``read:sensitive`` does not see them).
    """

    uuid: str
    status: str
    application_name: str | None
    finished_at: str | None
    log: tuple[BuildLogLine, ...] | None = field(default=None, repr=False)

    @classmethod
    def from_api(cls, data: JSONObject) -> CoolifyDeployment:
        """Build from ``GET /deployments/{uuid}`` or an entry of ``GET /deployments/applications/{uuid}``."""
        return cls(
            uuid=str(data["deployment_uuid"]),
            status=str(data["status"]),
            application_name=_opt_str(data.get("application_name")),
            finished_at=_opt_str(data.get("finished_at")),
            log=tuple(parse_build_logs(data["logs"])) if "logs" in data else None,
        )

    @property
    def terminal(self) -> bool:
        """Finished, failed or cancelled: polling can stop."""
        return self.status in TERMINAL_DEPLOYMENT_STATUSES

    @property
    def succeeded(self) -> bool:
        """The deployment finished successfully."""
        return self.status == DeploymentStatus.FINISHED


@dataclass(frozen=True)
class EnvVarSpec:
    """The desired state of one application env var; ``value`` stays out of ``repr``.

    Defaults are Coolify's own. :meth:`to_body` sends every flag, because a PATCH resets omitted ones.
    Raises ``ValueError`` for a key Coolify would reject.
    """

    key: str
    value: str = field(repr=False)
    is_preview: bool = False
    is_literal: bool = False
    is_multiline: bool = False
    is_shown_once: bool = False
    is_runtime: bool = True
    is_buildtime: bool = True
    comment: str | None = None

    def __post_init__(self) -> None:
        if len(self.key) > 255 or not ENV_KEY_PATTERN.match(self.key):
            raise ValueError(f"invalid env key {self.key!r}: expected {ENV_KEY_PATTERN.pattern}, max 255 chars")

    def to_body(self) -> JSONObject:
        """The JSON object for create, PATCH and bulk PATCH, with the full flag set.

        `comment` is sent only when set: Coolify keeps the stored comment when the field is absent, and a
        `null` would erase a comment someone wrote in Coolify's UI.
        """
        body: JSONObject = {
            "key": self.key,
            "value": self.value,
            "is_preview": self.is_preview,
            "is_literal": self.is_literal,
            "is_multiline": self.is_multiline,
            "is_shown_once": self.is_shown_once,
            "is_runtime": self.is_runtime,
            "is_buildtime": self.is_buildtime,
        }
        if self.comment is not None:
            body["comment"] = self.comment
        return body


@dataclass(frozen=True)
class EnvVar:
    """An env var row as Coolify stores it. ``value`` is ``None`` when hidden (no ``read:sensitive``)."""

    uuid: str
    key: str
    value: str | None = field(repr=False)
    is_preview: bool
    is_literal: bool
    is_multiline: bool
    is_shown_once: bool
    is_runtime: bool
    is_buildtime: bool
    comment: str | None

    @classmethod
    def from_api(cls, data: JSONObject) -> EnvVar:
        """Build from an env object of the list, PATCH or bulk PATCH responses."""

        def flag(name: str, default: bool) -> bool:
            value = data.get(name)
            return default if value is None else bool(value)

        return cls(
            uuid=str(data["uuid"]),
            key=str(data["key"]),
            value=_opt_str(data.get("value")),
            is_preview=flag("is_preview", False),
            is_literal=flag("is_literal", False),
            is_multiline=flag("is_multiline", False),
            is_shown_once=flag("is_shown_once", False),
            is_runtime=flag("is_runtime", True),
            is_buildtime=flag("is_buildtime", True),
            comment=_opt_str(data.get("comment")),
        )


def _is_dedup(message: str) -> bool:
    return "already queued" in message.lower()


def _is_missing_route(err: APIStatusError) -> bool:
    """True for 404 ``Not found.`` (Coolify's catch-all route: no such endpoint) or 405 (wrong verb)."""
    if err.status_code == 405:
        return True
    return err.status_code == 404 and err.message.strip().rstrip(".").lower() == "not found"


def _optional(payload: JSONObject, **values: object) -> JSONObject:
    payload.update({k: v for k, v in values.items() if v is not None})
    return payload


class CoolifyClient(APIClient):
    """Async client for the Coolify v4 API.

    ``api_url`` is the instance URL (``https://coolify.example.com``, or the sandbox's
    ``http://127.0.0.1:9000/sandbox/coolify``); the client appends ``/api/v1``. Use as ``async with`` or call
    :meth:`aclose`. ``transport`` / ``http_client`` swap the network; ``sleep`` replaces the wait between
    retries.
    """

    API = API
    VERSION_PATH = "/api/v1"
    LOG = logger

    def _list(self, body: Any, method: str, path: str) -> list[Any]:
        if not isinstance(body, list):
            raise self._http.fail("expected a JSON array", method, path)
        return body

    def _uuid(self, body: Any, method: str, path: str) -> str:
        value = body.get("uuid") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise self._http.fail("response has no 'uuid'", method, path)
        return value

    # -- private keys ------------------------------------------------------------------------------------

    async def version(self) -> str:
        """``GET /api/v1/version``: the instance's version as plain text, such as ``4.3.11``."""
        response = await self._http.send("GET", "/version")
        return response.text.strip().strip('"')

    async def get_private_key(self, uuid: str) -> PrivateKey:
        """``GET /security/keys/{uuid}``; raises :class:`NotFoundError` when the team has no such key."""
        path = f"/security/keys/{path_segment(uuid)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(PrivateKey.from_api, body, "private key", "GET", path)

    async def get_project(self, uuid: str) -> Project:
        """``GET /projects/{uuid}``: the project with its environments' names."""
        path = f"/projects/{path_segment(uuid)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(Project.from_api, body, "project", "GET", path)

    async def list_private_keys(self) -> list[PrivateKey]:
        """``GET /security/keys``: the team's SSH keys (public half and fingerprint)."""
        path = "/security/keys"
        body = await self._http.send_json("GET", path)
        return [
            self._http.parse(PrivateKey.from_api, k, "private key", "GET", path) for k in self._list(body, "GET", path)
        ]

    # -- servers -----------------------------------------------------------------------------------------

    async def list_servers(self) -> list[Server]:
        """``GET /servers``: every server of the team."""
        path = "/servers"
        body = await self._http.send_json("GET", path)
        return [self._http.parse(Server.from_api, s, "server", "GET", path) for s in self._list(body, "GET", path)]

    async def get_server(self, uuid: str) -> Server:
        """``GET /servers/{uuid}``: poll this after :meth:`validate_server`."""
        path = f"/servers/{path_segment(uuid)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(Server.from_api, body, "server", "GET", path)

    async def create_server(
        self,
        *,
        name: str,
        ip: str,
        private_key_uuid: str,
        description: str | None = None,
        port: int = 22,
        user: str = "root",
        proxy_type: str = "traefik",
    ) -> str:
        """``POST /servers`` (201): register a host and return its uuid. Validation is a separate call.

        Coolify answers 400 "A server with this IP/Domain is already in use." for a known IP (instance-wide);
        that is raised as :class:`ConflictError`, so look servers up by ``ip`` first.
        """
        path = "/servers"
        payload = _optional(
            {"name": name, "ip": ip, "port": port, "user": user, "private_key_uuid": private_key_uuid},
            description=description,
        )
        payload["proxy_type"] = proxy_type
        try:
            body = await self._http.send_json("POST", path, json=payload)
        except APIStatusError as err:
            if err.status_code == 400 and "already in use" in err.message.lower():
                raise err.with_class(ConflictError) from err
            raise
        return self._uuid(body, "POST", path)

    async def validate_server(self, uuid: str, *, install: bool = True) -> None:
        """Start (asynchronous) validation; with ``install`` Coolify also installs Docker and the proxy.

        ``POST /servers/{uuid}/validate {"install": …}`` on Coolify ≥ 4.2. Older versions only have the GET
        route (a POST lands on the catch-all 404 "Not found."; a GET-only route answers 405), so the call
        falls back to ``GET`` there, where ``install`` is not available. Poll :meth:`get_server` for the
        result.
        """
        path = f"/servers/{path_segment(uuid)}/validate"
        try:
            await self._http.send("POST", path, json={"install": install})
        except APIStatusError as err:
            if not _is_missing_route(err):
                raise
            logger.info("POST %s -> %d: route missing, falling back to GET", path, err.status_code)
            await self._http.send("GET", path)

    async def delete_server(self, uuid: str, *, force: bool = True) -> bool:
        """``DELETE /servers/{uuid}``: True when deleted, False when it was already gone (404).

        ``force`` deletes the server's resources too (in background jobs); without it a server that still has
        resources is refused with a 400.
        """
        try:
            await self._http.send("DELETE", f"/servers/{path_segment(uuid)}", params={"force": force})
        except NotFoundError:
            return False
        return True

    # -- applications ------------------------------------------------------------------------------------

    async def list_applications(self) -> list[Application]:
        """``GET /applications``: every application of the team."""
        path = "/applications"
        body = await self._http.send_json("GET", path)
        return [
            self._http.parse(Application.from_api, a, "application", "GET", path) for a in self._list(body, "GET", path)
        ]

    async def get_application(self, uuid: str) -> Application:
        """``GET /applications/{uuid}``."""
        path = f"/applications/{path_segment(uuid)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(Application.from_api, body, "application", "GET", path)

    async def _create_application(self, path: str, payload: JSONObject, name: str, build_pack: str) -> Application:
        body = await self._http.send_json("POST", path, json=payload)
        uuid = self._uuid(body, "POST", path)
        domains = body.get("domains") if isinstance(body, dict) else None
        return Application(
            uuid=uuid,
            name=name,
            status=None,
            fqdn=str(domains) if domains else payload.get("domains"),
            build_pack=build_pack,
        )

    async def create_public_application(
        self,
        *,
        project_uuid: str,
        environment_name: str,
        server_uuid: str,
        name: str,
        git_repository: str,
        git_branch: str,
        build_pack: str,
        ports_exposes: str,
        description: str | None = None,
        domains: str | None = None,
        base_directory: str | None = None,
    ) -> Application:
        """``POST /applications/public`` (201): an app built from a public git repository, not deployed yet.

        ``base_directory`` builds from a sub-folder of the repository (a monorepo). Coolify refuses ``domains``
        with the ``dockercompose`` build pack (it wants per-service domains), so callers check that first. The
        returned record has ``status=None``; ``fqdn`` is the domain Coolify assigned or generated.
        """
        payload = _optional(
            {
                "project_uuid": project_uuid,
                "environment_name": environment_name,
                "server_uuid": server_uuid,
                "name": name,
                "git_repository": git_repository,
                "git_branch": git_branch,
                "build_pack": build_pack,
                "ports_exposes": ports_exposes,
                "instant_deploy": False,
            },
            description=description,
            domains=domains,
            base_directory=base_directory,
        )
        return await self._create_application("/applications/public", payload, name, build_pack)

    async def create_dockerimage_application(
        self,
        *,
        project_uuid: str,
        environment_name: str,
        server_uuid: str,
        name: str,
        image: str,
        tag: str,
        ports_exposes: str,
        description: str | None = None,
        domains: str | None = None,
    ) -> Application:
        """``POST /applications/dockerimage`` (201): an app running a registry image, not deployed yet."""
        payload = _optional(
            {
                "project_uuid": project_uuid,
                "environment_name": environment_name,
                "server_uuid": server_uuid,
                "name": name,
                "docker_registry_image_name": image,
                "docker_registry_image_tag": tag,
                "ports_exposes": ports_exposes,
                "instant_deploy": False,
            },
            description=description,
            domains=domains,
        )
        return await self._create_application("/applications/dockerimage", payload, name, "dockerimage")

    async def delete_application(self, uuid: str) -> bool:
        """``DELETE /applications/{uuid}`` (asynchronous): True when accepted, False when already gone."""
        try:
            await self._http.send("DELETE", f"/applications/{path_segment(uuid)}")
        except NotFoundError:
            return False
        return True

    # -- deployments -------------------------------------------------------------------------------------

    async def deploy(self, app_uuid: str, *, force: bool = False) -> DeployResult:
        """``POST /deploy {"uuid", "force"}``: queue a deployment of one application.

        When Coolify skips it because the same commit is already queued, the uuid it returns was never stored;
        the live deployment is looked up instead and ``already_queued`` is set. ``force`` rebuilds without
        cache and bypasses that check.
        """
        path = "/deploy"
        body = await self._http.send_json("POST", path, json={"uuid": app_uuid, "force": force})
        entries = body.get("deployments") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries:
            raise self._http.fail("response has no 'deployments' entries", "POST", path)
        entry = next(
            (e for e in entries if isinstance(e, dict) and e.get("resource_uuid") == app_uuid),
            entries[0],
        )
        if not isinstance(entry, dict):
            raise self._http.fail("unexpected 'deployments' entry", "POST", path)
        return await self._deploy_result(app_uuid, entry, "POST", path)

    async def restart_application(self, uuid: str) -> DeployResult:
        """``POST /applications/{uuid}/restart``: a restart-only deployment (applies env changes).

        A deduplicated restart carries no uuid; the live deployment is looked up as in :meth:`deploy`.
        """
        path = f"/applications/{path_segment(uuid)}/restart"
        body = await self._http.send_json("POST", path, json={})
        if not isinstance(body, dict):
            raise self._http.fail("expected a JSON object", "POST", path)
        return await self._deploy_result(uuid, body, "POST", path)

    async def _deploy_result(self, app_uuid: str, entry: JSONObject, method: str, path: str) -> DeployResult:
        message = str(entry.get("message") or "")
        deployment_uuid = entry.get("deployment_uuid")
        already_queued = _is_dedup(message)
        if already_queued or not isinstance(deployment_uuid, str) or not deployment_uuid:
            # The dedup answer's uuid (if any) was never stored; find the deployment that is really running.
            live = await self._live_deployment(app_uuid)
            logger.info("%s %s: no usable deployment uuid; live deployment %s", method, path, live or "-")
            return DeployResult(deployment_uuid=live, already_queued=already_queued, message=message)
        return DeployResult(deployment_uuid=deployment_uuid, already_queued=False, message=message)

    async def _live_deployment(self, app_uuid: str) -> str | None:
        for deployment in await self.list_application_deployments(app_uuid):
            if deployment.status in ACTIVE_DEPLOYMENT_STATUSES:
                return deployment.uuid
        return None

    async def list_application_deployments(
        self, app_uuid: str, *, skip: int = 0, take: int = 10
    ) -> list[CoolifyDeployment]:
        """``GET /deployments/applications/{uuid}?skip&take``: the app's deployments, newest first."""
        path = f"/deployments/applications/{path_segment(app_uuid)}"
        body = await self._http.send_json("GET", path, params={"skip": skip, "take": take})
        items = body.get("deployments") if isinstance(body, dict) else body  # the spec says a bare array
        return [
            self._http.parse(CoolifyDeployment.from_api, d, "deployment", "GET", path)
            for d in self._list(items, "GET", path)
        ]

    async def list_active_deployments(self) -> list[CoolifyDeployment]:
        """``GET /deployments``: only the ``queued`` and ``in_progress`` deployments on the team's servers.

        A finished build is no longer listed: read it with :meth:`get_deployment`. Coolify serializes a
        collection it re-sorted (``sortBy('id')`` keeps the keys), which PHP turns into a JSON object keyed by
        position when the keys come out of order; both that and the usual array are read.
        """
        path = "/deployments"
        body = await self._http.send_json("GET", path)
        items = list(body.values()) if isinstance(body, dict) else body
        return [
            self._http.parse(CoolifyDeployment.from_api, d, "deployment", "GET", path)
            for d in self._list(items, "GET", path)
        ]

    async def get_deployment(self, deployment_uuid: str) -> CoolifyDeployment:
        """``GET /deployments/{uuid}``: poll until ``terminal``, with your own deadline."""
        path = f"/deployments/{path_segment(deployment_uuid)}"
        body = await self._http.send_json("GET", path)
        return self._http.parse(CoolifyDeployment.from_api, body, "deployment", "GET", path)

    # -- env vars ----------------------------------------------------------------------------------------

    async def list_envs(self, app_uuid: str) -> list[EnvVar]:
        """``GET /applications/{uuid}/envs``: production rows first, then preview rows."""
        path = f"/applications/{path_segment(app_uuid)}/envs"
        body = await self._http.send_json("GET", path)
        return [self._http.parse(EnvVar.from_api, e, "env var", "GET", path) for e in self._list(body, "GET", path)]

    async def create_env(self, app_uuid: str, spec: EnvVarSpec) -> str:
        """``POST /applications/{uuid}/envs`` (201): add a key and return the row's uuid.

        Raises :class:`ConflictError` (409) when the key already exists in that scope; use :meth:`update_env`.
        """
        path = f"/applications/{path_segment(app_uuid)}/envs"
        body = await self._http.send_json("POST", path, json=spec.to_body())
        return self._uuid(body, "POST", path)

    async def update_env(self, app_uuid: str, spec: EnvVarSpec) -> EnvVar:
        """``PATCH /applications/{uuid}/envs``: update the row found by key and ``is_preview``.

        Raises :class:`NotFoundError` when the key does not exist (this call does not upsert).
        """
        path = f"/applications/{path_segment(app_uuid)}/envs"
        body = await self._http.send_json("PATCH", path, json=spec.to_body())
        return self._http.parse(EnvVar.from_api, body, "env var", "PATCH", path)

    async def bulk_update_envs(self, app_uuid: str, specs: Sequence[EnvVarSpec]) -> list[EnvVar]:
        """``PATCH /applications/{uuid}/envs/bulk {"data": [...]}``: upsert each spec by key and scope.

        Not a replace (unlisted keys stay) and not a transaction (a failing item leaves earlier ones saved).
        ``specs`` must not be empty.
        """
        if not specs:
            raise ValueError("bulk_update_envs: specs must not be empty")
        path = f"/applications/{path_segment(app_uuid)}/envs/bulk"
        body = await self._http.send_json("PATCH", path, json={"data": [s.to_body() for s in specs]})
        items = self._list(body, "PATCH", path)
        return [self._http.parse(EnvVar.from_api, e, "env var", "PATCH", path) for e in items]

    async def delete_env(self, app_uuid: str, env_uuid: str) -> bool:
        """``DELETE /applications/{uuid}/envs/{env_uuid}``: True when deleted, False when already gone."""
        try:
            await self._http.send("DELETE", f"/applications/{path_segment(app_uuid)}/envs/{path_segment(env_uuid)}")
        except NotFoundError:
            return False
        return True
