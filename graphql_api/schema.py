"""The GraphQL schema and its SDL (`deployer schema` prints it; a test keeps `schema.graphql` equal)."""

from __future__ import annotations

import functools
import logging

import strawberry
from graphql import GraphQLError, StringValueNode, ValidationContext, ValidationRule
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ValidationCache
from strawberry.extensions.max_aliases import create_validator as create_alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as create_depth_validator
from strawberry.types import ExecutionContext

from graphql_api.errors import DeployerError, ErrorPolicy, is_unexpected, outage, request_error_code
from graphql_api.mutations import Mutation
from graphql_api.payload import has_bad_character
from graphql_api.queries import Query
from graphql_api.ratelimit import MutationRateLimit
from graphql_api.subscriptions import Subscription

logger = logging.getLogger("deployer.graphql")
#: Deepest selection a client may send (the schema itself nests at most four levels).
MAX_QUERY_DEPTH = 10
#: Aliases in one document: enough for a dashboard asking for a few deployments at once, not for amplification.
MAX_ALIASES = 30
#: Tokens in one document: a generous operation is a few hundred; this bounds the parser's work.
MAX_TOKENS = 5000
#: Distinct documents whose validation result is kept (clients send the same few over and over).
VALIDATION_CACHE_SIZE = 512


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
            elif (unavailable := outage(error.original_error)) is not None:
                logger.warning(
                    "GraphQL operation %s at %s: %s (%s)",
                    operation,
                    path,
                    unavailable.message,
                    type(error.original_error).__name__,
                )
            else:
                logger.info("GraphQL request rejected: %s", request_error_code(error))


class NoBadCharacters(ValidationRule):
    """String literals in the document may not hold NUL or lone surrogates (variables are checked as JSON)."""

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)

    def enter_string_value(self, node: StringValueNode, *_args: object) -> None:
        """Report a literal with a bad character (without repeating it)."""
        if has_bad_character(node.value):
            self.report_error(GraphQLError("String literals must not contain NUL characters or lone surrogates", node))


#: Built once: strawberry's limiters define a new validation rule class each time they are constructed (for
#: every request), and the validation cache is keyed by the rule classes, so every request would miss it.
QUERY_LIMIT_RULES = (
    create_alias_validator(MAX_ALIASES),
    create_depth_validator(MAX_QUERY_DEPTH, None, None),
    NoBadCharacters,
)


class QueryLimits(AddValidationRules):
    """The alias and depth limits, as validation rules that are the same classes for every request."""

    def __init__(self) -> None:
        super().__init__(list(QUERY_LIMIT_RULES))


schema = DeployerSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        functools.partial(ValidationCache, maxsize=VALIDATION_CACHE_SIZE),
        functools.partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        QueryLimits,
        MutationRateLimit,
        ErrorPolicy,
    ],
)


def sdl() -> str:
    """The schema in SDL, ending with a newline (what `deployer schema` prints and `schema.graphql` holds)."""
    return schema.as_str().rstrip("\n") + "\n"
