"""Every prompt the council sends, in one place.

One system prompt per role, plus small builders that lay out the user message from typed
inputs. `PROMPT_VERSION` changes whenever any text here changes, and is recorded in each
result's transcript, so a behaviour change can be traced to a prompt change.

The prompts are written for small models: short, imperative, one job each, with the output
format stated last (the JSON schema itself is sent separately, through the provider's JSON
mode or appended by the client when the provider has none).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from council.schemas import (
    CodeBundle,
    CouncilRequest,
    DebugReport,
    Plan,
    TechManifest,
    TestReport,
)

PROMPT_VERSION = "2026-12-02.1"

ORCHESTRATOR_DECOMPOSE = """\
You are the orchestrator of a small team of coding agents: a researcher, a generator, a
debugger and a tester. Turn the user's request into a plan: the goal in one sentence, one
concrete task for each agent that has work to do, and acceptance criteria the tester can
check. Do not write the code yourself. Answer with JSON only."""

RESEARCHER = """\
You are the team's technical researcher. Given the plan, write a short tech manifest: the
approach, the standard-library or well-known APIs to use, third-party dependencies (prefer
none), and the pitfalls and edge cases the generator must handle. Be specific and brief.
Answer with JSON only."""

GENERATOR = """\
You are the team's code generator. Write complete, working, type-hinted Python that does
exactly what the plan asks, following the tech manifest. Return every file you write in
full (no placeholders, no "rest unchanged"). Keep the existing names and signatures the
context shows. If you received feedback, fix precisely what it says. Answer with JSON only."""

DEBUGGER = """\
You are the team's debugger. Read the code line by line, trace it on the edge cases, and
report real bugs only: the line, how severe, what goes wrong, and the fix. Use the verdict
"fail" if you found any bug, else "pass". Answer with JSON only."""

DEBUGGER_FIX = """\
You are the team's debugger. The user says this code is broken; a failing test or a
traceback may be attached. Find the bugs (line, severity, what goes wrong, the fix) and
return the whole corrected file in fixed_code, keeping everything that was not broken.
Answer with JSON only."""

TESTER = """\
You are the team's tester. Write one pytest module that checks the code against the plan's
acceptance criteria, including edge cases and error handling. Import the code under test
from its module (the module name is the file name without .py). Tests must be
deterministic, need no network and no files outside the current directory, and each must
finish in well under a second. Answer with JSON only."""

ORCHESTRATOR_SYNTHESISE = """\
You are the orchestrator. Decide whether the code is done. You get the plan, the code, the
debugger's report and the result of actually running the tester's tests. APPROVE only if
the tests pass and no real bug remains. Otherwise REFINE and give each agent that must act
one targeted instruction; when a test fails, name the failing test and quote its error.
Score your confidence from 0 to 1. Answer with JSON only."""

FREEFORM = """\
You are a senior Python engineer answering a question from inside the user's editor. Answer
directly and concisely in Markdown; include code only when it helps, complete and
runnable. Answer with JSON only."""

CONSENSUS_MEMBER = """\
You are one member of a council of engineers. Answer the question as well as you can, on
your own. Be concrete; include code when it helps."""

CONSENSUS_RANKER = """\
You are reviewing anonymous answers to a question, labelled with letters. Judge accuracy,
completeness and clarity. Return every label exactly once, best first, with one short
reason per answer. Answer with JSON only."""

CONSENSUS_CHAIRMAN = """\
You chair a council of engineers. You get the question, each answer with its rank from the
peer review, and where the reviewers disagreed. Write the council's final answer: keep
what the best-ranked answers agree on, resolve conflicts explicitly, and list the points
where members dissented and you did not follow them. Answer with JSON only."""


def _block(title: str, text: str | None) -> str:
    return f"## {title}\n{text.strip()}\n" if text and text.strip() else ""


def describe_request(request: CouncilRequest) -> str:
    """The user's request with its editor context, as every role sees it."""
    ctx = request.context
    parts = [f"## Request ({request.mode}, {request.language})\n{request.query.strip()}\n"]
    if ctx.file_path:
        parts.append(f"## File\n{ctx.file_path}\n")
    if ctx.symbol:
        parts.append(f"## Symbol\n{ctx.symbol_kind or 'symbol'} {ctx.symbol}\n")
    parts.append(_block("Selection", ctx.selection))
    if ctx.file_text:
        parts.append(f"## File content\n```python\n{ctx.file_text.rstrip()}\n```\n")
    if ctx.diagnostics:
        lines = "\n".join(f"- line {d.line}: {d.severity}: {d.message}" for d in ctx.diagnostics)
        parts.append(f"## Diagnostics\n{lines}\n")
    parts.append(_block("Failing test", ctx.failing_test))
    parts.append(_block("Traceback", ctx.traceback))
    for related in ctx.related_files[:4]:
        parts.append(f"## Related file {related.path}\n```python\n{related.text[:4000]}\n```\n")
    return "\n".join(p for p in parts if p)


