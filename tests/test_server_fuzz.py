"""Fuzz `council lsp` with thousands of hypothesis-generated messages, then check it answers.

Messages are written as raw JSON-RPC frames to the real server's stdin: bad params, wrong
types, unknown URIs and methods, council commands with junk arguments, huge documents,
invalid JSON and non-object bodies. After every batch a well-formed code action request must
get its answer, and every fuzz request must have had a proper JSON-RPC response.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

METHODS = [
    "textDocument/codeAction",
    "workspace/executeCommand",
    "textDocument/didOpen",
    "textDocument/didChange",
    "textDocument/didClose",
    "workspace/didChangeConfiguration",
    "textDocument/hover",
    "textDocument/completion",
    "window/workDoneProgress/cancel",
    "$/cancelRequest",
    "$/setTrace",
    "council/nothing",
    "initialize",
]
COMMANDS = [
    "council.generate",
    "council.debug",
    "council.addTests",
    "council.run",
    "council.deliberate",
    "council.cancel",
    "council.providers",
    "council.nope",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
uris = st.sampled_from(
    ["file:///nope/missing.py", "not a uri", "", "file:///etc/passwd", "untitled:Untitled-1"]
) | st.text(max_size=20)
positions = st.fixed_dictionaries(
    {"line": st.integers(-5, 10**6) | json_values, "character": st.integers(-5, 10**6)}
)
doc_params = st.fixed_dictionaries(
    {
        "textDocument": st.fixed_dictionaries(
            {
                "uri": uris,
                "languageId": st.sampled_from(["python", "x"]),
                "version": st.integers(-1, 10) | json_values,
                "text": st.text(max_size=200) | st.just("def f(:\n" * 20000),
            }
        ),
        "range": st.fixed_dictionaries({"start": positions, "end": positions}) | json_values,
        "context": st.fixed_dictionaries({"diagnostics": st.lists(json_values, max_size=2)})
        | json_values,
        "contentChanges": st.lists(
            st.fixed_dictionaries({"text": st.text(max_size=50)}), max_size=2
        )
        | json_values,
    }
)
command_params = st.fixed_dictionaries(
    {
        "command": st.sampled_from(COMMANDS) | st.text(max_size=10),
        "arguments": st.lists(
            json_values
            | st.fixed_dictionaries(
                {
                    "uri": uris,
                    "symbol": st.text(max_size=10) | json_values,
                    "query": st.text(max_size=20),
                    "range": json_values,
                    "sessionId": json_values,
                }
            ),
            max_size=2,
        )
        | json_values,
    }
)


@st.composite
def messages(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["request", "notification", "raw"]))
    if kind == "raw":
        body = draw(
            st.sampled_from(
                [
                    b"{not json",
                    b"[]",
                    b"42",
                    b'{"jsonrpc": "2.0"}',
                    b'{"jsonrpc": "1.0", "id": 1, "method": "x"}',
                ]
            )
            | st.binary(max_size=40)
        )
        return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    method = draw(st.sampled_from(METHODS) | st.text(max_size=15))
    params = draw(doc_params | command_params | json_values)
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if kind == "request":
        message["id"] = draw(
            st.integers(10_000, 10**9) | st.text(min_size=1, max_size=8).map(lambda s: "fz-" + s)
        )
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class RawServer:
    """`council lsp` over pipes, with a reader thread collecting framed replies."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "council.cli", "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=root,
        )
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.everything: list[dict[str, Any]] = []
        self.sent_requests = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length is not None:
                reply = json.loads(out.read(length))
                self.everything.append(reply)
                self.replies.put(reply)

    def send(self, frame: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame)
        self.proc.stdin.flush()

    def request(self, msg_id: str, method: str, params: Any, timeout: float = 20) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        self.send(b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))
        while True:
            reply = self.replies.get(timeout=timeout)
            if reply.get("id") == msg_id and ("result" in reply or "error" in reply):
                return reply
            if "method" in reply and "id" in reply:  # a server->client request: answer null
                body = json.dumps({"jsonrpc": "2.0", "id": reply["id"], "result": None})
                self.send(b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode()))


@pytest.fixture(scope="module")
def raw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawServer]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "m.py").write_text("def f():\n    pass\n", encoding="utf-8")
    config = root / "council.toml"
    config.write_text(
        '[providers.dead]\nbase_url = "http://127.0.0.1:9/v1"\n[roles]\n'
        + "".join(
            f'{r} = "dead:m"\n'
            for r in ("orchestrator", "researcher", "generator", "debugger", "tester")
        )
        + "[router]\nmax_retries = 0\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "HOME": str(root),
        "XDG_CACHE_HOME": str(root / "c"),
        "COUNCIL_CONFIG": str(config),
    }
    server = RawServer(root, env)
    reply = server.request(
        "init", "initialize", {"processId": None, "rootUri": root.as_uri(), "capabilities": {}}
    )
    assert "result" in reply
    server.send(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
    server.root = root  # type: ignore[attr-defined]
    yield server
    server.proc.kill()
    server.proc.wait()


def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


COUNTER = {"messages": 0, "batches": 0}


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages(), min_size=60, max_size=100))
def test_fuzzed_messages_never_take_the_server_down(
    raw_server: RawServer, batch: list[bytes]
) -> None:
    for frame in batch:
        raw_server.send(frame)
    COUNTER["messages"] += len(batch)
    COUNTER["batches"] += 1
    uri = (raw_server.root / "m.py").as_uri()  # type: ignore[attr-defined]
    probe_id = f"probe-{COUNTER['batches']}"
    reply = raw_server.request(
        probe_id,
        "textDocument/codeAction",
        {
            "textDocument": {"uri": uri},
            "range": {"start": {"line": 1, "character": 0}, "end": {"line": 1, "character": 0}},
            "context": {"diagnostics": []},
        },
    )
    assert "result" in reply, reply
    assert raw_server.proc.poll() is None


def test_fuzz_volume_and_reply_shapes(raw_server: RawServer) -> None:
    """Runs after the fuzz test (same module): it sent thousands of messages, and every reply
    the server sent was a proper JSON-RPC response, notification or request."""
    assert COUNTER["messages"] >= 2000, COUNTER
    errors = 0
    for reply in raw_server.everything:
        assert reply.get("jsonrpc") == "2.0"
        if "id" in reply and "method" not in reply:
            assert ("result" in reply) != ("error" in reply), reply
            if "error" in reply:
                errors += 1
                assert isinstance(reply["error"].get("code"), int)
                assert isinstance(reply["error"].get("message"), str)
    assert errors > 100  # the junk was answered with JSON-RPC errors, not silence
    assert raw_server.proc.poll() is None
