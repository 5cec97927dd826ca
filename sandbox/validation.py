"""Coolify's server validation, played out as timed changes to the server's flags and logs.

``POST /servers/{uuid}/validate`` dispatches a queued job (ServersController::validate_server): with
``install`` it is ``ValidateAndInstallServerJob``, without it ``ValidateServer``. Nothing here runs in the
background: ``plan_validation`` works out, when the request arrives, every change the job will make and when,
and ``fold`` replays the changes whose time has come. Overlapping jobs simply interleave their changes, as
two queue workers writing the same row would.

What each job does (Coolify v4.3.x):

- Both start ``validation_pickup_s`` after the request (the queue worker picking the job up).
- ``ValidateServer`` (app/Actions/Server/ValidateServer.php) first clears ``validation_logs`` to null and never
  touches ``is_validating``. ``ValidateAndInstallServerJob`` (app/Jobs/ValidateAndInstallServerJob.php) sets
  ``is_validating`` true and never clears ``validation_logs`` (not even on success).
- Both check SSH with ``Server::validateConnection()`` -> ``instant_remote_process(['ls /'])``, which goes
  through ``SshRetryable::executeWithSshRetry``: ``constants.ssh.max_retries`` = 3 tries, 2 s then 4 s apart
  (``retry_base_delay`` 2, ``retry_multiplier`` 2), but only for errors in its retryable list.
  "Permission denied (publickey)" is not in that list, so a wrong key fails on the first try. The sandbox
  spreads the tries over ``ssh_tries_span_s`` at offsets 0, 1/3 and 1 of it (2 s and 6 s of 6 s).
- Unreachable: ``validation_logs`` = "Server is not reachable. …Error: " + htmlspecialchars(ssh's stderr),
  ``is_reachable`` false, and the install job sets ``is_validating`` false. Neither retries later by itself.
- Reachable: ``is_reachable`` true. Docker present: ``is_usable`` true (``validateDockerEngine``), and the
  install job starts the proxy and sets ``is_validating`` false. Docker missing: plain validation writes
  "Docker Engine is not installed…"; the install job installs it (``docker_install_s``) with
  ``is_validating`` still true and ``is_usable`` false, then ends usable with the proxy running.

Every text written to ``validation_logs`` passes through ``Server::setValidationLogsAttribute``, which cleans
it with HTMLPurifier under config/purify.php's ``validation_logs`` profile; ``purify`` applies what that
changes in these texts (see its docstring).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "RETRYABLE_SSH_ERRORS",
    "Change",
    "ServerState",
    "ValidationJob",
    "docker_missing_log",
    "fold",
    "is_retryable_ssh_error",
    "plan_validation",
    "purify",
    "unreachable_log",
]

# app/Traits/SshRetryable.php isRetryableSshError(): plain case-insensitive substrings (str_contains), so the
# two entries that look like regexes only match their literal text.
RETRYABLE_SSH_ERRORS = (
    "kex_exchange_identification",
    "Connection reset by peer",
    "Connection refused",
    "Connection timed out",
    "Connection closed by remote host",
    "ssh_exchange_identification",
    "Bad file descriptor",
    "Broken pipe",
    "No route to host",
    "Network is unreachable",
    "Host is down",
    "No buffer space available",
    "Connection reset by",
    "Permission denied, please try again",
    "Received disconnect from",
    "Disconnected from",
    "Connection to .* closed",
    "ssh: connect to host .* port .*: Connection",
    "Lost connection",
    "Timeout, server not responding",
    "Cannot assign requested address",
    "Network is down",
    "Host key verification failed",
    "Operation timed out",
    "Connection closed unexpectedly",
    "Remote host closed connection",
    "Authentication failed",
    "Too many authentication failures",
    "SSH command failed with exit code: 255",
)

_OPENSSH_DOCS = "https://coolify.io/docs/knowledge-base/server/openssh"
_DOCKER_DOCS = "https://docs.docker.com/engine/install/#server"
_PLAIN_LINK = "text-black underline dark:text-white"  # ValidateServer's link style
_TAG = re.compile(r"<(?P<name>[a-zA-Z]+)(?P<attrs>(?:\s+[a-zA-Z-]+=\"[^\"]*\")*)\s*>")
_ATTR = re.compile(r"([a-zA-Z-]+)=\"([^\"]*)\"")
_NMTOKEN = re.compile(r"^(?:--|-?[A-Za-z_])[A-Za-z_\-0-9]*$")


def is_retryable_ssh_error(message: str) -> bool:
    """Whether Coolify's SSH helper tries again after this error (``SshRetryable::isRetryableSshError``)."""
    lowered = message.lower()
    return any(pattern.lower() in lowered for pattern in RETRYABLE_SSH_ERRORS)


def purify(text: str) -> str:
    """What HTMLPurifier does to our validation texts (config/purify.php ``validation_logs``, v4.19).

    - ``class`` is an NMTOKENS attribute (``HTMLPurifier_AttrDef_HTML_Nmtokens``): a token such as
      ``dark:text-white`` does not match ``(--|-?[A-Za-z_])[A-Za-z_-0-9]*`` and is dropped.
    - ``HTML.TargetNoreferrer`` and ``HTML.TargetNoopener`` are on by default: a link with ``target`` gets
      ``rel="noreferrer noopener"`` appended after its other attributes.
    - Output is HTML 4.01, so ``<br>`` stays ``<br>``; text keeps quotes unescaped (escaped: ``& < >``).
    """

    def clean(match: re.Match[str]) -> str:
        attrs: list[tuple[str, str]] = []
        for name, value in _ATTR.findall(match["attrs"]):
            if name == "class":
                tokens = [t for t in value.split() if _NMTOKEN.match(t)]
                if not tokens:
                    continue
                value = " ".join(tokens)
            attrs.append((name, value))
        if match["name"] == "a" and any(name == "target" for name, _ in attrs):
            attrs.append(("rel", "noreferrer noopener"))
        rendered = "".join(f' {name}="{value}"' for name, value in attrs)
        return f"<{match['name']}{rendered}>"

    return _TAG.sub(clean, text)


