"""A finished run's candidates and test cases as the run views show them.

Each candidate comes with its code and, when the run had a target file, `proposed`: that
file as the candidate would leave it, made the way Generate and Debug apply their result
(the first file; on a symbol, only that symbol replaced). A view then diffs the original
against it and shows what accepting the candidate would change, not a whole file against
a lone function. Test results are listed case by case for every candidate (the pool runs
every suite against every candidate), with pytest's message where the run kept one: for
the chosen candidate's report and for disputed cases.
"""

from __future__ import annotations

from typing import Any

from council.pool import Pool
from council.symbols import replace_symbol, symbol_source
from server.run_history import CODE_CHARS, MAX_FILES, RunRecord, cut

MESSAGE_CHARS = 600


def candidates(record: RunRecord, result: Any, limit: int) -> list[dict[str, Any]]:
    found = list(getattr(result, "candidates", []))
    choice = getattr(result, "choice", None)
    chosen = choice.winner if choice is not None else None
    pool = Pool(
        examples=max((len(c.evidence.examples) for c in found), default=0),
        candidates=found,
        suites=list(getattr(result, "suites", [])),
    )
    out = []
    for c in found[:limit]:
        ev = c.evidence
        try:
            evidence = pool.explain(c)
        except Exception:  # a summary line is a nicety; the cases are listed anyway
            evidence = ""
        out.append(
            {
                "id": c.id,
                "passNo": c.pass_no,
                "index": c.index,
                "provider": c.provider,
                "model": c.model,
                "samples": c.samples,
                "chosen": c.id == chosen,
                "evidence": evidence,
                "passed": sum(o == "passed" for o in ev.cases.values()),
                "failed": sum(o != "passed" for o in ev.cases.values()),
                "debugger": ev.debugger,
                "bugs": ev.bugs[:8],
                "staticErrors": ev.static_errors[:8],
                "files": [
                    {"path": f.path, "content": cut(f.content, CODE_CHARS)}
                    for f in c.code.files[:MAX_FILES]
                ],
                "proposed": _proposed(record, c.code.files),
            }
        )
    return out


def _proposed(record: RunRecord, files: list[Any]) -> str | None:
    """The target file with this candidate applied, or None when there is no target."""
    if record.original is None or not files:
        return None
    text, path = record.original["text"], record.original["path"]
    main = next((f for f in files if f.path == path), None)
    if main is None and record.mode in ("generate", "debug"):
        main = files[0]  # what Generate and Debug apply, whatever the model named it
    if main is None:
        return None
    if record.symbol and record.mode in ("generate", "debug"):
        try:
            found = symbol_source(main.content, record.symbol, loose=True)
            if found is not None:
                return cut(replace_symbol(text, record.symbol, found[0]), CODE_CHARS)
        except (KeyError, SyntaxError, ValueError):
            pass  # the symbol is gone from the original: show the candidate's file
    return cut(main.content, CODE_CHARS)


def tests(result: Any, limit: int) -> list[dict[str, Any]]:
    """`{candidate, suite, test, outcome, message, disputed}` per case and candidate."""
    choice = getattr(result, "choice", None)
    chosen = choice.winner if choice is not None else None
    report = getattr(result, "test_report", None)
    execution = report.execution if report is not None else None
    messages = {
        case.nodeid.split("::", 1)[-1]: case.message
        for case in (execution.cases if execution else [])
    }
    disputes = {d.case: d for d in getattr(result, "disputed_tests", [])}
    out: list[dict[str, Any]] = []

    def add(candidate: str | None, suite: str, test: str, outcome: str, message: str) -> None:
        if len(out) < limit:
            out.append(
                {
                    "candidate": candidate,
                    "suite": suite,
                    "test": test,
                    "outcome": outcome,
                    "message": cut(message, MESSAGE_CHARS),
                    "disputed": f"{suite}::{test}" in disputes,
                }
            )

    for c in getattr(result, "candidates", []):
        ev = c.evidence
        for key, outcome in ev.cases.items():
            suite, _, test = key.partition("::")
            dispute = disputes.get(key)
            message = dispute.message if dispute is not None else ""
            if c.id == chosen and outcome != "passed":
                message = messages.get(test, "") or message
            add(c.id, suite, test, outcome, message)
        for name, outcome in ev.examples.items():
            add(c.id, "examples", name, outcome, messages.get(name, "") if c.id == chosen else "")
        for suite, error in ev.suite_errors.items():
            add(c.id, suite, "(the suite)", "error", error)
    if not out and execution is not None:  # tests mode: the written suite run on the code
        suite = report.suite.path if report.suite is not None else "tests"
        for case in execution.cases:
            add(None, suite, case.nodeid.split("::", 1)[-1], case.outcome, case.message)
    return out
