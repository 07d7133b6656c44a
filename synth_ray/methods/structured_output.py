"""Structured output: a JSON Schema the engine decodes under, read back as typed columns.

    python -c "from synth_ray.methods.structured_output import columns_of; print(columns_of({'type': 'object', 'properties': {'score': {'type': 'integer'}}}))"

vLLM's structured outputs (xgrammar, or guidance where xgrammar lacks a feature) mask every
token that would leave the schema's language, so a completion that ends normally is JSON
that fits it. A completion cut by `max_tokens` is not, and neither is one from an engine that
ignores the constraint: each text is therefore parsed and validated again here
(`jsonschema`), and one that fails is a row error naming why, never a row with holes.

Each top-level property becomes a column of the Arrow type its schema names: string,
integer (int64), number (float64), boolean, arrays (lists) and objects with properties
(structs), nested as deep as the schema goes; `["T", "null"]` is a nullable T. Constructs
with no single column type (anyOf, oneOf, $ref, an object without properties) are refused
when the config is read, naming the property.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa

from synth_ray.engine.requests import Constraint

_SCALARS = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


class SchemaError(ValueError):
    """The schema cannot be decoded under or stored as columns; the message names where."""


def load_schema(value: dict[str, Any] | str) -> dict[str, Any]:
    """The schema given inline, or read from the JSON file a string names."""
    if isinstance(value, dict):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise SchemaError(f"no such file {value}")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SchemaError(f"{value} is not JSON ({err})") from None
    if not isinstance(loaded, dict):
        raise SchemaError(f"{value} holds a {type(loaded).__name__}, not a schema object")
    return loaded


def _type_name(schema: dict[str, Any], where: str) -> str:
    for unsupported in ("anyOf", "oneOf", "allOf", "$ref", "not"):
        if unsupported in schema:
            raise SchemaError(f"{where}: {unsupported} has no single column type")
    kind = schema.get("type")
    if isinstance(kind, list):
        named = [k for k in kind if k != "null"]
        if len(named) != 1:
            raise SchemaError(f"{where}: type {kind} has no single column type")
        kind = named[0]
    if kind is None:
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        if values and all(isinstance(v, str) for v in values):
            return "string"
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "integer"
        raise SchemaError(f"{where}: no type (give one: string, integer, number, ...)")
    if not isinstance(kind, str):
        raise SchemaError(f"{where}: type {kind!r} is not a type name")
    return kind


def arrow_type(schema: dict[str, Any], where: str) -> pa.DataType:
    """The Arrow type a value of `schema` is stored as; SchemaError names `where` if none."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: not a schema object")
    kind = _type_name(schema, where)
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            raise SchemaError(f"{where}: an array needs one `items` schema")
        return pa.list_(arrow_type(items, f"{where}.items"))
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise SchemaError(f"{where}: an object needs `properties` to become columns")
        return pa.struct(
            [pa.field(k, arrow_type(v, f"{where}.{k}")) for k, v in properties.items()]
        )
    raise SchemaError(
        f"{where}: type {kind!r} is not one of {sorted([*_SCALARS, 'array', 'object'])}"
    )


def columns_of(schema: dict[str, Any], taken: frozenset[str] = frozenset()) -> list[pa.Field]:
    """One Arrow field per top-level property, in the schema's order. The schema must be a
    valid JSON Schema for an object; a property named like one of `taken` (the method's own
    columns) is refused."""
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise SchemaError(f"not a valid JSON Schema: {err.message}") from None
    if _type_name(schema, "the schema") != "object":
        raise SchemaError("the top level must be an object (its properties become columns)")
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise SchemaError("the top level needs `properties` (they become the columns)")
    clash = sorted(set(properties) & taken)
    if clash:
        raise SchemaError(f"property {clash[0]!r} is one of the output's own columns")
    return [pa.field(name, arrow_type(sub, name)) for name, sub in properties.items()]


def json_constraint(schema: dict[str, Any]) -> Constraint:
    """The engine constraint for `schema` (canonical text, so equal schemas are equal specs)."""
    return Constraint("json", json.dumps(schema, sort_keys=True, separators=(",", ":")))


class StructuredReader:
    """Parses and validates completions against one schema; builds its validator once."""

    def __init__(self, schema: dict[str, Any], fields: list[pa.Field]) -> None:
        self.validator = jsonschema.validators.validator_for(schema)(schema)
        self.fields = fields

    def __getstate__(self) -> dict[str, Any]:
        return {"schema": self.validator.schema, "fields": self.fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["schema"], state["fields"])  # type: ignore[misc]

    def read(self, text: str, finish_reason: str | None) -> dict[str, Any] | str:
        """The columns' values, or the one-line reason the text is no row."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            cut = " (cut by max_tokens)" if finish_reason == "length" else ""
            return f"not JSON{cut}: {err.msg} at character {err.pos}"
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the top level"
            return f"does not match the schema at {where}: {error.message}"[:500]
        row = {}
        for f in self.fields:
            cell = _as_column_value(value.get(f.name), f.type)
            try:  # what jsonschema accepts but a Parquet column cannot hold
                pa.array([cell], f.type)
            except (pa.ArrowException, UnicodeEncodeError, OverflowError) as err:
                reason = str(err).splitlines()[0][:200]
                return f"{f.name} cannot be stored as {f.type}: {reason}"
            row[f.name] = cell
        return row


def _as_column_value(value: Any, kind: pa.DataType) -> Any:
    """`value` as its column holds it: an integer in a float64 column as a float (Arrow
    refuses a Python int beyond int64 there), recursively through lists and structs."""
    if pa.types.is_floating(kind) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if pa.types.is_list(kind) and isinstance(value, list):
        return [_as_column_value(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind) and isinstance(value, dict):
        return {
            kind.field(i).name: _as_column_value(value.get(kind.field(i).name), kind.field(i).type)
            for i in range(kind.num_fields)
        }
    return value
