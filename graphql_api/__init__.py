"""graphql_api: the HTTP edge. GraphQL in; deployment rows and enqueued jobs out."""

from graphql_api.app import create_app
from graphql_api.schema import schema, sdl

__all__ = ["create_app", "schema", "sdl"]
