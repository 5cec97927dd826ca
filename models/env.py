"""EnvChange: an audit row per environment change (keys and actions, never values)."""

from __future__ import annotations

import enum

from tortoise import fields
from tortoise.models import Model


class EnvAction(str, enum.Enum):
    """Which mutation made the change."""

    SET = "SET"
    BULK_SET = "BULK_SET"
    DELETE = "DELETE"


class EnvChange(Model):
    """Who changed which keys of which application, when, and how it ended (values are never stored)."""

    id = fields.BigIntField(primary_key=True)
    application_uuid = fields.CharField(max_length=64, db_index=True)
    deployment_id = fields.UUIDField(null=True)
    action = fields.CharEnumField(EnvAction, max_length=16, description="action")
    keys: list[str] = fields.JSONField(default=list)
    applied_keys: list[str] = fields.JSONField(default=list)
    failed_keys: list[str] = fields.JSONField(default=list)
    restart_mode = fields.CharField(max_length=16, default="NONE")
    restart_deployment_uuid = fields.CharField(max_length=64, null=True)
    error = fields.TextField(null=True)
    caller = fields.CharField(max_length=128, null=True)
    at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "env_change"
        ordering = ("id",)
