"""Droplet slots: one atomic check-and-reserve, release, and counting (SQLite, or PostgreSQL via DATABASE_URL)."""

from __future__ import annotations

import asyncio
import uuid

from models.slot import ensure_slots, release_slot, reserve_slot, slot_usage


async def test_twenty_concurrent_reservations_get_exactly_three(db: str) -> None:
    """Twenty concurrent reservations with three free slots succeed exactly three times."""
    ids = [uuid.uuid4() for _ in range(20)]
    results = await asyncio.gather(*(reserve_slot(i, 3) for i in ids))
    assert sorted(r for r in results if r is not None) == [1, 2, 3]
    usage = await slot_usage(3)
    assert (usage.active, usage.limit, usage.available) == (3, 3, 0)


async def test_release_frees_a_slot_once(db: str) -> None:
    """Releasing frees the slot for the next reservation; a second release reports nothing held."""
    first, second = uuid.uuid4(), uuid.uuid4()
    assert await reserve_slot(first, 1) == 1
    assert await reserve_slot(second, 1) is None
    assert await release_slot(first) is True
    assert await release_slot(first) is False
    assert await reserve_slot(second, 1) == 1


async def test_a_lowered_limit_counts_held_slots_above_it(db: str) -> None:
    """Slots held above a lowered limit still count as active, and none is available."""
    await ensure_slots(5)
    for _ in range(5):
        assert await reserve_slot(uuid.uuid4(), 5) is not None
    usage = await slot_usage(2)
    assert (usage.active, usage.available) == (5, 0)
    assert await reserve_slot(uuid.uuid4(), 2) is None
