"""Structured output from small models: ask, parse tolerantly, repair once, then escalate.

The schema goes to the provider's JSON-schema mode where it has one (the client moves it
into the prompt where it does not). Replies are parsed tolerantly: reasoning blocks
(`<think>...</think>`, as DeepSeek-R1 distills emit), Markdown fences and prose around the
object are ignored. A reply that still does not validate gets exactly one repair request to
the same model, quoting the validation error; if that fails too the router escalates to the
next tier (`QualityFailure`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from providers.base import ChatRequest, Message, Result
from providers.budget import Ledger
from providers.errors import QualityFailure
from providers.router import Routed, Router
from providers.settings import Tier

T = TypeVar("T", bound=BaseModel)

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.S)

REPAIR = (
    "Your reply could not be used: {error}\n"
    "Reply again with only the corrected JSON object, matching the schema exactly."
)


def json_candidates(text: str) -> list[str]:
    """Substrings that may be the JSON object, most likely first."""
    text = _THINK.sub("", text).strip()
    found = [text]
    found += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start = text.find("{")
    while start != -1:
        end = _balanced_end(text, start)
        if end is not None:
            found.append(text[start : end + 1])
        start = text.find("{", start + 1) if end is None else text.find("{", end + 1)
    return found


def _balanced_end(text: str, start: int) -> int | None:
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def parse_as(model: type[T], text: str) -> T:
    """The first candidate that is JSON and validates; otherwise the most useful error."""
    first_error: Exception | None = None
    for candidate in json_candidates(text):
        try:
            # strict=False: raw newlines and tabs inside strings, which llama.cpp's JSON
            # grammar lets a model write, are read as themselves rather than refused
            data: Any = json.loads(candidate, strict=False)
        except ValueError as exc:
            first_error = first_error or exc
            continue
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first_error = exc  # a JSON object that fails validation is the better message
    if first_error is None:
        raise ValueError("the reply was empty")
    raise first_error


def describe_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()[:8]
        ]
        return "the JSON does not match the schema: " + "; ".join(parts)
    return f"the reply is not valid JSON ({exc})"


async def ask(
    router: Router,
    role: str,
    model: type[T],
    *,
    system: str,
    prompt: str,
    ledger: Ledger,
    path: str | None = None,
    language: str | None = None,
    max_tokens: int | None = 4096,
    temperature: float | None = 0.2,
    tiers: Sequence[Tier] | None = None,
) -> tuple[T, Routed]:
    request = ChatRequest(
        messages=(Message(role="system", content=system), Message(role="user", content=prompt)),
        json_schema=model.model_json_schema(),
        schema_name=model.__name__,
        max_tokens=max_tokens,
        temperature=temperature,
    )

    async def accept(result: Result, retry: Any) -> T:
        try:
            return parse_as(model, result.text)
        except (ValueError, ValidationError) as exc:
            error = describe_error(exc)
        repair = request.model_copy(
            update={
                "messages": (
                    *request.messages,
                    Message(role="assistant", content=result.text[:6000]),
                    Message(role="user", content=REPAIR.format(error=error)),
                )
            }
        )
        again = await retry(repair)
        try:
            return parse_as(model, again.text)
        except (ValueError, ValidationError) as exc:
            raise QualityFailure(
                f"invalid {model.__name__} after one repair: {describe_error(exc)[:300]}"
            ) from None

    routed = await router.chat(
        role, request, ledger=ledger, path=path, language=language, accept=accept, tiers=tiers
    )
    return routed.value, routed
