"""Hypothesis strategies for the fuzz suite, built from the schema itself, and the checks every answer passes.

Operations come from the GraphQL schema (every root field and every argument, so fields added later are
fuzzed too). Each argument value is drawn from its type, mixing well-formed values with hostile ones: wrong
types, huge numbers, NUL and lone surrogates, control characters, very long strings and lists, unknown
fields, deep nesting. Values are sent as JSON variables or written inline as GraphQL literals.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    get_named_type,
    is_leaf_type,
)
from hypothesis import strategies as st

#: Planted in every env value the fuzzer sends: it must never come back in a response or reach a log line.
SECRET_MARKER = "fz-S3CRET-9f1c"
#: What a response may never contain.
FORBIDDEN_TEXT = ("Traceback", "INTERNAL_SERVER_ERROR", SECRET_MARKER)

NASTY_CHARACTERS = ["\x00", "\ud800", "\udfff", "\n", "\r", "\t", "\u2028", "\x1b", "\x7f", "é", "🚀", '"', "\\", "$"]


@dataclass(frozen=True)
class EnumLiteral:
    """An enum value: a bare name when written inline, a string in JSON."""

    name: str


def nasty_text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Short strings of printable ASCII, unicode, and characters that break naive code."""
    return st.one_of(
        st.text(max_size=max_size, min_size=min_size),
        st.text(alphabet=st.sampled_from(NASTY_CHARACTERS + list(string.ascii_letters)), min_size=1, max_size=max_size),
        st.sampled_from(["", " ", "null", "0", "-1", "../../etc/passwd", "${HOME}", "KEY\n", "a" * 300]),
    )


#: Strings that pass most checks (names, keys, slugs), so that operations also get past validation.
plain_text = st.text(alphabet=string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=20)


def long_text() -> st.SearchStrategy[str]:
    """A string from 1 KB to 100 KB (cheap to generate: one character repeated)."""
    return st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\u0000", "🚀"]), st.integers(1_000, 100_000))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text(),
)
any_json: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(nasty_text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


hostile_json = st.one_of(any_json, st.integers(40, 400).map(_deep), long_text())


class ValueFactory:
    """Strategies for argument values by GraphQL input type.

    Args:
        ids: known deployment ids (so that some lookups find a row).
    """

    def __init__(self, ids: Callable[[], list[str]]) -> None:
        self._ids = ids

    def for_type(self, type_: GraphQLInputType, name: str = "") -> st.SearchStrategy[Any]:
        """A value for `type_` (usually well-shaped, sometimes hostile). `name` picks secret-bearing fields."""
        return st.one_of(self._shaped(type_, name), hostile_json) if name != "value" else self._shaped(type_, name)

    def _shaped(self, type_: GraphQLInputType, name: str) -> st.SearchStrategy[Any]:
        if isinstance(type_, GraphQLNonNull):
            inner = self._shaped(type_.of_type, name)
            return inner if name == "value" else st.one_of([inner] * 9 + [st.just(None)])
        if isinstance(type_, GraphQLList):
            item = self.for_type(type_.of_type, name)
            filler = filler_for(type_.of_type)
            return st.one_of(
                st.lists(item, max_size=5),
                item,  # a single value where a list is expected (GraphQL accepts it)
                st.sampled_from([199, 200, 201, 256, 257, 2000, 20_000]).map(lambda n: [filler] * n),
            )
        if isinstance(type_, GraphQLInputObjectType):
            fields = {
                key: st.one_of(st.just(_OMIT), self.for_type(value.type, key)) for key, value in type_.fields.items()
            }
            extra = st.dictionaries(nasty_text(max_size=8), any_json, max_size=2)
            return st.builds(_object, st.fixed_dictionaries(fields), extra)
        if isinstance(type_, GraphQLEnumType):
            return st.one_of(st.sampled_from([EnumLiteral(v) for v in type_.values]), nasty_text(max_size=12))
        return self._scalar(type_.name if hasattr(type_, "name") else "String", name)

    def _scalar(self, scalar: str, name: str) -> st.SearchStrategy[Any]:
        if name == "value":  # env values: every one carries the marker that must never come back
            return st.builds(lambda text: SECRET_MARKER + text, st.one_of(nasty_text(), long_text()))
        if scalar == "ID":
            return st.one_of(
                st.builds(lambda: self._ids()[0] if self._ids() else "none"),
                st.uuids().map(str),
                nasty_text(max_size=80),
                st.integers(-(2**40), 2**40),
                st.sampled_from(["k0s8w4c", "a" * 64, "a" * 65, "abc-def", "ABC", "a\nb"]),
            )
        if scalar == "Int":
            return st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**80), 2**80), st.floats(), nasty_text())
        if scalar == "Float":
            return st.one_of(st.floats(allow_nan=False), st.integers(), nasty_text())
        if scalar == "Boolean":
            return st.one_of(st.booleans(), st.none(), st.integers(0, 2), nasty_text(max_size=5))
        return st.one_of(plain_text, plain_text, nasty_text(), long_text())


