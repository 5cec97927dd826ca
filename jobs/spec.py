"""`DeploySpec`: what the API stored in `Deployment.spec`, read back with the worker's defaults filled in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.context import PipelineConfig


@dataclass(frozen=True)
class GitSource:
    """A public git repository built by Coolify."""

    repository: str
    branch: str = "main"
    build_pack: str = "nixpacks"
    base_directory: str | None = None


@dataclass(frozen=True)
class DockerSource:
    """A ready image pulled from a registry."""

    image: str
    tag: str = "latest"


@dataclass(frozen=True)
class DeploySpec:
    """Everything the pipeline needs to know about what to deploy and where."""

    name: str
    source: GitSource | DockerSource
    ports: str
    domains: str | None
    region: str
    size: str
    image: str

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any], *, default_name: str, config: PipelineConfig) -> DeploySpec:
        """Parse a stored spec; anything missing takes the worker's default."""
        raw_source = stored.get("source") or {}
        source: GitSource | DockerSource
        if raw_source.get("kind") == "git":
            source = GitSource(
                repository=str(raw_source["repository"]),
                branch=str(raw_source.get("branch") or "main"),
                build_pack=str(raw_source.get("build_pack") or "nixpacks").lower(),
                base_directory=raw_source.get("base_directory") or None,
            )
        elif raw_source.get("kind") == "docker":
            source = DockerSource(image=str(raw_source["image"]), tag=str(raw_source.get("tag") or "latest"))
        else:
            image, _, tag = config.app_image.partition(":")
            source = DockerSource(image=image, tag=tag or "latest")
        ports = stored.get("ports") or str(config.app_port)
        if isinstance(ports, list):
            ports = ",".join(str(port) for port in ports)
        domains = stored.get("domains") or None
        if isinstance(domains, list):
            domains = ",".join(domains) or None
        return cls(
            name=str(stored.get("name") or default_name),
            source=source,
            ports=str(ports),
            domains=domains,
            region=str(stored.get("region") or config.region),
            size=str(stored.get("size") or config.size),
            image=str(stored.get("image") or config.image),
        )