def unreachable_log(reason: str, *, install: bool) -> str:
    """The ``validation_logs`` an unreachable server gets, as stored (after HTMLPurifier).

    The install job writes ``…documentation</a> for further help. <br><br>Error: <reason>``; plain
    ``ValidateServer`` a differently styled link and ``<div class="text-error">Error: <reason></div>``.
    The reason is ssh's stderr through ``htmlspecialchars``.
    """
    reason = html.escape(reason, quote=False)
    if install:
        link = f'<a target="_blank" class="underline" href="{_OPENSSH_DOCS}">documentation</a>'
        tail = f"<br><br>Error: {reason}"
    else:
        link = f'<a target="_blank" class="{_PLAIN_LINK}" href="{_OPENSSH_DOCS}">documentation</a>'
        tail = f'<br><br><div class="text-error">Error: {reason}</div>'
    return purify(
        "Server is not reachable. Please validate your configuration and connection.<br>"
        f"Check this {link} for further help. {tail}"
    )


def docker_missing_log() -> str:
    """``ValidateServer``'s log when Docker Engine (or Compose) is missing, as stored."""
    return purify(
        "Docker Engine is not installed. Please install Docker manually before continuing: "
        f'<a target="_blank" class="{_PLAIN_LINK}" href="{_DOCKER_DOCS}">documentation</a>.'
    )


@dataclass(frozen=True)
class ServerState:
    """What ``GET /servers/{uuid}`` shows at a moment."""

    is_reachable: bool = False
    is_usable: bool = False
    is_validating: bool = False
    validation_logs: str | None = None
    proxy_running: bool = False


@dataclass(frozen=True)
class Change:
    """Fields one validation job writes at one moment."""

    at: float
    values: dict[str, Any]


@dataclass
class ValidationJob:
    """One queued validation: when it was asked for, and the changes it makes until it is done."""

    requested_at: float
    install: bool
    changes: list[Change] = field(default_factory=list)

    @property
    def done_at(self) -> float:
        """When the job has made its last change."""
        return max(c.at for c in self.changes)

    def running(self, now: float) -> bool:
        """Queued or still working at ``now``."""
        return self.requested_at <= now < self.done_at


def fold(jobs: Iterable[ValidationJob], now: float) -> ServerState:
    """The server's state at ``now``: every change made by then, in time order (then request order)."""
    changes = sorted(
        ((c.at, n, i, c.values) for n, job in enumerate(jobs) for i, c in enumerate(job.changes) if c.at <= now),
        key=lambda item: item[:3],
    )
    state = ServerState()
    for *_, values in changes:
        state = replace(state, **values)
    return state


@dataclass(frozen=True)
class Timings:
    """The three delays a validation job's plan needs."""

    pickup_s: float
    tries_span_s: float
    docker_install_s: float


def plan_validation(
    requested_at: float,
    *,
    install: bool,
    timings: Timings,
    ssh_error: Callable[[float], str | None],
    docker_ready_at: float | None,
) -> tuple[ValidationJob, float | None]:
    """Work out a validation job's changes; also returns when Docker is ready on the host afterwards.

    Args:
        ssh_error: ssh's stderr for a connection attempt at a given time, or None when it gets in.
        docker_ready_at: when Docker became (or becomes) usable on the host, None if never so far.
    """
    pickup = requested_at + timings.pickup_s
    job = ValidationJob(requested_at, install)
    job.changes.append(Change(pickup, {"is_validating": True} if install else {"validation_logs": None}))
    span = timings.tries_span_s
    reached: float | None = None
    error = ""
    for at in (pickup, pickup + span / 3, pickup + span):
        reason = ssh_error(at)
        if reason is None:
            reached = at
            break
        error = reason
        if not is_retryable_ssh_error(reason):
            break
    if reached is None:
        failed = {"validation_logs": unreachable_log(error, install=install), "is_reachable": False}
        if install:
            failed["is_validating"] = False
        job.changes.append(Change(at, failed))
        return job, docker_ready_at
    docker = docker_ready_at is not None and docker_ready_at <= reached
    if not install:
        found: dict[str, Any] = {"is_reachable": True, "is_usable": docker}
        if not docker:
            found["validation_logs"] = docker_missing_log()
        job.changes.append(Change(reached, found))
        return job, docker_ready_at
    done = {"is_usable": True, "is_validating": False, "proxy_running": True}
    if docker:
        job.changes.append(Change(reached, {"is_reachable": True, **done}))
        return job, docker_ready_at
    installed = reached + timings.docker_install_s
    job.changes.append(Change(reached, {"is_reachable": True, "is_usable": False}))
    job.changes.append(Change(installed, done))
    ready = installed if docker_ready_at is None else min(docker_ready_at, installed)
    return job, ready
