"""Generate the editors' settings schema and the settings reference from `providers.settings`.

The settings used to be written three times (the pydantic model, VS Code's package.json and
the Neovim plugin's checks) and drifted. Now the model is the one source: this script turns
its JSON schema into

- the `contributes.configuration` section of `editors/vscode/package.json` (the rest of the
  file is left byte for byte as it is), and
- `docs/settings.md`, the reference that the README and the Neovim plugin point to.

`python scripts/gen_settings.py` rewrites both; `--check` writes nothing and exits 1 when
either differs from what it would write (tests/test_settings_schema.py runs it, `make
vscode` regenerates). The layout of the VS Code keys is the one users already have in their
settings: `council.council.*` and `council.completion.*` are one setting per key (those are
the ones people flip in the Settings editor), every other table is one `object` setting
(`council.providers`, `council.roles`, `council.router`, ...). Every generated setting
defaults to null, meaning "not set here": the extension sends only what the user set, so a
workspace `council.toml` still applies to the rest (editors/vscode/src/logic.ts).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a file, not installed: import the working tree
    sys.path.insert(0, str(REPO))

from providers.settings import TARGET_PATTERN, Settings  # noqa: E402

PACKAGE_JSON = REPO / "editors" / "vscode" / "package.json"
REFERENCE_MD = REPO / "docs" / "settings.md"
PREFIX = "council"

#: Tables whose keys are separate VS Code settings; the other tables are one object setting.
FLAT_TABLES = ("council", "completion")

#: Where the extension's own settings are listed (`council.server.*`, `council.trace.*`, ...:
#: never sent to the server). Those keep their hand-written entries in package.json; every
#: other `council.*` entry is generated.
LOGIC_TS = REPO / "editors" / "vscode" / "src" / "logic.ts"


def extension_keys() -> tuple[str, ...]:
    """`EXTENSION_KEYS` of logic.ts: the one list of the extension's own setting groups."""
    text = LOGIC_TS.read_text(encoding="utf-8")
    found = re.search(r"EXTENSION_KEYS\s*=\s*(\[[^\]]*\])", text)
    if found is None:
        raise SystemExit(f"{LOGIC_TS}: no `EXTENSION_KEYS = [...]` list found")
    keys = tuple(json.loads(found.group(1)))
    clash = set(keys) & set(Settings.model_fields)
    if clash:
        raise SystemExit(f"extension settings {sorted(clash)} clash with council.toml tables")
    return keys


#: Keywords that apply to one JSON type only, so `anyOf` branches carrying them can merge.
_TYPED_KEYWORDS = {
    "pattern", "minLength", "maxLength", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "items", "minItems", "maxItems",
    "properties", "additionalProperties", "required",
}  # fmt: skip


def resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s (VS Code's settings schema has no `$defs`), drop titles, simplify."""
    if isinstance(node, list):
        return [resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    out = {k: resolve(v, defs) for k, v in node.items() if k != "title"}
    if "default" in node:  # a value, not a schema: keep it as it is
        out["default"] = tidy_value(node["default"])
    return merge_any_of(out)


def merge_any_of(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf` of branches of different types -> one `type` list (what VS Code's Settings
    editor can render). Exact in JSON Schema: `pattern` only constrains strings, `minimum`
    only numbers, and so on. Left alone when two branches share a keyword or use others."""
    branches = node.get("anyOf")
    if not branches or not all(isinstance(b, dict) and "type" in b for b in branches):
        return node
    types: list[str] = []
    merged: dict[str, Any] = {}
    enums: list[Any] = []
    for branch in branches:
        branch_types = branch["type"] if isinstance(branch["type"], list) else [branch["type"]]
        extra = set(branch) - {"type", "enum"}
        if set(branch_types) & set(types) or extra - _TYPED_KEYWORDS or extra & set(merged):
            return node
        types += branch_types
        merged.update({k: branch[k] for k in extra})
        enums += branch.get("enum", [None] if branch_types == ["null"] else [])
    if any("enum" in b for b in branches) and not all(
        "enum" in b or b["type"] == "null" for b in branches
    ):
        return node
    out = {k: v for k, v in node.items() if k != "anyOf"}
    out["type"] = types[0] if len(types) == 1 else types
    if any("enum" in b for b in branches):
        out["enum"] = enums
    return {**out, **merged}


def tidy_value(value: Any) -> Any:
    """Defaults as users write them: `120` not `120.0`, and a tier list as its targets."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        tiers = all(isinstance(t, dict) and t.keys() == {"target", "when"} for t in value)
        if value and tiers and not any(t["when"] for t in value):
            return [t["target"] for t in value]
        return [tidy_value(v) for v in value]
    if isinstance(value, dict):
        return {k: tidy_value(v) for k, v in value.items()}
    return value


def settings_schema() -> dict[str, Any]:
    """The settings' JSON schema with every reference inlined, one entry per table."""
    raw = Settings.model_json_schema()
    return {name: resolve(prop, raw["$defs"]) for name, prop in raw["properties"].items()}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema plus `null`, the "not set here" value of every generated setting."""
    out = dict(schema)
    types = out.get("type", [])
    types = types if isinstance(types, list) else [types]
    if "null" not in types:
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _unset_text(table: str, default: Any) -> str:
    """What a flat setting left at null means (null is never sent to the server)."""
    toml = f"`[{table}]` in `council.toml`"
    if default is None:
        return f"Not set here: {toml} decides."
    return f"Not set here: {toml} decides, else `{json.dumps(default)}`."


def _setting(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """One VS Code setting: null by default, its text as Markdown, then the schema."""
    body = {k: v for k, v in _nullable(schema).items() if k not in ("default", "description")}
    return {
        "type": body.pop("type"),
        **({"enum": body.pop("enum")} if "enum" in body else {}),
        "default": None,
        "markdownDescription": text,
        **body,
    }


def vscode_configuration(old: dict[str, Any]) -> dict[str, Any]:
    """The whole `contributes.configuration`: `old`'s extension settings, then generated ones."""
    own = extension_keys()
    properties: dict[str, Any] = {
        key: value
        for key, value in old.get("properties", {}).items()
        if key.split(".")[1:2] and key.split(".")[1] in own
    }
    for table, schema in settings_schema().items():
        if table in FLAT_TABLES:
            for key, field in schema["properties"].items():
                text = f"{field['description']} {_unset_text(table, field.get('default'))}"
                properties[f"{PREFIX}.{table}.{key}"] = _setting(field, text)
        else:
            text = (
                f"{schema['description']} The `[{table}]` table of `council.toml`, merged over "
                "it key by key; every key is in docs/settings.md."
            )
            properties[f"{PREFIX}.{table}"] = _setting(schema, text)
    return {"title": old.get("title", "SLM Coding Council"), "properties": properties}


def render_package_json(text: str) -> str:
    """`text` with its `contributes.configuration` replaced, everything else unchanged."""
    package = json.loads(text)
    old = package["contributes"]["configuration"]
    new = vscode_configuration(old)
    # Splice the text when the section is written the way json.dumps writes it (npm writes
    # the same), so not one byte outside it changes; else rewrite the whole file.
    indent = " " * 4
    old_text = json.dumps(old, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)
    if text.count(old_text) == 1:
        new_text = json.dumps(new, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)
        return text.replace(old_text, new_text)
    package["contributes"]["configuration"] = new
    return json.dumps(package, indent=2, ensure_ascii=False) + "\n"


# -- docs/settings.md ------------------------------------------------------------------------

HEADER = """\
# Settings reference

<!-- Generated from providers/settings.py by scripts/gen_settings.py (`make vscode`);
tests/test_settings_schema.py fails when this file is out of date. Edit the model's
descriptions, not this file. -->

Every key below can be set in a `council.toml` (the user file, the workspace's, or the one
`$COUNCIL_CONFIG` names) or from an editor. Later sources win and tables merge key by key
(see [Configuration](../README.md#configuration) in the README). A bad value is reported
(by `council config`, or as a message in the editor) and its default is used.

- `council.toml`: `[completion]`, then `max_tokens = 64`;
- VS Code (`settings.json`): `"council.completion.max_tokens": 64` (each key of `[council]`
  and `[completion]` is a setting of its own), `"council.router": {"max_retries": 1}` (every
  other table is one object setting);
- Neovim: `require("council").setup({ settings = { completion = { max_tokens = 64 } } })`.
"""


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target = defs[node["$ref"].rsplit("/", 1)[1]]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _literal(value: Any) -> str:
    """A value as it is written in `council.toml`."""
    value = tidy_value(value)
    if value is None:
        return "unset"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_literal(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return json.dumps(value)


def _type_text(node: dict[str, Any], defs: dict[str, Any], links: list[str]) -> str:
    """`integer (0–10)`, `` `provider:model` ``, `list of [PrivacyRule](#privacyrule)` ..."""
    if "$ref" in node and "properties" in _deref(node, defs):
        name = node["$ref"].rsplit("/", 1)[1]
        if name not in links:
            links.append(name)
        return f"[{name}](#{name.lower()})"
    node = _deref(node, defs)
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        parts = [_type_text(b, defs, links) for b in node["anyOf"] if b.get("type") != "null"]
        return " or ".join(parts)
    kind = node.get("type")
    if kind == "string":
        return "`provider:model`" if node.get("pattern") == TARGET_PATTERN else "string"
    if kind in ("integer", "number"):
        low, high = node.get("minimum"), node.get("maximum")
        if low is not None and high is not None:
            return f"{kind} ({tidy_value(low)}–{tidy_value(high)})"
        if low is not None:
            return f"{kind} (≥ {tidy_value(low)})"
        if node.get("exclusiveMinimum") is not None:
            return f"{kind} (> {tidy_value(node['exclusiveMinimum'])})"
        return str(kind)
    if kind == "array":
        inner = _type_text(node["items"], defs, links)
        return f"list of ({inner})" if " or " in inner else f"list of {inner}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "table of " + _type_text(node["additionalProperties"], defs, links) + " by name"
    return str(kind)


def _rows(
    key: str, node: dict[str, Any], defs: dict[str, Any], links: list[str], required: bool
) -> list[str]:
    """Table rows for one key; a nested table's keys become dotted rows after its own."""
    full = _deref(node, defs)
    text = full.get("description", "").replace("|", "\\|").replace("\n", " ")
    if "properties" in full:
        rows = [f"| `{key}` | table | | {text} |"]
        for sub, sub_node in full["properties"].items():
            rows += _rows(f"{key}.{sub}", sub_node, defs, links, sub in full.get("required", []))
        return rows
    if "default" in node:
        default = f"`{_literal(node['default'])}`" if node["default"] is not None else "unset"
    elif required:
        default = "required"
    else:
        default = "`{}`" if full.get("type") == "object" else "`[]`"
    return [f"| `{key}` | {_type_text(node, defs, links)} | {default} | {text} |"]


def _table(prefix: str, schema: dict[str, Any], defs: dict[str, Any], links: list[str]) -> str:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, node in schema["properties"].items():
        rows += _rows(prefix + key, node, defs, links, key in schema.get("required", []))
    return "\n".join(rows) + "\n"


def reference() -> str:
    """docs/settings.md: one table per `council.toml` table, then the tables they refer to."""
    raw = Settings.model_json_schema()
    defs = raw["$defs"]
    links: list[str] = []
    parts = [HEADER]
    for table, prop in raw["properties"].items():
        node = _deref(prop, defs)
        entry = node.get("additionalProperties")
        if isinstance(entry, dict):  # [providers.NAME]: a table of tables
            schema, heading, prefix = _deref(entry, defs), f"[{table}.NAME]", ""
            builtin = ", ".join(
                f"`{name} = {_literal(entry.model_dump(mode='json', exclude_defaults=True))}`"
                for name, entry in getattr(Settings(), table).items()
            )
            extra = f" Built in: {builtin}."
        else:
            schema, heading, prefix, extra = node, f"[{table}]", "", ""
        if table in FLAT_TABLES:
            editor = f"VS Code: `{PREFIX}.{table}.KEY`, one setting per key"
        else:
            editor = f"VS Code: `{PREFIX}.{table}`, one object"
        intro = f"{node.get('description', '')}{extra}"
        parts.append(f"## `{heading}`\n\n{intro}\n\n{editor}; Neovim: `settings.{table}`.\n")
        parts.append(_table(prefix, schema, defs, links))
    parts.append("## Tables used above\n")
    done = 0
    while done < len(links):  # a listed table may refer to more tables
        name = links[done]
        done += 1
        schema = defs[name]
        anchor = f'<a id="{name.lower()}"></a>'
        parts.append(f"### {anchor}`{name}`\n\n{schema.get('description', '')}\n")
        parts.append(_table("", schema, defs, links))
    return "\n".join(parts)


def outputs() -> dict[Path, str]:
    """Every generated file and the text it should have."""
    current = PACKAGE_JSON.read_text(encoding="utf-8")
    return {PACKAGE_JSON: render_package_json(current), REFERENCE_MD: reference()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            continue
        stale.append(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(p) for p in stale)
        print(
            f"out of date with providers/settings.py: {names}; "
            "run `python scripts/gen_settings.py` (or `make vscode`)",
            file=sys.stderr,
        )
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
