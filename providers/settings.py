"""The typed `council.toml` shape.

Every field has a default, so an empty file (or no file at all) is a valid configuration and
a bad value can always fall back to its default. Models forbid unknown keys so that a typo
such as `max_refinment_passes` is reported instead of silently ignored.

This module is the one schema of the settings: every field's `description` is the user-facing
text. `scripts/gen_settings.py` turns the JSON schema into VS Code's `contributes.configuration`
and `docs/settings.md`, and a test fails when those drift from it. So a new or changed field
needs a `description`, then `make vscode` (or `python scripts/gen_settings.py`).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from providers.fim_formats import FORMATS

ROLE_NAMES = ("orchestrator", "researcher", "generator", "debugger", "tester", "router")

#: What `provider:model` looks like, for editors' schemas (the validators below say it in words).
TARGET_PATTERN = "^[^:]+:.+$"

#: `completion.fim_format`: the two ways that need no family, then every family in
#: providers/fim_formats.py, so a new format there is a valid setting (and an enum entry in
#: the editors' schemas) without a second list.
FimFormatName = Literal[("auto", "suffix", *FORMATS)]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Price(_Strict):
    """US dollars per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0, description="US dollars per million prompt tokens.")
    output_per_mtok: float = Field(
        0.0, ge=0, description="US dollars per million completion tokens."
    )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


class CapabilityOverrides(_Strict):
    """Skip probing a capability by stating it (useful for servers that accept but ignore it)."""

    fim: bool | None = Field(
        None, description="Whether `suffix` (fill-in-the-middle) works; unset: probed."
    )
    json_schema: bool | None = Field(
        None, description="Whether JSON-schema responses are honoured; unset: probed."
    )


class ProviderConfig(_Strict):
    """One OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, LM Studio, OpenAI, ...)."""

    base_url: str = Field(
        description="The OpenAI-compatible base URL, including `/v1`, e.g. "
        "`http://localhost:11434/v1`.",
        json_schema_extra={"pattern": "^https?://"},
    )
    api_key_env: str | None = Field(
        None,
        description="Name of the environment variable that holds the API key (keys are read "
        "from the environment only, never from settings).",
    )
    local: bool | None = Field(
        None,
        description="Allowed under `council.local_only`. Unset: true only for loopback hosts "
        "(`localhost`, `127.0.0.0/8`, `::1`).",
    )
    timeout_secs: float | None = Field(
        None,
        gt=0,
        description="Per-request timeout for this provider; unset: `council.request_timeout_secs`.",
    )
    price: Price = Field(
        Price(), description="Prices for the run budget, in US dollars per million tokens."
    )
    model_prices: dict[str, Price] = Field(
        default_factory=dict, description="Per-model prices (by model name) that override `price`."
    )
    capabilities: CapabilityOverrides = Field(
        CapabilityOverrides(),
        description="State `fim` or `json_schema` to skip probing it (for servers that accept "
        "a feature but ignore it).",
    )
    stream_usage: bool = Field(
        True,
        description="Ask for token usage in streamed answers (`stream_options.include_usage`); "
        "turn off for servers that reject it.",
    )

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

    target: str = Field(
        description="`provider:model`, e.g. `ollama:qwen2.5-coder:7b`.",
        json_schema_extra={"pattern": TARGET_PATTERN},
    )
    when: tuple[str, ...] = Field(
        (),
        description="Request tags this tier is tried for (`math`, `general`, `large`, `small`, "
        "`lang:NAME`); empty: every request.",
    )

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


_Target = Annotated[str, Field(pattern=TARGET_PATTERN)]

#: Ordered tiers as written in a file: one target, or a list of targets and tier tables. The
#: input type is what the JSON schema shows editors (the short forms users write), not the
#: normalised tuple of `Tier`.
Tiers = Annotated[
    tuple[Tier, ...],
    BeforeValidator(_tiers, json_schema_input_type=_Target | list[_Target | Tier]),
]

_DEFAULT_TIERS = (Tier(target="ollama:qwen2.5-coder:7b"),)


