"""Output types: enums are the models' own, and `from_model()` exposes safe fields only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from graphql_api import types
from jobs.progress import ProgressEvent
from models import deployment as db


def test_enums_are_the_models_enums() -> None:
    """The GraphQL status and stage enums are the models' enums, so they cannot drift apart."""
    assert types.DeploymentStatus is db.DeploymentStatus
    assert types.DeploymentStage is db.DeploymentStage


def _row(**fields: object) -> db.Deployment:
    now = datetime.now(UTC)
    values: dict[str, object] = {"id": uuid.uuid4(), "created_at": now, "updated_at": now, "spec": {}}
    values.update(fields)
    return db.Deployment(**values)


def test_from_model_reads_the_spec_but_never_env_values() -> None:
    """Spec-derived fields are exposed; anything else in the spec (such as a stray value) is not."""
    row = _row(
        status=db.DeploymentStatus.FAILED,
        stage=db.DeploymentStage.CLEANUP,
        failed_stage=db.DeploymentStage.WAIT_BUILD,
        error="Coolify build failed",
        spec={
            "name": "web",
            "source": {
                "kind": "git",
                "repository": "https://github.com/a/b",
                "branch": "dev",
                "build_pack": "static",
            },
            "ports": "80,443",
            "domains": ["https://a.example.com"],
            "env_keys": ["SECRET_KEY"],
            "env": {"SECRET_KEY": "must-not-appear"},
        },
    )
    deployment = types.Deployment.from_model(row)
    assert deployment.status is types.DeploymentStatus.FAILED
    assert deployment.failed_stage is types.DeploymentStage.WAIT_BUILD
    assert deployment.ports == [80, 443]
    assert deployment.application_url == "https://a.example.com"
    assert deployment.env_keys == ["SECRET_KEY"]
    assert deployment.source is not None
    assert deployment.source.description == "git https://github.com/a/b@dev (STATIC)"
    assert "must-not-appear" not in repr(deployment)


def test_from_model_tolerates_an_empty_spec() -> None:
    """A row without a spec still converts (older rows, or rows written by hand)."""
    deployment = types.Deployment.from_model(_row())
    assert deployment.source is None
    assert deployment.ports == []
    assert deployment.env_keys == []
    assert deployment.application_url is None


def test_event_from_progress() -> None:
    """A progress event converts field for field."""
    event = ProgressEvent(
        deployment_id="d1",
        sequence=4,
        status=db.DeploymentStatus.PROCESSING,
        stage=db.DeploymentStage.WAIT_DROPLET,
        message="Waiting for droplet (attempt 2)",
        attempt=2,
        at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    converted = types.DeploymentEvent.from_progress(event)
    assert (converted.sequence, converted.deployment_id, converted.attempt) == (4, "d1", 2)
    assert converted.stage is types.DeploymentStage.WAIT_DROPLET


def test_parse_deployment_id() -> None:
    """Malformed ids parse to None rather than raising."""
    value = uuid.uuid4()
    assert types.parse_deployment_id(str(value)) == value
    assert types.parse_deployment_id("nope") is None
