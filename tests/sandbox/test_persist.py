"""Saving the sandbox world and loading it back: every record survives, ids continue, time goes on, and a file
that does not fit is refused without touching the world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.persist import RUNTIME_ATTRIBUTES, WorldFileError, dump_world, load, load_world, save
from sandbox.state import ManualClock, SandboxConfig, World
from tests.env_support import sandbox_application


def populated(clock: ManualClock) -> World:
    """A world with a key, a droplet, a server, an application, envs and deployments."""
    world = World(SandboxConfig(seed=7), clock=clock)
    key = world.add_ssh_key("k", world.config.coolify_public_key)
    world.create_droplet(name="eliza-1", region="nyc3", size="s-1vcpu-1gb", image="ubuntu-24-04-x64",
                         tags=["deployer-1"], ssh_keys=[key], user_data=None)  # fmt: skip
    app_uuid = sandbox_application(world)
    world.add_env(app_uuid, "TOKEN", "secret", is_buildtime=False)
    world.queue_deployment(world.applications[app_uuid], outcome="failed", restart_only=False, force=False)
    world.advance(3)
    return world


def comparable(world: World) -> dict[str, object]:
    """A snapshot without the request log count."""
    snapshot = world.snapshot()
    snapshot.pop("request_count")
    return snapshot


def test_a_saved_world_loads_back_whole(tmp_path: Path) -> None:
    """After save and load, the snapshot is the same, env values and key blobs included, and new ids do not
    collide with restored ones."""
    clock = ManualClock()
    world = populated(clock)
    save(world, tmp_path / "world.json")
    restored = World(SandboxConfig(seed=7), clock=clock)
    assert load(restored, tmp_path / "world.json") is True
    assert comparable(restored) == comparable(world)
    assert restored.envs[0].value == "secret"
    assert next(iter(restored.ssh_keys.values())).blob == next(iter(world.ssh_keys.values())).blob
    assert restored.next_id("droplet") == world.next_id("droplet")
    assert restored.new_uuid() == world.new_uuid()
    clock.advance(60)
    assert restored.snapshot()["droplets"][0]["status"] == "active"


def test_runtime_state_is_not_saved(tmp_path: Path) -> None:
    """Configuration, clock, faults and the request log come from the new process, not the file."""
    world = populated(ManualClock())
    world.faults.add_spec("build_fails")
    world.log_request("coolify", "GET", "/x", 200)
    data = dump_world(world)
    assert not RUNTIME_ATTRIBUTES & set(data["world"])
    json.dumps(data)  # plain JSON
    fresh = World(SandboxConfig(faults="rate_limit"))
    load_world(fresh, data)
    assert [f.kind.value for f in fresh.faults.active] == ["rate_limit"]
    assert fresh.requests == []


def test_a_field_added_since_the_file_was_written_takes_its_default(tmp_path: Path) -> None:
    """A record in the file without a field the dataclass now has gets the field's default."""
    world = populated(ManualClock())
    data = dump_world(world)
    for pair in data["world"]["envs"]:
        pair["fields"].pop("comment")
    restored = World()
    load_world(restored, data)
    assert restored.envs[0].comment is None


@pytest.mark.parametrize(
    "bad",
    [
        {"format": 99, "world": {}},
        {"format": 1, "world": {"droplets": {"__dataclass__": "os:system", "fields": {}}}},
        {"format": 1, "world": {"droplets": {"__dict__": [[1, {"__dataclass__": "sandbox.state:Droplet",
                                                               "fields": {"id": 1}}]]}}},
        {"format": 1, "world": {"droplets": {"__what__": 1}}},
    ],
)  # fmt: skip
def test_a_file_that_does_not_fit_is_refused(bad: object) -> None:
    """Another format, a class outside the sandbox, a record missing required fields, or junk: WorldFileError,
    and the world is untouched."""
    world = World()
    before = comparable(world)
    with pytest.raises(WorldFileError):
        load_world(world, bad)
    assert comparable(world) == before


def test_no_file_is_not_an_error(tmp_path: Path) -> None:
    """Loading a file that does not exist says so and changes nothing."""
    assert load(World(), tmp_path / "missing.json") is False
