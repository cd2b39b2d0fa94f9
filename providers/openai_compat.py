"""One client for every OpenAI-compatible endpoint, on the `openai` SDK.

The SDK does the HTTP (through `httpx2`); this module adds what the router needs on top:
library exceptions become `providers.errors` types, every message is redacted, the SDK's own
retries are off (the router owns retry policy), and missing capabilities fall back instead
of failing: FIM over chat when `suffix` is refused, schema-in-the-prompt when JSON-schema
mode is refused. Cancelling the awaiting task closes the HTTP connection (httpx2 drops a
connection whose response was not read to the end), so a cancelled run stops costing tokens.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
import openai

from providers.base import (
    Capabilities,
    ChatRequest,
    CompletionRequest,
    Delta,
    Message,
    Result,
    Usage,
    estimate_tokens,
)
from providers.errors import (
    CapabilityMissing,
    ConnectionFailed,
    MalformedResponse,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    RequestRejected,
    ServerFault,
)
from providers.fim_formats import FORMATS, detect
from providers.quirks import (
    CANARY_PREFIX,
    CANARY_SUFFIX,
    JsonMode,
    choose_json_mode,
    context_refusal,
    fit_max_tokens,
    honours_suffix,
    names_feature,
    response_format,
)
from providers.secrets import REDACTOR, read_api_key
from providers.settings import ProviderConfig

log = logging.getLogger(__name__)

INFILL_SYSTEM = (
    "You fill a gap in a source file. The user sends the file with the marker <FILL> where "
    "code is missing. Reply with only the code that replaces <FILL>: no explanation, no "
    "markdown fences, nothing from before or after the gap."
)
SCHEMA_SYSTEM = (
    "Reply with one JSON object and nothing else. It must validate against this JSON "
    "schema:\n{schema}"
)
_FENCE = re.compile(r"^```[\w+-]*\n(.*?)\n?```\s*$", re.S)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """`Retry-After` in seconds or as an HTTP date, or `retry-after-ms`; None when absent."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