_REASONS = {
    "definition": "definition of `{name}`, which the code uses",
    "test": "test exercising it: `{name}`",
    "similar": "similar code: `{name}`",
}


def workspace_code(request: CouncilRequest) -> str:
    """The workspace code the server's index picked (definitions of the names the target
    uses, tests that exercise it, similar functions), for the researcher and the generator:
    they need the real signatures and conventions of code they cannot see otherwise."""
    snippets = request.context.workspace_snippets
    if not snippets:
        return ""
    parts = [
        "## Workspace code (other files of the project, for reference: use these names and "
        "signatures, do not rewrite them)"
    ]
    for s in snippets:
        why = _REASONS[s.reason].format(name=s.name)
        parts.append(
            f"### {s.path}:{s.start_line}-{s.end_line} ({why})\n```python\n{s.text.rstrip()}\n```"
        )
    return "\n".join(parts) + "\n"


def dump(model: object) -> str:
    if hasattr(model, "model_dump"):
        return json.dumps(model.model_dump(exclude_none=True), indent=1)
    return json.dumps(model, indent=1)


def code_text(bundle: CodeBundle) -> str:
    return "\n".join(f"### {f.path}\n```python\n{_numbered(f.content)}\n```" for f in bundle.files)


def _numbered(text: str) -> str:
    return "\n".join(f"{i:4d}| {line}" for i, line in enumerate(text.splitlines(), 1))


def research_prompt(request: CouncilRequest, plan: Plan, feedback: list[str]) -> str:
    return "\n".join(
        p
        for p in [
            describe_request(request),
            workspace_code(request),
            f"## Plan\n{dump(plan)}",
            _block("Feedback from the orchestrator", "\n".join(feedback)),
        ]
        if p
    )


def generate_prompt(
    request: CouncilRequest,
    plan: Plan,
    manifest: TechManifest | None,
    previous: CodeBundle | None,
    feedback: list[str],
    target_path: str,
) -> str:
    parts = [
        describe_request(request),
        workspace_code(request),
        f"## Plan\n{dump(plan)}",
        f"## Tech manifest\n{dump(manifest)}" if manifest else "",
        f"## Write the code to\n{target_path}\n",
    ]
    if previous is not None:
        parts.append(f"## Your previous version\n{code_text(previous)}")
    parts.append(_block("Feedback you must address", "\n".join(f"- {f}" for f in feedback)))
    return "\n".join(p for p in parts if p)


def debug_prompt(
    request: CouncilRequest, plan: Plan | None, code: CodeBundle, feedback: list[str]
) -> str:
    return "\n".join(
        [
            describe_request(request),
            f"## Plan\n{dump(plan)}" if plan else "",
            f"## Code (line numbers added)\n{code_text(code)}",
            _block("Feedback you must address", "\n".join(f"- {f}" for f in feedback)),
        ]
    )


def test_prompt(
    request: CouncilRequest, plan: Plan | None, code: CodeBundle, module: str, feedback: list[str]
) -> str:
    return "\n".join(
        [
            describe_request(request),
            f"## Plan\n{dump(plan)}" if plan else "",
            f"## Code under test (module `{module}`)\n{code_text(code)}",
            _block("Feedback you must address", "\n".join(f"- {f}" for f in feedback)),
        ]
    )


def synthesis_prompt(
    request: CouncilRequest,
    plan: Plan,
    code: CodeBundle,
    debug: DebugReport | None,
    tests: TestReport | None,
    pass_no: int,
    passes_left: int,
    *,
    disputed: Sequence[str] = (),
    disputed_nodeids: frozenset[str] = frozenset(),
    standing: str = "",
) -> str:
    """What the orchestrator judges: the best candidate so far, its debugger report, its
    real test run with the *disputed* tests (they fail code that the docstring examples and
    the debugger accept, so the test may be what is wrong) shown apart from the others."""
    evidence = "not run"
    if tests is not None and tests.execution is not None:
        ex = tests.execution
        failing = [
            c
            for c in ex.cases
            if c.outcome in ("failed", "error") and c.nodeid not in disputed_nodeids
        ]
        evidence = ex.summary() + "".join(
            f"\n- {c.outcome.upper()} {c.name}: {c.message[:600]}" for c in failing[:8]
        )
    elif tests is not None:
        evidence = f"{tests.verdict}: {tests.note}"
    return "\n".join(
        p
        for p in [
            describe_request(request),
            f"## Plan\n{dump(plan)}",
            f"## Code (pass {pass_no})\n{code_text(code)}",
            f"## Evidence for this candidate (best of the run so far)\n{standing}"
            if standing
            else "",
            f"## Debugger report\n{dump(debug)}" if debug else "## Debugger report\nnone",
            f"## Test execution (real run)\n{evidence}",
            _block(
                "Disputed tests (they fail code that passes every docstring example and that "
                "the debugger accepts: the test may be wrong; those left out of the evidence "
                "do not block approval)",
                "\n".join(f"- {d}" for d in disputed),
            ),
            f"## Refinement passes left\n{passes_left}",
        ]
        if p
    )
