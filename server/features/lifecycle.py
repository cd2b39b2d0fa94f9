"""initialize / initialized / didChangeConfiguration: workspace, capabilities, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.uris import to_fs_path

from server.app import SECTION, CouncilServer


def _editor_options(options: Any) -> dict[str, Any]:
    """`initializationOptions` may be the council table itself or `{"council": {...}}`."""
    if not isinstance(options, dict):
        return {}
    inner = options.get(SECTION)
    return inner if isinstance(inner, dict) else options


def setup(server: CouncilServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: CouncilServer, params: types.InitializeParams) -> None:
        root = None
        if params.workspace_folders:
            root = to_fs_path(params.workspace_folders[0].uri)
        elif params.root_uri:
            root = to_fs_path(params.root_uri)
        elif params.root_path:
            root = params.root_path
        ls.state.workspace = Path(root).resolve() if root else None
        caps = params.capabilities
        ls.state.supports_progress = bool(caps.window and caps.window.work_done_progress)
        ls.state.supports_show_document = bool(
            caps.window and caps.window.show_document and caps.window.show_document.support
        )
        ls.state.supports_configuration = bool(caps.workspace and caps.workspace.configuration)
        ls.state.editor_settings = _editor_options(params.initialization_options)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: CouncilServer, params: types.InitializedParams) -> None:
        ls.warm_up()
        ls.reload_settings()
        await ls.pull_configuration()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def changed(ls: CouncilServer, params: types.DidChangeConfigurationParams) -> None:
        pushed = params.settings.get(SECTION) if isinstance(params.settings, dict) else None
        if isinstance(pushed, dict):
            ls.state.editor_settings = pushed
            ls.reload_settings()
        else:
            await ls.pull_configuration()