class RolesConfig(_Strict):
    """Role -> ordered tiers; the first tier is the primary, the rest are escalation tiers."""

    orchestrator: Tiers = Field(
        _DEFAULT_TIERS,
        description="Splits the request into tasks and judges each pass (approve or refine).",
    )
    researcher: Tiers = Field(
        _DEFAULT_TIERS,
        description="Writes the tech manifest: approach, APIs, dependencies, pitfalls.",
    )
    generator: Tiers = Field(_DEFAULT_TIERS, description="Writes the code.")
    debugger: Tiers = Field(
        _DEFAULT_TIERS, description="Reviews the code for bugs and proposes fixed code."
    )
    tester: Tiers = Field(_DEFAULT_TIERS, description="Writes the tests the sandbox runs.")
    router: Tiers = Field(
        (),
        description="Optional small model that tags requests `math` or `general` for tiers' "
        "`when` (see `router.classifier`); empty: keyword rules.",
    )

    def tiers(self, role: str) -> tuple[Tier, ...]:
        if role not in ROLE_NAMES:
            raise KeyError(f"unknown role {role!r}; roles are {', '.join(ROLE_NAMES)}")
        tiers: tuple[Tier, ...] = getattr(self, role)
        return tiers


class CouncilConfig(_Strict):
    """The council pipeline: refinement, approval, budgets and the local-only switch."""

    max_refinement_passes: int = Field(
        3,
        ge=0,
        le=10,
        description="Generator passes after the first when the orchestrator asks for a refinement; "
        "after the last, the best candidate is returned with an honest status.",
    )
    consensus_threshold: float = Field(
        0.8, ge=0, le=1, description="Orchestrator score at which a result is approved."
    )
    request_timeout_secs: float = Field(
        120.0,
        gt=0,
        description="Timeout of one model call, for providers without their own `timeout_secs`.",
    )
    budget_usd: float | None = Field(
        0.50,
        ge=0,
        description="Per-run cost cap in US dollars (from the providers' prices); unset: none.",
    )
    budget_tokens: int | None = Field(None, ge=0, description="Per-run token cap; unset: none.")
    local_only: bool = Field(
        False,
        description="Send nothing to providers not marked local (the privacy policy).",
    )
    engine: Literal["auto", "council", "local"] = Field(
        "auto",
        description="`auto`: the full council, or local council mode when no chat model "
        "answers; `council`: always the full pipeline; `local`: sample and test with the "
        "completion model only.",
    )
    local_candidates: int = Field(
        4, ge=1, le=16, description="Candidates sampled (and tested) in local council mode."
    )
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
    confirm_edits: bool = Field(
        True,
        description="Send Generate's edits and Debug's fixes as changes the user confirms: "
        "VS Code shows its refactor preview, Neovim a diff with accept and reject keys. Off: "
        "applied at once (still versioned, so a changed document is never overwritten).",
    )


class SandboxLimits(_Strict):
    """What one sandboxed run of generated code and tests may use (see council/sandbox/).

    The `[sandbox]` table and the sandbox's own argument are this one model, so a limit is
    defined (name, default, bounds) once. It lives here, not in `council.sandbox`, because the
    settings need it and `providers` must not import `council`; `council.sandbox` re-exports
    it. The runner uses `python` when its caller names no interpreter.
    """

    timeout_secs: float = Field(30.0, gt=0, description="Wall clock for the whole run, in seconds.")
    cpu_secs: int = Field(30, ge=1, description="CPU seconds per process (RLIMIT_CPU).")
    memory_mb: int = Field(
        2048,
        ge=64,
        description="Address space per process in MiB (RLIMIT_AS); also the memory cgroup's "
        "cap on the whole process tree.",
    )
    file_size_mb: int = Field(
        64, ge=1, description="Largest file a process may write, in MiB (RLIMIT_FSIZE)."
    )
    max_processes: int = Field(
        32, ge=1, description="Process starts allowed in the whole run (stops fork bombs)."
    )
    disk_mb: int = Field(
        256,
        ge=1,
        description="Room for new files in the run's directory, /tmp and /dev/shm, in MiB each.",
    )
    network: bool = Field(
        False,
        description="Let generated code use the network; false: cut where the OS allows, plus "
        "the Python guard.",
    )
    python: str | None = Field(
        None,
        description="Interpreter (with pytest) that runs generated tests, e.g. your project's "
        "`.venv/bin/python`; unset: council's own.",
    )


