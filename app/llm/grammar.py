"""Structured outputs: a JSON schema checked for what llama.cpp's grammars can enforce, and compiled to one (GBNF),
so that an answer sampled under it always parses and validates, whatever the model's size.

llama-cpp-python's converter ignores the keywords it cannot express (`minimum`, `not`, `uniqueItems`, ...): an
answer would then parse but might not validate. Those are refused here by name, before a job is made, as are
references outside the schema (nothing is fetched)."""

import json
import re
from functools import lru_cache
from typing import Any

# Keywords that constrain values in ways the grammar cannot enforce.
UNSUPPORTED = frozenset({
    "not", "if", "then", "else", "uniqueItems", "patternProperties", "propertyNames", "minProperties",
    "maxProperties", "contains", "minContains", "maxContains", "dependentRequired", "dependentSchemas",
    "dependencies", "unevaluatedProperties", "unevaluatedItems", "multipleOf", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "additionalItems", "$dynamicRef", "$recursiveRef",
})
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
# Subschemas under these keywords are schemas too; under `properties`, `$defs` and `definitions`, each value is.
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_MAPS = ("properties", "$defs", "definitions")
MAX_SCHEMA_CHARS = 100_000
# The converter's string character lets control characters through raw, which JSON forbids (json.loads refused a
# newline in a string); JSON's own grammar (llama.cpp's json.gbnf) leaves them out.
ANY_CHAR = 'char ::= [^"\\\\] |'
JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'
# The rules that let an answer be plain text instead of the schema's JSON: its first character tells which.
# (Names no property gives a rule: the converter names a root property's rule after it.)
TEXT_OR_JSON = ('\nroot ::= llamalith-json | llamalith-text\n'
                'llamalith-text ::= [^{ \\t\\n\\r] ([^{] | "{")*\n')


class UnsupportedSchema(ValueError):
    """A schema no grammar can enforce; the message names the keyword and where it is."""


def check(schema: Any, optional: bool = False) -> str:
    """The GBNF grammar for `schema` (`optional`: or plain text that starts with neither `{` nor a space, as an
    answer that may call a function or not: app/tool_calls.py); raises UnsupportedSchema naming what it cannot
    enforce."""
    if not isinstance(schema, dict):
        raise UnsupportedSchema("a JSON schema must be an object")
    text = json.dumps(schema)  # in its own order: the grammar writes properties in the order they are listed
    if len(text) > MAX_SCHEMA_CHARS:
        raise UnsupportedSchema(f"the schema is over {MAX_SCHEMA_CHARS} characters")
    _walk(schema, "schema")
    compiled = _compiled(text)
    if not optional:
        return compiled
    return re.sub(r"^root ::=", "llamalith-json ::=", compiled, count=1, flags=re.M) + TEXT_OR_JSON


def _walk(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        raise UnsupportedSchema(f"{where}: true/false schemas are not supported")
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"{where}: a schema must be an object")
    if unsupported := sorted(UNSUPPORTED & schema.keys()):
        raise UnsupportedSchema(f"{where}: '{unsupported[0]}' is not supported in structured outputs")
    types = schema.get("type", [])
    for name in types if isinstance(types, list) else [types]:
        if name not in TYPES:
            raise UnsupportedSchema(f"{where}.type: unknown type {name!r}")
    if "format" in schema and schema["format"] not in FORMATS:
        raise UnsupportedSchema(f"{where}.format: {schema['format']!r} is not supported (only "
                                f"{', '.join(sorted(FORMATS))})")
    if "$ref" in schema and not str(schema["$ref"]).startswith("#/"):
        raise UnsupportedSchema(f"{where}.$ref: only references inside the schema ('#/...') are supported")
    for keyword in SCHEMA_LISTS:
        for index, item in enumerate(_listed(schema, keyword, where)):
            _walk(item, f"{where}.{keyword}[{index}]")
    for keyword in SCHEMA_MAPS:
        for name, item in _mapped(schema, keyword, where).items():
            _walk(item, f"{where}.{keyword}.{name}")
    items = schema.get("items")
    if items is not None:
        for index, item in enumerate(items) if isinstance(items, list) else [(None, items)]:
            _walk(item, f"{where}.items" + ("" if index is None else f"[{index}]"))
    if isinstance(schema.get("additionalProperties"), dict):
        _walk(schema["additionalProperties"], f"{where}.additionalProperties")


def _listed(schema: dict, keyword: str, where: str) -> list:
    value = schema.get(keyword, [])
    if not isinstance(value, list):
        raise UnsupportedSchema(f"{where}.{keyword}: must be a list of schemas")
    return value


def _mapped(schema: dict, keyword: str, where: str) -> dict:
    value = schema.get(keyword, {})
    if not isinstance(value, dict):
        raise UnsupportedSchema(f"{where}.{keyword}: must be an object of schemas")
    return value


@lru_cache(maxsize=64)
def _compiled(text: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        compiled = json_schema_to_gbnf(text)
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:  # the converter's own checks
        raise UnsupportedSchema(f"schema: {exc}") from None
    return compiled.replace(ANY_CHAR, JSON_CHAR)
