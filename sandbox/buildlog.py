"""The ``logs`` of a Coolify deployment, written the way ``ApplicationDeploymentJob`` writes them.

``GET /deployments/{uuid}`` returns ``logs`` as a JSON-encoded string of a list of entries
``{command, output, type, timestamp, hidden, batch, order}``:

- ``ApplicationDeploymentQueue::addLogEntry()`` (app/Models/ApplicationDeploymentQueue.php) writes the
  status lines: ``command`` null, ``batch`` 1, ``hidden`` usually false, output trimmed.
- ``ExecuteRemoteCommand::execute_remote_command()`` (app/Traits/ExecuteRemoteCommand.php) streams the output
  of each remote command as it arrives: ``command`` is the command line, ``type`` stdout/stderr, and
  ``hidden`` true for the internal ones, which include ``docker build`` itself (app/Jobs/ApplicationDeploymentJob.php
  ``build_image``): the build's own output is hidden ("click on Show Debug Logs").
- When a command fails, the ``DeploymentException`` message is "Command execution failed (exit code N):
  <command>\\nError: <its whole stderr>", and ``failed()`` logs it as one visible stderr entry
  "Deployment failed: <message>" between two "====" lines, with hidden details (error type, location, stack
  trace), then "Deployment failed. Removing the new version of your application.". The ``finally`` block of
  ``handle()`` adds "Gracefully shutting down build container: <uuid>" last.

Entries appear as the build goes: each has a moment inside the deployment's run, and only those whose moment
has passed are listed. Some outputs carry ANSI colour codes (nixpacks' plan box, npm's errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BuildInfo", "deployment_logs"]

HELPER_IMAGE = "docker.io/coollabsio/coolify-helper:1.0.15"  # config/constants.php helper_image + helper_version
NIXPACKS_BASE = "ghcr.io/railwayapp/nixpacks:ubuntu-1745885067"
_NIXPACKS_DOCS = "https://nixpacks.com/docs/providers/node"
_RULE = "----------------------------------------"
_BANNER = "========================================"
_RED, _YELLOW, _BOLD, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[0m"


@dataclass(frozen=True)
class BuildInfo:
    """What the log lines name: the app, the deployment, the server and how it ends."""

    deployment_uuid: str
    app_uuid: str
    app_name: str
    build_pack: str  # nixpacks | dockerfile | static | railpack | dockercompose | dockerimage
    repository: str
    branch: str
    image: str  # docker image:tag, for dockerimage apps
    base_directory: str
    server_name: str
    restart_only: bool
    outcome: str  # finished | failed | hang
    failure: str  # build | server (only when the outcome is failed)


@dataclass(frozen=True)
class _Line:
    at: float  # fraction of the run (0 = start, 1 = end)
    output: str
    type: str = "stdout"
    hidden: bool = False
    command: str | None = None


def _in_docker(uuid: str, command: str) -> str:
    """bootstrap/helpers/docker.php executeInDocker()."""
    return f"docker exec {uuid} bash -c '{command}'"


def _npm_failure() -> list[str]:
    """The stderr of a nixpacks ``docker build`` whose ``npm ci`` step fails (BuildKit plain progress)."""
    return [
        '#0 building with "default" instance using docker driver',
        "",
        "#1 [internal] load build definition from Dockerfile",
        "#1 transferring dockerfile: 1.38kB done",
        "#1 DONE 0.0s",
        "",
        f"#2 [internal] load metadata for {NIXPACKS_BASE}",
        "#2 DONE 0.6s",
        "",
        "#3 [internal] load .dockerignore",
        "#3 transferring context: 2B done",
        "#3 DONE 0.0s",
        "",
        f"#4 [stage-0  1/10] FROM {NIXPACKS_BASE}",
        "#4 CACHED",
        "",
        "#5 [internal] load build context",
        "#5 transferring context: 412.31kB 0.1s done",
        "#5 DONE 0.1s",
        "",
        "#6 [stage-0  2/10] WORKDIR /app/",
        "#6 DONE 0.1s",
        "",
        "#7 [stage-0  3/10] COPY .nixpacks/nixpkgs-ffeebf0acf3ae8b29f8c7049cd911b9636efd7e7.nix .nixpacks/",
        "#7 DONE 0.0s",
        "",
        "#8 [stage-0  4/10] COPY . /app/.",
        "#8 DONE 0.1s",
        "",
        "#9 [stage-0  5/10] RUN npm ci",
        f"#9 1.137 {_RED}npm error{_RESET} code ERESOLVE",
        f"#9 1.139 {_RED}npm error{_RESET} ERESOLVE could not resolve",
        f"#9 1.139 {_RED}npm error{_RESET} While resolving: web@1.0.0",
        f"#9 1.139 {_RED}npm error{_RESET} Found: react@19.0.0",
        f'#9 1.140 {_RED}npm error{_RESET} Could not resolve dependency: peer react@"^18.2.0" from react-dom@18.3.1',
        f"#9 1.143 {_RED}npm error{_RESET} A complete log of this run can be found in: /root/.npm/_logs/debug-0.log",
        '#9 ERROR: process "/bin/sh -c npm ci" did not complete successfully: exit code: 1',
        "------",
        " > [stage-0  5/10] RUN npm ci:",
        f"1.139 {_RED}npm error{_RESET} ERESOLVE could not resolve",
        f"1.143 {_RED}npm error{_RESET} A complete log of this run can be found in: /root/.npm/_logs/debug-0.log",
        "------",
        "Dockerfile:20",
        "--------------------",
        "  18 |     # setup phase",
        "  19 |     COPY . /app/.",
        "  20 | >>> RUN npm ci",
        "  21 |",
        "--------------------",
        'ERROR: failed to solve: process "/bin/sh -c npm ci" did not complete successfully: exit code: 1',
    ]


def _build_success() -> list[str]:
    return [
        '#0 building with "default" instance using docker driver',
        "#9 [stage-0  5/10] RUN npm ci",
        "#9 6.912 added 312 packages, and audited 313 packages in 6s",
        "#9 DONE 7.4s",
        "#10 [stage-0  6/10] RUN npm run build",
        "#10 DONE 12.3s",
        "#11 exporting to image",
        "#11 writing image sha256:5f3c1e0b2a7d done",
        "#11 DONE 1.6s",
    ]


def _script(info: BuildInfo) -> tuple[list[_Line], str | None, str | None]:
    """The lines of a run, the failing command and its stderr (None when nothing fails)."""
    uuid = info.deployment_uuid
    workdir = f"/artifacts/{uuid}" + ("" if info.base_directory in ("", "/") else info.base_directory)
    lines: list[_Line] = []

    def add(at: float, output: str, kind: str = "stdout", *, hidden: bool = False, command: str | None = None) -> None:
        lines.append(_Line(at, output, kind, hidden, command))

    source = info.image if info.build_pack == "dockerimage" else f"{info.repository}:{info.branch}"
    if info.restart_only:
        add(0.0, f"Restarting {source} on {info.server_name}.")
    else:
        add(0.0, f"Starting deployment of {source} to {info.server_name}.")
    add(0.02, f"Preparing container with helper image: {HELPER_IMAGE}")
    run = (
        f"docker run -d --network coolify --name {uuid} --rm "
        f"-v /var/run/docker.sock:/var/run/docker.sock {HELPER_IMAGE}"
    )
    add(0.05, "8f2d61c0a4b9e7d3f1c5a2b8e6d4f0a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3", hidden=True, command=run)
    compose = (
        f"SOURCE_COMMIT=HEAD COOLIFY_BRANCH={info.branch} docker compose --project-name {info.app_uuid} "
        f"--project-directory {workdir} -f {workdir}/docker-compose.yaml up --build -d"
    )
    build_cmd: str | None = None
    if info.build_pack != "dockerimage" and not info.restart_only:
        add(0.08, _RULE)
        add(0.09, f"Importing {info.repository}:{info.branch} (commit sha HEAD) to /artifacts/{uuid}.")
        clone = _in_docker(
            uuid, f"git clone --depth=1 --recurse-submodules -b '{info.branch}' '{info.repository}' /artifacts/{uuid}"
        )
        add(0.12, f"Cloning into '/artifacts/{uuid}'...", "stderr", hidden=True, command=clone)
        if info.build_pack == "nixpacks":
            plan = f"nixpacks plan -f json --env SOURCE_COMMIT=HEAD {workdir}"
            add(0.18, f"Generating nixpacks configuration with: {plan}")
            plan_json = '{"providers":[],"buildImage":"' + NIXPACKS_BASE + '","phases":{"install":{"cmds":["npm ci"]}}}'
            add(0.2, plan_json, hidden=True, command=_in_docker(uuid, plan))
            add(0.21, "node", hidden=True, command=_in_docker(uuid, f"nixpacks detect {workdir}"))
            add(0.22, "Found application type: node.")
            add(
                0.23, f"If you need further customization, please check the documentation of Nixpacks: {_NIXPACKS_DOCS}"
            )
            box = (
                f"\n{_BOLD}╔══════════════════════ Nixpacks v1.39.0 ══════════════════════╗{_RESET}\n"
                f"║ setup      │ {_YELLOW}nodejs_22, npm-9_x{_RESET}                              ║\n"
                f"║ install    │ {_YELLOW}npm ci{_RESET}                                          ║\n"
                f"║ build      │ {_YELLOW}npm run build{_RESET}                                   ║\n"
                f"║ start      │ {_YELLOW}npm run start{_RESET}                                   ║\n"
                "╚══════════════════════════════════════════════════════════════╝"
            )
            add(0.25, box, hidden=True, command=_in_docker(uuid, f"nixpacks build -o {workdir} {workdir}"))
        add(0.28, _RULE)
        add(0.29, "Building docker image started.")
        add(0.3, "To check the current progress, click on Show Debug Logs.")
        dockerfile = f"{workdir}/.nixpacks/Dockerfile" if info.build_pack == "nixpacks" else f"{workdir}/Dockerfile"
        build_cmd = _in_docker(
            uuid,
            f"cd {workdir} && set -a && source /artifacts/build-time.env && set +a && DOCKER_BUILDKIT=1 docker build "
            f"--network host -f {dockerfile} --progress plain -t {info.app_uuid}:HEAD {workdir}",
        )
        if info.outcome == "failed" and info.failure == "build":
            stderr = _npm_failure()
            for n, text in enumerate(t for t in stderr if t):
                add(0.32 + 0.6 * n / len(stderr), text, "stderr", hidden=True, command=build_cmd)
            return lines, build_cmd, "\n".join(stderr)
        for n, text in enumerate(_build_success()):
            add(0.32 + 0.4 * n / 9, text, "stderr", hidden=True, command=build_cmd)
        add(0.75, "Building docker image completed.")
    add(0.8, _RULE)
    add(0.81, "Rolling update started.")
    compose_cmd = _in_docker(uuid, compose)
    if info.build_pack == "dockerimage":
        add(0.83, "Pulling latest images from the registry.")
    if (info.build_pack == "dockerimage" or info.restart_only) and info.outcome == "failed" and info.failure == "build":
        image = info.image if info.build_pack == "dockerimage" else f"{info.app_uuid}:HEAD"
        stderr = [
            f" {info.app_uuid} Pulling ",
            f" {info.app_uuid} Error manifest for {image} not found: manifest unknown: manifest unknown",
            f"Error response from daemon: manifest for {image} not found: manifest unknown: manifest unknown",
        ]
        for n, text in enumerate(stderr):
            add(0.85 + 0.05 * n, text, "stderr", hidden=True, command=compose_cmd)
        return lines, compose_cmd, "\n".join(stderr)
    started = ("Creating", "Created", "Starting", "Started")
    for n, text in enumerate(f" Container {info.app_uuid}-web-1  {word}" for word in started):
        add(0.85 + 0.02 * n, text, "stderr", hidden=True, command=compose_cmd)
    add(0.93, "New container started.")
    add(0.96, "Removing old containers.")
    add(0.98, "Rolling update completed.")
    return lines, None, None


def _failure_tail(info: BuildInfo, command: str | None, stderr: str | None) -> list[_Line]:
    """The entries ``ApplicationDeploymentJob::failed()`` and ``handle()``'s finally add after a failure."""
    if info.failure == "server":
        message, error_type, where = "Server is not functional.", "Illuminate\\Queue\\ManuallyFailedException", 314
    else:
        message = f"Command execution failed (exit code 1): {command}\nError: {stderr}"
        if info.build_pack == "dockerimage" or info.restart_only:
            message = f"Failed to start container: {message}"
        error_type, where = "App\\Exceptions\\DeploymentException", 237
    tail = [
        _Line(1.0, _BANNER, "stderr"),
        _Line(1.0, f"Deployment failed: {message}", "stderr"),
        _Line(1.0, f"Error type: {error_type}", "stderr", hidden=True),
        _Line(1.0, "Error code: 0", "stderr", hidden=True),
        _Line(1.0, f"Location: /var/www/html/app/Traits/ExecuteRemoteCommand.php:{where}", "stderr", hidden=True),
        _Line(1.0, "Stack trace (first 5 lines):", "stderr", hidden=True),
        *(
            _Line(
                1.0,
                f"  #{n} /var/www/html/app/Jobs/ApplicationDeploymentJob.php({400 + 37 * n})",
                "stderr",
                hidden=True,
            )
            for n in range(5)
        ),
        _Line(1.0, _BANNER, "stderr"),
        _Line(1.0, "Deployment failed. Removing the new version of your application.", "stderr"),
    ]
    if info.failure != "server":  # handle() returned before its try/finally for a server that is not functional
        tail.append(_Line(1.0, f"Gracefully shutting down build container: {info.deployment_uuid}"))
    return tail


