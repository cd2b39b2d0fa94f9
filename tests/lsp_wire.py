"""`council lsp` on the wire: raw JSON-RPC frames, and a check of every message it sends.

`message_problem` is the check: a message from the server must survive a round trip through
lsprotocol's type for it (the method's notification or request type, the response type of
the request it answers, `WorkDoneProgressBegin`/`Report`/`End` for work-done `$/progress`),
so a missing field, a wrong type or an extra key fails the test that received it.
`watch` applies it to a pytest-lsp client; `RawServer` applies it to everything it reads.
Problems are collected in `PROBLEMS`, which `tests/conftest.py` asserts empty after each test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Union

from cattrs import Converter
from lsprotocol import converters, types

PROBLEMS: list[str] = []
_PROGRESS = {
    "begin": types.WorkDoneProgressBegin,
    "report": types.WorkDoneProgressReport,
    "end": types.WorkDoneProgressEnd,
}


def lsp_converter() -> Converter:
    """lsprotocol's converter, with its `Command | CodeAction` hook fixed: it turns every
    CodeAction that carries a `command` into a Command (it only checks for the key)."""
    converter = converters.get_converter()

    def hook(obj: Any, _: type) -> types.Command | types.CodeAction:
        if isinstance(obj, dict) and isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], hook)  # noqa: UP007
    return converter


CONVERTER = lsp_converter()


def message_problem(message: Any, response_type: type | None = None) -> str | None:
    """Why a message from the server is not a valid LSP message, or None. `response_type` is
    lsprotocol's type for the answer to the client's request (None: not an LSP method)."""
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return f"not a JSON-RPC 2.0 object: {str(message)[:200]}"
    if "method" in message:
        method = message["method"]
        kinds = types.METHOD_TO_TYPES.get(method)
        if kinds is None and method in COUNCIL_NOTIFICATIONS:
            return COUNCIL_NOTIFICATIONS[method](message)
        if kinds is None:
            return None if str(method).startswith("$/") else f"unknown method {method!r}"
        problem = _round_trip(message, kinds[0])
        value = (message.get("params") or {}).get("value") if method == "$/progress" else None
        if problem is None and isinstance(value, dict) and value.get("kind") in _PROGRESS:
            problem = _round_trip(value, _PROGRESS[value["kind"]])
        return problem
    if ("result" in message) == ("error" in message) or "id" not in message:
        return f"a response needs an id and one of result/error: {str(message)[:200]}"
    if "error" in message:
        return _round_trip(message, types.ResponseErrorMessage)
    return None if response_type is None else _round_trip(message, response_type)


def _runs_changed(message: dict[str, Any]) -> str | None:
    params = message.get("params")
    if "id" in message:
        return "council/runsChanged is a notification, sent with an id"
    if (
        not isinstance(params, dict)
        or not isinstance(params.get("sessionId"), str)
        or not isinstance(params.get("status"), str)
        or params.get("event") not in ("started", "stage", "finished")
        or not isinstance(params.get("stage"), str | None)
    ):
        return f"council/runsChanged: bad params {json.dumps(params)[:300]}"
    return None


def _inline_outcome(message: dict[str, Any]) -> str | None:
    params = message.get("params")
    if "id" in message:
        return "council/inlineOutcome is a notification, sent with an id"
    fields = {"seq": int, "uri": str, "trigger": str, "reason": str, "outcome": str, "items": int}
    if not isinstance(params, dict) or any(
        not isinstance(params.get(k), t) for k, t in fields.items()
    ):
        return f"council/inlineOutcome: bad params {json.dumps(params)[:300]}"
    return None


#: the server's own notifications, which lsprotocol does not know (README, "The language
#: server"): method -> the check of one message
COUNCIL_NOTIFICATIONS = {
    "council/runsChanged": _runs_changed,
    "council/inlineOutcome": _inline_outcome,
}


def _round_trip(data: dict[str, Any], kind: type) -> str | None:
    try:
        again = CONVERTER.unstructure(CONVERTER.structure(data, kind))
    except Exception as exc:
        return f"{kind.__name__}: {type(exc).__name__}: {exc} in {json.dumps(data)[:300]}"
    if again != data:
        return f"{kind.__name__} round trip changed {json.dumps(data)[:300]} to {again!r:.300}"
    return None


def watch(protocol: Any) -> None:
    """Check every message a pygls client protocol receives (pytest-lsp's client decodes
    leniently: unknown keys pass, and a message it cannot decode is only logged)."""
    structure = protocol.structure_message

    def checked(data: Any) -> Any:
        if isinstance(data, dict) and "jsonrpc" in data:
            expected = None
            if "method" not in data:
                expected = protocol._result_types.get(data.get("id"))
            problem = message_problem(data, expected)
            if problem is not None:
                PROBLEMS.append(problem)
        return structure(data)

    protocol.structure_message = checked


def frame(message: dict[str, Any] | bytes) -> bytes:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class RawServer:
    """`council lsp` over pipes, spoken to in raw frames. A reader thread collects every
    answer by request id, answers the server's own requests with null, and checks each
    message with `message_problem`."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slm_council", "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=root,
        )
        self.root = root
        self.everything: list[dict[str, Any]] = []
        self.answers: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.methods: dict[Any, str] = {}  # request id -> method, for checking results
        self._changed = threading.Condition()
        self._write = threading.Lock()
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
                self._received(json.loads(out.read(length)))

    def _received(self, message: Any) -> None:
        expected = None
        if isinstance(message, dict) and "method" not in message:
            kinds = types.METHOD_TO_TYPES.get(self.methods.get(message.get("id"), ""))
            expected = kinds[1] if kinds else None
        problem = message_problem(message, expected)
        if problem is not None:
            PROBLEMS.append(problem)
        with self._changed:
            self.everything.append(message)
            if isinstance(message, dict) and "id" in message and "method" not in message:
                self.answers[message["id"]].append(message)
            self._changed.notify_all()
        if isinstance(message, dict) and "method" in message and "id" in message:
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})

    def send(self, message: dict[str, Any] | bytes) -> None:
        assert self.proc.stdin is not None
        with self._write:
            self.proc.stdin.write(frame(message))
            self.proc.stdin.flush()

    def request(self, msg_id: Any, method: str, params: Any) -> Any:
        """Send a request without waiting for its answer."""
        self.methods[msg_id] = method
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return msg_id

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait(self, msg_id: Any, timeout: float = 20) -> dict[str, Any]:
        """The first answer to `msg_id`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.answers.get(msg_id):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no answer to request {msg_id!r}")
                self._changed.wait(min(left, 0.5))
            return self.answers[msg_id][0]

    def call(self, msg_id: Any, method: str, params: Any, timeout: float = 20) -> dict[str, Any]:
        return self.wait(self.request(msg_id, method, params), timeout)

    def wait_until(self, done: Any, timeout: float) -> bool:
        """Wait until `done()` (called with the lock held) is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    def initialize(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.call(
            "init",
            "initialize",
            {"processId": None, "rootUri": self.root.as_uri(), "capabilities": capabilities or {}},
        )
        self.notify("initialized", {})
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("bye", "shutdown", None, timeout=10)
                self.notify("exit", None)
                self.proc.wait(10)
            except (TimeoutError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
