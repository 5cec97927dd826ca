"""The schema: contract names, its SDL, and quiet logging of expected errors."""

from __future__ import annotations

import logging

import pytest

from graphql_api.schema import schema, sdl
from tests.graphql_api.conftest import GraphQLClient


def test_contract_operations_exist() -> None:
    """The operations and fields of CONTRACT.md are in the schema with their argument names."""
    text = sdl()
    assert "deployment(id: ID!): Deployment\n" in text
    assert "dropletCount: DropletCount!" in text
    assert "deploy(input: DeployInput): Deployment!" in text
    assert "deploymentProgress(id: ID!, afterSequence: Int): DeploymentEvent!" in text
    assert text.endswith("}\n")


def test_schema_has_no_env_value_output() -> None:
    """No output type has a field that could carry an environment value."""
    deployment = schema.get_type_by_name("Deployment")
    assert deployment is not None
    names = {field.python_name for field in deployment.fields}  # type: ignore[union-attr]
    assert "env_keys" in names
    assert not {"env", "env_values", "environment"} & names


async def test_expected_errors_are_logged_without_traceback(
    gql: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A NOT_FOUND is logged at INFO by code, with no traceback and nothing at ERROR."""
    with caplog.at_level(logging.INFO, logger="deployer.graphql"):
        await gql('{ deployment(id: "00000000-0000-4000-8000-000000000000") { id } }')
    records = [r for r in caplog.records if r.name == "deployer.graphql"]
    assert records
    assert all(r.levelno < logging.ERROR and not r.exc_info for r in records)
    assert any("NOT_FOUND" in r.getMessage() for r in records)


async def test_documents_with_too_many_aliases_or_tokens_are_refused(gql: GraphQLClient) -> None:
    """Alias amplification and oversized documents are refused before execution, with a 400-class code."""
    aliases = " ".join(f"a{i}: dropletCount {{ active }}" for i in range(31))
    _, body = await gql(f"{{ {aliases} }}")
    assert body["errors"][0]["extensions"]["status"] == 400
    assert "aliases" in body["errors"][0]["message"]
    fields = " ".join("active" for _ in range(6000))
    _, body = await gql(f"{{ dropletCount {{ {fields} }} }}")
    assert body["errors"][0]["extensions"]["status"] == 400
    assert "token" in body["errors"][0]["message"].lower()
    _, body = await gql(" ".join(f"a{i}: dropletCount {{ active }}" for i in range(3)).join("{}"))
    assert "errors" not in body
