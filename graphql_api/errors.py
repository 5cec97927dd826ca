"""The error codes of the public contract, as exceptions that become GraphQL error extensions.

Resolvers raise these for expected failures; graphql-core copies an exception's `extensions` attribute onto
the GraphQL error, so the client sees `extensions.code` and the HTTP-like `extensions.status`. Anything else
raised by a resolver is a bug and is masked by `ErrorPolicy` at the end of this module.

    DeployerError (code, status)
    ├── BadUserInputError         BAD_USER_INPUT         400  (problems: field path -> reason)
    ├── UnauthenticatedError      UNAUTHENTICATED        401
    ├── ForbiddenError            FORBIDDEN              403
    ├── NotFoundError             NOT_FOUND              404
    ├── DropletLimitReachedError  DROPLET_LIMIT_REACHED  429
    ├── RateLimitedError          RATE_LIMITED           429  (retryAfter: seconds)
    ├── UpstreamError             UPSTREAM_ERROR         502
    └── ServiceUnavailableError   SERVICE_UNAVAILABLE    503  (retryAfter: seconds)

Messages never contain a token or an environment value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

from graphql import GraphQLError
from graphql.error import GraphQLSyntaxError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from jobs.outages import unavailable_service

#: Code and status of a masked, unexpected error.
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
INTERNAL_MESSAGE = "Internal server error"
#: Codes of request errors found before execution (syntax, validation, variable coercion).
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_USER_INPUT = "BAD_USER_INPUT"

#: One validation problem: (field path such as `input.ports[1]`, reason).
Problem = tuple[str, str]


class DeployerError(Exception):
    """An expected failure with a contract error code and an HTTP-like status."""

    code: ClassVar[str] = INTERNAL_SERVER_ERROR
    status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def extensions(self) -> dict[str, object]:
        """The GraphQL error extensions (graphql-core copies this attribute onto the error)."""
        return {"code": self.code, "status": self.status}


class BadUserInputError(DeployerError):
    """Invalid input; the message and `extensions.fields` name each field path and why."""

    code = BAD_USER_INPUT
    status = 400

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        details = "; ".join(f"{field}: {reason}" for field, reason in self.problems)
        super().__init__(f"Invalid input: {details}" if details else "Invalid input")

    @property
    def extensions(self) -> dict[str, object]:
        """Code, status and the list of `{field, message}` problems."""
        fields = [{"field": field, "message": reason} for field, reason in self.problems]
        return {**super().extensions, "fields": fields}


class UnauthenticatedError(DeployerError):
    """No API token, or one that is not configured."""

    code = "UNAUTHENTICATED"
    status = 401

    def __init__(self, message: str = "A valid API token is required: send 'Authorization: Bearer <token>'") -> None:
        super().__init__(message)


class ForbiddenError(DeployerError):
    """The API token lacks the scope the operation needs."""

    code = "FORBIDDEN"
    status = 403

    def __init__(self, scope: str) -> None:
        super().__init__(f"This API token lacks the '{scope}' scope")
        self.scope = scope


class NotFoundError(DeployerError):
    """An unknown deployment (or application)."""

    code = "NOT_FOUND"
    status = 404

    def __init__(self, kind: str, identifier: str) -> None:
        # The identifier is echoed only when it is short and plain, never arbitrary client text.
        shown = identifier if len(identifier) <= 64 and identifier.replace("-", "").isalnum() else "(invalid id)"
        super().__init__(f"No {kind} with id {shown}")


class DropletLimitReachedError(DeployerError):
    """Every droplet slot is held; a new deployment must wait until one is released."""

    code = "DROPLET_LIMIT_REACHED"
    status = 429

    def __init__(self, limit: int, held: int | None = None) -> None:
        holders = limit if held is None else held
        super().__init__(
            f"The droplet limit of {limit} is reached: {holders} deployment{'s' if holders != 1 else ''} hold"
            f"{'' if holders != 1 else 's'} a droplet slot (list them with dropletCount {{ holders {{ id status }} }})."
            " A COMPLETED deployment keeps its slot until destroyDeployment frees it; FAILED and CANCELLED ones"
            " free theirs when their cleanup ends"
        )
        self.limit = limit
        self.held = holders

    @property
    def extensions(self) -> dict[str, object]:
        """Code, status, the limit and how many slots are held."""
        return {**super().extensions, "limit": self.limit, "held": self.held}


class RateLimitedError(DeployerError):
    """The caller's own request rate is over its limit; `retryAfter` says when the next one is allowed."""

    code = "RATE_LIMITED"
    status = 429

    def __init__(self, retry_after_s: int, what: str = "mutations") -> None:
        super().__init__(f"Too many {what} from this API token: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s

    @property
    def extensions(self) -> dict[str, object]:
        """Code, status and `retryAfter` (whole seconds)."""
        return {**super().extensions, "retryAfter": self.retry_after_s}


class UpstreamError(DeployerError):
    """DigitalOcean or Coolify refused or failed; the message names which and why.

    `details` become further extensions, such as the applied and failed keys of a partial env change.
    """

    code = "UPSTREAM_ERROR"
    status = 502

    def __init__(self, message: str, *, details: Mapping[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})

    @property
    def extensions(self) -> dict[str, object]:
        """Code, status and the details."""
        return {**self.details, **super().extensions}


class ServiceUnavailableError(DeployerError):
    """Redis or the database did not answer: an outage, not a bug and not the caller's fault.

    The call may be repeated as it was after `retryAfter` seconds (`deploy` undoes a half-written deployment;
    env changes are recorded before they run and can be read back with `deployment`).
    """

    code = "SERVICE_UNAVAILABLE"
    status = 503

    def __init__(self, service: str, retry_after_s: int = 5) -> None:
        super().__init__(f"{service} is not answering; try again in {retry_after_s} s")
        self.service = service
        self.retry_after_s = retry_after_s

    @property
    def extensions(self) -> dict[str, object]:
        """Code, status and `retryAfter` (whole seconds)."""
        return {**super().extensions, "retryAfter": self.retry_after_s}


def outage(error: BaseException | None) -> ServiceUnavailableError | None:
    """The SERVICE_UNAVAILABLE error for an exception that says Redis or the database is not answering
    (`jobs.outages`). Only explicit causes count: a bug raised while handling a socket error is still a bug."""
    service = unavailable_service(error, implicit_context=False)
    return None if service is None else ServiceUnavailableError(service)


# --- How errors reach the client ---------------------------------------------------------------------------

_VARIABLE_MESSAGE = re.compile(r"^(Variable '\$\w+' (?:has|got) invalid value[^:\s]*): (.*)$", re.S)
_FOUND_TAIL = re.compile(r"[,;]?\s*found:?\s.*$", re.S)
_VALUE_TAIL = re.compile(r"\b(value)\s*:\s.*$", re.S)
_ENCOUNTERED_TAIL = re.compile(r",? but encountered error .*$", re.S)


def redact_request_error(message: str) -> str:
    """Drop the echoed input value from a graphql-core coercion or validation message (it may be a secret).

    graphql-core appends what it found (`..., found: {...}`, `non-integer value: "x"`); the field path and the
    expected type stay, which is what the client needs to fix the request.
    """
    match = _VARIABLE_MESSAGE.match(message)
    prefix, reason = (f"{match[1]}: ", match[2]) if match else ("", message)
    for pattern, replacement in ((_ENCOUNTERED_TAIL, ""), (_FOUND_TAIL, ""), (_VALUE_TAIL, r"\1")):
        reason = pattern.sub(replacement, reason)
    return f"{prefix}{reason.rstrip(' .;,')}."


#: Strawberry's refusals of an operation a transport does not run (a query over legacy graphql-ws) or of an
#: unknown operation name, with messages that do not repeat the client's text.
_OPERATION_ERRORS: dict[type[Exception], str] = {
    InvalidOperationTypeError: "This operation type is not allowed here: the graphql-ws protocol runs subscriptions"
    " only (send queries and mutations over HTTP or graphql-transport-ws)",
    CannotGetOperationTypeError: "The document has no operation of that name (or several and none named)",
}


def request_error_code(error: GraphQLError) -> str | None:
    """The code of an error found before execution (parse, validation, variables); None for other errors."""
    if error.path is not None:
        return None
    original = error.original_error
    if isinstance(original, tuple(_OPERATION_ERRORS)):
        return GRAPHQL_VALIDATION_FAILED
    if original is not None and not isinstance(original, GraphQLError):
        return None
    if isinstance(error, GraphQLSyntaxError):
        return GRAPHQL_PARSE_FAILED
    if error.message.startswith("Variable '$"):
        return BAD_USER_INPUT
    return GRAPHQL_VALIDATION_FAILED


def is_unexpected(error: GraphQLError) -> bool:
    """Whether an error is a bug: neither a `DeployerError`, nor an outage of Redis or the database, nor a
    request error."""
    original = error.original_error
    if isinstance(original, DeployerError) or outage(original) is not None:
        return False
    return request_error_code(error) is None


def _reissued(
    error: GraphQLError,
    message: str,
    *,
    original_error: Exception | None = None,
    extensions: dict[str, object] | None = None,
) -> GraphQLError:
    """`error` at the same place in the document and the result, with another message and cause."""
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=original_error,
        extensions=extensions,
    )


