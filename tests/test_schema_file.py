"""`schema.graphql` at the repository root is exactly what `deployer schema` prints."""

from __future__ import annotations

from graphql_api.schema import sdl
from tests.conftest import REPO_ROOT


def test_schema_file_matches_the_code() -> None:
    """The committed SDL equals the schema built in code (regenerate: `deployer schema > schema.graphql`)."""
    committed = (REPO_ROOT / "schema.graphql").read_text(encoding="utf-8")
    assert committed == sdl(), "schema.graphql is stale: run `deployer schema > schema.graphql`"
