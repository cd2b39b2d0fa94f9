"""Capability probing for every provider/model the configuration uses, with a disk cache.

Reachability and latency are always measured live; the capability answers (FIM, JSON schema)
are cached per base URL and model for `router.probe_cache_ttl_secs`, because they cost a
request each and rarely change. `refresh=True` probes everything again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
from pydantic import BaseModel, Field

from providers.base import Capabilities, Provider
from providers.health import HealthTracker
from providers.openai_compat import OpenAICompatProvider
from providers.quirks import choose_json_mode
from providers.settings import ROLE_NAMES, Settings

log = logging.getLogger(__name__)


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "council" / "capabilities.json"


class ProbeCache:
    """`{"<base_url>|<model>": Capabilities}` in one JSON file; unreadable files are ignored."""

    def __init__(self, path: Path | None, ttl_secs: float) -> None:
        self.path = path
        self.ttl = ttl_secs
        self._data: dict[str, Capabilities] = {}
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                self._data = {k: Capabilities.model_validate(v) for k, v in raw.items()}
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable probe cache %s: %s", path, exc)

    def get(self, key: str) -> Capabilities | None:
        caps = self._data.get(key)
        if caps is None or time.time() - caps.probed_at > self.ttl:
            return None
        return caps

    def put(self, key: str, caps: Capabilities) -> None:
        self._data[key] = caps

    def save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({k: v.model_dump() for k, v in self._data.items()}, indent=1),
                encoding="utf-8",
            )
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("cannot write probe cache %s: %s", self.path, exc)


class ProviderRow(BaseModel):
    """One line of `council providers`."""

    provider: str
    model: str
    roles: list[str]
    base_url: str
    local: bool
    reachable: bool
    latency_ms: float | None
    model_listed: bool | None
    fim: bool | None
    json_schema: bool | None
    json_object: bool | None = None
    fim_format: str | None = Field(
        None, description="'suffix', or the model family whose raw FIM prompt is used"
    )
    json_mode: str = Field(
        "?", description="how structured output is asked for: json_schema, json_object, prompt"
    )
    health: str
    cooldown_s: float
    cached_capabilities: bool
    error: str | None


def targets(settings: Settings) -> list[tuple[str, str, list[str]]]:
    """(provider, model, roles) for every target a role names, then unused providers."""
    found: dict[tuple[str, str], list[str]] = {}
    for role in ROLE_NAMES:
        for tier in settings.roles.tiers(role):
            found.setdefault((tier.provider, tier.model), []).append(role)
    used = {p for p, _ in found}
    rows = [(p, m, roles) for (p, m), roles in found.items()]
    rows += [(name, "", []) for name in settings.providers if name not in used]
    return rows


async def probe_all(
    settings: Settings,
    providers: Mapping[str, Provider],
    *,
    cache: ProbeCache | None = None,
    refresh: bool = False,
    health: HealthTracker | None = None,
) -> list[ProviderRow]:
    rows: list[ProviderRow | None] = [None] * len(targets(settings))
    cache = cache or ProbeCache(None, settings.router.probe_cache_ttl_secs)

    async def one(index: int, name: str, model: str, roles: list[str]) -> None:
        provider = providers[name]
        config = settings.providers[name]
        key = f"{config.base_url}|{model}"
        cached = None if refresh else cache.get(key)
        caps = Capabilities(error="probe timed out", probed_at=time.time())
        with anyio.move_on_after(settings.router.probe_timeout_secs * 4):
            caps = await _probe(provider, model, cached)
        if caps.reachable and model and cached is None:
            cache.put(key, caps)
        # What the config states wins over anything probed or cached, here as at run time.
        stated = config.capabilities
        caps = caps.model_copy(
            update={
                k: v
                for k, v in (("fim", stated.fim), ("json_schema", stated.json_schema))
                if v is not None
            }
        )
        if health is not None and not caps.reachable:
            health.record_failure(name, caps.error or "unreachable")
        state = health.snapshot(name) if health else None
        rows[index] = ProviderRow(
            provider=name,
            model=model or "-",
            roles=roles,
            base_url=config.base_url,
            local=config.is_local,
            reachable=caps.reachable,
            latency_ms=caps.latency_ms,
            model_listed=caps.model_listed,
            fim=caps.fim,
            json_schema=caps.json_schema,
            json_object=caps.json_object,
            fim_format=caps.fim_format,
            json_mode=_json_mode(caps),
            health=state.state if state else "healthy",
            cooldown_s=state.cooldown_remaining_s if state else 0.0,
            cached_capabilities=cached is not None,
            error=caps.error,
        )

    async with anyio.create_task_group() as group:
        for index, (name, model, roles) in enumerate(targets(settings)):
            group.start_soon(one, index, name, model, roles)
    cache.save()
    return [row for row in rows if row is not None]


async def _probe(provider: Provider, model: str, cached: Capabilities | None) -> Capabilities:
    """Live reachability always; capabilities from the cache when present."""
    if (not model or cached is not None) and isinstance(provider, OpenAICompatProvider):
        started = time.perf_counter()
        try:
            models = await provider.list_models()
        except Exception as exc:  # provider errors are already redacted
            return Capabilities(error=str(getattr(exc, "message", exc)), probed_at=time.time())
        live = Capabilities(
            reachable=True,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
            model_listed=(model in models) if (model and models) else None,
            probed_at=time.time(),
        )
        if cached is not None:
            live = live.model_copy(
                update={
                    "fim": cached.fim,
                    "json_schema": cached.json_schema,
                    "json_object": cached.json_object,
                    "fim_format": cached.fim_format,
                }
            )
            provider.remember(model, live)
        return live
    return await provider.probe(model)


def _json_mode(caps: Capabilities) -> str:
    """How a structured call will ask this model for JSON (see providers.quirks)."""
    if caps.json_schema is None:
        return "?"
    return choose_json_mode(caps.json_schema, caps.json_object)


def _fim_way(row: ProviderRow) -> str:
    """FIM column: how infilling is done (suffix, raw:<family>), or no / ?."""
    if row.fim and row.fim_format:
        return row.fim_format if row.fim_format == "suffix" else f"raw:{row.fim_format}"
    return _yes_no(row.fim)


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def format_table(rows: list[ProviderRow]) -> str:
    """The human-readable `council providers` table."""
    header = (
        "PROVIDER",
        "MODEL",
        "ROLES",
        "LOCAL",
        "REACHABLE",
        "LATENCY",
        "FIM",
        "JSON",
        "HEALTH",
        "NOTE",
    )
    table = [header]
    for r in rows:
        note = r.error or ("model not listed by server" if r.model_listed is False else "")
        health = r.health if not r.cooldown_s else f"{r.health} {r.cooldown_s:.0f}s"
        table.append(
            (
                r.provider,
                r.model,
                ",".join(r.roles) or "-",
                _yes_no(r.local),
                _yes_no(r.reachable),
                f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-",
                _fim_way(r) if r.reachable else "-",
                r.json_mode if r.reachable else "-",
                health,
                note,
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
    lines = []
    for row in table:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)
