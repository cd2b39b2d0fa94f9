"""A hypothesis state machine plays editor against `council lsp` over stdio.

Steps: open a document; change it incrementally (one to three changes per `didChange`, text
with multi-byte and astral characters, `\\r\\n`/`\\r`/`\\n`, form feeds and U+2028, positions
in UTF-16 units, some past the end of their line) or whole; close it; ask for code actions;
ask for inline completions, some of which the provider answers only after a minute so that
they stay in flight; start council runs held at their first model call; cancel any pending
request with `$/cancelRequest`; change `[completion]` settings (which swaps the engine and
cancels what it was doing).

After every step: the server's copy of each open document (read with `council/debugState`)
has the client's text and version; no request has two answers; code actions answer with a
result. A cancelled request is answered, and what it started stops within seconds: its run
leaves `debugState`, its document leaves `inlineStats.inFlight`. At the end of each run of
the machine, everything still pending is cancelled, every request has exactly one answer,
and the provider has seen every HTTP request closed. Every message the server sends is also
checked against lsprotocol's types (`tests.lsp_wire`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from providers.loopback import LoopbackProvider, Reply
from tests.lsp_wire import RawServer
from tests.waits import wait_until

ROLES = {"orchestrator": "orch", "researcher": "res", "generator": "gen"}
ROLES |= {"debugger": "dbg", "tester": "tst"}
FIM = "fim"
SLOW = 60.0  # a reply this slow ends only by cancellation
SOON = 5.0  # how long cancelled work may take to stop
PIECES = [
    "def f(x):",
    "    ",
    "pass",
    "return x",
    "# TODO",
    '"""doc"""',
    "x = 1",
    "(",
    "é",
    "中",
    "😀",
    "\x0c",
    "\u2028",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "\r",
]
texts = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)


def units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def client_offset(text: str, line: int, character: int) -> int:
    """Where an LSP position falls in `text`, walked the way an editor counts: lines end at
    `\\r\\n`, `\\r` or `\\n`; characters are UTF-16 units; past a line's end is its end."""
    i = 0
    for _ in range(line):
        while i < len(text) and text[i] not in "\r\n":
            i += 1
        if i == len(text):
            return i
        i += 2 if text.startswith("\r\n", i) else 1
    counted = 0
    while i < len(text) and text[i] not in "\r\n" and counted < character:
        counted += units(text[i])
        i += 1
    return i


