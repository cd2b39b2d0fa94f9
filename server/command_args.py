"""The council commands' arguments: one JSON object each, validated with pydantic.

A bad argument is a JSON-RPC InvalidParams error naming the field (the README documents the
objects). Imported on the first command, or by the warm-up thread, never before `initialize`.
"""

from __future__ import annotations

from typing import Any, Literal

from lsprotocol import types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pygls.exceptions import JsonRpcInvalidParams

from council.schemas import Diagnostic


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Pos(_Args):
    line: int = Field(ge=0)
    character: int = Field(ge=0)


class Span(_Args):
    start: Pos
    end: Pos


class FileArgs(_Args):
    """council.generate / council.debug / council.addTests."""

    uri: str
    symbol: str | None = None
    range: Span | None = None
    query: str | None = None
    failing_test: str | None = Field(None, alias="failingTest")
    traceback: str | None = None
    diagnostics: list[Diagnostic] = Field(default_factory=list)


class RunArgs(_Args):
    """council.run / council.deliberate."""

    query: str = Field(min_length=1)
    uri: str | None = None
    mode: Literal["generate", "debug", "tests", "freeform"] = "freeform"
    members: list[str] = Field(default_factory=list)


class CancelArgs(_Args):
    session_id: str | None = Field(None, alias="sessionId")


def parse_args(model: type[BaseModel], params: types.ExecuteCommandParams) -> Any:
    args = params.arguments or [{}]
    if len(args) != 1 or not isinstance(args[0], dict):
        raise JsonRpcInvalidParams(f"{params.command} takes one object argument")
    try:
        return model.model_validate(args[0])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "argument"
        raise JsonRpcInvalidParams(f"{params.command}: {where}: {first['msg']}") from None