class DeliberateConfig(_Strict):
    """`council deliberate`: members answer, rank each other, a chairman synthesises."""

    members: Tiers = Field(
        (),
        description="`provider:model` targets that answer and rank each other; empty: the first "
        "tier of each council role.",
    )
    chairman: Tiers = Field(
        (),
        description="Who writes the final answer from the ranked ones, with fallbacks; empty: "
        "the orchestrator's tiers.",
    )


class RouterConfig(_Strict):
    """How the router retries, cools endpoints down, classifies requests and probes servers."""

    max_retries: int = Field(2, ge=0, le=10, description="Retries inside a tier before escalating.")
    backoff_base_secs: float = Field(
        0.5, ge=0, description="First retry delay; it doubles each retry (with full jitter)."
    )
    backoff_max_secs: float = Field(8.0, ge=0, description="Longest delay between retries.")
    retry_after_max_secs: float = Field(
        30.0, ge=0, description="A longer `Retry-After` escalates at once instead of waiting."
    )
    cooldown_failures: int = Field(
        3,
        ge=1,
        description="Failures within `cooldown_window_secs` that cool an endpoint down.",
    )
    cooldown_window_secs: float = Field(
        60.0, gt=0, description="The window in which failures are counted, in seconds."
    )
    cooldown_secs: float = Field(
        30.0, ge=0, description="How long a cooled-down endpoint is skipped."
    )
    classifier: Literal["auto", "rules", "llm", "off"] = Field(
        "auto",
        description="Who tags requests for tiers' `when`: `auto` (the `router` role's model "
        "when one is set, else rules), `rules`, `llm`, or `off` (size and language tags only).",
    )
    large_request_chars: int = Field(
        12_000, ge=1, description="Requests longer than this are tagged `large`."
    )
    probe_timeout_secs: float = Field(
        3.0, gt=0, description="Timeout of one capability probe (FIM, JSON schema)."
    )
    probe_cache_ttl_secs: float = Field(
        86_400.0, ge=0, description="How long probed capabilities are cached, in seconds."
    )


class PrivacyRule(_Strict):
    """Paths matching `glob` (relative to the workspace) are only sent to local providers."""

    glob: str = Field(description="Path pattern relative to the workspace, e.g. `secrets/**`.")
    local_only: bool = Field(
        True,
        description="Send matching files only to local providers; `false` exempts paths that "
        "an earlier rule caught.",
    )


class PrivacyConfig(_Strict):
    """Per-path privacy on top of `council.local_only`."""

    rules: tuple[PrivacyRule, ...] = Field(
        (), description="`{glob, local_only}` rules, checked in order; later rules win."
    )


