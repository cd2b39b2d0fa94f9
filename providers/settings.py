"""The typed `council.toml` shape.

Every field has a default, so an empty file (or no file at all) is a valid configuration and
a bad value can always fall back to its default. Models forbid unknown keys so that a typo
such as `max_refinment_passes` is reported instead of silently ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

ROLE_NAMES = ("orchestrator", "researcher", "generator", "debugger", "tester", "router")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class CapabilityOverrides(_Strict):
    """Skip probing a capability by stating it (useful for servers that accept but ignore it)."""

    fim: bool | None = None
    json_schema: bool | None = None


class ProviderConfig(_Strict):
    """One OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, LM Studio, OpenAI, ...)."""

    base_url: str
    api_key_env: str | None = None
    local: bool | None = Field(
        None,
        description="Allowed under local_only. Left unset, it is true only for loopback hosts.",
    )
    timeout_secs: float | None = Field(None, gt=0)
    price: Price = Price()
    model_prices: dict[str, Price] = Field(default_factory=dict)
    capabilities: CapabilityOverrides = CapabilityOverrides()
    stream_usage: bool = True

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as http://localhost:11434/v1")
        return value.rstrip("/")

    @property
    def is_local(self) -> bool:
        """Explicit `local` wins; else only loopback hosts count as local (never guess cloud)."""
        if self.local is not None:
            return self.local
        host = urlsplit(self.base_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def price_for(self, model: str) -> Price:
        return self.model_prices.get(model, self.price)


class Tier(_Strict):
    """One escalation step: a `provider:model` target, optionally limited to request classes."""

    target: str
    when: tuple[str, ...] = ()

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        provider, sep, model = value.partition(":")
        if not sep or not provider or not model:
            raise ValueError("expected 'provider:model'")
        return value

    @property
    def provider(self) -> str:
        return self.target.partition(":")[0]

    @property
    def model(self) -> str:
        return self.target.partition(":")[2]


def _tiers(value: object) -> object:
    """Accept `"p:m"`, `["p:m", ...]` or `[{target=..., when=[...]}, ...]`."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [{"target": item} if isinstance(item, str) else item for item in value]
    return value


class RolesConfig(_Strict):
    """Role -> ordered tiers; the first tier is the primary, the rest are escalation tiers."""

    orchestrator: tuple[Tier, ...] = (Tier(target="ollama:qwen2.5-coder:7b"),)
    researcher: tuple[Tier, ...] = (Tier(target="ollama:qwen2.5-coder:7b"),)
    generator: tuple[Tier, ...] = (Tier(target="ollama:qwen2.5-coder:7b"),)
    debugger: tuple[Tier, ...] = (Tier(target="ollama:qwen2.5-coder:7b"),)
    tester: tuple[Tier, ...] = (Tier(target="ollama:qwen2.5-coder:7b"),)
    router: tuple[Tier, ...] = ()

    _coerce = field_validator(*ROLE_NAMES, mode="before")(classmethod(lambda cls, v: _tiers(v)))

    def tiers(self, role: str) -> tuple[Tier, ...]:
        if role not in ROLE_NAMES:
            raise KeyError(f"unknown role {role!r}; roles are {', '.join(ROLE_NAMES)}")
        tiers: tuple[Tier, ...] = getattr(self, role)
        return tiers


class CouncilConfig(_Strict):
    max_refinement_passes: int = Field(3, ge=0, le=10)
    consensus_threshold: float = Field(0.8, ge=0, le=1)
    request_timeout_secs: float = Field(120.0, gt=0)
    budget_usd: float | None = Field(0.50, ge=0, description="Per-run cost cap; unset = none.")
    budget_tokens: int | None = Field(None, ge=0, description="Per-run token cap; unset = none.")
    local_only: bool = False
    engine: Literal["auto", "council", "local"] = Field(
        "auto", description="auto: the full council, or local mode when no chat model answers"
    )
    local_candidates: int = Field(4, ge=1, le=16, description="Samples in local mode.")
    candidates_per_pass: int = Field(
        1,
        ge=1,
        le=8,
        description="Candidates the generator writes concurrently each pass; all are reviewed "
        "and run against every test suite of the run.",
    )
    escalate_after: int = Field(
        2,
        ge=1,
        le=10,
        description="Failed passes after which the generator's next tier writes the next "
        "candidate (and the one after, after as many more).",
    )