def line_count(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n") + 1


@st.composite
def positions(draw: Any, text: str) -> tuple[int, int]:
    """A position on a character boundary of `text`, now and then past a line's end."""
    line = draw(st.integers(0, line_count(text)))
    start = client_offset(text, line, 0)
    end = client_offset(text, line, 10**9)
    bounds = list(itertools.accumulate((units(c) for c in text[start:end]), initial=0))
    character = draw(st.sampled_from(bounds) | st.integers(bounds[-1], bounds[-1] + 3))
    return line, character


@dataclass
class Pending:
    kind: str  # "inline" or "run"
    uri: str | None = None


class Editor(RuleBasedStateMachine):
    """One client session; `Editor.server` and `Editor.lb` are shared by every run."""

    server: RawServer
    lb: LoopbackProvider
    runs = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"file://{self.server.root}/run{next(self.runs)}"
        self.docs: dict[str, tuple[int, str]] = {}
        # requests not cancelled yet, answered or not: a precondition that depended on the
        # server's timing would make hypothesis' choices inconsistent between runs
        self.pending: dict[str, Pending] = {}
        self.ids = itertools.count()

    def _id(self, kind: str) -> str:
        return f"{self.prefix.rsplit('/', 1)[-1]}-{kind}-{next(self.ids)}"

    def _call(self, method: str, params: Any) -> Any:
        reply = self.server.call(self._id("probe"), method, params)
        assert "result" in reply, reply
        return reply["result"]

    @initialize()
    def start(self) -> None:
        self.lb.clear()

    # -- documents ------------------------------------------------------------------------------

    @precondition(lambda self: len(self.docs) < 3)
    @rule(name=st.sampled_from(["a.py", "b.py", "c.py"]), text=texts)
    def open(self, name: str, text: str) -> None:
        uri = f"{self.prefix}/{name}"
        if uri in self.docs:
            return
        self.docs[uri] = (1, text)
        item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        self.server.notify("textDocument/didOpen", {"textDocument": item})

    @precondition(lambda self: self.docs)
    @rule(data=st.data())
    def change(self, data: st.DataObject) -> None:
        uri = data.draw(st.sampled_from(sorted(self.docs)))
        version, text = self.docs[uri]
        changes = []
        for _ in range(data.draw(st.integers(1, 3))):
            new = data.draw(texts)
            if data.draw(st.integers(0, 9)) == 0:
                changes.append({"text": new})
                text = new
                continue
            a, b = sorted(
                [data.draw(positions(text)), data.draw(positions(text))],
                key=lambda p: client_offset(text, *p),
            )
            start, end = client_offset(text, *a), client_offset(text, *b)
            text = text[:start] + new + text[end:]
            span = {"start": {"line": a[0], "character": a[1]}}
            span["end"] = {"line": b[0], "character": b[1]}
            changes.append({"range": span, "text": new})
        self.docs[uri] = (version + 1, text)
        params = {"textDocument": {"uri": uri, "version": version + 1}, "contentChanges": changes}
        self.server.notify("textDocument/didChange", params)

    @precondition(lambda self: self.docs)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        uri = data.draw(st.sampled_from(sorted(self.docs)))
        del self.docs[uri]
        self.server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    # -- requests -------------------------------------------------------------------------------

    @precondition(lambda self: self.docs)
    @rule(data=st.data())
    def code_action(self, data: st.DataObject) -> None:
        uri = data.draw(st.sampled_from(sorted(self.docs)))
        line, character = data.draw(positions(self.docs[uri][1]))
        at = {"line": line, "character": character}
        params = {
            "textDocument": {"uri": uri},
            "range": {"start": at, "end": at},
            "context": {"diagnostics": []},
        }
        msg_id = self.server.request(self._id("action"), "textDocument/codeAction", params)
        reply = self.server.wait(msg_id)
        assert "result" in reply, reply

    @precondition(lambda self: self.docs)
    @rule(data=st.data(), slow=st.booleans(), invoked=st.booleans())
    def inline_completion(self, data: st.DataObject, slow: bool, invoked: bool) -> None:
        uri = data.draw(st.sampled_from(sorted(self.docs)))
        line, character = data.draw(positions(self.docs[uri][1]))
        if slow:
            self.lb.script(Reply(content="x", delay=SLOW), model=FIM)
        params = {
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 1 if invoked else 2},
        }
        msg_id = self.server.request(self._id("inline"), "textDocument/inlineCompletion", params)
        self.pending[msg_id] = Pending("inline", uri)

    @precondition(lambda self: sum(p.kind == "run" for p in self.pending.values()) < 2)
    @rule()
    def council_run(self) -> None:
        self.lb.script(Reply(content="{}", delay=SLOW), model=ROLES["orchestrator"])
        params = {"command": "council.run", "arguments": [{"query": "Explain f."}]}
        msg_id = self.server.request(self._id("run"), "workspace/executeCommand", params)
        self.pending[msg_id] = Pending("run")

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        msg_id = data.draw(st.sampled_from(sorted(self.pending)))
        self._cancel(msg_id)
        self._stopped(msg_id)

    @rule(max_lines=st.integers(2, 9))
    def settings_change(self, max_lines: int) -> None:
        pushed = {"council": {"completion": {"max_lines": max_lines}}}
        self.server.notify("workspace/didChangeConfiguration", {"settings": pushed})

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def documents_match(self) -> None:
        held = self._call("council/debugState", None)["documents"]
        mine = {u: d for u, d in held.items() if u.startswith(self.prefix + "/")}
        assert {u: (d["version"], d["text"]) for u, d in mine.items()} == self.docs

    @invariant()
    def answered_at_most_once(self) -> None:
        twice = {i: a for i, a in self.server.answers.items() if len(a) > 1}
        assert twice == {}
        for msg_id in [i for i in self.pending if self.server.answers.get(i)]:
            reply = self.server.answers[msg_id][0]
            cancelled = reply.get("error", {}).get("code") == -32800
            assert "result" in reply or cancelled, reply

    def teardown(self) -> None:
        for msg_id in list(self.pending):
            self._cancel(msg_id)
        for msg_id in list(self.pending):
            self._stopped(msg_id)
        for uri in list(self.docs):
            self.server.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        self.docs.clear()
        self.documents_match()
        prefix = self.prefix.rsplit("/", 1)[-1] + "-"

        def runs_left() -> list[Any]:
            return [r for r in self._run_requests() if str(r).startswith(prefix)]

        wait_until(lambda: not runs_left(), SOON, "this case's runs to end", runs_left)
        mine = {i: len(a) for i, a in self.server.answers.items() if str(i).startswith(prefix)}
        assert set(mine.values()) <= {1}, mine
        wait_until(
            lambda: all(r.finished for r in self.lb.requests),
            SOON,
            "every provider request to finish",
            lambda: [(r.model, r.path) for r in self.lb.requests if not r.finished],
        )

    # -- helpers --------------------------------------------------------------------------------

    def _cancel(self, msg_id: str) -> None:
        self.server.notify("$/cancelRequest", {"id": msg_id})

    def _stopped(self, msg_id: str) -> None:
        """A cancelled request is answered, and the work it started ends soon."""
        pending = self.pending.pop(msg_id)
        reply = self.server.wait(msg_id, timeout=SOON)
        assert "result" in reply or reply["error"]["code"] == -32800, reply
        if pending.kind == "run":
            wait_until(lambda: msg_id not in self._run_requests(), SOON, f"run {msg_id} to end")
        elif pending.kind == "inline" and not any(
            p.kind == "inline" and p.uri == pending.uri and not self.server.answers.get(i)
            for i, p in self.pending.items()
        ):
            wait_until(
                lambda: pending.uri not in self._in_flight(),
                SOON,
                f"the inline request for {pending.uri} to end",
            )

    def _run_requests(self) -> list[Any]:
        return [r["requestId"] for r in self._call("council/debugState", None)["runs"]]

    def _in_flight(self) -> list[str]:
        return list(self._call("council/inlineStats", {"since": 10**9})["inFlight"])


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawServer, Any]]:
    root = tmp_path_factory.mktemp("stateful")
    with LoopbackProvider(models=(*ROLES.values(), FIM)) as lb:
        config = root / "council.toml"
        config.write_text(
            f'[providers.lb]\nbase_url = "{lb.base_url}"\n[roles]\n'
            + "".join(f'{role} = "lb:{model}"\n' for role, model in ROLES.items())
            + "[router]\nmax_retries = 0\n"
            + f'[completion]\nbackend = "lb:{FIM}"\ntimeout_secs = 120\n',
            encoding="utf-8",
        )
        env = {**os.environ, "HOME": str(root), "XDG_CACHE_HOME": str(root / "c")}
        env["COUNCIL_CONFIG"] = str(config)
        server = RawServer(root, env)
        reply = server.initialize({"textDocument": {"inlineCompletion": {}}})
        assert "result" in reply, reply
        yield server, lb
        server.close()


def test_the_server_keeps_up_with_an_editor(wired: tuple[RawServer, Any]) -> None:
    Editor.server, Editor.lb = wired
    run_state_machine_as_test(
        Editor,
        settings=settings(
            max_examples=60,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
