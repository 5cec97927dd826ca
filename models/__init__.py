"""Tortoise models: deployments, their events, droplet slots and the env audit log."""

from models.deployment import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Deployment,
    DeploymentEvent,
    DeploymentStage,
    DeploymentStatus,
)
from models.env import EnvAction, EnvChange
from models.slot import DropletSlot, SlotUsage, release_slot, reserve_slot, slot_usage

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "Deployment",
    "DeploymentEvent",
    "DeploymentStage",
    "DeploymentStatus",
    "DropletSlot",
    "EnvAction",
    "EnvChange",
    "SlotUsage",
    "release_slot",
    "reserve_slot",
    "slot_usage",
]