class CompletionConfig(_Strict):
    """Inline completions (`textDocument/inlineCompletion`, `council complete`)."""

    backend: str = Field(
        "specialist",
        description="`specialist`: the project's own small model, in the server process; or "
        "`provider:model` of a FIM-capable provider, e.g. `ollama:qwen2.5-coder:1.5b` (then "
        "also the sampler of local council mode).",
        json_schema_extra={"pattern": "^(specialist|[^:]+:.+)$"},
    )
    enabled: bool = Field(True, description="Answer inline completion requests at all.")
    model_path: str = Field(
        "",
        description="The specialist's model directory (a `council train` run or a Hugging Face "
        "export); empty: the shipped default model.",
    )
    fim_format: FimFormatName = Field(
        "auto",
        description="Fill-in-the-middle prompt for provider backends: `auto` sends `suffix`, "
        "then the model family's raw format if the server refuses it; `suffix` only; or one "
        "family's raw format.",
    )
    max_context_tokens: int = Field(
        384, ge=16, le=32_768, description="Prompt budget in tokens: snippets + prefix + suffix."
    )
    max_tokens: int = Field(48, ge=1, le=1024, description="Output cap of a single-line answer.")
    max_tokens_multiline: int = Field(
        128, ge=1, le=4096, description="Output cap of a multi-line answer."
    )
    max_lines: int = Field(8, ge=1, le=200, description="Lines in a multi-line answer.")
    max_latency_ms: int = Field(
        250,
        ge=10,
        le=60_000,
        description="Decoding budget of one specialist request, in ms: decoding also stops as "
        "soon as post-processing would cut the rest; at the budget the answer keeps its last "
        "complete line.",
    )
    snippets: bool = Field(
        True, description="Add imports and signatures from open documents to the prompt."
    )
    snippet_tokens: int = Field(
        96, ge=0, le=4096, description="The snippets' share of `max_context_tokens`."
    )
    temperature: float = Field(
        0.0, ge=0, le=2, description="Sampling temperature (0: greedy, the same answer each time)."
    )
    timeout_secs: float = Field(
        5.0, gt=0, description="A provider slower than this, in seconds, gives no suggestion."
    )
    trigger: Literal["automatic", "manual"] = Field(
        "automatic",
        description="`automatic`: suggestions appear as you type; `manual`: only when asked "
        "(VS Code's Trigger Inline Suggestion, Neovim's invoke key).",
    )
    candidates: int = Field(
        1,
        ge=1,
        le=5,
        description="Suggestions per request (duplicates removed) that the editor can cycle "
        "through; more than one samples the others at a higher temperature.",
    )
    workspace_context: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Add the workspace chunks that best match the code around the cursor (BM25 "
        "over identifiers, from the workspace index) to the snippet budget. `auto`: on for "
        "provider backends, off for the built-in specialist, which measured no gain from them "
        "(README, Workspace context). `true`/`false` mean `on`/`off`.",
    )

    @field_validator("workspace_context", mode="before")
    @classmethod
    def _workspace_context(cls, value: object) -> object:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    def uses_workspace_context(self) -> bool:
        """Whether completions get workspace chunks with this backend (see the field)."""
        if self.workspace_context == "auto":
            return self.backend != "specialist"
        return self.workspace_context == "on"

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


class WorkspaceConfig(_Strict):
    """The workspace index: the project's Python files, chunked and searchable by identifier,
    for completions and for the council's researcher and generator."""

    index: bool = Field(True, description="Keep an index of the workspace's Python files.")
    max_files: int = Field(
        20_000, ge=0, description="Files indexed at most; the rest are left out (and counted)."
    )
    max_file_kb: int = Field(
        512, ge=1, description="Larger files (generated code, data) are not indexed."
    )
    exclude: tuple[str, ...] = Field(
        (".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox"),
        description="Folder names never indexed, wherever they are.",
    )
    council_context_tokens: int = Field(
        1500,
        ge=0,
        le=16_000,
        description="Workspace code given to the researcher and the generator (definitions "
        "of the names the target uses, similar functions, the tests that exercise it).",
    )


class Settings(_Strict):
    """The whole `council.toml`: one field per table."""

    providers: dict[str, ProviderConfig] = Field(
        default_factory=_default_providers,
        description="OpenAI-compatible endpoints by name (Ollama, vLLM, llama.cpp, LM Studio, "
        "OpenAI, ...), referred to as `NAME:model` in roles.",
    )
    roles: RolesConfig = Field(
        RolesConfig(),
        description="Role -> ordered tiers: the first is the primary, the rest are escalation "
        "tiers.",
    )
    council: CouncilConfig = Field(CouncilConfig(), description=CouncilConfig.__doc__)
    router: RouterConfig = Field(RouterConfig(), description=RouterConfig.__doc__)
    privacy: PrivacyConfig = Field(PrivacyConfig(), description=PrivacyConfig.__doc__)
    completion: CompletionConfig = Field(CompletionConfig(), description=CompletionConfig.__doc__)
    sandbox: SandboxLimits = Field(
        SandboxLimits(), description="Limits for running generated code and tests."
    )
    deliberate: DeliberateConfig = Field(DeliberateConfig(), description=DeliberateConfig.__doc__)
    workspace: WorkspaceConfig = Field(WorkspaceConfig(), description=WorkspaceConfig.__doc__)
