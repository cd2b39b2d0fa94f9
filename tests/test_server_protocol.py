"""Every request to `council lsp` gets exactly one answer, sent and read as raw frames.

Undecodable params are InvalidParams naming the field; unknown methods are MethodNotFound;
JSON-RPC 1.0, a notification sent with an id, and anything after `shutdown` are
InvalidRequest; a notification that cannot be decoded is dropped and the server carries on.
The last tests drive `CouncilProtocol` and `LspTextDocument` directly for what a client
cannot provoke: a result that cannot be encoded, and document edits pygls gets wrong; and
they show that the check applied to every server message in the stdio tests
(`tests.lsp_wire.message_problem`) rejects malformed ones.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from server.app import build_server
from server.text import LspTextDocument
from tests.lsp_wire import RawServer, message_problem

INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32600, -32601, -32602, -32603
ZERO = {"line": 0, "character": 0}


def _spawn(root: Path) -> RawServer:
    (root / "m.py").write_text("def f():\n    pass\n", encoding="utf-8")
    env = {**os.environ, "HOME": str(root), "XDG_CACHE_HOME": str(root / "c")}
    env["COUNCIL_CONFIG"] = str(root / "none.toml")
    server = RawServer(root, env)
    assert "result" in server.initialize()
    return server


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawServer]:
    server = _spawn(tmp_path_factory.mktemp("protocol"))
    yield server
    server.close()


def _code_action(raw: RawServer, params: Any) -> dict[str, Any]:
    msg_id = f"ca-{time.monotonic_ns()}"
    return raw.call(msg_id, "textDocument/codeAction", params)


def _error(reply: dict[str, Any], code: int) -> str:
    assert "result" not in reply, reply
    assert reply["error"]["code"] == code, reply
    return str(reply["error"]["message"])


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (None, "params: expected CodeActionParams, got null"),
        ([], "params: expected an object, got []"),
        ("str", 'params: expected an object, got "str"'),
        ({"textDocument": 5}, "params.textDocument: expected an object, got 5"),
        (
            {
                "textDocument": {"uri": "file:///m.py"},
                "range": {"start": {"line": -1, "character": 0}, "end": ZERO},
                "context": {"diagnostics": []},
            },
            "params.range.start: Position.line should be in range",
        ),
        (
            {
                "textDocument": {"uri": "file:///m.py"},
                "range": {"start": ZERO, "end": {"line": 0, "character": "x"}},
                "context": {"diagnostics": [{"message": "no range"}]},
            },
            'params.range.end.character: expected int, got "x"',
        ),
    ],
)
def test_undecodable_params_are_invalid_params_naming_the_field(
    raw: RawServer, params: Any, named: str
) -> None:
    message = _error(_code_action(raw, params), INVALID_PARAMS)
    assert message.startswith("Invalid params for textDocument/codeAction: "), message
    assert named in message, message


def test_every_problem_is_named(raw: RawServer) -> None:
    message = _error(_code_action(raw, {"textDocument": 5}), INVALID_PARAMS)
    assert "params.range: required field missing" in message
    assert "params.context: required field missing" in message
    message = _error(
        _code_action(
            raw,
            {
                "textDocument": {"uri": "file:///m.py"},
                "range": {"start": ZERO, "end": ZERO},
                "context": {"diagnostics": [{"message": "no range"}]},
            },
        ),
        INVALID_PARAMS,
    )
    assert "params.context.diagnostics[0].range: required field missing" in message


def test_unknown_methods_and_malformed_requests(raw: RawServer) -> None:
    assert "textDocument/hover" in _error(
        raw.call("hover", "textDocument/hover", {"junk": 1}), METHOD_NOT_FOUND
    )
    assert "council/nothing" in _error(raw.call("nf", "council/nothing", None), METHOD_NOT_FOUND)
    raw.send({"jsonrpc": "1.0", "id": "v1", "method": "council/debugState"})
    _error(raw.wait("v1"), INVALID_REQUEST)
    raw.send({"jsonrpc": "2.0", "id": "v2", "method": 5})
    _error(raw.wait("v2"), INVALID_REQUEST)
    change = {"textDocument": {"uri": "file:///m.py", "version": 2}, "contentChanges": []}
    message = _error(raw.call("dc", "textDocument/didChange", change), INVALID_REQUEST)
    assert "is a notification" in message


def test_handler_errors_and_omitted_params(raw: RawServer) -> None:
    message = _error(raw.call("st", "council/inlineStats", {"since": "x"}), INVALID_PARAMS)
    assert "since must be an integer" in message
    command = {"command": "council.generate", "arguments": [{"symbol": "f"}]}
    assert "uri" in _error(raw.call("gen", "workspace/executeCommand", command), INVALID_PARAMS)
    raw.send({"jsonrpc": "2.0", "id": "no-params", "method": "council/inlineStats"})
    assert "counters" in raw.wait("no-params")["result"]


def test_undecodable_notifications_are_dropped(raw: RawServer) -> None:
    before = len(raw.everything)
    raw.notify("textDocument/didOpen", {"textDocument": {"uri": 5}})
    raw.notify("textDocument/didChange", None)
    raw.send({"jsonrpc": "2.0", "method": 7})
    raw.send(b"[1, 2]")
    state = raw.call("state", "council/debugState", None)["result"]
    assert state == {"documents": {}, "runs": []}
    assert raw.everything[before:] == [raw.answers["state"][0]]  # nothing else was sent


def test_each_request_is_answered_once(raw: RawServer) -> None:
    """Runs after the others in this module: no request id got a second answer. A last
    round trip first: nothing is in flight, and what the server wrote before answering it
    (a late second answer included) has been read by then."""
    assert raw.call("last", "council/debugState", None)["result"]["runs"] == []
    assert {i: len(a) for i, a in raw.answers.items() if len(a) != 1} == {}


def test_requests_after_shutdown_are_refused(tmp_path: Path) -> None:
    server = _spawn(tmp_path)
    try:
        assert server.call("down", "shutdown", None)["result"] is None
        message = _error(server.call("late", "council/debugState", None), INVALID_REQUEST)
        assert "shutting down" in message
        server.notify("exit", None)
        assert server.proc.wait(10) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


# -- in-process: what a client cannot provoke ------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.out = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        chunks = self.out.getvalue().split(b"Content-Length: ")[1:]
        return [json.loads(chunk[chunk.index(b"\r\n\r\n") + 4 :]) for chunk in chunks]


def test_a_result_that_cannot_be_encoded_is_an_internal_error() -> None:
    protocol = build_server().protocol
    writer = _Writer()
    protocol.set_writer(writer)
    protocol._send_response(7, result={"value": {1, 2}})  # a set has no JSON form
    protocol._send_response(8, result={"value": [1, 2]})
    first, second = writer.messages()
    assert first["id"] == 7 and first["error"]["code"] == INTERNAL_ERROR, first
    assert "encoded as JSON" in first["error"]["message"]
    assert second == {"jsonrpc": "2.0", "id": 8, "result": {"value": [1, 2]}}


def _edit(text: str, start: tuple[int, int], end: tuple[int, int], new: str) -> str:
    doc = LspTextDocument("file:///m.py", text)
    doc.apply_change(
        types.TextDocumentContentChangePartial(
            range=types.Range(
                start=types.Position(line=start[0], character=start[1]),
                end=types.Position(line=end[0], character=end[1]),
            ),
            text=new,
        )
    )
    return doc.source


@pytest.mark.parametrize(
    ("text", "start", "end", "new", "expected"),
    [
        ("abc", (0, 10), (0, 10), "X", "abcX"),  # past the end of the last line: its end
        ("a\x0cb\nc", (0, 3), (0, 3), "X", "a\x0cbX\nc"),  # a form feed ends no line
        ("a\u2028b\nc", (1, 0), (1, 1), "X", "a\u2028b\nX"),
        ("a😀b\n", (0, 3), (0, 3), "X", "a😀Xb\n"),  # UTF-16: the emoji is two units
        ("ab\r\ncd", (0, 5), (1, 1), "X", "abXd"),  # past the end stops before \r\n
        ("a\rb", (1, 0), (1, 1), "X", "a\rX"),  # a lone \r ends a line
        ("ab\n", (1, 0), (1, 0), "X", "ab\nX"),
        ("ab", (5, 0), (5, 0), "X", "abX"),  # past the last line: the end
        ("", (0, 0), (0, 0), "X", "X"),
    ],
)
def test_incremental_edits_land_where_lsp_says(
    text: str, start: tuple[int, int], end: tuple[int, int], new: str, expected: str
) -> None:
    assert _edit(text, start, end, new) == expected


# -- the check every server message goes through in the stdio tests ----------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "method": "window/showMessage", "params": {"message": "no type"}},
        {"jsonrpc": "2.0", "method": "window/showMessage", "params": {"type": 1, "message": 5}},
        {
            "jsonrpc": "2.0",
            "method": "window/showMessage",
            "params": {"type": 1, "message": "m", "extra": True},
        },
        {
            "jsonrpc": "2.0",
            "method": "$/progress",
            "params": {"token": "t", "value": {"kind": "begin"}},  # a begin needs a title
        },
        {"jsonrpc": "2.0", "method": "council/unknownNotification", "params": {}},
        {"jsonrpc": "2.0", "id": 1, "result": None, "error": {"code": 1, "message": "m"}},
    ],
)
def test_the_wire_check_rejects_malformed_messages(message: dict[str, Any]) -> None:
    assert message_problem(message) is not None


def test_the_wire_check_accepts_what_lsp_allows() -> None:
    show = {"jsonrpc": "2.0", "method": "window/showMessage", "params": {"type": 2, "message": "m"}}
    assert message_problem(show) is None
    actions = {"jsonrpc": "2.0", "id": 3, "result": [{"title": "t", "command": "c"}]}
    assert message_problem(actions, types.CodeActionResponse) is None
    wrong = {"jsonrpc": "2.0", "id": 3, "result": [{"title": 5}]}
    assert message_problem(wrong, types.CodeActionResponse) is not None
