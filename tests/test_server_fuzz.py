"""Fuzz `council lsp` with thousands of hypothesis-generated messages, then check it answers.

Messages are written as raw JSON-RPC frames to the real server's stdin: bad params, wrong
types, unknown URIs and methods, council commands with junk arguments, huge documents,
invalid JSON and non-object bodies. After every batch a well-formed code action request must
get its answer, and every request in the batch (a JSON object with a method and a string or
integer id) must have had exactly one answer: InvalidParams for params that do not decode,
MethodNotFound, InvalidRequest, or a result. Every message the server sent must be valid LSP
(`tests.lsp_wire.message_problem`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lsp_wire import RawServer

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
    "council/inlineStats",
    "council/debugState",
    "textDocument/inlineCompletion",
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


RAW = [
    b"{not json",
    b"[]",
    b"42",
    b'{"jsonrpc": "2.0"}',
    b'{"jsonrpc": "1.0", "id": 1, "method": "x"}',  # answered: InvalidRequest
    b'{"jsonrpc": "2.0", "id": 2, "method": "textDocument/codeAction"}',  # no params
    b'{"jsonrpc": "2.0", "id": null, "method": "textDocument/codeAction"}',  # not answerable
    b'{"jsonrpc": "2.0", "id": [3], "method": "council/debugState"}',  # not answerable
]


@st.composite
def messages(draw: Any) -> bytes | dict[str, Any]:
    """Raw bytes, or a message whose `"id"` (for a request) is filled in when it is sent,
    so that every request in a run has its own id."""
    kind = draw(st.sampled_from(["request", "notification", "raw"]))
    if kind == "raw":
        return bytes(draw(st.sampled_from(RAW) | st.binary(max_size=40)))
    junk_method = st.text(max_size=15).filter(lambda m: m not in ("exit", "shutdown"))
    method = draw(st.sampled_from(METHODS) | junk_method)
    params = draw(doc_params | command_params | json_values)
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if kind == "request":
        message["id"] = draw(st.sampled_from(["int", "str"]))
    return message


IDS = itertools.count(10_000)


def _with_id(message: bytes | dict[str, Any]) -> bytes | dict[str, Any]:
    if isinstance(message, dict) and "id" in message:
        n = next(IDS)
        return {**message, "id": n if message["id"] == "int" else f"fz-{n}"}
    return message


def _answerable_id(message: bytes | dict[str, Any]) -> Any:
    """The id an answer must carry, by the same rules as JSON-RPC: a JSON object with a
    method and an id that is a string or an integer."""
    if isinstance(message, bytes):
        try:
            message = json.loads(message)
        except ValueError:
            return None
    if not isinstance(message, dict) or "method" not in message:
        return None
    msg_id = message.get("id")
    if isinstance(msg_id, str) or (isinstance(msg_id, int) and not isinstance(msg_id, bool)):
        return msg_id
    return None


def _brief(value: Any) -> Any:
    """A message with its long strings cut, for failure messages."""
    if isinstance(value, dict):
        return {k: _brief(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_brief(v) for v in value]
    if isinstance(value, str | bytes) and len(value) > 60:
        return f"{value[:30]!r}...({len(value)} long)"
    return value


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
        + "[router]\nmax_retries = 0\n"
        + '[completion]\nbackend = "dead:m"\n',
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "HOME": str(root),
        "XDG_CACHE_HOME": str(root / "c"),
        "COUNCIL_CONFIG": str(config),
    }
    server = RawServer(root, env)
    assert "result" in server.initialize()
    yield server
    server.proc.kill()
    server.proc.wait()


COUNTER = {"messages": 0, "batches": 0}
EXPECTED: Counter[Any] = Counter()  # request id -> answers it must get
SENT: dict[Any, Any] = {}  # request id -> the message, to show what went unanswered


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(messages(), min_size=60, max_size=100))
def test_fuzzed_messages_never_take_the_server_down(
    raw_server: RawServer, batch: list[bytes | dict[str, Any]]
) -> None:
    for message in map(_with_id, batch):
        msg_id = _answerable_id(message)
        if msg_id is not None:
            EXPECTED[msg_id] += 1
            SENT[msg_id] = message
        raw_server.send(message)
    COUNTER["messages"] += len(batch)
    COUNTER["batches"] += 1
    uri = (raw_server.root / "m.py").as_uri()
    probe_id = f"probe-{COUNTER['batches']}"
    EXPECTED[probe_id] += 1
    reply = raw_server.call(
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

    def all_answered() -> bool:
        return all(len(raw_server.answers.get(i, ())) >= n for i, n in EXPECTED.items())

    assert raw_server.wait_until(all_answered, timeout=30), [
        f"{i}: {_brief(SENT.get(i))}"
        for i, n in EXPECTED.items()
        if len(raw_server.answers.get(i, ())) < n
    ][:10]
    answered = {i: len(a) for i, a in raw_server.answers.items() if i != "init"}
    assert answered == dict(EXPECTED)  # exactly once: no request answered twice


def test_fuzz_volume_and_reply_shapes(raw_server: RawServer) -> None:
    """Runs after the fuzz test (same module): it sent thousands of messages, and every reply
    the server sent was a proper JSON-RPC response, notification or request."""
    assert COUNTER["messages"] >= 2000, COUNTER
    errors = Counter(
        reply["error"]["code"]
        for reply in raw_server.everything
        if "id" in reply and "method" not in reply and "error" in reply
    )
    assert errors[-32602] > 100, errors  # undecodable params: InvalidParams, not silence
    assert errors[-32601] > 10, errors  # unknown methods: MethodNotFound
    assert errors[-32600] > 0, errors  # JSON-RPC 1.0: InvalidRequest
    assert raw_server.proc.poll() is None
