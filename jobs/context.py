"""What a job gets from its worker: clients, Redis and the pipeline's configuration, in a typed SAQ context."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from redis.asyncio import Redis
from saq.types import Context

from clients.coolify import CoolifyClient
from clients.digitalocean import DigitalOceanClient
from jobs.keeper import Keeper
from jobs.looplag import LoopLagMonitor
from jobs.polls import PollLists
from settings import Settings, Timings


@dataclass(frozen=True)
class PipelineConfig:
    """The settings the pipeline needs, copied out of `Settings` by the worker."""

    timings: Timings
    region: str
    size: str
    image: str
    name_prefix: str
    coolify_project_uuid: str
    coolify_environment_name: str
    coolify_private_key_uuid: str
    ssh_public_key: str
    app_image: str = "nginx:alpine"
    app_port: int = 80
    #: How long cleanup waits for a deleted droplet or server to be confirmed gone.
    cleanup_timeout_s: float = 120.0
    #: First delay before re-running a step after a transient error (doubles per attempt, capped at 30 s).
    step_retry_delay_s: float = 2.0
    #: After a droplet create whose answer was lost, how long to keep looking for it by tag before creating
    #: again (DigitalOcean's list can lag a create).
    create_lookup_s: float = 10.0
    #: `DEPLOYER_SECRET_KEY`: decrypts the env values the API stashed in Redis (`jobs.envstash`).
    secret_key: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        """Copy the pipeline's part of the settings."""
        return cls(
            timings=settings.timings,
            region=settings.digitalocean.region,
            size=settings.digitalocean.size,
            image=settings.digitalocean.image,
            name_prefix=settings.digitalocean.name_prefix,
            coolify_project_uuid=settings.coolify.project_uuid,
            coolify_environment_name=settings.coolify.environment_name,
            coolify_private_key_uuid=settings.coolify.private_key_uuid,
            ssh_public_key=settings.coolify.ssh_public_key,
            app_image=settings.app_image,
            app_port=settings.app_port,
            cleanup_timeout_s=max(10.0, min(120.0, settings.timings.droplet_timeout_s)),
            secret_key=settings.secret_key,
        )


@dataclass
class Deps:
    """Long-lived resources one worker process shares between its jobs."""

    digitalocean: DigitalOceanClient
    coolify: CoolifyClient
    redis: Redis
    config: PipelineConfig
    #: The lists waiting deployments share (one call per interval for all); None polls every item by itself.
    polls: PollLists | None = None


class WorkerContext(Context, total=False):
    """SAQ's job context plus our dependencies (filled by the worker's startup)."""

    deps: Deps
    reaper: asyncio.Task[None]
    #: Set at shutdown: the reaper finishes the pass under way and stops.
    reaper_stopping: asyncio.Event
    #: Renews this worker's liveness, leases and SAQ heartbeats in one round trip per beat.
    keeper: Keeper
    #: Samples this worker's event-loop lag.
    looplag: LoopLagMonitor
