"""A pytest-lsp editor for inline completion tests: `council lsp` with a client that
advertises inline completions, the `council.toml` it reads, and one-line request helpers.
Shared by the inline test modules (test modules never import each other)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.uris import from_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient

from providers.loopback import LoopbackProvider
from tests.lsp_harness import Editor

AUTO, INVOKED = (
    types.InlineCompletionTriggerKind.Automatic,
    types.InlineCompletionTriggerKind.Invoked,
)


async def start(
    root: Path, config: Path, *, inline: bool = True, experimental: Any = None
) -> Editor:
    """`council lsp` with a client that advertises inline completions (and `experimental`)."""
    env = {
        **os.environ,
        "HOME": str(root.parent / "home"),
        "XDG_CACHE_HOME": str(root.parent / "cache"),
        "COUNCIL_CONFIG": str(config),
    }
    client = await ClientServerConfig(
        server_command=[sys.executable, "-m", "slm_council", "lsp"], server_env=env
    ).start()
    assert isinstance(client, LanguageClient)
    editor = Editor(client, root)
    text_caps = types.TextDocumentClientCapabilities(
        inline_completion=types.InlineCompletionClientCapabilities() if inline else None
    )
    editor.init_result = await client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                text_document=text_caps, experimental=experimental
            ),
            workspace_folders=[types.WorkspaceFolder(uri=from_fs_path(str(root)) or "", name="ws")],
        )
    )
    return editor


def write_config(path: Path, base_url: str | None, completion: str) -> Path:
    """A `council.toml` with the loopback as provider `lb` (when given) and `[completion]`."""
    providers = f'[providers.lb]\nbase_url = "{base_url}"\n' if base_url else ""
    roles = '[roles]\norchestrator = "lb:x"\nresearcher = "lb:x"\ngenerator = "lb:x"\n'
    roles += 'debugger = "lb:x"\ntester = "lb:x"\n'
    path.write_text(
        providers + (roles if base_url else "") + "[router]\nmax_retries = 0\n"
        f"[completion]\n{completion}\n",
        encoding="utf-8",
    )
    return path


async def complete(
    editor: Editor,
    uri: str,
    line: int,
    character: int,
    kind: types.InlineCompletionTriggerKind = AUTO,
    selected: types.SelectedCompletionInfo | None = None,
) -> types.InlineCompletionList | None:
    result = await editor.client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(
                trigger_kind=kind, selected_completion_info=selected
            ),
        )
    )
    assert result is None or isinstance(result, types.InlineCompletionList)
    return result


def texts(result: types.InlineCompletionList | None) -> list[str]:
    return [str(item.insert_text) for item in (result.items if result else [])]


async def request(editor: Editor, method: str, params: dict[str, Any]) -> Any:
    """A custom request (`council/inlineStats`, `council/explainCompletion`)."""
    return await editor.client.protocol.send_request_async(method, params)


def fim_requests(lb: LoopbackProvider) -> list[Any]:
    """The completion requests the loopback received (not the capability canaries)."""
    return [r for r in lb.requests if r.path.endswith("/completions") and r.body]
