"""Generate on nested functions and methods, resolved by the server from a cursor position.

Before `council.symbols`, *Generate* was offered for a nested stub `outer.inner` but the edit
always failed, and the Neovim client sent `push` for the method `Stack.push`. Editors now send a
position (an empty range) and the server resolves it; these run the real server over stdio
against the scripted loopback provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider
from server.apply import plan_generate
from tests.lsp_harness import Editor, apply_text_edits, start_editor
from tests.scenarios import (
    MANIFEST,
    MODELS,
    bundle,
    debug_ok,
    plan,
    server_env,
    suite,
    synth,
    write_config,
)

pytestmark = pytest.mark.anyio

SHAPES = '''\
class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        """Put item on top."""
        raise NotImplementedError


def outer(x):
    def inner(y):
        """x + y."""
        ...

    return inner(1)


def untouched():
    return "keep me"
'''

TESTS = """\
from shapes import Stack, outer


def test_push():
    s = Stack()
    s.push(3)
    assert s.items == [3]


def test_outer():
    assert outer(2) == 3
"""


def implemented(old: str, new: str) -> str:
    assert old in SHAPES
    return SHAPES.replace(old, new)


PUSHED = implemented(
    '"""Put item on top."""\n        raise NotImplementedError',
    '"""Put item on top."""\n        self.items.append(item)',
)
INNER = implemented('"""x + y."""\n        ...', '"""x + y."""\n        return x + y')


@pytest.fixture
def server() -> Any:
    with LoopbackProvider(models=MODELS) as lb:
        yield lb


@pytest.fixture
async def editor(tmp_path: Path, server: LoopbackProvider) -> AsyncIterator[Editor]:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "shapes.py").write_text(SHAPES, encoding="utf-8")
    config = tmp_path / "council.toml"
    write_config(config, server.base_url)
    ed = await start_editor(root, server_env(tmp_path, config))
    yield ed
    await ed.client.shutdown_session()


def script(server: LoopbackProvider, code: str) -> None:
    server.script(plan("generator"), synth("APPROVE", 0.95), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle(code, path="shapes.py"), model="gen")
    server.script(debug_ok(), model="dbg")
    server.script(suite(TESTS), model="tst")


def line_of(text: str) -> int:
    return SHAPES[: SHAPES.index(text)].count("\n")


async def test_nested_stub_action_generates_and_applies(
    editor: Editor, server: LoopbackProvider
) -> None:
    uri = editor.open("shapes.py")
    actions = await editor.actions(uri, line_of('"""x + y."""'))
    generate = actions[0]
    assert generate.title == "Council: Generate implementation of outer.inner"
    script(server, INNER)  # the model answers with the whole module
    assert generate.command is not None and generate.command.arguments
    result = await editor.command("council.generate", generate.command.arguments[0])
    assert result.applied is True, result
    assert editor.text(uri) == INNER
    assert "Replaced `outer.inner`" in result.message


def test_a_bare_answer_for_a_nested_function_is_spliced_in_place() -> None:
    bare = 'def inner(y):\n    """x + y."""\n    return x + y\n'
    planned = plan_generate("file:///ws/shapes.py", SHAPES, 4, 4, "outer.inner", bare)
    assert planned.edit is not None, planned.message
    (change,) = planned.edit.document_changes or []
    assert apply_text_edits(SHAPES, change.edits) == INNER  # type: ignore[union-attr]


async def test_a_position_inside_a_method_resolves_to_the_qualified_name(
    editor: Editor, server: LoopbackProvider
) -> None:
    uri = editor.open("shapes.py")
    here = {"line": line_of("raise NotImplementedError"), "character": 8}
    script(server, PUSHED)
    result = await editor.command(
        "council.generate", {"uri": uri, "range": {"start": here, "end": here}}, "tok-push"
    )
    assert result.applied is True, result
    assert editor.text(uri) == PUSHED
    begin = editor.client.progress_reports["tok-push"][0]
    assert begin.title == "Council: Generate Stack.push"


def test_the_users_docstring_survives_an_answer_without_one() -> None:
    body_only = "def inner(y):\n    return x + y\n"
    planned = plan_generate("file:///ws/shapes.py", SHAPES, 4, 4, "outer.inner", body_only)
    assert planned.edit is not None, planned.message
    (change,) = planned.edit.document_changes or []
    assert apply_text_edits(SHAPES, change.edits) == INNER  # type: ignore[union-attr]
    rewritten = 'def inner(y):\n    """Sum."""\n    return x + y\n'
    planned = plan_generate("file:///ws/shapes.py", SHAPES, 4, 4, "outer.inner", rewritten)
    (change,) = planned.edit.document_changes or []  # type: ignore[union-attr]
    assert '"""Sum."""' in apply_text_edits(SHAPES, change.edits)  # type: ignore[union-attr]