class SandboxConfig(_Strict):
    """Limits for running generated code and tests (see council/sandbox/)."""

    timeout_secs: float = Field(30.0, gt=0)
    cpu_secs: int = Field(30, ge=1)
    memory_mb: int = Field(2048, ge=64)
    file_size_mb: int = Field(64, ge=1)
    max_processes: int = Field(32, ge=1)
    disk_mb: int = Field(256, ge=1, description="New files per run: work dir, /tmp, /dev/shm each")
    network: bool = False
    python: str | None = Field(None, description="Interpreter with pytest; default: council's")


class DeliberateConfig(_Strict):
    """`council deliberate`: members answer, rank each other, a chairman synthesises."""

    members: tuple[Tier, ...] = Field(
        (), description="provider:model targets; default: the first tier of each council role"
    )
    chairman: tuple[Tier, ...] = Field((), description="default: the orchestrator's tiers")

    _coerce = field_validator("members", "chairman", mode="before")(
        classmethod(lambda cls, v: _tiers(v))
    )


class RouterConfig(_Strict):
    max_retries: int = Field(2, ge=0, le=10, description="Retries inside a tier before escalating.")
    backoff_base_secs: float = Field(0.5, ge=0)
    backoff_max_secs: float = Field(8.0, ge=0)
    retry_after_max_secs: float = Field(
        30.0, ge=0, description="A longer Retry-After escalates at once instead of waiting."
    )
    cooldown_failures: int = Field(3, ge=1, description="Failures within the window that trip it.")
    cooldown_window_secs: float = Field(60.0, gt=0)
    cooldown_secs: float = Field(30.0, ge=0)
    classifier: Literal["auto", "rules", "llm", "off"] = "auto"
    large_request_chars: int = Field(12_000, ge=1)
    probe_timeout_secs: float = Field(3.0, gt=0)
    probe_cache_ttl_secs: float = Field(86_400.0, ge=0)


class PrivacyRule(_Strict):
    """Paths matching `glob` (relative to the workspace) are only sent to local providers."""

    glob: str
    local_only: bool = True


class PrivacyConfig(_Strict):
    rules: tuple[PrivacyRule, ...] = ()


class CompletionConfig(_Strict):
    """Inline completions (`textDocument/inlineCompletion`, `council complete`)."""

    backend: str = Field(
        "specialist", description='"specialist" (the in-process model) or "provider:model"'
    )
    enabled: bool = True
    model_path: str = Field(
        "", description="The specialist's model directory; empty: the shipped default model"
    )
    fim_format: Literal[
        "auto", "suffix", "starcoder", "starcoder-spm", "qwen", "deepseek", "codellama"
    ] = Field(
        "auto",
        description="auto: send `suffix`, then the model family's raw format if it is refused",
    )
    max_context_tokens: int = Field(
        384, ge=16, le=32_768, description="Prompt budget: snippets + prefix + suffix."
    )
    max_tokens: int = Field(48, ge=1, le=1024, description="Output cap for single-line answers.")
    max_tokens_multiline: int = Field(
        128, ge=1, le=4096, description="Output cap for multi-line answers."
    )
    max_lines: int = Field(8, ge=1, le=200, description="Lines in a multi-line answer.")
    max_latency_ms: int = Field(
        250,
        ge=10,
        le=60_000,
        description="Decoding budget of one request (the specialist): at the limit the "
        "answer keeps its last complete line.",
    )
    snippets: bool = Field(True, description="Add imports and signatures from open documents.")
    snippet_tokens: int = Field(96, ge=0, le=4096, description="Snippets' share of the budget.")
    temperature: float = Field(0.0, ge=0, le=2)
    timeout_secs: float = Field(5.0, gt=0, description="A provider slower than this: no answer.")

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value == "specialist":
            return value
        provider, sep, model = value.partition(":")
        if not sep or not provider or not model:
            raise ValueError('expected "specialist" or "provider:model"')
        return value


def _default_providers() -> dict[str, ProviderConfig]:
    return {"ollama": ProviderConfig(base_url="http://localhost:11434/v1", local=True)}


class Settings(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=_default_providers)
    roles: RolesConfig = RolesConfig()
    council: CouncilConfig = CouncilConfig()
    router: RouterConfig = RouterConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    completion: CompletionConfig = CompletionConfig()
    sandbox: SandboxConfig = SandboxConfig()
    deliberate: DeliberateConfig = DeliberateConfig()
