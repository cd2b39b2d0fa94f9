"""`council bench humaneval` and the simulated team it can run against.

The simulated team is only useful if its error rates are real: its wrong code must fail the
official tests, its right code pass them, its wrong tests reject right code, and the same
seed must give the same answers whatever the order of the calls. The end-to-end test runs
the command over real loopback HTTP and the real sandbox and checks what it measures; the
policy test holds the council to its goals in that simulation.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from council import prompts
from council.bench_humaneval import (
    Official,
    build_request,
    judge,
    load_problems,
    module_name,
    simulated_settings,
    summarise,
)
from council.sandbox import run_tests
from council.schemas import (
    Candidate,
    CodeBundle,
    CodeFile,
    CouncilResult,
    Plan,
    TechManifest,
)
from council.simmutants import official_program, run_programs
from council.simteam import Prepared, SimParams, SimTeam, prepare, suite_module
from slm_council.main import main

pytestmark = pytest.mark.timeout(300)

#: small problems of different shapes: plain asserts, helper functions the test needs
#: (HumanEval/10, /38), a loop over random cases (HumanEval/53), strings and lists
SAMPLE = ["HumanEval/0", "HumanEval/10", "HumanEval/12", "HumanEval/38", "HumanEval/53"]


CONFTEST = "import sys, pathlib\nsys.path.insert(0, str(pathlib.Path(__file__).parent))\n"


@pytest.fixture(scope="module")
def sample() -> list[Prepared]:
    return prepare(load_problems(ids=SAMPLE))


def bundle(problem: dict[str, Any], code: str) -> CodeBundle:
    return CodeBundle(
        files=[CodeFile(path=f"{module_name(problem)}.py", content=code)], explanation=""
    )


def generate_prompt(problem: dict[str, Any], feedback: Sequence[str] = ()) -> str:
    request = build_request(problem)
    plan = Plan(goal=request.query, tasks=[])
    return prompts.generate_prompt(
        request, plan, None, None, list(feedback), f"{module_name(problem)}.py"
    )


# -- the simulated team's answers are what they claim -------------------------------------


def test_variants_fail_the_official_test_and_the_right_code_passes(
    sample: list[Prepared],
) -> None:
    for prepared in sample:
        assert prepared.variants, prepared.task_id
        problem = prepared.problem
        outcomes = run_programs(
            [official_program(problem, prepared.right)]
            + [official_program(problem, v.code) for v in prepared.variants]
        )
        assert outcomes[0] == "pass", prepared.task_id
        assert all(o in ("assert", "error") for o in outcomes[1:]), (prepared.task_id, outcomes)
        for v in prepared.variants:  # right and wrong differ in the line the debugger names
            lines = v.code.splitlines()
            assert lines[v.line - 1].strip() == v.wrong_line != v.right_line


@pytest.mark.anyio
async def test_official_judge_and_suites_in_the_sandbox(sample: list[Prepared]) -> None:
    """Through the real sandbox: the bench's judge passes the right code and fails a
    variant; the tester's right suite passes right code and fails the variant, one test per
    case; its wrong suite fails right code in exactly one case."""
    official = Official(simulated_settings("http://127.0.0.1:9/v1"))
    for prepared in sample[:3]:
        problem, module = prepared.problem, module_name(prepared.problem)
        wrong = prepared.variants[0].code
        assert await official.passes(problem, bundle(problem, prepared.right))
        assert not await official.passes(problem, bundle(problem, wrong))
        assert prepared.suite.corrupt

        async def run(code: str, suite: str, module: str = module) -> tuple[int, int]:
            files = {f"{module}.py": code, f"tests/test_{module}.py": suite}
            files["conftest.py"] = CONFTEST
            ex = await run_tests(files, test_paths=[f"tests/test_{module}.py"])
            return ex.passed, ex.failed + ex.errors

        cases = len(prepared.suite.cases)
        assert await run(prepared.right, suite_module(prepared, module)) == (cases, 0)
        passed, failed = await run(wrong, suite_module(prepared, module))
        assert failed >= 1 and passed + failed == cases
        assert await run(prepared.right, suite_module(prepared, module, corrupt=0)) == (
            cases - 1,
            1,
        )


def test_same_seed_same_answers_whatever_the_order(sample: list[Prepared]) -> None:
    problem = sample[0].problem
    prompt = generate_prompt(problem)
    params = SimParams.parse("generator=0.5,seed=7")

    def answers(team: SimTeam, n: int) -> list[str]:
        return [
            team.answer(prompts.GENERATOR, prompt, "CodeBundle")["files"][0]["content"]
            for _ in range(n)
        ]

    first = answers(SimTeam(params, [problem]), 12)
    assert first == answers(SimTeam(params, [problem]), 12)
    assert len(set(first)) > 1  # both right and wrong answers among 12 draws at p = 0.5
    assert first != answers(SimTeam(SimParams.parse("generator=0.5,seed=8"), [problem]), 12)

    # concurrent calls: the same multiset of answers
    team = SimTeam(params, [problem])
    got: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        content = team.answer(prompts.GENERATOR, prompt, "CodeBundle")["files"][0]["content"]
        with lock:
            got.append(content)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(first)

    # new_phase restarts the counts, and the generator's draw ignores the plan and the
    # manifest: the council's first pass-1 answer is the baseline's (a paired comparison)
    team.new_phase()
    request = build_request(problem)
    plan = Plan(goal="a different plan", tasks=[{"agent": "generator", "instruction": "go"}])
    manifest = TechManifest(summary="loops", pitfalls=["empty input"])
    council_prompt = prompts.generate_prompt(
        request, plan, manifest, None, [], f"{module_name(problem)}.py"
    )
    assert council_prompt != prompt
    answer = team.answer(prompts.GENERATOR, council_prompt, "CodeBundle")
    assert answer["files"][0]["content"] == first[0]


def test_the_generator_rate_is_p(sample: list[Prepared]) -> None:
    problems = [p.problem for p in sample]
    team = SimTeam(SimParams.parse("generator=0.3,seed=3"), problems)
    rights = 0
    for i in range(200):
        problem = problems[i % len(problems)]
        code = team.answer(prompts.GENERATOR, generate_prompt(problem, [f"try {i}"]), "CodeBundle")
        rights += code["files"][0]["content"] == prepare([problem])[0].right
    assert 0.2 < rights / 200 < 0.4
    assert team.stats["generator_right"] == rights


def test_sim_params_parse() -> None:
    assert SimParams.parse("generator=0.5,tester=0.85,seed=0") == SimParams(
        generator=0.5, tester=0.85, seed=0
    )
    for bad in ("generator", "generator=2", "wizard=0.5", "tester=x"):
        with pytest.raises(ValueError, match="--simulate"):
            SimParams.parse(bad)


def test_unknown_requests_fall_through(sample: list[Prepared]) -> None:
    team = SimTeam(SimParams(), [sample[0].problem])
    assert team.answer("You are helpful.", "What is 2 + 2?", "CodeBundle") is None
    assert team.answer(prompts.GENERATOR, generate_prompt(sample[0].problem), None) is None
    fix = team.answer(prompts.DEBUGGER_FIX, generate_prompt(sample[0].problem), "DebugReport")
    assert fix is None


# -- the bench's accounting, on cases whose answer is known --------------------------------


@pytest.mark.anyio
async def test_false_approvals_and_discarded_candidates_are_counted(
    sample: list[Prepared],
) -> None:
    prepared = sample[1]
    problem = prepared.problem
    right, wrong = bundle(problem, prepared.right), bundle(problem, prepared.variants[0].code)
    official = Official(simulated_settings("http://127.0.0.1:9/v1"))

    def result(status: str, code: CodeBundle, *candidates: CodeBundle) -> CouncilResult:
        kept = [Candidate(id=f"c{i}", pass_no=1, code=c) for i, c in enumerate(candidates, 1)]
        return CouncilResult(
            session_id="s", status=status, mode="generate", code=code, candidates=kept
        )

    cases = {
        "approved wrong": result("approved", wrong, wrong),
        "approved right": result("approved", right, wrong, right),
        "discarded": result("best_effort", wrong, right, wrong),
        "no candidates": result("best_effort", wrong),
    }
    rows = []
    for name, res in cases.items():
        judged = await judge(official, problem, res)
        row = judged | {
            "status": res.status,
            "council_mode": "council",
            "refinement_passes": 0,
            "tokens": 0,
            "model_calls": 0,
            "critical_path_calls": 0,
            "latency_s": 0.0,
            "cost_usd": 0.0,
            "failed": False,
        }
        rows.append({"task_id": name, "baseline": row, "council": row})
    by_name = {r["task_id"]: r["council"] for r in rows}
    assert by_name["approved wrong"]["false_approval"]
    assert not by_name["approved right"]["false_approval"]
    assert by_name["approved right"]["correct_candidates"] == ["c2"]
    assert by_name["discarded"]["correct_candidate_discarded"]
    assert by_name["discarded"]["correct_candidates"] == ["c1"]
    assert not by_name["no candidates"]["correct_candidate_discarded"]
    report = summarise(rows)["council"]
    assert report["false_approvals"] == 1
    assert report["false_approval_rate"] == 0.5
    assert report["correct_candidates_discarded"] == 1
    assert report["problems_with_candidates"] == 3
    assert report["pass@1"] == 0.25
    assert official.runs == 2  # each distinct code ran once


# -- the command, end to end ----------------------------------------------------------------


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["bench", "humaneval", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_humaneval_simulated_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    """20 problems, both ways, real HTTP and sandbox (about 30 s on 2 busy cores)."""
    report = bench(
        capsys, "--simulate", "generator=0.5,tester=0.85,seed=0", "--limit", "20",
        "--jobs", "4", "--per-problem",
    )  # fmt: skip
    base, council = report["baseline"], report["council"]
    for part in (base, council):
        for key in (
            "pass@1", "tokens_mean", "model_calls_mean", "critical_path_calls_mean",
            "latency_s_mean", "cost_usd_mean", "failed_runs",
        ):  # fmt: skip
            assert key in part
    rows = report["problems"]
    assert report["problem_count"] == len(rows) == 20
    # the baseline is the generator alone: one call, right about half the time
    assert 0.25 <= base["pass@1"] <= 0.75
    assert base["model_calls_mean"] == base["critical_path_calls_mean"] == 1
    assert base["tokens_mean"] > 0 and base["cost_usd_mean"] > 0
    # the council's figures are what its rows say
    assert council["failed_runs"] == base["failed_runs"] == 0
    assert council["false_approvals"] == sum(
        r["council"]["status"] == "approved" and not r["council"]["passed"] for r in rows
    )
    assert council["correct_candidates_discarded"] == sum(
        bool(r["council"]["correct_candidates"]) and not r["council"]["passed"] for r in rows
    )
    assert council["pass@1"] == sum(r["council"]["passed"] for r in rows) / 20
    for row in rows:
        c = row["council"]
        assert c["candidates"] >= 1
        # decompose, research, generate, review, synthesise: 5 per pass 1, 3 more per pass
        assert c["critical_path_calls"] == 5 + 3 * c["refinement_passes"]
        assert c["model_calls"] > c["critical_path_calls"]  # debugger next to tester
    assert sum(report["paired"].values()) == 20
    answers = report["simulation"]["answers"]
    assert answers["generator_right"] + answers["generator_wrong"] >= 40
    print(json.dumps({k: report[k] for k in ("baseline", "council", "paired")}, indent=1))


@pytest.mark.parametrize(("tester", "floor"), [("0.85", 0.93), ("0.6", 0.90)])
def test_the_council_is_never_worse_than_its_generator(
    capsys: pytest.CaptureFixture[str], tester: str, floor: float
) -> None:
    """Issue 14's goals, on 40 problems with the generator right half the time: pass@1 at
    the floor, no false approval, no problem the generator alone solved and the council did
    not, and (with tests right 85% of the time) no correct candidate discarded. The code
    that kept the last candidate reached 0.925 and 0.825 (about 40 s each on 2 cores)."""
    report = bench(
        capsys, "--simulate", f"generator=0.5,tester={tester},seed=0", "--limit", "40",
        "--jobs", "4",
    )  # fmt: skip
    base, council = report["baseline"], report["council"]
    print(json.dumps({"tester": tester, "baseline": base["pass@1"], "council": council}))
    assert council["pass@1"] >= floor and council["pass@1"] >= base["pass@1"]
    assert council["false_approvals"] == 0
    assert report["paired"]["baseline_only"] == 0
    if tester == "0.85":
        assert council["correct_candidates_discarded"] == 0


def test_bench_humaneval_is_independent_of_concurrency(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--simulate", "generator=0.5,tester=0.6,seed=4", "--per-problem", "--problems"]
    ids = "HumanEval/2,HumanEval/7,HumanEval/13"

    def outcome(jobs: str) -> list[tuple[Any, ...]]:
        rows = bench(capsys, *argv, ids, "--jobs", jobs, "--max-passes", "1")["problems"]
        return [
            (r["task_id"], r["baseline"]["passed"], r["council"]["passed"], r["council"]["status"])
            for r in rows
        ]

    assert outcome("1") == outcome("3")


def test_bench_humaneval_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "humaneval", "--simulate", "generator=1.5"]) == 2
    assert "probability" in capsys.readouterr().err
    assert main(["bench", "humaneval", "--simulate", "seed=0", "--problems", "HumanEval/999"]) == 2
    assert "HumanEval/999" in capsys.readouterr().err


def test_the_team_leaves_the_global_random_alone() -> None:
    """The team draws from its own generators: the global one is left alone."""
    random.seed(123)
    expected = random.random()
    random.seed(123)
    team = SimTeam(SimParams(), load_problems(ids=["HumanEval/0"]))
    team.answer(prompts.GENERATOR, generate_prompt(team.problems["HumanEval/0"]), "CodeBundle")
    assert random.random() == expected