_OMIT = object()


def filler_for(type_: GraphQLInputType) -> Any:
    """A small well-formed value of a type, repeated to make long lists (bounded in size, unlike random items)."""
    if isinstance(type_, GraphQLNonNull):
        return filler_for(type_.of_type)
    if isinstance(type_, GraphQLList):
        return [filler_for(type_.of_type)]
    if isinstance(type_, GraphQLInputObjectType):
        return {
            key: (SECRET_MARKER if key == "value" else filler_for(value.type))
            for key, value in type_.fields.items()
            if isinstance(value.type, GraphQLNonNull)
        }
    if isinstance(type_, GraphQLEnumType):
        return EnumLiteral(next(iter(type_.values)))
    return {"Int": 1, "Float": 1.0, "Boolean": True}.get(getattr(type_, "name", ""), "K")


def _object(fields: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    value = {key: item for key, item in fields.items() if item is not _OMIT}
    value.update(extra)
    return value


def to_json(value: Any) -> Any:
    """A generated value as JSON (enum literals become their names)."""
    if isinstance(value, EnumLiteral):
        return value.name
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    return value


def to_literal(value: Any) -> str:
    """A generated value written as a GraphQL literal (hostile values make hostile documents)."""
    if isinstance(value, EnumLiteral):
        return value.name
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(to_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        names = [key if key.isidentifier() else "_" for key in value]
        return "{" + ", ".join(f"{n}: {to_literal(v)}" for n, v in zip(names, value.values(), strict=True)) + "}"
    return json.dumps(str(value))


def selection(type_: GraphQLOutputType, depth: int = 0) -> str:
    """Every leaf field of an output type (one level of nested objects), or "" for a leaf type."""
    named: GraphQLNamedType = get_named_type(type_)
    if is_leaf_type(named) or not isinstance(named, GraphQLObjectType):
        return ""
    parts = []
    for name, child in named.fields.items():
        if any(isinstance(arg.type, GraphQLNonNull) for arg in child.args.values()):
            continue
        if is_leaf_type(get_named_type(child.type)):
            parts.append(name)
        elif depth < 1:
            inner = selection(child.type, depth + 1)
            if inner:
                parts.append(f"{name} {inner}")
    return "{ " + " ".join(parts or ["__typename"]) + " }"


@dataclass
class Operation:
    """One generated GraphQL operation: the document, its variables, and what it targets."""

    root: str
    field: str
    query: str
    variables: dict[str, Any] = field(default_factory=dict)


def operations(schema: GraphQLSchema, values: ValueFactory, *, roots: tuple[str, ...]) -> st.SearchStrategy[Operation]:
    """Operations on every field of the given root types, with every argument drawn from its type."""
    choices = []
    for root_name in roots:
        root = {"query": schema.query_type, "mutation": schema.mutation_type, "subscription": schema.subscription_type}[
            root_name
        ]
        if root is None:
            continue
        for field_name, graphql_field in root.fields.items():
            args = {name: (arg.type, values.for_type(arg.type, name)) for name, arg in graphql_field.args.items()}
            choices.append(_operation(root_name, field_name, selection(graphql_field.type), args))
    return st.one_of(choices)


def _operation(
    root: str, field_name: str, selected: str, args: dict[str, tuple[GraphQLInputType, st.SearchStrategy[Any]]]
) -> st.SearchStrategy[Operation]:
    @st.composite
    def build(draw: st.DrawFn) -> Operation:
        declarations, arguments, variables = [], [], {}
        for name, (type_, strategy) in args.items():
            mode = draw(st.sampled_from(["variable"] * 6 + ["literal"] * 3 + ["omit"]))
            if mode == "omit":
                continue
            value = draw(strategy)
            if mode == "literal":
                arguments.append(f"{name}: {to_literal(value)}")
            else:
                declared = draw(st.sampled_from([str(type_)] * 9 + ["String", "[Int]"]))
                declarations.append(f"${name}: {declared}")
                arguments.append(f"{name}: ${name}")
                variables[name] = to_json(value)
        header = f"{root} Fuzz" + (f"({', '.join(declarations)})" if declarations else "")
        call = field_name + (f"({', '.join(arguments)})" if arguments else "")
        return Operation(root=root, field=field_name, query=f"{header} {{ {call} {selected} }}", variables=variables)

    return build()


def problems_in(text: str, secrets: tuple[str, ...] = ()) -> list[str]:
    """What an answer must not contain: a traceback, an internal error, a planted or configured secret."""
    found = [item for item in FORBIDDEN_TEXT if item in text]
    found += [f"secret {secret[:6]}…" for secret in secrets if len(secret) >= 8 and secret in text]
    return found
