"""Response bodies and request text for the loopback server (OpenAI's shapes, and the
unscripted answers, including llama-cpp-python's quirks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from providers.loopback.provider import LoopbackProvider


def _error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _scripted_error_body(status: int) -> dict[str, Any]:
    if status == 429:
        return _error_body(
            "loopback scripted error: HTTP 429 rate limit reached",
            "requests",
            None,
            "rate_limit_exceeded",
        )
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return _error_body(f"loopback scripted error: HTTP {status}", type_, None, None)


def _model_obj(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "loopback"}


def _message_text(message: Any) -> str:
    """Text of a chat message whose content is a string or a list of typed parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message)
    return ""


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(p if isinstance(p, str) else str(p) for p in prompt)
    return ""


#: what llama-cpp-python 0.3.x answers (HTTP 500) to a json_schema response_format
_LLAMA_CPP_SCHEMA_ERROR = (
    "1 validation error for CreateChatCompletionRequest\nresponse_format\n  Input tag "
    "'json_schema' found using 'type' does not match any of the expected tags: 'text', "
    "'json_object'"
)


def _completion_default(provider: LoopbackProvider, prompt: str, suffix: Any) -> str:
    """The unscripted answer to /v1/completions: ``pass`` for FIM, the canary's ``12`` when
    this model honours the way it was asked (``suffix``, or its raw FIM family), junk when
    FIM is scrambled."""
    from providers.fim_formats import FORMATS
    from providers.quirks import CANARY_PREFIX, CANARY_SUFFIX

    if suffix is not None:
        if provider.fim == "scrambled":
            return '"""\nThis module is a list of'  # what llama-cpp-python answered
        return "12" if suffix == CANARY_SUFFIX and prompt.endswith(CANARY_PREFIX) else "pass"
    fmt = FORMATS.get(provider.raw_fim or "")
    if fmt is not None and prompt == fmt.build(CANARY_PREFIX, CANARY_SUFFIX):
        return "12"
    return "loopback completion"


def _count_words(text: str) -> int:
    return len(text.split())
