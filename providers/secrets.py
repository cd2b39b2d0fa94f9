"""API keys: read from the environment only, and scrubbed from every text we emit.

The redactor knows the literal values of the keys in use and replaces them wherever they
appear (an error body that echoes the key, a URL with a token in it, a log record's
arguments). It also masks bearer-token and `sk-...` shaped strings it was not told about,
as a second line of defence.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping

_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
)
MASK = "[redacted]"


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        # Very short values would mask ordinary words; real keys are long.
        if value and len(value) >= 6:
            with self._lock:
                self._values.add(value)

    def __call__(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            text = text.replace(value, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
        return text


REDACTOR = Redactor()
"""Process-wide, because logging is process-wide: any key we read is registered here."""


def read_api_key(env_name: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The key named by `api_key_env`, registered with the redactor before anyone can log it."""
    if not env_name:
        return None
    value = (os.environ if env is None else env).get(env_name)
    REDACTOR.add(value)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (with its arguments merged in) through the redactor."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        clean = self._redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        record.msg, record.args = clean, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the filter to the project's loggers' handlers and to the named logger itself."""
    target = logger or logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
