"""A small fleet run (`bench.fleet`): 30 deployments at once through real sandbox, API and worker processes,
against the sandbox with both clouds' rate limits on (time-scaled), on one worker process."""

from __future__ import annotations

import pytest

from bench.fleet import FleetResult, fleet_figures, run_fleet
from settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: Deployments in flight at once.
FLEET = 30


def test_a_fleet_completes_on_one_worker_within_its_redis_connections(redis_url: str, database_url: str) -> None:
    """Every deployment of the fleet ends COMPLETED (none fails, by a 429 or otherwise), and the worker never
    holds more Redis connections than WORKER_REDIS_CONNECTIONS, while running all of them at once."""
    result = run_fleet(FLEET, time_scale=60, limit_s=120, redis_url=redis_url, database_url=database_url)
    assert result.failures == {}, result.failures
    assert (result.completed, result.failed, result.failed_by_429) == (FLEET, 0, 0)
    assert 0 < result.redis_connections <= Settings().worker_redis_connections
    assert result.lag_samples > 0  # the worker's loop-lag monitor ran and reported when it stopped


def test_the_fleet_figures_say_what_was_measured() -> None:
    """The figures name the fleet size and carry the issue's goals."""
    result = FleetResult(deployments=200, time_scale=60, completed=199, redis_connections=12, elapsed_s=60)
    result.do_polls = 120
    figures = {f.name: f for f in fleet_figures(result)}
    assert figures["fleet.200.completed"].met is False
    assert figures["fleet.200.redis_connections"].met is True
    assert figures["fleet.200.do_polls"].value == 2.0  # 120 calls over 60 scaled minutes
