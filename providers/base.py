"""The `Provider` protocol and the typed requests and results that cross it.

Anything that can answer chat or completion requests implements `Provider`: the
OpenAI-compatible HTTP client today, the in-process specialist model later. The router only
ever talks to this protocol, so it treats both the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


def estimate_tokens(text: str) -> int:
    """Rough count for servers that report no usage: about four characters a token."""
    return max(1, len(text) // 4)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """A chat call. `model` is filled in by the router from the tier being tried."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[Message, ...]
    model: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = Field(
        None, description="Ask for JSON matching this schema (provider JSON-schema mode)."
    )
    schema_name: str = "response"

    @classmethod
    def of(cls, prompt: str, *, system: str | None = None, **kwargs: Any) -> ChatRequest:
        messages = [Message(role="system", content=system)] if system else []
        messages.append(Message(role="user", content=prompt))
        return cls(messages=tuple(messages), **kwargs)

    def text(self) -> str:
        return "\n".join(m.content for m in self.messages)


class CompletionRequest(BaseModel):
    """A raw completion; with `suffix` it is a fill-in-the-middle request."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    suffix: str | None = None
    model: str = ""
    max_tokens: int | None = 64
    temperature: float | None = None
    stop: tuple[str, ...] = ()

    def text(self) -> str:
        return self.prompt + (self.suffix or "")


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Result(BaseModel):
    """What a provider returned, with who answered and how long it took."""

    text: str
    provider: str
    model: str
    usage: Usage = Usage()
    finish_reason: str | None = None
    latency_s: float = 0.0
    via: Literal["chat", "completion", "fim", "fim-over-chat"] = "chat"


class Delta(BaseModel):
    """One streamed piece; the last one carries `finish_reason` and, if known, `usage`."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


class Capabilities(BaseModel):
    reachable: bool = False
    latency_ms: float | None = None
    model_listed: bool | None = None
    fim: bool | None = None
    json_schema: bool | None = None
    json_object: bool | None = Field(
        None, description="json_object with a schema is enforced (llama-cpp-python)"
    )
    context_length: int | None = Field(None, description="learnt from the server")
    fim_format: str | None = Field(
        None,
        description="how FIM works here: 'suffix' (the server honours it), a model family "
        "whose raw FIM prompt works (providers.fim_formats), or None (unknown / neither)",
    )
    error: str | None = None
    probed_at: float = 0.0


@runtime_checkable
class Provider(Protocol):
    """A model endpoint. Implementations raise `providers.errors` types, never library ones."""

    name: str
    local: bool

    async def chat(self, request: ChatRequest) -> Result: ...

    def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]: ...

    async def complete(self, request: CompletionRequest) -> Result: ...

    async def probe(self, model: str) -> Capabilities: ...

    async def aclose(self) -> None: ...
