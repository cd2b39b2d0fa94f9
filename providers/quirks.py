"""What OpenAI-compatible servers do differently, and how the client adapts to each.

Measured against a real llama-cpp-python 0.3.x server (issue 15), the ways a server can
differ from OpenAI's API that decide whether a run works at all:

* **Structured output.** ``response_format: {"type": "json_schema"}`` may be refused, and
  not always with a 4xx: llama-cpp-python answers HTTP 500 with a validation error that
  names ``response_format``. It does enforce ``{"type": "json_object", "schema": ...}``
  with a grammar. So the client walks :data:`JSON_MODES` in order, learning per model
  which one the server takes: ``json_schema``, then ``json_object`` with the schema, then
  the schema in the prompt. An answer is an *unsupported feature* when its message names
  the feature, whatever its status code (:func:`names_feature`).
* **FIM.** A server may accept ``suffix`` and not honour it: llama-cpp-python builds the
  infill prompt from fixed sentinel ids, so with a model whose sentinels differ its answers
  are junk while every probe that only checks acceptance passes. A *canary* infill whose
  answer the suffix forces (:data:`CANARY_PREFIX`, :data:`CANARY_SUFFIX`,
  :func:`honours_suffix`) tells a server that honours ``suffix`` from one that does not;
  failing that, the model family's raw FIM prompt is tried on the same canary.
* **Context.** A request whose prompt plus ``max_tokens`` exceeds the server's context is
  refused (llama-cpp-python: HTTP 400 "maximum context length is N tokens ... (P in the
  messages, ...)"). :func:`context_refusal` reads N and P from that message, and the client
  retries once with a ``max_tokens`` that fits and remembers N.
"""

from __future__ import annotations

import re
from typing import Any, Literal

JsonMode = Literal["json_schema", "json_object", "prompt"]

#: the ways to ask for JSON, best first
JSON_MODES: tuple[JsonMode, ...] = ("json_schema", "json_object", "prompt")

#: tokens kept free when fitting max_tokens to a context (chat templates add a few)
CONTEXT_MARGIN = 16

_CONTEXT = re.compile(r"maximum context length is (\d+) tokens", re.I)
_PROMPT = re.compile(r"\((\d+) in the messages", re.I)
_WINDOW = re.compile(r"exceed context window of (\d+)", re.I)
_REQUESTED = re.compile(r"requested tokens \((\d+)\)", re.I)


#: a list with one number missing: a model reading a well-formed FIM prompt answers ``12``;
#: a scrambled prompt (sentinels the model does not know) gives anything else
CANARY_PREFIX = "numbers = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, "
CANARY_SUFFIX = ", 13, 14, 15, 16]\n"


def honours_suffix(text: str) -> bool:
    """Whether a canary infill's first item is the missing ``12``.

    Only the first item counts: what a small model writes after it depends on sampling
    settings the client cannot always set (llama-cpp-python's default repeat penalty turns
    "12, 12" into "12, 13"). So this tells a working FIM prompt from a scrambled one, but
    not a server that drops ``suffix`` silently (it also answers 12, then goes on); state
    ``capabilities = { fim = false }`` for such a server."""
    first = text.strip().split(",")[0].split("\n")[0].strip()
    return first == "12"


def names_feature(detail: str, *features: str) -> bool:
    """Whether an error message is about one of ``features`` (an unsupported-feature answer,
    whatever its status code)."""
    lowered = detail.lower()
    return any(f in lowered for f in features)


def choose_json_mode(json_schema: bool | None, json_object: bool | None) -> JsonMode:
    """The first of :data:`JSON_MODES` not known to be refused."""
    if json_schema is not False:
        return "json_schema"
    return "prompt" if json_object is False else "json_object"


def response_format(mode: JsonMode, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` for ``mode`` (None: the schema goes in the prompt only)."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def context_refusal(detail: str) -> tuple[int, int | None] | None:
    """(context length, prompt tokens when stated) from a context-length refusal, or None."""
    match = _CONTEXT.search(detail) or _WINDOW.search(detail)
    if match is None:
        return None
    prompt = _PROMPT.search(detail)
    return int(match.group(1)), int(prompt.group(1)) if prompt else None


def fit_max_tokens(context: int, prompt_tokens: int, wanted: int | None) -> int | None:
    """The largest ``max_tokens`` (at most ``wanted``) that fits beside the prompt, or None
    when not even a short answer fits."""
    room = context - prompt_tokens - CONTEXT_MARGIN
    if room < 16:
        return None
    return room if wanted is None else min(wanted, room)
