"""The chaos suite: deployments keep their promises while workers die, Redis restarts and users cancel.

Two API processes and two workers (real processes) share one private redis-server (which the suite restarts)
and one database; the clouds are `deployer sandbox` with fast timings, configured only through `SANDBOX_*`.
The deployer processes run with the default heartbeat, sweep and reaper settings, so the takeover times
printed at the end are the ones a production deployment gets.

Each trial starts three deployments through one API, follows each with a subscriber on the OTHER API, picks
one deployment and one of its steps at random and, a random moment after that step begins, does one thing:

- `kill`: SIGKILL the worker running it (a replacement worker starts at once);
- `redis`: restart Redis with no persistence (every key lost);
- `cancel`: cancel it;
- `api`: SIGKILL the API the subscribers are connected to (they go on from the other API; it is restarted).

After each trial: every deployment reached a final status (COMPLETED, or CANCELLED when cancelled); every
subscriber saw each stored event exactly once, in order; exactly one droplet, server and application were
created per deployment that needed one; nothing is left in the clouds beyond the completed, undestroyed
deployments; the held slots equal those deployments (nothing is in flight then). Then about half of the
completed deployments are destroyed, and the last two checks run again.

On PostgreSQL (`.ci/run`'s second pass) it runs 30 trials; on SQLite (a plain `make test`) a short version of
6 trials, because four processes writing one SQLite file is not the production shape.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployer.embedded_redis import EmbeddedRedis
from models.deployment import DeploymentStage
from tests.conftest import postgres_url, report
from tests.outage_support import STATUS, Subscriber, event_time, gql, wait_for
from tests.processes import Process, Stack

TRIALS = 30 if postgres_url() else 6
DEPLOYMENTS_PER_TRIAL = 3
KINDS = ("kill", "redis", "cancel", "api")
#: The pipeline's steps, in order (the stages a deployment is in while its pipeline runs).
STEPS = tuple(
    stage.value
    for stage in DeploymentStage
    if stage not in (DeploymentStage.QUEUED, DeploymentStage.CLEANUP, DeploymentStage.DONE)
)
#: Deployer settings: production's heartbeat, sweep and reaper (their defaults); polls and deadlines for a
#: sandbox whose steps take a fraction of a second, on a shared two-core machine.
CHAOS_ENV = {
    "MAX_ACTIVE_DROPLETS": "50",
    "WORKER_CONCURRENCY": "10",
    "DROPLET_POLL_INTERVAL_S": "0.2",
    "SERVER_POLL_INTERVAL_S": "0.2",
    "BUILD_POLL_INTERVAL_S": "0.2",
    "DROPLET_TIMEOUT_S": "60",
    "SERVER_TIMEOUT_S": "60",
    "BUILD_TIMEOUT_S": "60",
}
#: The sandbox: fast timings (tests.processes.FAST_SANDBOX) and no rate limits, since a test polls far more
#: often than production does.
CHAOS_SANDBOX = {
    "SANDBOX_SERVER_VALIDATION_S": "0.3",
    "SANDBOX_BUILD_S": "0.5",
    "SANDBOX_DO_RATE_LIMIT_PER_MINUTE": "0",
    "SANDBOX_DO_RATE_LIMIT_PER_HOUR": "0",
    "SANDBOX_COOLIFY_RATE_LIMIT_PER_MINUTE": "0",
}
DEPLOY = "mutation { deploy { id } }"
CANCEL = "mutation($id: ID!) { cancelDeployment(id: $id) { status } }"
DESTROY = "mutation($id: ID!) { destroyDeployment(id: $id) { status } }"
ACTIVE = ("QUEUED", "PROCESSING")

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(1500)]


@dataclass
class Measures:
    """What the trials measured, in seconds."""

    takeovers: list[float] = field(default_factory=list)
    redis_requeues: list[float] = field(default_factory=list)
    redis_stalls: list[float] = field(default_factory=list)
    api_resubscribes: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    created: Counter[str] = field(default_factory=Counter)
    destroyed: int = 0
    #: Validations asked for a server already usable (a finished step repeated by a resumed attempt): 0.
    revalidations: int = 0
    resumed: int = 0


class Chaos:
    """The running system and what the suite knows about it."""

    def __init__(self, stack: Stack, redis: EmbeddedRedis, rng: random.Random) -> None:
        self.stack = stack
        self.redis = redis
        self.rng = rng
        self.apis: list[Process] = []
        self.workers: list[Process] = []
        self.spawned = 0
        #: Completed deployments not destroyed yet: id -> (droplet id, server uuid, application uuid).
        self.live: dict[str, tuple[int, str, str]] = {}
        self.log_offset = 0
        self.measures = Measures()

    def urls(self) -> list[str]:
        """The API base URLs."""
        return [p.url or "" for p in self.apis]

    def start_worker(self) -> None:
        """Start one more worker."""
        self.spawned += 1
        self.workers.append(self.stack.start_worker(f"worker-{self.spawned}"))

    def worker_running(self, deployment_id: str) -> Process | None:
        """The live worker whose log says it took the deployment's job last."""
        pattern = re.compile(rf"Processing .*key: deploy:{deployment_id}")
        found = [(p.log_path.stat().st_mtime, p) for p in self.workers if pattern.search(p.output())]
        return max(found, key=lambda pair: pair[0])[1] if found else None

    async def sandbox(self, path: str, **params: str) -> Any:
        """GET a control API path of the sandbox."""
        async with httpx.AsyncClient(base_url=self.stack.sandbox_url, timeout=20) as client:
            return (await client.get(f"/sandbox/_control/{path}", params=params)).json()


