"""The council commands' work: Generate, Debug, Add tests, Run, Deliberate, Cancel, Providers.

`server.features.commands` registers the commands and imports this module on the first call
(or the warm-up thread does, after `initialized`): pydantic, anyio and the council schemas
it needs would otherwise be paid for before `initialize` is answered. Every command that runs
the council goes through `server.run_tracking`; this module builds the request from the
document and turns the result into edits, diagnostics or a report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.uris import from_fs_path

from council.events import Events
from council.schemas import CouncilRequest, CouncilResult, RequestContext
from council.symbols import find_symbol, symbol_at
from server import apply
from server.app import CouncilServer
from server.command_args import CancelArgs, FileArgs, RunArgs, parse_args
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
from server.run_tracking import (
    apply_edit,
    document_text,
    result_markdown,
    show,
    track,
    track_council,
    write_report,
)


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
    if server.workspace_index is not None:  # definitions, tests, similar code from the index
        ctx.workspace_snippets = server.workspace_index.council_snippets(
            args.uri, text, symbol, selection
        )
    return ctx, symbol


def reviews(server: CouncilServer) -> bool:
    """Whether the council's edits go to the user for review (`council.confirm_edits`, and a
    client that understands change annotations); otherwise they apply at once."""
    return server.settings.council.confirm_edits and apply.client_reviews(
        server.client_capabilities
    )


def _described(result: CouncilResult) -> str:
    """The run's outcome, shown next to the change it asks the user to confirm."""
    text = f"{result.status}: {result.summary}" if result.summary else result.status
    return text if len(text) <= 300 else text[:297] + "..."


async def send_edit(
    server: CouncilServer, planned: apply.Planned, label: str, description: str
) -> tuple[bool, str | None]:
    """Send ``planned`` with `workspace/applyEdit`, for review when `reviews` says so.

    Returns (applied, why not); why-not is None when there was no edit to send (the planned
    message, shown to the user, says why). A rejection in review is the user's choice and is
    not shown again; any other refusal is."""
    if planned.edit is None:
        show(server, types.MessageType.Warning, planned.message)
        return False, None
    reviewed = reviews(server)
    edit = apply.for_review(planned.edit, label, description) if reviewed else planned.edit
    try:
        result = await server.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=label)
        )
        applied, failure = bool(result.applied), result.failure_reason
    except Exception as exc:  # an editor may answer with an error instead of applied: false
        applied, failure = False, f"the editor failed to apply it ({exc})"
    if applied:
        return True, None
    versions = {uri: doc.version for uri, doc in server.workspace.text_documents.items()}
    reason = apply.refusal(failure, reviewed, apply.changed_since(planned.edit, versions))
    if reason != apply.REJECTED:
        show(server, types.MessageType.Warning, f"{label}: not applied: {reason}")
    return False, reason


# -- commands -----------------------------------------------------------------------------------


async def generate(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: FileArgs = parse_args(FileArgs, params)
    text, version = document_text(server, args.uri)
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
        current, current_version = document_text(server, args.uri)
        planned = apply.plan_generate(
            args.uri, current, current_version, version, symbol, result.code.files[0].content
        )
        label = f"Council: Generate {symbol or 'the selection'}"
        applied, reason = await send_edit(server, planned, label, _described(result))
        if applied or reason is None:  # applied, or nothing to apply (planned.message says why)
            return f"{result.status}: {planned.message}", {
                "applied": applied,
                "message": planned.message,
            }
        message = f"Not applied: {reason}."
        return f"{result.status}: {message}", {
            "applied": False,
            "message": message,
            "reason": reason,
        }

    return await track_council(
        server,
        params,
        f"Council: Generate {symbol or ''}".strip(),
        CouncilRequest(query=query, mode="generate", context=ctx),
        args.uri,
        finish,
    )


async def add_tests(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: FileArgs = parse_args(FileArgs, params)
    text, _ = document_text(server, args.uri)
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
        applied = await apply_edit(server, planned, "Council: Add tests")
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

    return await track_council(
        server,
        params,
        f"Council: Add tests for {symbol or ctx.file_path}",
        CouncilRequest(query=query, mode="tests", context=ctx),
        args.uri,
        finish,
    )


async def debug(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: FileArgs = parse_args(FileArgs, params)
    text, version = document_text(server, args.uri)
    ctx, symbol = _context(server, args, text)
    query = args.query or f"Find and fix the bugs in {symbol or 'this file'}."

    async def finish(result: CouncilResult) -> tuple[str, dict[str, Any]]:
        diagnosis = result.diagnosis or result.debug_report
        bugs = diagnosis.bugs if diagnosis else []
        current, current_version = document_text(server, args.uri)
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
        if fix is not None and reviews(server):
            # the quick fix is the code action's own edit: the editor applies it without
            # asking the server, so the annotation must be on it from the start
            what = symbol or ctx.file_path or "the file"
            fix = apply.for_review(fix, f"Council: Debug fix for {what}", _described(result))
        publish(server, args.uri, current_version, bugs, current.splitlines(), fix)
        return f"{len(bugs)} bug(s) found. {result.summary}", {"bugs": len(bugs)}

    return await track_council(
        server,
        params,
        f"Council: Debug {symbol or ctx.file_path}",
        CouncilRequest(query=query, mode="debug", context=ctx),
        args.uri,
        finish,
    )


async def run_query(server: CouncilServer, params: types.ExecuteCommandParams) -> dict[str, Any]:
    args: RunArgs = parse_args(RunArgs, params)
    ctx = RequestContext()
    if args.uri:
        text, _ = document_text(server, args.uri)
        ctx = RequestContext(file_path=server.relative(args.uri), file_text=text)

    async def finish(result: CouncilResult) -> tuple[str, dict[str, Any]]:
        report = await write_report(server, result.session_id, result_markdown(result))
        return result.summary or result.status, {"report": report}

    return await track_council(
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
    args: RunArgs = parse_args(RunArgs, params)
    from providers.settings import Tier

    members = [Tier(target=m) for m in args.members] or None

    async def job(epoch: Any, events: Events, session: str) -> Any:
        from council.consensus import deliberate

        return await deliberate(
            epoch.router, args.query, members=members, events=events, session_id=session
        )

    async def finish(result: Any) -> tuple[str, dict[str, Any]]:
        report = await write_report(server, result.session_id, _deliberation_markdown(args, result))
        end = f"{result.status}: {len(result.standings)} members ranked"
        return end, {"report": report, "finalAnswer": result.final_answer}

    return await track(server, params, "Council: Deliberate", args.uri, job, finish)


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
    args: CancelArgs = parse_args(CancelArgs, params)
    cancelled = []
    for session, run in list(server.active_runs.items()):
        if args.session_id in (None, session):
            run.scope.cancel()
            cancelled.append(session)
    return {"cancelled": cancelled}


async def providers(server: CouncilServer, params: types.ExecuteCommandParams) -> list[Any]:
    from providers.probe import ProbeCache, default_cache_path, probe_all

    epoch = await server.ready_epoch()
    settings = epoch.settings
    rows = await probe_all(
        settings,
        epoch.router.providers,
        cache=ProbeCache(default_cache_path(), settings.router.probe_cache_ttl_secs),
        health=epoch.router.health,
    )
    return [r.model_dump() for r in rows]


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
