"""DropletSlot: the droplet limit as rows, so that checking and reserving is one atomic statement.

There is one row per slot number. A slot is held from `deploy` until the deployment's droplet is confirmed
deleted. `reserve_slot` claims the lowest free slot with a single conditional UPDATE, which is atomic across
processes on SQLite (one writer at a time) and on PostgreSQL (`FOR UPDATE SKIP LOCKED` plus a re-checked
`deployment_id IS NULL`), so concurrent `deploy` calls can never hold more slots than the limit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from tortoise import Tortoise, fields
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model


class DropletSlot(Model):
    """One of `MAX_ACTIVE_DROPLETS` slots, whose `deployment_id` is null while free."""

    slot = fields.IntField(primary_key=True)
    deployment_id = fields.UUIDField(null=True, unique=True)
    reserved_at = fields.DatetimeField(null=True)

    class Meta:
        table = "droplet_slot"


@dataclass(frozen=True)
class SlotUsage:
    """What `dropletCount` reports."""

    active: int
    limit: int

    @property
    def available(self) -> int:
        """Free slots under the current limit (never negative after the limit was lowered)."""
        return max(0, self.limit - self.active)


def _connection() -> BaseDBAsyncClient:
    return Tortoise.get_connection("default")


def _is_postgres(conn: BaseDBAsyncClient) -> bool:
    return conn.capabilities.dialect == "postgres"


async def ensure_slots(limit: int) -> None:
    """Create slot rows 1..limit if missing (idempotent; rows above the limit stay until freed)."""
    conn = _connection()
    if _is_postgres(conn):
        sql = "INSERT INTO droplet_slot (slot) SELECT generate_series(1, $1) ON CONFLICT (slot) DO NOTHING"
        await conn.execute_query(sql, [limit])
    else:
        for slot in range(1, limit + 1):
            await conn.execute_query("INSERT OR IGNORE INTO droplet_slot (slot) VALUES (?)", [slot])


async def reserve_slot(deployment_id: uuid.UUID, limit: int, *, attempts: int = 5) -> int | None:
    """Atomically claim the lowest free slot numbered <= limit for a deployment; None when all are held."""
    conn = _connection()
    if _is_postgres(conn):
        sql = (
            "UPDATE droplet_slot SET deployment_id = $1, reserved_at = now() WHERE deployment_id IS NULL AND slot = "
            "(SELECT slot FROM droplet_slot WHERE deployment_id IS NULL AND slot <= $2 "
            "ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slot"
        )
        params: list[object] = [str(deployment_id), limit]
    else:
        sql = (
            "UPDATE droplet_slot SET deployment_id = ?, reserved_at = CURRENT_TIMESTAMP WHERE deployment_id IS NULL "
            "AND slot = (SELECT slot FROM droplet_slot WHERE deployment_id IS NULL AND slot <= ? "
            "ORDER BY slot LIMIT 1) RETURNING slot"
        )
        params = [str(deployment_id), limit]
    for _ in range(attempts):
        rows = await conn.execute_query_dict(sql, params)
        if rows:
            return int(rows[0]["slot"])
        # Nothing claimed: either every slot is held, or (PostgreSQL) the free ones are locked by
        # concurrent reservations that may still roll back. Only the first case is final.
        if await DropletSlot.filter(deployment_id__isnull=True, slot__lte=limit).count() == 0:
            return None
    return None


async def release_slot(deployment_id: uuid.UUID) -> bool:
    """Free the slot a deployment holds; False when it held none (already released)."""
    updated = await DropletSlot.filter(deployment_id=deployment_id).update(deployment_id=None, reserved_at=None)
    return updated > 0


async def slot_usage(limit: int) -> SlotUsage:
    """Count held slots (including any above a lowered limit) against the limit."""
    active = await DropletSlot.filter(deployment_id__isnull=False).count()
    return SlotUsage(active=active, limit=limit)


async def slot_holders() -> list[uuid.UUID]:
    """The deployments holding a slot, by slot number."""
    rows = (
        await DropletSlot.filter(deployment_id__isnull=False).order_by("slot").values_list("deployment_id", flat=True)
    )
    return [row if isinstance(row, uuid.UUID) else uuid.UUID(str(row)) for row in rows]
