"""Load settings from their sources, later wins: defaults < user file < workspace file <
`$COUNCIL_CONFIG` < editor settings (passed in by the language server as `overrides`).

Loading never raises on bad input. A file that does not parse is skipped whole; a key with a
bad value is dropped so that its default (or an earlier source's value) applies. Each problem
becomes one `ConfigProblem` naming the source, the dotted key and what is wrong, which the
CLI prints and the server shows with `window/showMessage`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from providers.settings import ROLE_NAMES, Settings

USER_CONFIG = Path("~/.config/council/council.toml")
WORKSPACE_CONFIG_NAME = "council.toml"
ENV_CONFIG = "COUNCIL_CONFIG"


@dataclass(frozen=True)
class ConfigProblem:
    source: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}" if self.key else self.source
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class ConfigSource:
    name: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    problems: tuple[ConfigProblem, ...]
    sources: tuple[str, ...]


def read_toml(path: Path) -> tuple[dict[str, Any] | None, ConfigProblem | None]:
    """Parse one file; a missing file is not a problem, a broken one is."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, ConfigProblem(str(path), "", f"cannot be read ({exc.strerror}); file ignored")
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        return None, ConfigProblem(str(path), "", f"is not valid TOML ({exc}); file ignored")


def file_sources(
    workspace: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> tuple[list[ConfigSource], list[ConfigProblem]]:
    """Collect the file layers in precedence order."""
    env = os.environ if env is None else env
    user = (home / ".config/council/council.toml") if home else USER_CONFIG.expanduser()
    paths = [user]
    if workspace is not None:
        paths.append(workspace / WORKSPACE_CONFIG_NAME)
    explicit = env.get(ENV_CONFIG)
    problems: list[ConfigProblem] = []
    if explicit:
        explicit_path = Path(explicit).expanduser()
        if not explicit_path.is_file():
            problems.append(
                ConfigProblem(
                    f"${ENV_CONFIG}", "", f"points to {explicit_path}, which is not a file"
                )
            )
        paths.append(explicit_path)
    sources: list[ConfigSource] = []
    seen: set[Path] = set()
    for path in paths:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        data, problem = read_toml(path)
        if problem:
            problems.append(problem)
        if data is not None:
            sources.append(ConfigSource(str(path), data))
    return sources, problems


def load_settings(
    workspace: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    overrides_name: str = "editor settings",
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> LoadedSettings:
    sources, problems = file_sources(workspace, env=env, home=home)
    if overrides:
        sources.append(ConfigSource(overrides_name, overrides))
    settings, more = merge_and_validate(sources)
    return LoadedSettings(settings, tuple(problems + more), tuple(s.name for s in sources))


def merge_and_validate(sources: list[ConfigSource]) -> tuple[Settings, list[ConfigProblem]]:
    """Deep-merge the layers, remembering which source set each key, then validate.

    Invalid keys are removed one error at a time and blamed on the source that set them.
    """
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    problems: list[ConfigProblem] = []
    for source in sources:
        if not isinstance(source.data, Mapping):
            problems.append(ConfigProblem(source.name, "", "must be a table of settings; ignored"))
            continue
        _merge(merged, source.data, (), source.name, origin)

    dropped: set[tuple[str, ...]] = set()
    for _ in range(200):  # every pass removes at least one key, so this terminates
        try:
            settings = Settings.model_validate(merged)
        except ValidationError as exc:
            removed = False
            for error in exc.errors():
                loc = tuple(str(part) for part in error["loc"])
                path = _existing_prefix(merged, loc)
                if not path:
                    continue
                if error["type"] == "missing" and loc in dropped:
                    pass  # we removed this required key ourselves; its table goes quietly
                else:
                    problems.append(
                        ConfigProblem(_blame(origin, path), _dotted(loc), _describe(error))
                    )
                dropped.add(path)
                removed |= _delete(merged, path)
            if not removed:
                return Settings(), [*problems, ConfigProblem("settings", "", str(exc))]
            continue
        settings, ref_problems = _check_references(settings, merged, origin)
        return settings, problems + ref_problems
    return Settings(), [*problems, ConfigProblem("settings", "", "too many errors; using defaults")]


def _merge(
    into: dict[str, Any],
    new: Mapping[str, Any],
    prefix: tuple[str, ...],
    name: str,
    origin: dict[tuple[str, ...], str],
) -> None:
    for key, value in new.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, path, name, origin)
        else:
            into[key] = _plain(value)
            origin[path] = name
            if isinstance(value, Mapping):
                _mark(value, path, name, origin)


def _mark(value: Mapping[str, Any], path: tuple[str, ...], name: str, origin: dict) -> None:
    for key, sub in value.items():
        origin[(*path, str(key))] = name
        if isinstance(sub, Mapping):
            _mark(sub, (*path, str(key)), name, origin)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _existing_prefix(data: Any, loc: tuple[str, ...]) -> tuple[str, ...]:
    """The longest prefix of `loc` that addresses a key actually present in the merged data."""
    path: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            path.append(part)
            node = node[int(part)]
        else:
            break
    # Never drop a list element alone: dropping tier 0 would silently promote tier 1.
    while path and path[-1].isdigit():
        path.pop()
    return tuple(path)


def _delete(data: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = data
    for part in path[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def _blame(origin: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    for end in range(len(path), 0, -1):
        if path[:end] in origin:
            return origin[path[:end]]
    return "settings"


def _dotted(loc: tuple[str, ...]) -> str:
    out = ""
    for part in loc:
        if part.isdigit():
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in part:
            continue
        else:
            out += f".{part}" if out else part
    return out


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; every key is in docs/settings.md)"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if error["type"] != "missing" and isinstance(value, str | int | float | bool):
        return f"{message} (got {value!r})"
    return message


def _check_references(
    settings: Settings, merged: Mapping[str, Any], origin: Mapping[tuple[str, ...], str]
) -> tuple[Settings, list[ConfigProblem]]:
    """Roles may only name configured providers; offending tiers are dropped.

    A role left at its built-in default (which names the default `ollama` provider) in a
    configuration that replaced the provider table simply ends up with no tiers; one problem
    lists those roles so the user knows to set them.
    """
    problems: list[ConfigProblem] = []
    fixed: dict[str, Any] = {}
    defaulted: list[str] = []
    known = ", ".join(sorted(settings.providers)) or "none"
    set_roles = merged.get("roles", {}) if isinstance(merged.get("roles"), dict) else {}
    for role in ROLE_NAMES:
        tiers = settings.roles.tiers(role)
        unknown = [t.target for t in tiers if t.provider not in settings.providers]
        if not unknown:
            continue
        fixed[role] = tuple(t for t in tiers if t.provider in settings.providers)
        if role not in set_roles:
            defaulted.append(role)
            continue
        problems.append(
            ConfigProblem(
                _blame(origin, ("roles", role)),
                f"roles.{role}",
                f"names unknown provider in {', '.join(repr(u) for u in unknown)} "
                f"(configured providers: {known}); those tiers are ignored",
            )
        )
    if defaulted:
        problems.append(
            ConfigProblem(
                _blame(origin, ("providers",)),
                "roles",
                f"{', '.join(defaulted)} not set, and their default names provider 'ollama', "
                f"which is not configured (configured providers: {known}); set them under [roles]",
            )
        )
    if fixed:
        settings = settings.model_copy(update={"roles": settings.roles.model_copy(update=fixed)})
    return settings, problems