class OpenAICompatProvider:
    """A `Provider` for one `[providers.NAME]` entry."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        timeout_secs: float = 120.0,
        probe_timeout_secs: float = 3.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.local = config.is_local
        self.known: dict[str, Capabilities] = {}
        self._key_env = config.api_key_env
        self._key = read_api_key(config.api_key_env, env)
        timeout = config.timeout_secs or timeout_secs
        self._probe_timeout = probe_timeout_secs
        self._client = openai.AsyncOpenAI(
            base_url=config.base_url,
            # Local servers ignore the key, but the SDK insists on one.
            api_key=self._key or "no-key",
            # A plain float: this SDK release mishandles httpx2.Timeout objects once a request
            # has used a per-call timeout (TypeError inside the transport).
            timeout=timeout,
            max_retries=0,
        )

    # -- chat -------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, *, fitted: bool = False) -> Result:
        """One chat call. A refused JSON mode is learnt and the next one tried (see
        :mod:`providers.quirks`); a context-length refusal is retried once with a
        ``max_tokens`` that fits, and the context is remembered."""
        mode = self._json_mode(request.model) if request.json_schema else None
        asked = self._schema_fallback(request, mode)
        if not fitted:  # a refitted request already has the server's exact figure
            asked = self._fit(asked)
        started = time.perf_counter()
        try:
            response = await self._client.chat.completions.create(**self._chat_args(asked, mode))
        except CapabilityMissing:
            raise
        except Exception as exc:
            error = self._translate(exc, request.model, json_schema=mode not in (None, "prompt"))
            if isinstance(error, CapabilityMissing) and error.capability == "json_schema":
                log.info("%s refused %s; trying the next JSON mode", error.target, mode)
                self._learn(request.model, **{str(mode): False})
                return await self.chat(request, fitted=fitted)
            refusal = context_refusal(error.message) if isinstance(error, RequestRejected) else None
            if refusal is not None and not fitted:
                context, prompt = refusal
                self._learn(request.model, context_length=context)
                room = fit_max_tokens(
                    context, prompt or estimate_tokens(asked.text()), asked.max_tokens
                )
                if room is not None:
                    log.info("%s: context %d; max_tokens %d", error.target, context, room)
                    return await self.chat(
                        request.model_copy(update={"max_tokens": room}), fitted=True
                    )
            raise error from None
        latency = time.perf_counter() - started
        if not getattr(response, "choices", None):
            raise MalformedResponse("response has no choices", target=self._target(request.model))
        choice = response.choices[0]
        text = (choice.message.content if choice.message else None) or ""
        return Result(
            text=text,
            provider=self.name,
            model=getattr(response, "model", None) or request.model,
            usage=self._usage(getattr(response, "usage", None), request.text(), text),
            finish_reason=choice.finish_reason,
            latency_s=latency,
            via="chat",
        )

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[Delta]:
        mode = self._json_mode(request.model) if request.json_schema else None
        request = self._fit(self._schema_fallback(request, mode))
        args = self._chat_args(request, mode)
        args["stream"] = True
        if self.config.stream_usage:
            args["stream_options"] = {"include_usage": True}
        finish: str | None = None
        usage: Usage | None = None
        produced: list[str] = []
        try:
            stream = await self._client.chat.completions.create(**args)
            async with stream:
                async for chunk in stream:
                    if getattr(chunk, "usage", None):
                        usage = self._usage(chunk.usage, "", "")
                    for choice in chunk.choices or ():
                        piece = choice.delta.content if choice.delta else None
                        if piece:
                            produced.append(piece)
                            yield Delta(text=piece)
                        if choice.finish_reason:
                            finish = choice.finish_reason
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(
                exc, request.model, json_schema=bool(request.json_schema)
            ) from None
        if finish is None:
            raise MalformedResponse(
                "stream ended before the model finished (no finish_reason)",
                target=self._target(request.model),
            )
        yield Delta(
            finish_reason=finish,
            usage=usage or self._usage(None, request.text(), "".join(produced)),
        )

    # -- completions and FIM ------------------------------------------------------------

    async def complete(self, request: CompletionRequest) -> Result:
        """A completion; with `suffix`, FIM, falling back to an infill prompt over chat."""
        fim = request.suffix is not None
        known = self.known.get(request.model)
        if fim and (self.config.capabilities.fim is False or (known and known.fim is False)):
            return await self._infill_over_chat(request)
        started = time.perf_counter()
        args: dict[str, Any] = {"model": request.model, "prompt": request.prompt}
        if fim:
            args["suffix"] = request.suffix
        if request.max_tokens is not None:
            args["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            args["temperature"] = request.temperature
        if request.stop:
            args["stop"] = list(request.stop)
        try:
            response = await self._client.completions.create(**args)
        except Exception as exc:
            error = self._translate(exc, request.model, fim=fim)
            if isinstance(error, CapabilityMissing) and error.capability == "fim":
                self._learn(request.model, fim=False)
                log.info("%s refused suffix; using an infill prompt over chat", error.target)
                return await self._infill_over_chat(request)
            raise error from None
        if not getattr(response, "choices", None):
            raise MalformedResponse("response has no choices", target=self._target(request.model))
        choice = response.choices[0]
        text = choice.text or ""
        return Result(
            text=text,
            provider=self.name,
            model=getattr(response, "model", None) or request.model,
            usage=self._usage(getattr(response, "usage", None), request.text(), text),
            finish_reason=choice.finish_reason,
            latency_s=time.perf_counter() - started,
            via="fim" if fim else "completion",
        )

    async def _infill_over_chat(self, request: CompletionRequest) -> Result:
        chat = ChatRequest(
            messages=(
                Message(role="system", content=INFILL_SYSTEM),
                Message(role="user", content=f"{request.prompt}<FILL>{request.suffix or ''}"),
            ),
            model=request.model,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stop=request.stop,
        )
        result = await self.chat(chat)
        match = _FENCE.match(result.text.strip())
        text = match.group(1) if match else result.text
        return result.model_copy(update={"text": text, "via": "fim-over-chat"})

    # -- probing ----------------------------------------------------------------------

    async def list_models(self) -> list[str]:
        try:
            page = await self._client.models.list(timeout=self._probe_timeout)
        except Exception as exc:
            raise self._translate(exc, None) from None
        return [m.id for m in page.data]

    async def probe(self, model: str) -> Capabilities:
        """Reachability and latency (`GET /models`), then FIM and JSON-schema support.

        The capability checks are one tiny request each (`max_tokens=1`); a capability stated
        in the config is taken as given and not probed.
        """
        caps = Capabilities(probed_at=time.time())
        started = time.perf_counter()
        try:
            models = await self.list_models()
        except ProviderError as exc:
            caps.error = exc.message
            return caps
        caps.reachable = True
        caps.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        caps.model_listed = (model in models) if models else None
        fast = self._client.with_options(timeout=self._probe_timeout)
        # Latency of a warm round trip: the first call also pays for connecting and lazy setup.
        started = time.perf_counter()
        with contextlib.suppress(ProviderError):
            await self.list_models()
            caps.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        caps.fim = self.config.capabilities.fim
        if caps.fim is None:  # accepting `suffix` is not enough: is it honoured?
            self.known.pop(model, None)  # probe afresh
            caps.fim_format = await self.fim_way(model)
            caps.fim = (self.known.get(model) or Capabilities()).fim
        caps.json_schema = self.config.capabilities.json_schema
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        if caps.json_schema is None:
            caps.json_schema = await self._check(
                fast.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": 'Reply {"ok": true}'}],
                    max_tokens=8,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "probe", "schema": schema},
                    },
                ),
                model,
                "json_schema",
            )
        if caps.json_schema is False:  # llama-cpp-python: json_object with a schema instead
            caps.json_object = await self._check(
                fast.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": 'Reply {"ok": true}'}],
                    max_tokens=8,
                    response_format={"type": "json_object", "schema": schema},
                ),
                model,
                "json_schema",
            )
        self.known[model] = caps
        return caps

    async def _check(self, call: Any, model: str, capability: str) -> bool | None:
        try:
            await call
        except Exception as exc:
            error = self._translate(
                exc, model, fim=capability == "fim", json_schema=capability == "json_schema"
            )
            if isinstance(error, CapabilityMissing):
                return False
            log.debug("capability probe %s for %s inconclusive: %s", capability, model, error)
            return None
        return True

    async def fim_way(self, model: str) -> str | None:
        """How fill-in-the-middle works with ``model``, found once with the canary of
        :mod:`providers.quirks`: ``"suffix"`` when the server honours ``suffix``, else the
        first model family whose raw FIM prompt it honours (the model's name's family
        first), else None (and FIM counts as unsupported). Connection trouble decides
        nothing and is not remembered."""
        known = self.known.get(model)
        if known is not None and known.fim_format is not None:
            return known.fim_format
        fast = self._client.with_options(timeout=self._probe_timeout * 3)
        try:
            if self.config.capabilities.fim is not False:
                try:
                    answer = await fast.completions.create(
                        model=model,
                        prompt=CANARY_PREFIX,
                        suffix=CANARY_SUFFIX,
                        max_tokens=8,
                        temperature=0,
                    )
                    if honours_suffix(answer.choices[0].text or ""):
                        self._learn(model, fim=True, fim_format="suffix")
                        return "suffix"
                except openai.APIStatusError:
                    pass  # refused: the raw prompts may still work
            family = detect(model)
            order = [family] if family is not None else []
            order += [f for f in FORMATS.values() if f is not family]
            for fmt in order:
                answer = await fast.completions.create(
                    model=model,
                    prompt=fmt.build(CANARY_PREFIX, CANARY_SUFFIX),
                    max_tokens=8,
                    temperature=0,
                    stop=list(fmt.stops[:4]),
                )
                if honours_suffix(answer.choices[0].text or ""):
                    self._learn(model, fim=True, fim_format=fmt.name)
                    return fmt.name
        except openai.APIStatusError as exc:
            log.info("%s: FIM canary refused (%s)", self._target(model), _short(exc))
        except Exception as exc:  # unreachable, timed out: decide nothing
            log.info("%s: FIM canary inconclusive (%s)", self._target(model), _short(exc))
            return None
        self._learn(model, fim=False)
        return None

    def remember(self, model: str, caps: Capabilities) -> None:
        """Seed capability knowledge from the probe cache."""
        self.known[model] = caps

    async def aclose(self) -> None:
        await self._client.close()

    # -- helpers ----------------------------------------------------------------------

    def _target(self, model: str | None) -> str:
        return f"{self.name}:{model}" if model else self.name

    def _learn(self, model: str, **flags: Any) -> None:
        caps = self.known.get(model) or Capabilities()
        self.known[model] = caps.model_copy(update=flags)

    def _json_mode(self, model: str) -> JsonMode:
        """The first JSON mode not known to be refused, by the config or by this server."""
        known = self.known.get(model) or Capabilities()
        stated = self.config.capabilities.json_schema
        return choose_json_mode(False if stated is False else known.json_schema, known.json_object)

    def _fit(self, request: ChatRequest) -> ChatRequest:
        """Cap ``max_tokens`` to a context learnt earlier (the estimate errs, so a refusal
        can still come, and is then fitted exactly)."""
        known = self.known.get(request.model)
        if known is None or known.context_length is None or request.max_tokens is None:
            return request
        room = fit_max_tokens(
            known.context_length, estimate_tokens(request.text()), request.max_tokens
        )
        if room is None or room >= request.max_tokens:
            return request
        return request.model_copy(update={"max_tokens": room})

    def _schema_fallback(self, request: ChatRequest, mode: JsonMode | None) -> ChatRequest:
        """The schema in the prompt too, unless the endpoint enforces ``json_schema``
        (``json_object`` servers may ignore the schema they are given)."""
        if not request.json_schema or mode in (None, "json_schema"):
            return request
        note = Message(
            role="system",
            content=SCHEMA_SYSTEM.format(schema=json.dumps(request.json_schema, indent=1)),
        )
        update: dict[str, Any] = {"messages": (*request.messages, note)}
        if mode == "prompt":
            update["json_schema"] = None
        return request.model_copy(update=update)

    def _chat_args(self, request: ChatRequest, mode: JsonMode | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": request.model,
            "messages": [m.model_dump() for m in request.messages],
        }
        if request.max_tokens is not None:
            args["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            args["temperature"] = request.temperature
        if request.stop:
            args["stop"] = list(request.stop)
        if request.json_schema and mode is not None:
            fmt = response_format(mode, request.schema_name, request.json_schema)
            if fmt is not None:
                args["response_format"] = fmt
        return args

    def _usage(self, usage: Any, prompt: str, completion: str) -> Usage:
        if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
            return Usage(
                prompt_tokens=usage.prompt_tokens or 0,
                completion_tokens=usage.completion_tokens or 0,
            )
        return Usage(
            prompt_tokens=estimate_tokens(prompt),
            completion_tokens=estimate_tokens(completion) if completion else 0,
            estimated=True,
        )

    def _translate(
        self, exc: BaseException, model: str | None, *, fim: bool = False, json_schema: bool = False
    ) -> ProviderError:
        """Map SDK/transport exceptions to our types, with redacted, readable messages."""
        target = self._target(model)
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return ProviderTimeout("timed out", target=target)
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc, target, fim=fim, json_schema=json_schema)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            if isinstance(cause, httpx2.RemoteProtocolError | httpx2.ReadError):
                return MalformedResponse(
                    f"connection broke mid-response ({_short(cause)})", target=target
                )
            if (
                self._key is None
                and self._key_env
                and isinstance(cause, openai.AuthenticationError)
            ):
                return RequestRejected(f"${self._key_env} is not set", target=target, status=401)
            return ConnectionFailed(
                f"cannot connect to {self.config.base_url} ({_short(cause)})", target=target
            )
        if isinstance(exc, httpx2.TransportError):
            return MalformedResponse(
                f"connection broke mid-response ({_short(exc)})", target=target
            )
        if isinstance(exc, openai.APIResponseValidationError | ValueError | TypeError):
            return MalformedResponse(f"unreadable response ({_short(exc)})", target=target)
        return ProviderError(f"unexpected {type(exc).__name__}: {_short(exc)}", target=target)

    def _status_error(
        self, exc: openai.APIStatusError, target: str, *, fim: bool, json_schema: bool
    ) -> ProviderError:
        status = exc.status_code
        detail = _error_detail(exc)
        message = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        if self._key is None and self._key_env and status in (401, 403):
            message += f" (${self._key_env} is not set)"
        if status == 429:
            return RateLimited(
                message, target=target, retry_after=parse_retry_after(exc.response.headers)
            )
        # An answer that names the feature is "unsupported", whatever its status: real
        # servers say so with 400, 422, 501 and (llama-cpp-python, for json_schema) 500.
        if json_schema and names_feature(detail, "response_format", "json_schema"):
            return CapabilityMissing(message, target=target, capability="json_schema")
        if fim and names_feature(detail, "suffix") and status != 429:
            return CapabilityMissing(message, target=target, capability="fim")
        if status >= 500 or status in (408, 409):
            return ServerFault(message, target=target, status=status)
        if fim and status in (404, 422, 501):
            return CapabilityMissing(message, target=target, capability="fim")
        if json_schema and status in (400, 422, 501) and names_feature(detail, "schema"):
            return CapabilityMissing(message, target=target, capability="json_schema")
        return RequestRejected(message, target=target, status=status)


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return REDACTOR(str(message))[:300]
    try:
        text = exc.response.text
    except Exception:
        text = ""
    return REDACTOR(text.strip())[:300]


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return REDACTOR(text.splitlines()[0] if text else text)[:200]
