"""Read-only checks that the configured clouds can run a deployment, before a droplet is paid for.

`deployer doctor` prints them; every worker runs them at start and logs them. Each check is independent: one
that cannot be answered is a failed check with the reason, never a crash of the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clients.coolify import CoolifyClient
from clients.digitalocean import Account, DigitalOceanClient, ssh_key_fingerprint
from clients.errors import AuthError, CloudAPIError, NotFoundError
from jobs.catalog import Catalog, CatalogUnavailableError, Choice
from settings import Settings

__all__ = ["Check", "log_checks", "run_checks"]

logger = logging.getLogger("deployer.doctor")


@dataclass(frozen=True)
class Check:
    """One check's outcome: a name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """`✓ name: detail` or `✗ name: detail`."""
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


def _key_half(public_key: str | None) -> str:
    """`type base64` of an OpenSSH public key, without its comment (Coolify shows keys without one)."""
    return " ".join((public_key or "").split()[:2])


class _Doctor:
    def __init__(self, settings: Settings, digitalocean: DigitalOceanClient, coolify: CoolifyClient) -> None:
        self.settings = settings
        self.do = digitalocean
        self.coolify = coolify
        self._account: asyncio.Task[Account] | None = None

    async def account(self) -> Account:
        """`GET /v2/account`, read once for the checks that need it."""
        if self._account is None:
            self._account = asyncio.ensure_future(self.do.get_account())
        return await asyncio.shield(self._account)

    async def do_token(self) -> Check:
        account = await self.account()
        if account.status != "active":
            return Check("DigitalOcean API access", False, f"works, but the account is {account.status}")
        return Check("DigitalOcean API access", True, f"works (account {account.status})")

    async def do_write(self) -> Check:
        if await self.do.can_write():
            return Check("DigitalOcean write access", True, "it may create droplets")
        return Check(
            "DigitalOcean write access",
            False,
            "the token is read-only or lacks scopes: give it droplet:create/read/delete, ssh_key:*, tag:create",
        )

    async def droplet_limit(self) -> Check:
        limit = (await self.account()).droplet_limit
        wanted = self.settings.max_active_droplets
        if limit < wanted:
            return Check(
                "DigitalOcean droplet limit",
                False,
                f"the account allows {limit} droplets but MAX_ACTIVE_DROPLETS is {wanted}: lower it, or ask"
                " DigitalOcean to raise the limit (creates past it fail with 422)",
            )
        return Check("DigitalOcean droplet limit", True, f"{limit} droplets allowed, MAX_ACTIVE_DROPLETS is {wanted}")

    async def defaults(self) -> Check:
        do = self.settings.digitalocean
        choice = Choice(do.region, do.size, do.image, "DROPLET_REGION", "DROPLET_SIZE", "DROPLET_IMAGE")
        try:
            problems = await Catalog(self.do).problems(choice)
        except CatalogUnavailableError as exc:
            return Check("Default droplet", False, str(exc))
        if problems:
            return Check("Default droplet", False, "; ".join(f"{field} {reason}" for field, reason in problems))
        return Check("Default droplet", True, f"{do.size} in {do.region} from image {do.image}")

    async def do_ssh_key(self) -> Check:
        try:
            fingerprint = ssh_key_fingerprint(self.settings.coolify.ssh_public_key)
        except ValueError as exc:
            return Check("SSH key on DigitalOcean", False, f"COOLIFY_SSH_PUBLIC_KEY: {exc}")
        try:
            key = await self.do.get_ssh_key(fingerprint)
        except NotFoundError:
            return Check("SSH key on DigitalOcean", True, f"{fingerprint} not registered yet; the first deploy adds it")
        return Check("SSH key on DigitalOcean", True, f"{fingerprint} registered as {key.name!r} (id {key.id})")

    async def coolify_token(self) -> Check:
        try:
            version = await self.coolify.version()
        except AuthError as exc:
            hint = (
                "check COOLIFY_API_KEY (the whole '<id>|<secret>' string)"
                if exc.status_code == 401
                else "enable API access in Coolify (Settings, Advanced) and allow this host's IP"
            )
            return Check("Coolify API access", False, f"{exc.message} ({exc.status_code}): {hint}")
        return Check("Coolify API access", True, f"works (Coolify {version})")

    async def coolify_key(self) -> Check:
        wanted = _key_half(self.settings.coolify.ssh_public_key)
        uuid = self.settings.coolify.private_key_uuid
        name = "Coolify private key"
        if uuid:
            try:
                key = await self.coolify.get_private_key(uuid)
            except NotFoundError:
                return Check(name, False, f"COOLIFY_PRIVATE_KEY_UUID={uuid} does not exist in Coolify")
            if _key_half(key.public_key) != wanted:
                return Check(
                    name,
                    False,
                    f"the public half of {uuid} is not COOLIFY_SSH_PUBLIC_KEY: every droplet would be paid for and"
                    " then fail with 'Permission denied (publickey)'",
                )
            return Check(name, True, f"{uuid} matches COOLIFY_SSH_PUBLIC_KEY")
        for key in await self.coolify.list_private_keys():
            if _key_half(key.public_key) == wanted:
                return Check(name, True, f"{key.uuid} ({key.name!r}) matches COOLIFY_SSH_PUBLIC_KEY")
        return Check(
            name,
            False,
            "no Coolify private key has COOLIFY_SSH_PUBLIC_KEY as its public half: add the private key in Coolify"
            " (Keys & Tokens) or set COOLIFY_PRIVATE_KEY_UUID",
        )

    async def coolify_project(self) -> Check:
        coolify = self.settings.coolify
        name = "Coolify project and environment"
        try:
            project = await self.coolify.get_project(coolify.project_uuid)
        except NotFoundError:
            return Check(name, False, f"COOLIFY_PROJECT_UUID={coolify.project_uuid} does not exist in Coolify")
        if coolify.environment_name not in project.environments:
            have = ", ".join(project.environments) or "none"
            return Check(
                name,
                False,
                f"project {project.name!r} has no environment {coolify.environment_name!r} (it has: {have});"
                " set COOLIFY_ENVIRONMENT_NAME",
            )
        return Check(name, True, f"{project.name!r} / {coolify.environment_name}")


async def _guarded(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
    try:
        return await check()
    except CloudAPIError as exc:
        return Check(name, False, str(exc))


async def run_checks(settings: Settings, digitalocean: DigitalOceanClient, coolify: CoolifyClient) -> list[Check]:
    """Run every check (concurrently, read-only) and return them in a fixed order."""
    doctor = _Doctor(settings, digitalocean, coolify)
    checks: list[tuple[str, Callable[[], Awaitable[Check]]]] = [
        ("DigitalOcean API access", doctor.do_token),
        ("DigitalOcean write access", doctor.do_write),
        ("DigitalOcean droplet limit", doctor.droplet_limit),
        ("Default droplet", doctor.defaults),
        ("SSH key on DigitalOcean", doctor.do_ssh_key),
        ("Coolify API access", doctor.coolify_token),
        ("Coolify private key", doctor.coolify_key),
        ("Coolify project and environment", doctor.coolify_project),
    ]
    return list(await asyncio.gather(*(_guarded(name, check) for name, check in checks)))


def log_checks(checks: list[Check]) -> None:
    """Log each check: passed ones at INFO, failed ones at WARNING."""
    for check in checks:
        logger.log(logging.INFO if check.ok else logging.WARNING, "%s", check.line())
