"""Local council mode: the council, honestly degraded, when no chat model is reachable.

- Generator: the completion model (the `[completion] backend`: the in-process specialist,
  the shipped model by default, or any FIM-capable provider) samples several candidate
  bodies for the stub, by fill-in-the-middle.
- Tester: the examples and asserts in the docstring, plus the workspace's existing tests
  that use the symbol, really executed in the sandbox against every candidate.
- Debugger: static analysis (pyflakes and ast checks).
- Synthesis: the candidate with the best execution evidence, then the fewest static
  problems. Approved only when there were tests and the winner passed all of them with no
  static errors; otherwise best effort, and the summary says which mode ran and what it knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio

from council.events import Events
from council.evidence import CrossExecutor
from council.examples import (
    Example,
    docstring_examples,
    examples_test_module,
    existing_tests_for,
)
from council.pool import Pool
from council.run_scope import RunScope
from council.sandbox import ExecutionResult, SandboxLimits, run_tests
from council.schemas import (
    Bug,
    CodeBundle,
    CodeFile,
    CouncilRequest,
    CouncilResult,
    DebugReport,
    StaticFinding,
    TestReport,
    TestSuite,
)
from council.static import Finding, analyse
from council.symbols import find_definition, parse, split_lines, stub_body, stub_form
from providers.base import CompletionRequest
from providers.budget import Ledger
from providers.errors import ProviderError
from providers.router import Router
from providers.settings import Tier

LOCAL_NOTE = "Local council mode: no chat model was reachable"
Emit = Callable[..., None]


@dataclass
class _Job:
    """Everything one local-mode run needs, so the per-mode steps take one argument."""

    router: Router
    result: CouncilResult
    request: CouncilRequest
    module: str
    path: str
    tests: dict[str, str]
    limits: SandboxLimits
    python: str | None
    emit: Emit
    ledger: Ledger
    examples: list[Example]
    existing: dict[str, str]

    async def execute(self, code: dict[str, str], tests: dict[str, str]) -> ExecutionResult | None:
        if not tests:
            return None
        return await run_tests(
            {**code, **tests}, test_paths=list(tests), limits=self.limits, python=self.python
        )


def completion_tier(router: Router) -> Tier | None:
    backend = router.settings.completion.backend
    if ":" not in backend:
        return None
    return Tier(target=backend)


def split_stub(text: str, symbol: str) -> tuple[str, str, str] | None:
    """(prefix, suffix, indent) around the stub body of function `symbol`, for FIM.

    Any stub form `council.symbols` recognises qualifies (`pass`, `...`, `raise
    NotImplementedError`, a docstring alone); the docstring stays in the prefix, the model
    writes what follows it. None when `symbol` is not a stub function in `text`.
    """
    tree = parse(text)
    node = find_definition(tree, symbol) if tree is not None else None
    if node is None or stub_form(node) is None:
        return None
    lines = split_lines(text)

    def offset(line: int, column: int) -> int:  # ast positions: 1-based line, UTF-8 column
        return sum(len(x) for x in lines[: line - 1]) + len(
            lines[line - 1].encode()[:column].decode(errors="ignore")
        )

    docstring, last = stub_body(node)
    def_line = lines[node.lineno - 1]
    block_indent = def_line[: len(def_line) - len(def_line.lstrip())] + "    "
    if last is None:  # a docstring and nothing else: the body goes after it
        assert docstring is not None and docstring.end_lineno is not None
        at = offset(docstring.end_lineno, docstring.end_col_offset or 0)
        indent = " " * docstring.col_offset
        return text[:at] + "\n" + indent, text[at:], indent
    first = node.body[1 if docstring is not None else 0]
    assert last.end_lineno is not None
    start = offset(first.lineno, first.col_offset)
    end = offset(last.end_lineno, last.end_col_offset or 0)
    prefix = text[:start]
    line_start = prefix[prefix.rfind("\n") + 1 :]
    if line_start.strip():  # `def f(): pass`: the body moves to its own line
        return prefix.rstrip() + "\n" + block_indent, text[end:], block_indent
    return prefix, text[end:], line_start


def trim_body(completion: str, indent: str) -> str:
    """Keep the completion up to the end of the function body (first dedented line)."""
    kept: list[str] = []
    for number, line in enumerate(completion.splitlines()):
        if number and line.strip() and not line.startswith(indent):
            break
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept)


async def run_local(
    router: Router,
    request: CouncilRequest,
    *,
    workspace: Path | None,
    limits: SandboxLimits,
    python: str | None,
    scope: RunScope | None = None,
    events: Events | None = None,
    reason: str = "",
    session_id: str | None = None,
) -> CouncilResult:
    """Local council mode for ``request``. Inside a run that fell back to it, pass that
    run's ``scope`` (its session, ledger and events carry on); alone, a scope is opened
    here with ``events`` and ``session_id``."""
    if scope is not None:
        return await _run_local(router, request, scope, workspace, limits, python, reason)
    scope = RunScope.open(router, events=events, session_id=session_id)
    with scope.lifecycle(f"{LOCAL_NOTE}; {request.mode}"):
        result = await _run_local(router, request, scope, workspace, limits, python, reason)
        scope.outcome = result.status
        return result


async def _run_local(
    router: Router,
    request: CouncilRequest,
    scope: RunScope,
    workspace: Path | None,
    limits: SandboxLimits,
    python: str | None,
    reason: str,
) -> CouncilResult:
    result = CouncilResult(
        session_id=scope.session_id, status="failed", mode=request.mode, council_mode="local"
    )
    ctx = request.context
    module = PurePosixPath(ctx.file_path or "solution.py").stem
    path = PurePosixPath(ctx.file_path).name if ctx.file_path else "solution.py"
    try:
        if request.mode == "freeform" or not ctx.file_text:
            result.summary = (
                f"{LOCAL_NOTE} ({reason or 'none configured'}). Local mode works on a file: "
                "it needs the file text and a stub or symbol; configure a chat provider for "
                "free-form questions."
            )
            return result
        examples = docstring_examples(ctx.file_text, ctx.symbol) if ctx.symbol else []
        existing = _existing_tests(module, ctx.symbol, workspace)
        tests = {**_example_tests(module, ctx.symbol, examples), **existing}
        mode = {"tests": _tests_mode, "debug": _debug_mode}.get(request.mode, _generate_mode)
        await mode(
            _Job(
                router,
                result,
                request,
                module,
                path,
                tests,
                limits,
                python,
                scope.emit,
                scope.ledger,
                examples,
                existing,
            )
        )
    finally:
        scope.finish(result)
    return result


def _example_tests(module: str, symbol: str | None, examples: list[Example]) -> dict[str, str]:
    if symbol and examples:
        return {f"test_{module}_examples.py": examples_test_module(module, symbol, examples)}
    return {}


def _existing_tests(module: str, symbol: str | None, workspace: Path | None) -> dict[str, str]:
    files: dict[str, str] = {}
    if workspace is not None and symbol:
        for rel in existing_tests_for(workspace, module, symbol.split(".")[0]):
            try:
                files[rel.as_posix()] = (workspace / rel).read_text(encoding="utf-8")
            except OSError:
                continue
    return files


def _static(path: str, findings: list[Finding]) -> list[StaticFinding]:
    return [
        StaticFinding(path=path, line=f.line, severity=f.severity, code=f.code, message=f.message)
        for f in findings
    ]


def _static_report(findings: list[Finding]) -> DebugReport:
    bugs = [
        Bug(
            line=f.line,
            severity="critical" if f.severity == "error" else "minor",
            description=f"{f.code}: {f.message}",
            fix="see the message",
        )
        for f in findings
        if f.severity in ("error", "warning")
    ]
    return DebugReport(
        verdict="fail" if any(f.severity == "error" for f in findings) else "pass",
        bugs=bugs,
        analysis="Static analysis (pyflakes and ast checks).",
    )


async def _generate_mode(job: _Job) -> None:
    router, result, request, path = job.router, job.result, job.request, job.path
    tests, emit, ledger = job.tests, job.emit, job.ledger
    ctx = request.context
    assert ctx.file_text is not None
    split = split_stub(ctx.file_text, ctx.symbol) if ctx.symbol else None
    if split is None:
        result.summary = (
            f"{LOCAL_NOTE}. Local mode fills stub functions (a body of `pass`, `...` or "
            "`raise NotImplementedError`); no stub was found for the symbol."
        )
        return
    prefix, suffix, indent = split
    tier = completion_tier(router)
    count = router.settings.council.local_candidates
    source = tier.target if tier is not None else "the built-in specialist"
    emit(
        "stage_started",
        stage="generate",
        role="generator",
        percent=20,
        detail=f"sampling {count} candidates from {source}",
    )
    bodies: list[str | None] = [None] * count
    if tier is None:  # completion.backend = "specialist": the in-process model
        await _sample_specialist(job, prefix, suffix, indent, bodies)
    else:

        async def sample(i: int) -> None:
            req = CompletionRequest(
                prompt=prefix,
                suffix=suffix,
                max_tokens=_BODY_TOKENS,
                temperature=_temperature(i),
                stop=_BODY_STOPS,
            )
            try:
                routed = await router.complete("generator", req, ledger=ledger, tiers=[tier])
                bodies[i] = trim_body(routed.result.text, indent)
            except ProviderError as exc:
                result.errors.append(f"candidate {i + 1}: {exc}")

        async with anyio.create_task_group() as group:
            for i in range(count):
                group.start_soon(sample, i)
    pool = Pool()
    executor = CrossExecutor(
        pool,
        module=job.module,
        symbol=ctx.symbol,
        examples=job.examples,
        workspace=None,
        copy_list=lambda code: [],
        limits=job.limits,
        python=job.python,
    )
    for rel, content in job.existing.items():
        pool.add_suite(TestSuite(path=rel, content=content), 1, job.module, trusted=True)
    for i, body in enumerate(bodies):
        if body and body.strip():
            text = prefix + body.lstrip() + suffix
            code = CodeBundle(
                files=[CodeFile(path=path, content=text)],
                explanation=f"Candidate {i + 1} of {count} from {source}",
            )
            candidate = pool.add_candidate(code, 1, i, static=_static(path, analyse(text)))
            pool.record_review(candidate, _static_report(analyse(text)))
    emit(
        "stage_finished",
        stage="generate",
        role="generator",
        percent=50,
        detail=f"{len(pool.candidates)} candidates",
        ok=bool(pool.candidates),
    )
    if not pool.candidates:
        result.summary = f"{LOCAL_NOTE}; the completion model produced no usable candidate."
        return
    emit(
        "stage_started",
        stage="review",
        role="tester",
        percent=55,
        detail=f"running {len(tests)} test file(s) against each candidate",
    )
    await executor.run()
    choice = pool.choose()
    best = pool.get(choice.winner)
    emit("stage_finished", stage="review", role="tester", percent=90, detail=choice.reason)
    result.code = best.code
    result.candidates, result.suites, result.choice = (
        list(pool.candidates),
        list(pool.suites),
        choice,
    )
    text = best.code.files[0].content
    result.static_findings = _static(path, analyse(text))
    result.debug_report = _static_report(analyse(text))
    result.test_report = executor.report(best, None)
    ex = result.test_report.execution
    result.status = "approved" if choice.passed_everything else "best_effort"
    evidence = ex.summary() if ex else "no docstring examples or existing tests to run"
    verdict = ""
    if not choice.passed_everything:
        verdict = " None of them passes the docstring examples and tests, so it is not approved."
    result.summary = (
        f"{LOCAL_NOTE}. Sampled {len(pool.candidates)} candidates from {source}; "
        f"picked candidate {best.index + 1}: tests {evidence}; "
        f"{len(result.static_findings)} static findings.{verdict}"
    )


_BODY_TOKENS = 160
_BODY_STOPS = ("\ndef ", "\nclass ")


def _temperature(i: int) -> float:
    """The first candidate near-greedy, the rest diverse."""
    return 0.2 if i == 0 else 0.8


async def _sample_specialist(
    job: _Job, prefix: str, suffix: str, indent: str, bodies: list[str | None]
) -> None:
    """Candidates from the in-process specialist (the shipped model unless
    completion.model_path says otherwise), one at a time in a worker thread.

    The instance is shared with inline completions when the server has loaded it.
    """
    from providers.specialist import SpecialistUnavailable, any_loaded, shared

    config = job.router.settings.completion
    model = any_loaded(config.model_path) or shared(
        config.model_path, max_context_tokens=config.max_context_tokens + _BODY_TOKENS + 3
    )
    try:
        await anyio.to_thread.run_sync(model.ensure_loaded)
    except SpecialistUnavailable as exc:
        job.result.errors.append(str(exc))
        return
    for i in range(len(bodies)):
        out = await anyio.to_thread.run_sync(
            lambda i=i: model.infill(
                prefix,
                suffix,
                max_tokens=_BODY_TOKENS,
                stop=_BODY_STOPS,
                temperature=_temperature(i),
                seed=i,
            )
        )
        bodies[i] = trim_body(out.text, indent)


def _report(tests: dict[str, str], ex: ExecutionResult | None) -> TestReport:
    if ex is None:
        return TestReport(verdict="skipped", note="no docstring examples or existing tests")
    name = next(iter(tests))
    return TestReport(
        verdict="pass" if ex.ok else ("error" if ex.error else "fail"),
        suite=TestSuite(path=name, content=tests[name], cases=[]),
        execution=ex,
    )


async def _tests_mode(job: _Job) -> None:
    result, request, path, tests, emit = job.result, job.request, job.path, job.tests, job.emit
    assert request.context.file_text is not None
    generated = {k: v for k, v in tests.items() if k.endswith("_examples.py")}
    if not generated:
        result.summary = (
            f"{LOCAL_NOTE}. Without a chat model, tests come from the docstring's "
            "examples and asserts, and this symbol has none."
        )
        return
    emit("stage_started", stage="review", role="tester", percent=40)
    ex = await job.execute({path: request.context.file_text}, generated)
    name, content = next(iter(generated.items()))
    result.code = CodeBundle(
        files=[CodeFile(path=f"tests/{name}", content=content)],
        explanation="Tests built from the docstring's examples.",
    )
    result.test_report = _report(generated, ex)
    result.status = "approved" if ex is not None and ex.ok else "best_effort"
    result.summary = f"{LOCAL_NOTE}. Docstring examples as tests: {ex.summary() if ex else '-'}."


async def _debug_mode(job: _Job) -> None:
    result, request, path, tests, emit = job.result, job.request, job.path, job.tests, job.emit
    text = request.context.file_text or ""
    emit("stage_started", stage="review", role="debugger", percent=40)
    findings = analyse(text, filename=path)
    result.static_findings = _static(path, findings)
    result.diagnosis = _static_report(findings)
    ex = await job.execute({path: text}, tests)
    result.test_report = _report(tests, ex)
    result.status = "best_effort"
    result.summary = (
        f"{LOCAL_NOTE}. Static analysis found {len(findings)} issue(s); "
        f"tests: {ex.summary() if ex else 'none to run'}. No fixed version without "
        "a chat model."
    )
