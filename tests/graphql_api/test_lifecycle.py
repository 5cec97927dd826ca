"""`cancelDeployment` and `destroyDeployment` at the GraphQL edge (no worker running)."""

from __future__ import annotations

from saq import Queue

from jobs.enqueue import DESTROY_FUNCTION
from models import Deployment, DeploymentStage, DeploymentStatus
from models.slot import slot_usage
from tests.graphql_api.conftest import GraphQLClient

CANCEL = "mutation($id: ID!) { cancelDeployment(id: $id) { id status stage error } }"
DESTROY = "mutation($id: ID!) { destroyDeployment(id: $id) { id status stage } }"


async def _deploy(gql: GraphQLClient) -> str:
    status, body = await gql("mutation { deploy { id } }")
    assert status == 200, body
    return str(body["data"]["deploy"]["id"])


async def test_cancelling_a_queued_deployment_ends_it_at_once_and_frees_the_slot(gql: GraphQLClient) -> None:
    """A deployment no worker has started is CANCELLED immediately, with its slot free and nothing to delete."""
    deployment_id = await _deploy(gql)
    status, body = await gql(CANCEL, {"id": deployment_id})
    assert status == 200, body
    assert body["data"]["cancelDeployment"]["status"] == "CANCELLED"
    assert body["data"]["cancelDeployment"]["error"] == "Cancelled on request"
    assert (await slot_usage(3)).active == 0
    row = await Deployment.get(id=deployment_id)
    assert row.resources_released
    assert row.cancel_requested


async def test_cancelling_a_running_deployment_only_marks_it(gql: GraphQLClient) -> None:
    """A PROCESSING deployment is marked; its worker does the stopping and the cleanup."""
    deployment_id = await _deploy(gql)
    await Deployment.filter(id=deployment_id).update(status=DeploymentStatus.PROCESSING, droplet_id=7)
    _, body = await gql(CANCEL, {"id": deployment_id})
    assert body["data"]["cancelDeployment"]["status"] == "PROCESSING"
    assert (await Deployment.get(id=deployment_id)).cancel_requested
    assert (await slot_usage(3)).active == 1


async def test_a_finished_deployment_cannot_be_cancelled(gql: GraphQLClient) -> None:
    """Cancelling a COMPLETED deployment is BAD_USER_INPUT pointing at destroy."""
    deployment_id = await _deploy(gql)
    await Deployment.filter(id=deployment_id).update(status=DeploymentStatus.COMPLETED)
    _, body = await gql(CANCEL, {"id": deployment_id})
    error = body["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "COMPLETED" in error["message"]


async def test_destroying_a_completed_deployment_enqueues_the_destroy_job(gql: GraphQLClient, queue: Queue) -> None:
    """destroyDeployment sets DESTROYING and enqueues one destroy job; a second call changes nothing."""
    deployment_id = await _deploy(gql)
    await Deployment.filter(id=deployment_id).update(status=DeploymentStatus.COMPLETED, stage=DeploymentStage.DONE)
    queued_before = await queue.count("queued")
    _, body = await gql(DESTROY, {"id": deployment_id})
    assert body["data"]["destroyDeployment"]["status"] == "DESTROYING"
    _, body = await gql(DESTROY, {"id": deployment_id})
    assert body["data"]["destroyDeployment"]["status"] == "DESTROYING"
    assert await queue.count("queued") == queued_before + 1
    functions = [job.function async for job in queue.iter_jobs() if job.kwargs.get("deployment_id") == deployment_id]
    assert functions.count(DESTROY_FUNCTION) == 1


async def test_unknown_deployments_are_not_found(gql: GraphQLClient) -> None:
    """Both mutations answer NOT_FOUND for an unknown id."""
    for mutation in (CANCEL, DESTROY):
        _, body = await gql(mutation, {"id": "00000000-0000-0000-0000-000000000000"})
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