def deployment_logs(
    info: BuildInfo,
    *,
    start: float | None,
    duration: float | None,
    cancelled_at: float | None,
    now: float,
    timestamp: Any,
) -> list[dict[str, Any]]:
    """The log entries of a deployment visible at ``now`` (empty while it is queued).

    Args:
        start: when the run starts (None: not scheduled yet).
        duration: how long the run takes when nothing stops it (None: it never ends on its own).
        cancelled_at: when it was cancelled, if it was; no entry comes after that but the cancel notice.
        timestamp: turns an epoch time into the entry's ``timestamp`` text.
    """
    if start is None or now < start:
        return []
    if info.outcome == "failed" and info.failure == "server":
        starting = f"Starting deployment of {info.repository}:{info.branch} to {info.server_name}."
        script: list[_Line] = [_Line(0.0, starting), _Line(0.0, "Server is not functional.")]
        script += _failure_tail(info, None, None)
    else:
        script, command, stderr = _script(info)
        if info.outcome == "failed":
            script += _failure_tail(info, command, stderr)
        elif info.outcome == "finished":
            script.append(_Line(1.0, f"Gracefully shutting down build container: {info.deployment_uuid}"))
    # A deployment that never ends on its own stalls at the build: its lines run over a nominal 10 minutes.
    length = duration if duration is not None else 600.0
    limit = now if cancelled_at is None else min(now, cancelled_at)
    entries: list[dict[str, Any]] = []
    batch = 1
    last_command: str | None = None
    for line in script:
        at = start + line.at * length
        if duration is None and line.at > 0.5:
            break
        if at > limit:
            break
        if line.command is not None and line.command != last_command:
            batch += 1
        last_command = line.command
        entries.append(
            {
                "command": line.command,
                "output": line.output,
                "type": line.type,
                "timestamp": timestamp(at),
                "hidden": line.hidden,
                "batch": batch if line.command is not None else 1,
                "order": len(entries) + 1,
            }
        )
    if cancelled_at is not None and now >= cancelled_at:
        entries.append(
            {
                "command": None,
                "output": "Deployment cancelled by user, stopping execution.",
                "type": "stdout",
                "timestamp": timestamp(cancelled_at),
                "hidden": False,
                "batch": 1,
                "order": len(entries) + 1,
            }
        )
    return entries
