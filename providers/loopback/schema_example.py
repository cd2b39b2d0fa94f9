"""A minimal instance of a JSON schema, as pydantic v2 emits it: the loopback server's
default answer to a structured-output request."""

from __future__ import annotations

import copy
import math
from typing import Any

_MAX_DEPTH = 64
_FORMAT_EXAMPLES: dict[str, str] = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00",
    "duration": "PT0S",
    "email": "a@example.com",
    "uri": "http://example.com/",
    "url": "http://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def example_for_schema(schema: dict[str, Any]) -> Any:
    """Return a minimal instance of ``schema`` (JSON Schema as pydantic v2 emits it).

    Why: a provider that honours ``response_format: json_schema`` must answer with JSON the
    caller can validate; the loopback cannot generate, so it builds the smallest valid value.
    Only required properties are filled; ``const``/``default``/``enum`` win over ``type``.
    ``pattern`` and ``uniqueItems`` are not honoured.
    """
    return _example(schema, schema, 0)


def _resolve_ref(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node = root
    pointer = ref[1:]
    for raw in pointer.split("/")[1:] if pointer else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ValueError(f"unresolvable $ref {ref!r}") from exc
    return node


def _deref(schema: Any, root: Any) -> Any:
    """Follow ``$ref`` chains; sibling keywords (``default``, ``description``) override."""
    for _ in range(_MAX_DEPTH):
        if not isinstance(schema, dict) or "$ref" not in schema:
            return schema
        target = _resolve_ref(schema["$ref"], root)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **siblings} if isinstance(target, dict) else target
    raise ValueError("$ref chain too deep")


def _is_null_schema(schema: Any, root: Any) -> bool:
    schema = _deref(schema, root)
    return isinstance(schema, dict) and (
        schema.get("type") == "null" or ("const" in schema and schema["const"] is None)
    )


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        sub = _deref(sub, root)
        if not isinstance(sub, dict):
            continue
        if "allOf" in sub:
            sub = _merge_all_of(sub, root)
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                existing = list(merged.get("required", []))
                merged["required"] = existing + [r for r in value if r not in existing]
            else:
                merged.setdefault(key, value)
    return merged


def _example(schema: Any, root: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH or not isinstance(schema, dict):
        return None
    schema = _deref(schema, root)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return copy.deepcopy(schema["const"])
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return copy.deepcopy(enum[0])
    if isinstance(schema.get("allOf"), list):
        return _example(_merge_all_of(schema, root), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            for option in options:
                if not _is_null_schema(option, root):
                    return _example(option, root, depth + 1)
            return None

    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [t for t in kind if t != "null"]
        kind = non_null[0] if non_null else "null"
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
    if kind == "object":
        return _example_object(schema, root, depth)
    if kind == "array":
        return _example_array(schema, root, depth)
    if kind == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
            return _FORMAT_EXAMPLES[fmt]
        return "a" * int(schema.get("minLength", 0))
    if kind == "integer":
        return _example_integer(schema)
    if kind == "number":
        return _example_number(schema)
    if kind == "boolean":
        return False
    return None


def _example_object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    extra = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for name in schema.get("required") or []:
        sub = properties.get(name, extra if isinstance(extra, dict) else {})
        out[name] = _example(sub, root, depth + 1)
    return out


def _example_array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    out = [_example(p, root, depth + 1) for p in prefix] if isinstance(prefix, list) else []
    items = schema.get("items")
    while len(out) < int(schema.get("minItems", 0)):
        out.append(_example(items if isinstance(items, dict) else {}, root, depth + 1))
    return out


def _upper_bound(schema: dict[str, Any]) -> float | None:
    bounds: list[float] = []
    if isinstance(schema.get("maximum"), int | float):
        bounds.append(schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        bounds.append(schema["exclusiveMaximum"])
    return min(bounds) if bounds else None


def _example_integer(schema: dict[str, Any]) -> int:
    lows: list[int] = []
    if isinstance(schema.get("minimum"), int | float):
        lows.append(math.ceil(schema["minimum"]))
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    if lows:
        value = max(lows)
    else:
        value = 0
        if isinstance(schema.get("maximum"), int | float) and schema["maximum"] < 0:
            value = math.floor(schema["maximum"])
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            value = min(value, math.ceil(schema["exclusiveMaximum"]) - 1)
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0 and value % step:
        value = math.ceil(value / step) * step
    return value


def _example_number(schema: dict[str, Any]) -> float | int:
    upper = _upper_bound(schema)
    minimum = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        low = max(exclusive, minimum) if isinstance(minimum, int | float) else exclusive
        value = low + 1
        if upper is not None and value >= upper:
            value = (low + upper) / 2
        return value
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        return minimum
    if upper is not None and upper <= 0:
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            return upper - 1
        return upper
    return 0