async def test_chaos(tmp_path: Path, private_redis: EmbeddedRedis, database_url: str, queue_name: str) -> None:
    """Trials of worker kills, Redis restarts, cancels and API kills, each followed by every check above."""
    seed = random.randrange(1 << 30)
    report("chaos", f"chaos: {TRIALS} trials, seed {seed}")
    rng = random.Random(seed)
    stack = Stack(tmp_path, redis_url=private_redis.url, database_url=database_url, queue=queue_name, env=CHAOS_ENV)
    chaos = Chaos(stack, private_redis, rng)
    kinds = [KINDS[i % len(KINDS)] for i in range(TRIALS)]
    rng.shuffle(kinds)
    try:
        stack.start_sandbox(**CHAOS_SANDBOX)
        chaos.apis = [stack.start_api("api-1"), stack.start_api("api-2")]
        chaos.start_worker()
        chaos.start_worker()
        for number, kind in enumerate(kinds, start=1):
            try:
                await trial(chaos, kind)
            except BaseException as exc:
                raise AssertionError(f"trial {number} ({kind}, seed {seed}) failed: {exc!r}\n{stack.logs()}") from exc
        await destroy(chaos, list(chaos.live))
        await check_clouds_and_slots(chaos)
    finally:
        stack.stop()
    summarize(chaos.measures)


async def trial(chaos: Chaos, kind: str) -> None:
    """One trial: three deployments, one disruption, then every check."""
    rng, measures = chaos.rng, chaos.measures
    measures.kinds[kind] += 1
    chaos.log_offset = len(await chaos.sandbox("requests", method="POST"))
    deploy_url, watch_url = rng.sample(chaos.urls(), 2)
    ids = []
    for _ in range(DEPLOYMENTS_PER_TRIAL):
        body = await gql(deploy_url, DEPLOY)
        assert "errors" not in body, body
        ids.append(str(body["data"]["deploy"]["id"]))
    subscribers = {i: Subscriber(i, [watch_url, deploy_url]).start() for i in ids}
    target = rng.choice(ids)
    step = rng.choice(("QUEUED", *STEPS) if kind == "cancel" else STEPS)
    await subscribers[target].wait_until(lambda e: e["stage"] == step or e["status"] not in ACTIVE, timeout=120)
    await asyncio.sleep(rng.uniform(0, 0.3))
    struck = time.time()
    if kind == "kill":
        worker = chaos.worker_running(target)
        if worker is not None:
            worker.kill()
            chaos.workers.remove(worker)
        chaos.start_worker()
    elif kind == "redis":
        chaos.redis.stop()
        chaos.redis.start()
        struck = time.time()
    elif kind == "cancel":
        body = await gql(deploy_url, CANCEL, {"id": target})
        assert "errors" not in body or "can be cancelled" in str(body), body
    elif kind == "api":
        api = next(p for p in chaos.apis if p.url == watch_url)
        api.kill()
        chaos.apis.remove(api)
    events = {i: await s.finish(timeout=180) for i, s in subscribers.items()}
    if kind == "api":
        chaos.apis.append(chaos.stack.start_api(f"api-{time.monotonic_ns()}", port=int(watch_url.rsplit(":", 1)[1])))
    rows = {i: (await gql(deploy_url, STATUS, {"id": i}))["data"]["deployment"] for i in ids}
    for deployment_id, seen in events.items():
        row = rows[deployment_id]
        expected = {"CANCELLED", "COMPLETED"} if kind == "cancel" and deployment_id == target else {"COMPLETED"}
        assert row["status"] in expected, (deployment_id, row["status"], row["error"])
        assert seen[-1]["status"] == row["status"]
        assert [e["sequence"] for e in seen] == list(range(1, len(row["events"]) + 1)), "each event once, in order"
        assert [e["message"] for e in seen] == [e["message"] for e in row["events"]]
        measures.outcomes[row["status"]] += 1
        if row["status"] == "COMPLETED":
            chaos.live[deployment_id] = (row["dropletId"], row["serverUuid"], row["applicationUuid"])
        after = [e for e in seen if event_time(e) > struck]
        if kind == "kill":
            measures.takeovers += [event_time(e) - struck for e in after if e["message"].startswith("Resuming")][:1]
        elif kind == "redis" and after and seen[-1] is not after[0]:
            measures.redis_stalls.append(event_time(after[0]) - struck)
            measures.redis_requeues += [event_time(e) - struck for e in after if "re-queued" in e["message"]][:1]
        elif kind == "api":
            arrivals = [t for t in subscribers[deployment_id].arrivals if t > struck]
            if arrivals and subscribers[deployment_id].reconnects:
                measures.api_resubscribes.append(arrivals[0] - struck)
    await check_creates(chaos, rows)
    await check_clouds_and_slots(chaos)
    await destroy(chaos, [i for i in chaos.live if chaos.rng.random() < 0.5])
    await check_clouds_and_slots(chaos)


