"""`/metrics`: Prometheus text exposition of what an operator watches.

Gauges are read when scraped (deployments by status from the database, droplet slots, the SAQ queue, this
process's progress listeners), so several API replicas report the same cluster-wide figures and a scraper
may pick any of them. When API tokens are configured, scraping needs a token with the `admin` scope.
"""

from __future__ import annotations

from tortoise.functions import Count

from graphql_api.context import Services
from models.deployment import Deployment, DeploymentStatus
from models.slot import slot_usage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_STATES = ("queued", "active", "incomplete")


def _gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        label_text = ",".join(f'{key}="{val}"' for key, val in labels.items())
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return lines


async def render_metrics(services: Services) -> str:
    """The current metrics in Prometheus text format."""
    rows = await Deployment.annotate(n=Count("id")).group_by("status").values_list("status", "n")
    counts = {DeploymentStatus(status): int(n) for status, n in rows}
    usage = await slot_usage(services.settings.max_active_droplets)
    queue_counts = [({"state": state}, float(await services.queue.count(state))) for state in QUEUE_STATES]  # type: ignore[arg-type]
    lines = [
        *_gauge(
            "deployer_deployments",
            "Deployments by status.",
            [({"status": status.value}, float(counts.get(status, 0))) for status in DeploymentStatus],
        ),
        *_gauge("deployer_droplet_slots_active", "Droplet slots held.", [({}, float(usage.active))]),
        *_gauge("deployer_droplet_slots_limit", "MAX_ACTIVE_DROPLETS.", [({}, float(usage.limit))]),
        *_gauge("deployer_queue_jobs", "SAQ jobs on the deployer queue by state.", queue_counts),
        *_gauge(
            "deployer_progress_listeners",
            "deploymentProgress subscribers connected to this process.",
            [({}, float(services.hub.listener_count))],
        ),
    ]
    return "\n".join(lines) + "\n"
