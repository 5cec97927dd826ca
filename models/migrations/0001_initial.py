import functools
from json import dumps, loads
from uuid import uuid4

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops

from models.deployment import DeploymentStage, DeploymentStatus
from models.env import EnvAction


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="Deployment",
            fields=[
                ("id", fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                (
                    "status",
                    fields.CharEnumField(
                        default=DeploymentStatus.QUEUED,
                        db_index=True,
                        description="status",
                        enum_type=DeploymentStatus,
                        max_length=16,
                    ),
                ),
                (
                    "stage",
                    fields.CharEnumField(
                        default=DeploymentStage.QUEUED, description="stage", enum_type=DeploymentStage, max_length=32
                    ),
                ),
                (
                    "failed_stage",
                    fields.CharEnumField(
                        null=True, description="stage that failed", enum_type=DeploymentStage, max_length=32
                    ),
                ),
                ("error", fields.TextField(null=True, unique=False)),
                (
                    "spec",
                    fields.JSONField(
                        default=dict,
                        description="The validated `DeployInput` minus environment values (those never reach the database).",
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("droplet_id", fields.BigIntField(null=True)),
                ("droplet_name", fields.CharField(null=True, max_length=255)),
                ("ip_address", fields.CharField(null=True, max_length=64)),
                ("server_uuid", fields.CharField(null=True, max_length=64)),
                ("application_uuid", fields.CharField(null=True, db_index=True, max_length=64)),
                ("application_domains", fields.TextField(null=True, unique=False)),
                ("coolify_deployment_uuid", fields.CharField(null=True, max_length=64)),
                (
                    "resources_released",
                    fields.BooleanField(
                        default=False,
                        description="True once the droplet is confirmed deleted (or was never created) and the slot is free.",
                    ),
                ),
                (
                    "cancel_requested",
                    fields.BooleanField(
                        default=False,
                        description="Set by `cancelDeployment`: the running pipeline stops at its next check and cleans up.",
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ("finished_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "deployment",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One requested deployment and everything the pipeline has learned about it so far.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="DeploymentEvent",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                (
                    "deployment",
                    fields.ForeignKeyField(
                        "models.Deployment",
                        source_field="deployment_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="events",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("sequence", fields.IntField()),
                ("status", fields.CharEnumField(description="status", enum_type=DeploymentStatus, max_length=16)),
                ("stage", fields.CharEnumField(description="stage", enum_type=DeploymentStage, max_length=32)),
                ("message", fields.TextField(unique=False)),
                ("attempt", fields.IntField(null=True)),
                ("at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "deployment_event",
                "app": "models",
                "unique_together": (("deployment", "sequence"),),
                "pk_attr": "id",
                "table_description": "One progress event: a status change or a poll attempt, numbered 1, 2, 3, ... per deployment.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="DropletSlot",
            fields=[
                ("slot", fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("deployment_id", fields.UUIDField(null=True, unique=True)),
                ("reserved_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "droplet_slot",
                "app": "models",
                "pk_attr": "slot",
                "table_description": "One of `MAX_ACTIVE_DROPLETS` slots, whose `deployment_id` is null while free.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="EnvChange",
            fields=[
                ("id", fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ("application_uuid", fields.CharField(db_index=True, max_length=64)),
                ("deployment_id", fields.UUIDField(null=True)),
                ("action", fields.CharEnumField(description="action", enum_type=EnvAction, max_length=16)),
                (
                    "keys",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "applied_keys",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                (
                    "failed_keys",
                    fields.JSONField(
                        default=list, encoder=functools.partial(dumps, separators=(",", ":")), decoder=loads
                    ),
                ),
                ("restart_mode", fields.CharField(default="NONE", max_length=16)),
                ("restart_deployment_uuid", fields.CharField(null=True, max_length=64)),
                ("error", fields.TextField(null=True, unique=False)),
                ("caller", fields.CharField(null=True, max_length=128)),
                ("at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "env_change",
                "app": "models",
                "pk_attr": "id",
                "table_description": "Who changed which keys of which application, when, and how it ended (values are never stored).",
            },
            bases=["Model"],
        ),
    ]
