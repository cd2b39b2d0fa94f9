"""The council commands' work: argument models, the run lifecycle, edits and reports.

`server.features.commands` registers the commands and imports this module on the first call
(or the warm-up thread does, after `initialized`): pydantic, anyio and the council schemas
it needs would otherwise be paid for before `initialize` is answered.

Arguments are one JSON object each (documented in the README); they are validated with
pydantic and a bad argument is a JSON-RPC InvalidParams error naming the field. Each run is a
cancellable task: `$/cancelRequest` for the command, `window/workDoneProgress/cancel` for its
progress token, or `council.cancel` all cancel it, which closes its HTTP requests and kills
its sandbox processes. Runs never block other requests: they await I/O only.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import anyio
from lsprotocol import types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import from_fs_path

from council.events import Events
from council.pool import report_lines
from council.schemas import CouncilRequest, CouncilResult, Diagnostic, RequestContext
from council.symbols import find_symbol, symbol_at
from providers.errors import ProviderError
from server import apply
from server.app import CouncilServer, Run
from server.diagnostics import publish
from server.features.commands import (
    ADD_TESTS,
    CANCEL,
    DEBUG,
    DELIBERATE,
    GENERATE,
    PROVIDERS,
    RUN,
)
from server.progress import ProgressReporter

log = logging.getLogger(__name__)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Pos(_Args):
    line: int = Field(ge=0)
    character: int = Field(ge=0)


class Span(_Args):
    start: Pos
    end: Pos


class FileArgs(_Args):
    """council.generate / council.debug / council.addTests."""

    uri: str
    symbol: str | None = None
    range: Span | None = None
    query: str | None = None
    failing_test: str | None = Field(None, alias="failingTest")
    traceback: str | None = None
    diagnostics: list[Diagnostic] = Field(default_factory=list)


class RunArgs(_Args):
    """council.run / council.deliberate."""

    query: str = Field(min_length=1)
    uri: str | None = None
    mode: Literal["generate", "debug", "tests", "freeform"] = "freeform"
    members: list[str] = Field(default_factory=list)


class CancelArgs(_Args):
    session_id: str | None = Field(None, alias="sessionId")


def _parse(model: type[BaseModel], params: types.ExecuteCommandParams) -> Any:
    args = params.arguments or [{}]
    if len(args) != 1 or not isinstance(args[0], dict):
        raise JsonRpcInvalidParams(f"{params.command} takes one object argument")
    try:
        return model.model_validate(args[0])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "argument"
        raise JsonRpcInvalidParams(f"{params.command}: {where}: {first['msg']}") from None


# -- the shared run wrapper ------------------------------------------------------------------


def _document(server: CouncilServer, uri: str) -> tuple[str, int | None]:
    doc = server.workspace.get_text_document(uri)
    try:
        text = doc.source
    except OSError as exc:
        raise JsonRpcInvalidParams(f"cannot read {uri}: {exc.strerror}") from None
    return text, doc.version


Finish = Callable[[Any], Awaitable[tuple[str, dict[str, Any]]]]
#: starts the run: (engine, events, session id) -> a result with session_id/status/summary
Job = Callable[[Any, Events, str], Awaitable[Any]]


async def _run(
    server: CouncilServer,
    params: types.ExecuteCommandParams,
    title: str,
    request: CouncilRequest,
    uri: str | None,
    finish: Finish,
) -> dict[str, Any]:
    """Run the council pipeline on ``request`` (see :func:`_track`)."""
    from council.pipeline import Council

    async def job(engine: Any, events: Events, session: str) -> CouncilResult:
        council = Council(engine.router, workspace=server.state.workspace)
        await _warn_missing_sandbox_layers(server)
        return await council.run(request, events=events, session_id=session)

    return await _track(server, params, title, uri, job, finish)


async def _track(
    server: CouncilServer,
    params: types.ExecuteCommandParams,
    title: str,
    uri: str | None,
    job: Job,
    finish: Finish,
) -> dict[str, Any]:
    """Every council command's run: one session id (the one registered for cancellation is
    the one the run reports), progress from the run's events, the engine held and released;
    ``finish`` applies the result and says how it ended.

    The progress always ends, and says how: with finish's message, the failure (a crash is
    reported as a failure, never as "Cancelled."), or "Cancelled." when it was."""
    engine = await server.ready_engine()
    engine.runs += 1
    session = uuid.uuid4().hex[:12]
    progress = ProgressReporter(server, params.work_done_token, title)
    scope = anyio.CancelScope()
    server.add_run(Run(session, title, scope, server.protocol.msg_id, None, uri))
    started = time.monotonic()
    end = "Cancelled."
    try:
        with scope:
            await progress.begin()
            server.runs[session].token = progress.token
            events = Events()
            events.subscribe(progress.on_event)
            result = await job(engine, events, session)
            if result.status == "failed":
                _show(server, types.MessageType.Error, f"{title} failed: {_said(result)}")
            end, extra = await finish(result)
            return {**_summary(result, time.monotonic() - started), **extra}
        return {
            "sessionId": session,
            "status": "cancelled",
            "summary": "Cancelled.",
            "seconds": round(time.monotonic() - started, 3),
        }
    except ProviderError as exc:  # configuration/policy problems the pipeline re-raised
        end = f"Failed: {exc}"
        _show(server, types.MessageType.Error, f"{title} failed: {exc}")
        return {"sessionId": session, "status": "failed", "summary": str(exc)}
    except Exception as exc:
        log.exception("%s crashed", title)
        end = f"Failed: internal error ({type(exc).__name__}); see the server log"
        _show(server, types.MessageType.Error, f"{title}: {end}")
        raise
    finally:
        progress.end(end[:300])
        server.runs.pop(session, None)
        await server.release(engine)


async def _warn_missing_sandbox_layers(server: CouncilServer) -> None:
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
        _show(
            server,
            types.MessageType.Warning,
            f"The council's sandbox runs without {len(missing)} OS layer(s) on this machine "
            f"({lost}). Run `council sandbox --check` for details.",
        )


def _show(server: CouncilServer, kind: types.MessageType, message: str) -> None:
    server.window_show_message(types.ShowMessageParams(type=kind, message=message[:1000]))


async def _apply(server: CouncilServer, planned: apply.Planned, label: str) -> bool:
    if planned.edit is None:
        _show(server, types.MessageType.Warning, planned.message)
        return False
    result = await server.workspace_apply_edit_async(
        types.ApplyWorkspaceEditParams(edit=planned.edit, label=label)
    )
    if not result.applied:
        reason = result.failure_reason or "the editor refused it (the document changed?)"
        _show(server, types.MessageType.Warning, f"{label}: not applied: {reason}")
    return bool(result.applied)


def _context(server: CouncilServer, args: FileArgs, text: str) -> tuple[RequestContext, str | None]:
    symbol = args.symbol
    selection = None
    if args.range is not None:
        lines = text.splitlines(keepends=True)
        start = sum(len(x) for x in lines[: args.range.start.line]) + args.range.start.character
        end = sum(len(x) for x in lines[: args.range.end.line]) + args.range.end.character
        selection = text[start:end] or None
        if symbol is None and selection is None:
            found = symbol_at(text, args.range.start.line)
            symbol = found.name if found else None
    kind = find_symbol(text, symbol).kind if symbol and find_symbol(text, symbol) else None
    ctx = RequestContext(
        file_path=server.relative(args.uri),
        file_text=text,
        selection=selection,
        symbol=symbol,
        symbol_kind=kind,
        diagnostics=args.diagnostics,
        failing_test=args.failing_test,
        traceback=args.traceback,
    )
    return ctx, symbol


# -- commands -----------------------------------------------------------------------------------


async def generate(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: FileArgs = _parse(FileArgs, params)
    text, version = _document(server, args.uri)
    ctx, symbol = _context(server, args, text)
    what = f"`{symbol}`" if symbol else "the selection"
    query = args.query or (
        f"Implement {what} as its signature and docstring describe."
        if symbol
        else "Implement what the selection or TODO describes."
    )

    async def finish(result: CouncilResult) -> tuple[str, dict[str, Any]]:
        if result.code is None or not result.code.files:
            return result.summary or "No code.", {"applied": False}
        current, current_version = _document(server, args.uri)
        planned = apply.plan_generate(
            args.uri, current, current_version, version, symbol, result.code.files[0].content
        )
        applied = await _apply(server, planned, "Council: Generate")
        message = planned.message if applied else "Not applied."
        return f"{result.status}: {message}", {"applied": applied, "message": planned.message}

    return await _run(
        server,
        params,
        f"Council: Generate {symbol or ''}".strip(),
        CouncilRequest(query=query, mode="generate", context=ctx),
        args.uri,
        finish,
    )


async def add_tests(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: FileArgs = _parse(FileArgs, params)
    text, _ = _document(server, args.uri)
    ctx, symbol = _context(server, args, text)
    query = args.query or f"Write thorough pytest tests for {symbol or 'this module'}."

    async def finish(result: CouncilResult) -> tuple[str, dict[str, Any]]:
        report = result.test_report
        if report is None or report.suite is None:
            return result.summary or "No tests.", {"applied": False}
        target = apply.test_file_for(server.state.workspace, ctx.file_path or "module.py")
        root = server.state.workspace or Path.cwd()
        test_uri = from_fs_path(str(root / target)) or ""
        open_doc = server.workspace.text_documents.get(test_uri)
        if open_doc is not None:
            existing, existing_version = open_doc.source, open_doc.version
        elif (root / target).is_file():
            existing, existing_version = (root / target).read_text(encoding="utf-8"), None
        else:
            existing, existing_version = None, None
        planned = apply.plan_tests(
            server.state.workspace,
            ctx.file_path or "module.py",
            report.suite,
            existing,
            existing_version,
        )
        applied = await _apply(server, planned, "Council: Add tests")
        ex = report.execution
        ran = ex.summary() if ex else report.note or report.verdict
        message = planned.message if applied else "Not applied."
        return f"{message} Sandbox: {ran}", {
            "applied": applied,
            "message": planned.message,
            "testFile": planned.target_uri,
            "passed": ex.passed if ex else 0,
            "failed": (ex.failed + ex.errors) if ex else 0,
        }

    return await _run(
        server,
        params,
        f"Council: Add tests for {symbol or ctx.file_path}",
        CouncilRequest(query=query, mode="tests", context=ctx),
        args.uri,
        finish,
    )


async def debug(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: FileArgs = _parse(FileArgs, params)
    text, version = _document(server, args.uri)
    ctx, symbol = _context(server, args, text)
    query = args.query or f"Find and fix the bugs in {symbol or 'this file'}."

    async def finish(result: CouncilResult) -> tuple[str, dict[str, Any]]:
        diagnosis = result.diagnosis or result.debug_report
        bugs = diagnosis.bugs if diagnosis else []
        current, current_version = _document(server, args.uri)
        if current_version != version:
            return (
                "The document changed while the council ran; diagnostics not published.",
                {"bugs": len(bugs)},
            )
        fix = None
        if result.code and result.code.files:
            fix = apply.plan_generate(
                args.uri, current, current_version, version, symbol, result.code.files[0].content
            ).edit
        publish(server, args.uri, current_version, bugs, current.splitlines(), fix)
        return f"{len(bugs)} bug(s) found. {result.summary}", {"bugs": len(bugs)}

    return await _run(
        server,
        params,
        f"Council: Debug {symbol or ctx.file_path}",
        CouncilRequest(query=query, mode="debug", context=ctx),
        args.uri,
        finish,
    )


async def run_query(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: RunArgs = _parse(RunArgs, params)
    ctx = RequestContext()
    if args.uri:
        text, _ = _document(server, args.uri)
        ctx = RequestContext(file_path=server.relative(args.uri), file_text=text)

    async def finish(result: CouncilResult) -> tuple[str, dict[str, Any]]:
        report = await _report(server, result.session_id, _markdown(result))
        return result.summary or result.status, {"report": report}

    return await _run(
        server,
        params,
        f"Council: {args.query[:40]}",
        CouncilRequest(query=args.query, mode=args.mode, context=ctx),
        args.uri,
        finish,
    )


async def deliberate_query(
    server: CouncilServer, params: types.ExecuteCommandParams
) -> dict[str, Any]:
    args: RunArgs = _parse(RunArgs, params)
    from providers.settings import Tier

    members = [Tier(target=m) for m in args.members] or None

    async def job(engine: Any, events: Events, session: str) -> Any:
        from council.consensus import deliberate

        return await deliberate(
            engine.router, args.query, members=members, events=events, session_id=session
        )

    async def finish(result: Any) -> tuple[str, dict[str, Any]]:
        report = await _report(server, result.session_id, _deliberation_markdown(args, result))
        end = f"{result.status}: {len(result.standings)} members ranked"
        return end, {"report": report, "finalAnswer": result.final_answer}

    return await _track(server, params, "Council: Deliberate", args.uri, job, finish)


def _deliberation_markdown(args: RunArgs, result: Any) -> str:
    lines = [
        f"# Council deliberation\n\n**Question:** {args.query}\n",
        "| rank | member | Borda | agreement |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s.position} | {s.member} | {s.borda:g} | "
        f"{'—' if s.agreement is None else s.agreement} |"
        for s in result.standings
    ]
    lines += ["", "## Final answer", "", result.final_answer or "_none_"]
    if result.dissent:
        lines += ["", "## Dissent", *[f"- {d}" for d in result.dissent]]
    if result.failed:
        lines += ["", "## Failed members", *[f"- {f}" for f in result.failed]]
    return "\n".join(lines) + "\n"


async def cancel(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: CancelArgs = _parse(CancelArgs, params)
    cancelled = []
    for session, run in list(server.runs.items()):
        if args.session_id in (None, session):
            run.scope.cancel()
            cancelled.append(session)
    return {"cancelled": cancelled}


async def providers(server: CouncilServer, params: types.ExecuteCommandParams) -> list[Any]:
    from providers.probe import ProbeCache, default_cache_path, probe_all

    engine = await server.ready_engine()
    settings = engine.settings
    rows = await probe_all(
        settings,
        engine.router.providers,
        cache=ProbeCache(default_cache_path(), settings.router.probe_cache_ttl_secs),
        health=engine.router.health,
    )
    return [r.model_dump() for r in rows]


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


def _markdown(result: CouncilResult) -> str:
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


async def _report(server: CouncilServer, session: str, text: str) -> str:
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


Handler = Callable[[CouncilServer, types.ExecuteCommandParams], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {
    GENERATE: generate,
    DEBUG: debug,
    ADD_TESTS: add_tests,
    RUN: run_query,
    DELIBERATE: deliberate_query,
    CANCEL: cancel,
    PROVIDERS: providers,
}
