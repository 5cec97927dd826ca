"""A short path for the hot read queries: plain documents answered without Strawberry's per-request machinery.

Clients poll `{ dropletCount { … } }` and `deployment(id) { … }` over and over. Through Strawberry each such
request runs the extension hooks, builds an execution context and walks graphql-core's executor, which costs
about twice the database read it wraps. `HotQueries` compiles a document once into a `Plan` when it is plainly
safe to answer directly:

- one query operation (named as `operationName` asks, if it asks), no directives, no fragments;
- one root field whose permission classes are scope checks (`graphql_api.auth`) and that has a registered
  `HotRoot` (the same function its Strawberry resolver calls);
- arguments that are literals or variables of the argument's own type;
- below it, fields without arguments or resolvers of their own: leaves, lists of leaves, `__typename` and
  plain nested objects;
- the document passes the same validation rules as the full path and is far below the token limit.

A plan runs only when everything goes right: the caller holds the scopes, every variable is a string (or an
integer, for an `ID`), the root function returns a value, and no non-null field is null. Anything else (a
missing scope, NOT_FOUND, a bad variable, a bug) gives up and the request takes the full path, which then
answers, logs and masks exactly as it always did. So the short path can only ever give the full path's
successful answer, in the same bytes; `tests/graphql_api/test_hotpath.py` checks that, errors included.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    is_leaf_type,
    parse,
    print_ast,
    specified_rules,
    validate,
)
from strawberry.schema import BaseSchema
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.field import StrawberryField

from graphql_api.auth import Caller, ScopePermission
from settings import Settings

#: A root field's value from the settings and its arguments (ID arguments arrive as strings).
HotRoot = Callable[[Settings, Mapping[str, str]], Awaitable[object]]
#: Longest document considered (far below `MAX_TOKENS`, so the token limit can never apply to a plan).
MAX_DOCUMENT_CHARS = 2000
#: Distinct (document, operation name) pairs whose plan (or refusal) is kept.
PLAN_CACHE_SIZE = 512


class _GiveUp(Exception):
    """This request is not one the short path answers; the full path will."""


@dataclass(frozen=True)
class _Leaf:
    key: str
    attribute: str
    serialize: Callable[[Any], Any]
    non_null: bool
    list_of: bool  # a list of leaves (non-null items)


@dataclass(frozen=True)
class _Object:
    key: str
    attribute: str
    non_null: bool
    fields: tuple[_Leaf | _Object | _Typename, ...]


@dataclass(frozen=True)
class _Typename:
    key: str
    name: str


@dataclass(frozen=True)
class Plan:
    """A compiled hot document: the root field, where its arguments come from, and what to pick from its value."""

    key: str
    root: HotRoot
    scopes: tuple[str, ...]
    literals: Mapping[str, str]
    variables: Mapping[str, str]  # argument name -> variable name
    id_arguments: frozenset[str]
    selection: _Object

    async def run(
        self, caller: Caller | None, settings: Settings, variables: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """The response body (`{"data": …}`); raises `_GiveUp` whenever the full path must answer instead."""
        if caller is None or any(scope not in caller.scopes for scope in self.scopes):
            raise _GiveUp
        arguments = dict(self.literals)
        for argument, variable in self.variables.items():
            value = (variables or {}).get(variable)
            if isinstance(value, str):
                arguments[argument] = value
            elif type(value) is int and argument in self.id_arguments:
                arguments[argument] = str(value)
            else:
                raise _GiveUp
        try:
            value = await self.root(settings, arguments)
        except Exception:
            raise _GiveUp from None  # NOT_FOUND, a bug: the full path answers (and logs, and masks)
        return {"data": {self.key: _pick(self.selection, value)}}


def _pick(node: _Object, value: object) -> dict[str, Any] | None:
    if value is None:
        if node.non_null:
            raise _GiveUp
        return None
    out: dict[str, Any] = {}
    for field in node.fields:
        if isinstance(field, _Typename):
            out[field.key] = field.name
        elif isinstance(field, _Object):
            out[field.key] = _pick(field, getattr(value, field.attribute))
        else:
            out[field.key] = _leaf(field, getattr(value, field.attribute))
    return out


def _leaf(field: _Leaf, value: Any) -> Any:
    if value is None:
        if field.non_null:
            raise _GiveUp
        return None
    if field.list_of:
        items = [field.serialize(item) for item in value]
        if any(item is None for item in items):
            raise _GiveUp
        return items
    serialized = field.serialize(value)
    if serialized is None and field.non_null:
        raise _GiveUp
    return serialized


class HotQueries:
    """Compiles and caches plans for hot documents, and runs them.

    Args:
        schema: the Strawberry schema the full path executes.
        roots: per root field (GraphQL name), the function its resolver wraps.
        rules: validation rules the full path adds to graphql-core's (depth and alias limits, ...).
    """

    def __init__(
        self, schema: BaseSchema, roots: Mapping[str, HotRoot], *, rules: Sequence[type[ASTValidationRule]] = ()
    ) -> None:
        self._schema = schema
        self._gql: GraphQLSchema = schema._schema  # type: ignore[attr-defined]
        self._roots = dict(roots)
        self._rules = (*specified_rules, *rules)
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        """The plan for a document, or None when it must take the full path (both cached)."""
        key = (query, operation_name)
        try:
            found = self._plans[key]
        except KeyError:
            found = self._compile(query, operation_name)
            self._plans[key] = found
            if len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return found

    async def answer(
        self,
        query: str,
        operation_name: str | None,
        variables: Mapping[str, Any] | None,
        caller: Caller | None,
        settings: Settings,
    ) -> dict[str, Any] | None:
        """The response body for a hot document, or None when the full path must answer."""
        plan = self.plan(query, operation_name)
        if plan is None:
            return None
        try:
            return await plan.run(caller, settings, variables)
        except _GiveUp:
            return None

    # --- compiling -------------------------------------------------------------------------------------------

    def _compile(self, query: str, operation_name: str | None) -> Plan | None:
        if len(query) > MAX_DOCUMENT_CHARS:
            return None
        try:
            document = parse(query)
        except GraphQLError:
            return None
        if validate(self._gql, document, self._rules):
            return None
        try:
            return self._plan(document, operation_name)
        except _GiveUp:
            return None

    def _plan(self, document: DocumentNode, operation_name: str | None) -> Plan:
        if len(document.definitions) != 1 or not isinstance(document.definitions[0], OperationDefinitionNode):
            raise _GiveUp
        operation = document.definitions[0]
        name = operation.name.value if operation.name else None
        if operation.operation != OperationType.QUERY or operation.directives or operation_name not in (None, name):
            raise _GiveUp
        if any(
            definition.default_value is not None or definition.directives
            for definition in operation.variable_definitions or ()
        ):
            raise _GiveUp
        field = _only_field(operation.selection_set)
        root_type = self._gql.query_type
        assert root_type is not None
        root = self._roots.get(field.name.value)
        definition = self._schema.get_type_by_name(root_type.name)
        if root is None or not isinstance(definition, StrawberryObjectDefinition):
            raise _GiveUp
        strawberry_field = self._fields(definition).get(field.name.value)
        if strawberry_field is None:
            raise _GiveUp
        scopes: list[str] = []
        for permission in strawberry_field.permission_classes:
            if not (isinstance(permission, type) and issubclass(permission, ScopePermission)):
                raise _GiveUp
            scopes.append(permission.scope)
        gql_field = root_type.fields[field.name.value]
        literals: dict[str, str] = {}
        variables: dict[str, str] = {}
        id_arguments: set[str] = set()
        declared = {d.variable.name.value: d for d in operation.variable_definitions or ()}
        for argument in field.arguments or ():
            arg_name = argument.name.value
            arg_type = gql_field.args[arg_name].type
            named = arg_type.of_type if isinstance(arg_type, GraphQLNonNull) else arg_type
            if named is GraphQLID:
                id_arguments.add(arg_name)
            elif named.name != "String":
                raise _GiveUp
            if isinstance(argument.value, StringValueNode) or (
                isinstance(argument.value, IntValueNode) and named is GraphQLID
            ):
                literals[arg_name] = argument.value.value
            elif isinstance(argument.value, VariableNode):
                variable = declared[argument.value.name.value]
                if print_ast(variable.type) != str(arg_type):  # exactly the argument's type
                    raise _GiveUp
                variables[arg_name] = variable.variable.name.value
            else:
                raise _GiveUp
        if len(literals) + len(variables) != len(gql_field.args):
            raise _GiveUp  # an optional argument left to its default: not worth the care
        key = field.alias.value if field.alias else field.name.value
        selection = self._object(key, "", gql_field.type, field.selection_set)
        return Plan(
            key=key,
            root=root,
            scopes=tuple(scopes),
            literals=literals,
            variables=variables,
            id_arguments=frozenset(id_arguments),
            selection=selection,
        )

    def _fields(self, definition: StrawberryObjectDefinition) -> dict[str, StrawberryField]:
        name_of = self._schema.config.name_converter.get_graphql_name
        return {name_of(field): field for field in definition.fields}

    def _object(
        self, key: str, attribute: str, gql_type: GraphQLOutputType, selection_set: SelectionSetNode | None
    ) -> _Object:
        non_null = isinstance(gql_type, GraphQLNonNull)
        object_type = gql_type.of_type if isinstance(gql_type, GraphQLNonNull) else gql_type
        if not isinstance(object_type, GraphQLObjectType) or selection_set is None:
            raise _GiveUp
        definition = self._schema.get_type_by_name(object_type.name)
        if not isinstance(definition, StrawberryObjectDefinition):
            raise _GiveUp
        by_name = self._fields(definition)
        fields: list[_Leaf | _Object | _Typename] = []
        seen: set[str] = set()
        for selection in selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.directives or selection.arguments:
                raise _GiveUp
            sub_key = selection.alias.value if selection.alias else selection.name.value
            if sub_key in seen:
                raise _GiveUp  # merged selections: leave them to graphql-core
            seen.add(sub_key)
            if selection.name.value == "__typename":
                fields.append(_Typename(sub_key, object_type.name))
                continue
            strawberry_field = by_name.get(selection.name.value)
            if (
                strawberry_field is None
                or strawberry_field.base_resolver is not None
                or strawberry_field.permission_classes
                or strawberry_field.extensions
                or strawberry_field.directives
            ):
                raise _GiveUp
            sub_type = object_type.fields[selection.name.value].type
            fields.append(self._field(sub_key, strawberry_field.python_name, sub_type, selection))
        return _Object(key, attribute, non_null, tuple(fields))

    def _field(self, key: str, attribute: str, gql_type: GraphQLOutputType, node: FieldNode) -> _Leaf | _Object:
        non_null = isinstance(gql_type, GraphQLNonNull)
        inner = gql_type.of_type if isinstance(gql_type, GraphQLNonNull) else gql_type
        if isinstance(inner, GraphQLList):
            item = inner.of_type
            if not isinstance(item, GraphQLNonNull) or not is_leaf_type(item.of_type) or node.selection_set:
                raise _GiveUp
            return _Leaf(key, attribute, item.of_type.serialize, non_null, list_of=True)
        if is_leaf_type(inner):
            if node.selection_set:
                raise _GiveUp
            return _Leaf(key, attribute, inner.serialize, non_null, list_of=False)
        return self._object(key, attribute, gql_type, node.selection_set)


def _only_field(selection_set: SelectionSetNode) -> FieldNode:
    selections = selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode) or selections[0].directives:
        raise _GiveUp
    field = selections[0]
    if field.name.value.startswith("__"):
        raise _GiveUp
    return field
