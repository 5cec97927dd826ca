"""The GraphQL schema and its SDL (`deployer schema` prints it; a test keeps `schema.graphql` equal)."""

from __future__ import annotations

import functools
import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.types import ExecutionContext

from graphql_api.errors import DeployerError, ErrorPolicy, is_unexpected, request_error_code
from graphql_api.mutations import Mutation
from graphql_api.queries import Query
from graphql_api.subscriptions import Subscription

logger = logging.getLogger("deployer.graphql")
#: Deepest selection a client may send (the schema itself nests at most four levels).
MAX_QUERY_DEPTH = 10
#: Aliases in one document: enough for a dashboard asking for a few deployments at once, not for amplification.
MAX_ALIASES = 30
#: Tokens in one document: a generous operation is a few hundred; this bounds the parser's work.
MAX_TOKENS = 5000


class DeployerSchema(strawberry.Schema):
    """A Strawberry schema that logs bugs with their traceback and expected errors by code only.

    Strawberry calls `process_errors` with the original errors, before `ErrorPolicy` masks them, and only here
    is the traceback logged; messages of request errors are not logged since they may echo input values.
    """

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Log each error once, server-side."""
        operation = execution_context.operation_name if execution_context else None
        for error in errors:
            path = ".".join(str(part) for part in error.path) if error.path else None
            if is_unexpected(error):
                logger.error(
                    "unexpected error in GraphQL operation %s at %s: %s",
                    operation,
                    path,
                    type(error.original_error).__name__ if error.original_error else "GraphQLError",
                    exc_info=error.original_error,
                )
            elif isinstance(error.original_error, DeployerError):
                logger.info("GraphQL %s at %s: %s", error.original_error.code, path, error.original_error.message)
            else:
                logger.info("GraphQL request rejected: %s", request_error_code(error))


schema = DeployerSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        functools.partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        functools.partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        functools.partial(QueryDepthLimiter, max_depth=MAX_QUERY_DEPTH),
        ErrorPolicy,
    ],
)


def sdl() -> str:
    """The schema in SDL, ending with a newline (what `deployer schema` prints and `schema.graphql` holds)."""
    return schema.as_str().rstrip("\n") + "\n"
