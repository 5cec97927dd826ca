"""`deployments`: every deployment, newest first, as a Relay connection with opaque cursors.

Paging is by keyset on (`created_at`, `id`), both descending, so a page never repeats or skips a row when new
deployments arrive between two calls. A cursor is that pair, base64-encoded; clients must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

import strawberry
from strawberry.types import Info
from tortoise.expressions import Q

from graphql_api.context import Context
from graphql_api.errors import BadUserInputError
from graphql_api.types import Deployment, DeploymentStatus
from models import deployment as db

#: Most deployments one page holds.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
_CURSOR_PREFIX = "d1:"


@strawberry.type(description="Relay page information.")
class PageInfo:
    """Where this page sits in the whole list."""

    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="One deployment in a page, with the cursor to continue after it.")
class DeploymentEdge:
    """A Relay edge."""

    cursor: str
    node: Deployment


@strawberry.type(description="A page of deployments, newest first.")
class DeploymentConnection:
    """A Relay connection."""

    edges: list[DeploymentEdge]
    page_info: PageInfo
    total_count: int = strawberry.field(description="How many deployments match the filter, over all pages.")


def encode_cursor(row: db.Deployment) -> str:
    """The opaque cursor of a row: its creation time and id."""
    raw = json.dumps([row.created_at.isoformat(), str(row.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + raw).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) of a cursor; BAD_USER_INPUT for anything this module did not write."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        created, ident = json.loads(text[len(_CURSOR_PREFIX) :])
        return datetime.fromisoformat(created), uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadUserInputError([("after", "is not a cursor from this API")]) from None


async def resolve_deployments(
    info: Info[Context, None],
    status: list[DeploymentStatus] | None = strawberry.UNSET,
    first: int | None = DEFAULT_PAGE_SIZE,
    after: str | None = strawberry.UNSET,
    application_uuid: strawberry.ID | None = strawberry.UNSET,
) -> DeploymentConnection:
    """One page of deployments, newest first, optionally only some statuses or one application's."""
    status = status if isinstance(status, list) else None
    after = after if isinstance(after, str) else None
    first = DEFAULT_PAGE_SIZE if first is None else first
    if not 0 <= first <= MAX_PAGE_SIZE:
        raise BadUserInputError([("first", f"must be between 0 and {MAX_PAGE_SIZE}")])
    query = db.Deployment.all()
    if status:
        query = query.filter(status__in=[db.DeploymentStatus(s) for s in status])
    if isinstance(application_uuid, str):
        query = query.filter(application_uuid=application_uuid)
    total = await query.count()
    page_query = query
    if after is not None:
        created, ident = decode_cursor(after)
        page_query = page_query.filter(Q(created_at__lt=created) | Q(created_at=created, id__lt=ident))
    rows = await page_query.order_by("-created_at", "-id").limit(first + 1)
    has_next = len(rows) > first
    rows = rows[:first]
    edges = [DeploymentEdge(cursor=encode_cursor(row), node=Deployment.from_model(row)) for row in rows]
    return DeploymentConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total,
    )