class ErrorPolicy(MaskErrors):
    """Shape every error the client sees.

    `DeployerError`s pass with their code and status, and so does an outage of Redis or the database, as
    SERVICE_UNAVAILABLE. Request errors (syntax, validation, variable coercion) get a code and status 400 and
    lose any echoed input value. Everything else is a bug: the client gets only "Internal server error" with
    code INTERNAL_SERVER_ERROR (the schema logs the original server-side).
    """

    def __init__(self) -> None:
        super().__init__(should_mask_error=is_unexpected, error_message=INTERNAL_MESSAGE)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        """The masked error, carrying the INTERNAL_SERVER_ERROR extensions."""
        return _reissued(error, INTERNAL_MESSAGE, extensions={"code": INTERNAL_SERVER_ERROR, "status": 500})

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._shape(error) for error in errors]

    def _shape(self, error: GraphQLError) -> GraphQLError:
        if isinstance(error.original_error, DeployerError):
            return error
        unavailable = outage(error.original_error)
        if unavailable is not None:
            return _reissued(error, unavailable.message, original_error=unavailable)
        code = request_error_code(error)
        if code is None:
            return self.anonymise_error(error)
        original = error.original_error
        known = next((text for kind, text in _OPERATION_ERRORS.items() if isinstance(original, kind)), None)
        message = known or redact_request_error(error.message)
        return _reissued(error, message, extensions={"code": code, "status": 400})
