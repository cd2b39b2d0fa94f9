"""One council run as the editor sees it: tracked, cancellable, with progress and a report.

Each command's run is a cancellable task: `$/cancelRequest` for the command,
`window/workDoneProgress/cancel` for its progress token, or `council.cancel` all cancel it,
which closes its HTTP requests and kills its sandbox processes. Runs never block other
requests: they await I/O only. The commands themselves are in `server.council_commands`.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import from_fs_path

from council.events import Events
from council.pool import report_lines
from council.schemas import CouncilRequest, CouncilResult
from providers.errors import ProviderError
from server import apply
from server.app import ActiveRun, CouncilServer
from server.progress import ProgressReporter

log = logging.getLogger(__name__)


def document_text(server: CouncilServer, uri: str) -> tuple[str, int | None]:
    doc = server.workspace.get_text_document(uri)
    try:
        text = doc.source
    except OSError as exc:
        raise JsonRpcInvalidParams(f"cannot read {uri}: {exc.strerror}") from None
    return text, doc.version


Finish = Callable[[Any], Awaitable[tuple[str, dict[str, Any]]]]
#: starts the run: (epoch, events, session id) -> a result with session_id/status/summary
Job = Callable[[Any, Events, str], Awaitable[Any]]


async def track_council(
    server: CouncilServer,
    params: types.ExecuteCommandParams,
    title: str,
    request: CouncilRequest,
    uri: str | None,
    finish: Finish,
) -> dict[str, Any]:
    """Run the council pipeline on ``request`` (see :func:`track`)."""
    from council.pipeline import Council

    async def job(epoch: Any, events: Events, session: str) -> CouncilResult:
        council = Council(epoch.router, workspace=server.state.workspace)
        await warn_missing_sandbox_layers(server)
        return await council.run(request, events=events, session_id=session)

    return await track(server, params, title, uri, job, finish, request=request)


async def track(
    server: CouncilServer,
    params: types.ExecuteCommandParams,
    title: str,
    uri: str | None,
    job: Job,
    finish: Finish,
    *,
    request: CouncilRequest | None = None,
) -> dict[str, Any]:
    """Every council command's run: one session id (the one registered for cancellation is
    the one the run reports), progress from the run's events, the epoch held and released;
    ``finish`` applies the result and says how it ended.

    The progress always ends, and says how: with finish's message, the failure (a crash is
    reported as a failure, never as "Cancelled."), or "Cancelled." when it was. The run is
    recorded in ``server.run_history`` from start to end, for the editors' run views
    (``request``, when given, names its target: the original side of each candidate's diff)."""
    epoch = await server.ready_epoch()
    epoch.users += 1
    session = uuid.uuid4().hex[:12]
    progress = ProgressReporter(server, params.work_done_token, title)
    scope = anyio.CancelScope()
    server.track_run(ActiveRun(session, title, scope, server.protocol.msg_id, None, uri))
    record = server.run_history.start(session, title, params.command, uri)
    if request is not None:
        server.run_history.describe(record, request)
    started = time.monotonic()
    end, status = "Cancelled.", "cancelled"
    result: Any = None
    extra: dict[str, Any] = {}
    try:
        with scope:
            await progress.begin()
            server.active_runs[session].token = progress.token
            events = Events()
            events.subscribe(progress.on_event)
            events.subscribe(lambda event: server.run_history.event(record, event))
            result = await job(epoch, events, session)
            if result.status == "failed":
                show(server, types.MessageType.Error, f"{title} failed: {_said(result)}")
            end, extra = await finish(result)
            status = result.status
            return {**_summary(result, time.monotonic() - started), **extra}
        return {
            "sessionId": session,
            "status": "cancelled",
            "summary": "Cancelled.",
            "seconds": round(time.monotonic() - started, 3),
        }
    except ProviderError as exc:  # configuration/policy problems the pipeline re-raised
        end, status = f"Failed: {exc}", "failed"
        show(server, types.MessageType.Error, f"{title} failed: {exc}")
        return {"sessionId": session, "status": "failed", "summary": str(exc)}
    except Exception as exc:
        log.exception("%s crashed", title)
        end, status = f"Failed: internal error ({type(exc).__name__}); see the server log", "failed"
        show(server, types.MessageType.Error, f"{title}: {end}")
        raise
    finally:
        progress.end(end[:300])
        server.active_runs.pop(session, None)
        server.run_history.finish(record, result, status, end, extra)
        await server.release(epoch)


async def warn_missing_sandbox_layers(server: CouncilServer) -> None:
    """Once per server: tell the user which OS layers the sandbox lacks here, and the cost.

    A log line alone would go unseen; generated code is about to run on their machine.
    """
    if server.sandbox_checked:
        return
    server.sandbox_checked = True
    from council.sandbox.layers import check_layers

    missing = [layer for layer in await anyio.to_thread.run_sync(check_layers) if not layer.active]
    if missing:
        lost = "; ".join(f"{layer.name}: {layer.without}" for layer in missing)
        show(
            server,
            types.MessageType.Warning,
            f"The council's sandbox runs without {len(missing)} OS layer(s) on this machine "
            f"({lost}). Run `council sandbox --check` for details.",
        )


def show(server: CouncilServer, kind: types.MessageType, message: str) -> None:
    server.window_show_message(types.ShowMessageParams(type=kind, message=message[:1000]))


async def apply_edit(server: CouncilServer, planned: apply.Planned, label: str) -> bool:
    if planned.edit is None:
        show(server, types.MessageType.Warning, planned.message)
        return False
    result = await server.workspace_apply_edit_async(
        types.ApplyWorkspaceEditParams(edit=planned.edit, label=label)
    )
    if not result.applied:
        reason = result.failure_reason or "the editor refused it (the document changed?)"
        show(server, types.MessageType.Warning, f"{label}: not applied: {reason}")
    return bool(result.applied)


# -- reports ----------------------------------------------------------------------------------


def _said(result: Any) -> str:
    """A run's one-line account: the pipeline's summary, or what a deliberation lacked."""
    return (
        getattr(result, "summary", "")
        or "; ".join(getattr(result, "failed", []))
        or (result.status)
    )


def _summary(result: Any, seconds: float) -> dict[str, Any]:
    return {
        "sessionId": result.session_id,
        "status": result.status,
        "councilMode": getattr(result, "council_mode", "deliberate"),
        "summary": _said(result),
        "seconds": round(seconds, 3),
        "costUsd": result.cost_usd,
    }


def result_markdown(result: CouncilResult) -> str:
    out = [
        f"# Council run {result.session_id}",
        "",
        f"**Status:** {result.status} ({result.council_mode} mode, "
        f"{result.refinement_passes} refinements, {result.total_duration_secs:.1f}s)",
        "",
        result.summary,
        "",
    ]
    if result.answer:
        out += ["## Answer", "", result.answer, ""]
    for f in result.code.files if result.code else []:
        out += [f"## {f.path}", "", "```python", f.content.rstrip(), "```", ""]
    if result.test_report and result.test_report.execution:
        out += ["## Tests", "", result.test_report.execution.summary(), ""]
    chosen = report_lines(result.candidates, result.choice, result.disputed_tests)
    if chosen:
        out += ["## Candidates", "", *[f"- {line.strip()}" for line in chosen], ""]
    if result.usage:
        out += [
            "## Usage",
            "",
            "| role | provider:model | calls | tokens | cost |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {u.role} | {u.provider}:{u.model} | {u.calls} | "
            f"{'~' if u.estimated else ''}{u.prompt_tokens + u.completion_tokens} | "
            f"${u.cost_usd:.4f} |"
            for u in result.usage
        ]
        if any(u.estimated for u in result.usage):
            out += ["", "~ estimated: the server reported no token usage for some calls."]
    return "\n".join(out) + "\n"


async def write_report(server: CouncilServer, session: str, text: str) -> str:
    """Write the report outside the user's tree and ask the editor to show it."""
    folder = Path(tempfile.gettempdir()) / "council-reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session}.md"
    path.write_text(text, encoding="utf-8")
    uri = from_fs_path(str(path)) or str(path)
    if server.state.supports_show_document:
        try:
            await server.window_show_document_async(
                types.ShowDocumentParams(uri=uri, take_focus=True)
            )
        except Exception as exc:
            log.warning("window/showDocument failed: %s", exc)
    return uri