async def check_creates(chaos: Chaos, rows: dict[str, dict[str, Any]]) -> None:
    """Exactly one droplet, server and application were created for each deployment of the trial that has one."""
    log = (await chaos.sandbox("requests", method="POST"))[chaos.log_offset :]
    ok = [r["path"] for r in log if r["status"] in (201, 202)]
    apps = ("/api/v1/applications/public", "/api/v1/applications/dockerimage")
    created = {
        "droplets": sum(p.endswith("/v2/droplets") for p in ok),
        "servers": sum(p.endswith("/api/v1/servers") for p in ok),
        "applications": sum(p.endswith(apps) for p in ok),
    }
    recorded = {
        "droplets": sum(r["dropletId"] is not None for r in rows.values()),
        "servers": sum(r["serverUuid"] is not None for r in rows.values()),
        "applications": sum(r["applicationUuid"] is not None for r in rows.values()),
    }
    assert created == recorded, (created, recorded)
    chaos.measures.created.update(created)
    for row in rows.values():
        if row["serverUuid"] is not None and any(e["message"].startswith("Resuming") for e in row["events"]):
            chaos.measures.resumed += 1
    # No deployment, resumed or not, asked Coolify to validate a server it had already validated, nor while a
    # validation was running (the sandbox counts both over its whole life).
    validations = (await chaos.sandbox("state"))["validations"]
    chaos.measures.revalidations = validations["after_usable"]
    assert validations["after_usable"] == 0, validations
    assert validations["overlapping"] == 0, validations


async def check_clouds_and_slots(chaos: Chaos) -> None:
    """The clouds hold exactly the completed, undestroyed deployments' resources, and they hold the slots."""

    async def settled() -> bool:  # an application's delete completes a moment after its server's
        world = await chaos.sandbox("state")
        return not any(a["deleting"] for a in world["applications"])

    await wait_for(settled, timeout=30, what="application deletes to complete")
    world = await chaos.sandbox("state")
    assert sorted(str(d["id"]) for d in world["droplets"]) == sorted(str(v[0]) for v in chaos.live.values())
    assert sorted(s["uuid"] for s in world["servers"]) == sorted(v[1] for v in chaos.live.values())
    assert sorted(a["uuid"] for a in world["applications"]) == sorted(v[2] for v in chaos.live.values())
    body = await gql(chaos.urls()[0], "{ dropletCount { active } }")
    assert body["data"]["dropletCount"]["active"] == len(chaos.live)


async def destroy(chaos: Chaos, ids: list[str]) -> None:
    """Destroy completed deployments and wait until each is DESTROYED."""
    url = chaos.urls()[0]
    for deployment_id in ids:
        body = await gql(url, DESTROY, {"id": deployment_id})
        assert "errors" not in body, body
    for deployment_id in ids:

        async def destroyed(deployment_id: str = deployment_id) -> bool:
            body = await gql(url, STATUS, {"id": deployment_id})
            return bool(body["data"]["deployment"]["status"] == "DESTROYED")

        await wait_for(destroyed, timeout=120, what=f"{deployment_id} to be DESTROYED")
        del chaos.live[deployment_id]
        chaos.measures.destroyed += 1


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"{len(values)}, median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def summarize(measures: Measures) -> None:
    """Report the counts and times the trials measured (shown at the end of the test run)."""
    database = "PostgreSQL" if postgres_url() else "SQLite"
    report("chaos", f"chaos ({database}): trials {dict(measures.kinds)}; deployments {dict(measures.outcomes)}")
    report("chaos", f"chaos: destroyed {measures.destroyed}; created {dict(measures.created)}, one each per deployment")
    report("chaos", f"chaos: takeover after a worker SIGKILL: {_spread(measures.takeovers)}")
    report(
        "chaos", f"chaos: resumed deployments {measures.resumed}, server validations repeated {measures.revalidations}"
    )
    report("chaos", f"chaos: Redis restart, first progress after it: {_spread(measures.redis_stalls)}")
    report("chaos", f"chaos: Redis restart, lost jobs re-queued after: {_spread(measures.redis_requeues)}")
    report(
        "chaos", f"chaos: API SIGKILL, streaming again from the other API after: {_spread(measures.api_resubscribes)}"
    )
