"""`council/runs`, `council/run` and `council/runsChanged`: a view of each council run.

"What did it do?" is the question users of the peer tools ask most when a suggestion is
wrong or nothing happens. The server keeps every run it tracks (`server.run_history`: those
in flight and the last 50 finished) and any client can show them:

- `council/runs` (request, params ignored) -> `{"runs": [summary, ...], "limit": 50}`, newest
  first; a summary is `{sessionId, title, command, status, uri, mode, startedAt, finishedAt,
  seconds, stage, tokens, costUsd, summary}` (`status`: running, approved, best_effort,
  failed, cancelled; times in seconds, `startedAt`/`finishedAt` since the epoch; `stage`:
  the stage in progress, e.g. "review: tester").
- `council/run` (request, `{sessionId, markdown?}`) -> the summary plus `stages` (`{stage,
  role, passNo, provider, model, status, offset, seconds, tokens, costUsd, detail}`), `usage`
  by role, `original` (`{path, text}`, the target before the run), `candidates` (`{id, passNo,
  provider, model, chosen, evidence, passed, failed, files: [{path, content}], proposed}`:
  `proposed` is the target file with that candidate applied; diff `original.text` against
  it), `suites`, `tests` (`{candidate, suite, test, outcome, message, disputed}`, case by
  case), `disputed`, `choice`, `answer`, `transcript` (`{stage, role, passNo, provider, model,
  seconds, prompt, response, error}` per model call), `errors`, `outcome` (what the command
  answered: applied, report, ...); with `markdown: true`, also `markdown`, the whole run as
  one Markdown report, so that clients need not each write one. An unknown (or expired)
  session is InvalidParams.
- `council/runsChanged` (notification) `{sessionId, status, event, stage}` when a run starts
  (`event`: "started"), starts or finishes a stage ("stage") and ends ("finished").

Texts are cut to bound memory (code at 40,000 characters, prompts and answers at 4,000).
"""

from __future__ import annotations

import re
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

from server.app import CouncilServer
from server.run_history import RunRecord

RUNS, RUN, CHANGED = "council/runs", "council/run", "council/runsChanged"


def setup(server: CouncilServer) -> None:
    history = server.run_history

    def changed(record: RunRecord, why: str) -> None:
        server.protocol.notify(
            CHANGED,
            {
                "sessionId": record.session_id,
                "status": record.status,
                "event": why,
                "stage": record.current,
            },
        )

    history.listeners.append(changed)

    @server.feature(RUNS)
    def runs(ls: CouncilServer, params: Any) -> dict[str, Any]:
        return {"runs": history.summaries(), "limit": history.limit}

    @server.feature(RUN)
    def run(ls: CouncilServer, params: Any) -> dict[str, Any]:
        session = _param(params, "sessionId")
        if not isinstance(session, str):
            raise JsonRpcInvalidParams(f"{RUN}: sessionId must be a string")
        record = history.get(session)
        if record is None:
            raise JsonRpcInvalidParams(
                f"{RUN}: no run {session!r} (the server keeps the last {history.limit})"
            )
        details = record.details_json()
        if _param(params, "markdown") is True:
            details["markdown"] = markdown(details)
        return details


def _param(params: Any, name: str) -> Any:
    if isinstance(params, dict):
        return params.get(name)
    return getattr(params, name, None)


# -- the report ----------------------------------------------------------------------------------


def _who(item: dict[str, Any]) -> str:
    return f"{item['provider']}:{item['model']}" if item.get("provider") else "-"


def _fenced(text: str, lang: str) -> list[str]:
    """A code block whose fence no backtick run inside ``text`` can close (prompts quote
    Markdown fences)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", text.rstrip(), fence, ""]


def _money(value: float) -> str:
    return f"${value:.4f}"


def markdown(d: dict[str, Any]) -> str:
    """One run as Markdown: what the editors open as a run's report."""
    out = [f"# {d['title']}", ""]
    out.append(
        f"**{d['status']}** · {d['seconds']:.1f}s · {d['tokens']} tokens · "
        f"{_money(d['costUsd'])} · session `{d['sessionId']}` · `{d['command']}`"
    )
    out += ["", d["summary"] or "", ""]
    if d.get("query"):
        out += [f"> {d['query']}", ""]
    if d["stages"]:
        out += [
            "## Stages",
            "",
            "| stage | role | provider:model | status | time | tokens | cost |",
        ]
        out.append("|---|---|---|---|---|---|---|")
        for s in d["stages"]:
            secs = "-" if s["seconds"] is None else f"{s['seconds']:.2f}s"
            name = f"{s['stage']} (pass {s['passNo']})" if s["passNo"] else s["stage"]
            out.append(
                f"| {name} | {s['role']} | {_who(s)} | {s['status']} | "
                f"{secs} | {s['tokens']} | {_money(s['costUsd'])} |"
            )
        out.append("")
    if d.get("choice"):
        out += ["## Chosen", "", d["choice"], ""]
    for c in d["candidates"]:
        mark = " (chosen)" if c["chosen"] else ""
        out += [f"## Candidate {c['id']}{mark}", "", f"{_who(c)} · {c['evidence']}", ""]
        for f in c["files"]:
            out += [f"`{f['path']}`", "", *_fenced(f["content"], "python")]
    if d["tests"]:
        out += ["## Tests", "", "| candidate | suite | test | outcome | message |"]
        out.append("|---|---|---|---|---|")
        for t in d["tests"]:
            message = " ".join(t["message"].split())[:160].replace("|", "\\|")
            flag = " (disputed)" if t["disputed"] else ""
            out.append(
                f"| {t['candidate'] or '-'} | {t['suite']} | {t['test']} | "
                f"{t['outcome']}{flag} | {message} |"
            )
        out.append("")
    if d.get("answer"):
        out += ["## Answer", "", d["answer"], ""]
    if d["errors"]:
        out += ["## Errors", "", *[f"- {e}" for e in d["errors"]], ""]
    if d["transcript"]:
        out += ["## Transcript", ""]
        for i, call in enumerate(d["transcript"], 1):
            title = f"{call['stage']} · {call['role']} · {_who(call)} · {call['seconds']:.2f}s"
            out += [f"### {i}. {title}"]
            out += ["", "Prompt:", "", *_fenced(call["prompt"], "text")]
            if call.get("error"):
                out += [f"Error: {call['error']}", ""]
            else:
                out += ["Answer:", "", *_fenced(call["response"], "text")]
    return "\n".join(out).rstrip() + "\n"
