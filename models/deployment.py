"""Deployment and DeploymentEvent: one row per `deploy` call, one event row per progress step."""

from __future__ import annotations

import enum
import uuid

from tortoise import fields
from tortoise.models import Model


class DeploymentStatus(str, enum.Enum):
    """Where a deployment is in its life; the GraphQL enum mirrors it."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DESTROYING = "DESTROYING"
    DESTROYED = "DESTROYED"


#: A deployment in one of these statuses changes only by a destroy; its progress stream completes.
TERMINAL_STATUSES = frozenset(
    {DeploymentStatus.COMPLETED, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED, DeploymentStatus.DESTROYED}
)
#: Statuses whose deploy job is still expected to run.
ACTIVE_STATUSES = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.PROCESSING})
#: Statuses a cancel applies to (the pipeline stops and cleans up).
CANCELLABLE_STATUSES = ACTIVE_STATUSES


class DeploymentStage(str, enum.Enum):
    """The pipeline step a deployment is in (or failed in), in pipeline order."""

    QUEUED = "QUEUED"
    CREATE_DROPLET = "CREATE_DROPLET"
    WAIT_DROPLET = "WAIT_DROPLET"
    REGISTER_SERVER = "REGISTER_SERVER"
    VALIDATE_SERVER = "VALIDATE_SERVER"
    CREATE_APPLICATION = "CREATE_APPLICATION"
    START_DEPLOYMENT = "START_DEPLOYMENT"
    WAIT_BUILD = "WAIT_BUILD"
    CLEANUP = "CLEANUP"
    DONE = "DONE"


class Deployment(Model):
    """One requested deployment and everything the pipeline has learned about it so far.

    Each step writes its result here before the next starts, so a retried job resumes from these columns
    instead of creating a second droplet, server or application.
    """

    id = fields.UUIDField(primary_key=True, default=uuid.uuid4)
    # Descriptions become SQL comments in migrations, and Tortoise's SQLite migration runner splits statements
    # on ';' and lines: keep them on one line and free of semicolons (enum fields get short ones, since the
    # default lists every member on its own line).
    status = fields.CharEnumField(
        DeploymentStatus, max_length=16, default=DeploymentStatus.QUEUED, db_index=True, description="status"
    )
    stage = fields.CharEnumField(DeploymentStage, max_length=32, default=DeploymentStage.QUEUED, description="stage")
    failed_stage = fields.CharEnumField(DeploymentStage, max_length=32, null=True, description="stage that failed")
    error = fields.TextField(null=True)
    #: The validated `DeployInput` minus environment values (those never reach the database).
    spec: dict[str, object] = fields.JSONField(default=dict)
    droplet_id = fields.BigIntField(null=True)
    droplet_name = fields.CharField(max_length=255, null=True)
    ip_address = fields.CharField(max_length=64, null=True)
    server_uuid = fields.CharField(max_length=64, null=True)
    application_uuid = fields.CharField(max_length=64, null=True, db_index=True)
    application_domains = fields.TextField(null=True)
    coolify_deployment_uuid = fields.CharField(max_length=64, null=True)
    # When Coolify judged the server reachable and usable: a resumed job never asks it to validate again.
    server_validated_at = fields.DatetimeField(null=True, description="server validated at")
    # The caller's DeployInput.idempotencyKey: the same key with the same input returns this deployment again.
    idempotency_key = fields.CharField(max_length=255, null=True, unique=True, description="idempotency key")
    # SHA-256 of the canonical deploy input, telling a retry (same input) from a reused key (different input).
    request_hash = fields.CharField(max_length=64, null=True, description="deploy input hash")
    #: True once the droplet is confirmed deleted (or was never created) and the slot is free.
    resources_released = fields.BooleanField(default=False)
    #: Set by `cancelDeployment`: the running pipeline stops at its next check and cleans up.
    cancel_requested = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    updated_at = fields.DatetimeField(auto_now=True)
    finished_at = fields.DatetimeField(null=True)

    events: fields.ReverseRelation[DeploymentEvent]

    class Meta:
        table = "deployment"

    @property
    def is_terminal(self) -> bool:
        """Whether the deployment has reached a final status."""
        return self.status in TERMINAL_STATUSES


class DeploymentEvent(Model):
    """One progress event: a status change or a poll attempt, numbered 1, 2, 3, ... per deployment."""

    id = fields.BigIntField(primary_key=True)
    deployment: fields.ForeignKeyRelation[Deployment] = fields.ForeignKeyField(
        "models.Deployment", related_name="events", on_delete=fields.CASCADE
    )
    deployment_id: uuid.UUID
    sequence = fields.IntField()
    status = fields.CharEnumField(DeploymentStatus, max_length=16, description="status")
    stage = fields.CharEnumField(DeploymentStage, max_length=32, description="stage")
    message = fields.TextField()
    attempt = fields.IntField(null=True)
    at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "deployment_event"
        unique_together = (("deployment", "sequence"),)
        ordering = ("sequence",)
