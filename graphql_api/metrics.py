"""`/metrics`: Prometheus text exposition of what an operator watches.

Gauges are read when scraped (deployments by status from the database, droplet slots, the SAQ queue, this
process's progress listeners), so several API replicas report the same cluster-wide figures and a scraper
may pick any of them. When API tokens are configured, scraping needs a token with the `admin` scope.
"""

from __future__ import annotations

from tortoise.functions import Count

from graphql_api.context import Services
from jobs.budget import read_budget_stats
from models.deployment import Deployment, DeploymentStatus
from models.slot import slot_usage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUEUE_STATES = ("queued", "active", "incomplete")


def _gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]], kind: str = "gauge") -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{key}="{val}"' for key, val in labels.items())
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return lines


async def render_metrics(services: Services, *, progress_subscribers: int | None = None) -> str:
    """The current metrics in Prometheus text format.

    Args:
        progress_subscribers: `deploymentProgress` subscriptions streaming through the fan-out (None: the
            hub's listeners are the subscribers, as without fan-out).
    """
    subscribers = services.hub.listener_count if progress_subscribers is None else progress_subscribers
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
            [({}, float(subscribers))],
        ),
        *_gauge(
            "deployer_progress_channels",
            "Deployments whose progress channel this process subscribes to (the ones its clients follow).",
            [({}, float(len(services.hub.channels)))],
        ),
        *await _budget_counters(services),
    ]
    return "\n".join(lines) + "\n"


async def _budget_counters(services: Services) -> list[str]:
    """The shared request budgets' cluster-wide counters (`jobs.budget`), per cloud with a budget."""
    settings = services.settings
    clouds = [
        ("digitalocean", settings.digitalocean.api_key, settings.digitalocean.requests_per_minute),
        ("coolify", settings.coolify.api_key, settings.coolify.requests_per_minute),
    ]
    stats = [(api, await read_budget_stats(services.redis, api, token)) for api, token, rate in clouds if rate > 0]
    if not stats:
        return []
    return [
        *_gauge(
            "deployer_budget_requests_total",
            "Requests sent through the shared request budget, by cloud (all processes).",
            [({"cloud": api}, float(s.requests)) for api, s in stats],
            "counter",
        ),
        *_gauge(
            "deployer_budget_wait_seconds_total",
            "Seconds requests waited for a slot of the shared request budget, by cloud (all processes).",
            [({"cloud": api}, s.wait_s) for api, s in stats],
            "counter",
        ),
        *_gauge(
            "deployer_budget_rate_limited_total",
            "429 answers that pushed the shared request budget back, by cloud (all processes).",
            [({"cloud": api}, float(s.rate_limited)) for api, s in stats],
            "counter",
        ),
        *_gauge(
            "deployer_budget_refused_total",
            "Requests not sent because the budget had no slot before their deadline, by cloud (all processes).",
            [({"cloud": api}, float(s.refused)) for api, s in stats],
            "counter",
        ),
        *_gauge(
            "deployer_budget_quota_holds_total",
            "Responses whose low hourly quota (DigitalOcean's ratelimit-remaining) held the budget until the"
            " oldest counted request expired, by cloud (all processes).",
            [({"cloud": api}, float(s.quota_holds)) for api, s in stats],
            "counter",
        ),
    ]
