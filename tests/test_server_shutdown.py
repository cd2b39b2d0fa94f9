"""`shutdown` with a council run in flight: both requests get their one answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pygls.exceptions import JsonRpcException

from providers.loopback import LoopbackProvider
from tests.lsp_harness import Editor, start_editor
from tests.scenarios import MODELS, STUB, plan, server_env, write_config
from tests.waits import async_wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Any:
    with LoopbackProvider(models=MODELS) as lb:
        yield lb


@pytest.fixture
async def editor(tmp_path: Path, server: LoopbackProvider) -> AsyncIterator[Editor]:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "mathx.py").write_text(STUB, encoding="utf-8")
    config = tmp_path / "council.toml"
    write_config(config, server.base_url)
    ed = await start_editor(root, server_env(tmp_path, config))
    yield ed
    ed.client.protocol.notify("exit", None)
    await ed.client.stop()


async def test_shutdown_during_a_run_answers_and_stops_the_run(
    editor: Editor, server: LoopbackProvider
) -> None:
    slow = plan("generator")
    slow.delay = 30
    server.script(slow, model="orch")
    uri = editor.open("mathx.py")
    run = asyncio.ensure_future(editor.command("council.generate", {"uri": uri, "symbol": "add"}))
    # the run is in flight once the orchestrator is asked
    await async_wait_until(lambda: server.requests, 10, "the orchestrator's request")
    answer = await asyncio.wait_for(editor.client.shutdown_async(None), 10)
    assert answer is None  # the shutdown request succeeded
    with pytest.raises((JsonRpcException, asyncio.CancelledError)):
        await asyncio.wait_for(run, 10)  # the command got its one answer: an error
