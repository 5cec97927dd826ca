"""The progress subscription: replay stored events, stream live ones, complete after the final one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import cast

import strawberry
from strawberry.types import Info

from graphql_api.auth import CanRead
from graphql_api.context import Context
from graphql_api.errors import BadUserInputError
from graphql_api.fanout import HANDOVER
from graphql_api.queries import load_deployment
from graphql_api.types import DeploymentEvent
from graphql_api.updates import DeploymentUpdate, follow_updates
from jobs.progress import ProgressEvent


async def follow_progress(
    info: Info[Context, None], id: strawberry.ID, after_sequence: int | None = strawberry.UNSET
) -> AsyncGenerator[DeploymentEvent, None]:
    """Follow one deployment's progress: NOT_FOUND for an unknown id, else its events until the final one."""
    after = after_sequence if isinstance(after_sequence, int) else 0
    if after < 0:
        raise BadUserInputError([("afterSequence", "must be 0 or more")])
    row = await load_deployment(id)
    handover = HANDOVER.get()
    if handover is not None and not handover.taken:
        # Over a websocket: the handler streams the events, rendered once for every subscriber of this shape.
        handover.deployment_id, handover.after = row.id, after
        return
    # A client disconnect arrives as cancellation (or close); closing the listener unregisters it.
    listener = info.context.hub.listen(row.id, after_sequence=after)
    events = cast("AsyncGenerator[ProgressEvent, None]", listener)
    async with contextlib.aclosing(events):
        async for event in events:
            yield DeploymentEvent.from_progress(event)


@strawberry.type
class Subscription:
    """Live operations; they need the `read` scope."""

    deployment_progress: AsyncGenerator[DeploymentEvent, None] = strawberry.subscription(
        resolver=follow_progress,
        permission_classes=[CanRead],
        description=(
            "Stored events with a sequence above `afterSequence` (all when omitted), then live ones, each"
            " once and in order; completes after the event that puts the deployment in a final status."
        ),
    )
    deployment_updates: AsyncGenerator[DeploymentUpdate, None] = strawberry.subscription(
        resolver=follow_updates,
        permission_classes=[CanRead],
        description=(
            "Every status or stage change of any deployment, live (no replay: read `deployments` after"
            " subscribing); with `status`, only changes into one of those statuses."
        ),
    )
