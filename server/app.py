"""The council language server: state, settings, and feature registration.

Nothing heavy happens before `initialize` is answered: this module and the feature modules
import only pygls and lsprotocol at start-up, so `council lsp` starts about as fast as a bare
pygls server (`council bench server` compares the two). The settings models (pydantic),
providers, the pipeline and the inline completer are imported when first needed: at
`initialized`, in the warm-up thread, or by the request that uses them.

Settings are merged from the file sources and the editor (`initializationOptions`, then
`workspace/configuration` section `council`, refreshed on `workspace/didChangeConfiguration`);
each problem is shown once with `window/showMessage` and the default is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from server.protocol import CouncilProtocol
from server.run_history import RunHistory

if TYPE_CHECKING:
    from providers.loading import LoadedSettings
    from providers.router import Router
    from providers.settings import Settings
    from server.features.workspace import WorkspaceIndex

log = logging.getLogger(__name__)

VERSION = "0.1.0"
SECTION = "council"


@dataclass
class ActiveRun:
    """One council run in flight, as the server tracks it. Cancelling its scope stops the run,
    its HTTP requests and its sandbox processes; the command then answers normally with
    status "cancelled"."""

    session_id: str
    title: str
    scope: Any  # anyio.CancelScope
    msg_id: Any = None  # the executeCommand request id, for $/cancelRequest
    token: types.ProgressToken | None = None
    uri: str | None = None


@dataclass
class RouterEpoch:
    """The settings and router of one configuration, from one settings change to the next.

    A run (or an inline request) holds the epoch it started under until it ends, so a settings
    change never swaps the router under a call in flight. The change retires the epoch; its
    providers' HTTP clients close when its last user releases it.
    """

    settings: Settings
    router: Router
    users: int = 0  # runs and inline requests holding it
    retired: bool = False


@dataclass
class ServerState:
    workspace: Path | None = None
    editor_settings: dict[str, Any] = field(default_factory=dict)
    shown_problems: set[str] = field(default_factory=set)
    supports_progress: bool = False
    supports_configuration: bool = False
    supports_show_document: bool = False


class CouncilServer(LanguageServer):
    protocol: CouncilProtocol

    def __init__(self, *, env: dict[str, str] | None = None) -> None:
        super().__init__("slm-council", VERSION, protocol_cls=CouncilProtocol)
        self.state = ServerState()
        self.council_commands: dict[str, Any] = {}
        self.active_runs: dict[str, ActiveRun] = {}
        # every tracked run, live and the last finished ones (server/features/runs_view.py)
        self.run_history = RunHistory()
        # missing sandbox layers are shown once (server/run_tracking.py)
        self.sandbox_checked = False
        self.council_diagnostics: dict[str, Any] = {}  # uri -> diagnostics.Published
        # the workspace index and what feeds it (server/features/workspace.py)
        self.workspace_index: WorkspaceIndex | None = None
        self._env = env
        self._epoch: RouterEpoch | None = None
        self.loaded: LoadedSettings | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._warm: asyncio.Future[None] | None = None
        # Called with the new settings after every reload (the first is at `initialized`), so
        # features holding settings-dependent state (the inline completer) can swap it.
        self.settings_listeners: list[Callable[[Settings], None]] = []

    def track_run(self, run: ActiveRun) -> None:
        """Track a run so that cancelling its request stops it. A `$/cancelRequest` can
        overtake the start of the command (it is read before the command's task first runs,
        or while the command waits for the warm-up); the run is then cancelled at once."""
        self.active_runs[run.session_id] = run
        if run.msg_id is not None and not self.protocol.is_pending(run.msg_id):
            run.scope.cancel()

    # -- settings -------------------------------------------------------------------------------

    def reload_settings(self) -> LoadedSettings:
        """Merge files and editor settings; retire the router epoch if they changed."""
        from providers.loading import load_settings  # pydantic models: not before `initialize`

        loaded = load_settings(
            self.state.workspace,
            overrides=self.state.editor_settings,
            env=self._env,
        )
        self.loaded = loaded
        fresh = [p for p in loaded.problems if str(p) not in self.state.shown_problems]
        if fresh:
            self.state.shown_problems.update(str(p) for p in fresh)
            text = "; ".join(str(p) for p in fresh[:5])
            more = f" (and {len(fresh) - 5} more)" if len(fresh) > 5 else ""
            self.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Warning,
                    message=f"Council settings: {text}{more}. Defaults are used for these keys.",
                )
            )
        old = self._epoch
        if old is None or old.settings != loaded.settings:
            self._epoch = None  # built lazily by `epoch`
            if old is not None:
                old.retired = True
                if old.users == 0:
                    task = asyncio.ensure_future(_close(old))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
        for listener in self.settings_listeners:
            try:
                listener(loaded.settings)
            except Exception:  # a feature's failure must not stop settings from loading
                log.exception("settings listener %r failed", listener)
        return loaded

    @property
    def settings(self) -> Settings:
        if self.loaded is None:
            self.reload_settings()
        assert self.loaded is not None
        return self.loaded.settings

    def warm_up(self) -> None:
        """Import the heavy modules (the openai SDK alone takes ~0.7 s) in a thread after
        `initialized`, so neither `initialize` nor the first run blocks the event loop."""
        if self._warm is None:
            self._warm = asyncio.ensure_future(asyncio.to_thread(_import_heavy))

    async def ready_epoch(self) -> RouterEpoch:
        """The current epoch, once the warm-up imports are done (they never block the loop)."""
        self.warm_up()
        assert self._warm is not None
        await self._warm
        return self.epoch()

    def epoch(self) -> RouterEpoch:
        """Providers are built on first use: the openai SDK costs ~0.7 s to import."""
        from providers.registry import build_providers
        from providers.router import Router

        if self._epoch is None:
            settings = self.settings
            providers = build_providers(settings, env=self._env)
            self._epoch = RouterEpoch(
                settings, Router(settings, providers, workspace=self.state.workspace)
            )
        return self._epoch

    async def release(self, epoch: RouterEpoch) -> None:
        epoch.users -= 1
        if epoch.retired and epoch.users == 0:
            await _close(epoch)

    async def pull_configuration(self) -> None:
        if not self.state.supports_configuration:
            return
        try:
            result = await self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
            )
        except Exception as exc:  # a client that fails this request is not fatal
            log.warning("workspace/configuration failed: %s", exc)
            return
        value = result[0] if result else None
        if isinstance(value, dict):
            self.state.editor_settings = _merge(self.state.editor_settings, value)
        elif value is not None:
            self.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Warning,
                    message="Council settings: section 'council' must be an object; ignored.",
                )
            )
        self.reload_settings()

    def path_of(self, uri: str) -> Path | None:
        path = to_fs_path(uri)
        return Path(path) if path else None

    def relative(self, uri: str) -> str | None:
        path = self.path_of(uri)
        if path is None:
            return None
        root = self.state.workspace
        if root is not None and path.is_relative_to(root):
            return path.relative_to(root).as_posix()
        return path.name


def _import_heavy() -> None:
    import council.pipeline  # noqa: F401  (sandbox, static analysis, structured output)
    import providers.registry  # noqa: F401  (the openai SDK)
    import server.council_commands  # noqa: F401  (the commands, their argument models)


async def _close(epoch: RouterEpoch) -> None:
    from providers.registry import close_all

    await close_all(epoch.router.providers)


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_server(*, env: dict[str, str] | None = None) -> CouncilServer:
    from server.features import (
        code_actions,
        commands,
        debug_state,
        documents,
        inline_completion,
        lifecycle,
        runs_view,
        workspace,
    )

    server = CouncilServer(env=env)
    features = (lifecycle, documents, code_actions, commands, inline_completion, debug_state)
    for feature in (*features, runs_view, workspace):
        feature.setup(server)
    return server
