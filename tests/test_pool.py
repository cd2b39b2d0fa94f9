"""The candidate pool's judgement: evidence from executed tests, examples and the debugger."""

from __future__ import annotations

from council.pool import EXAMPLES_PATH, Pool
from council.sandbox import CaseResult, ExecutionResult
from council.schemas import CodeBundle, CodeFile, DebugReport, StaticFinding
from council.schemas import TestSuite as Suite


def _code(body: str) -> CodeBundle:
    return CodeBundle(files=[CodeFile(path="m.py", content=body)], explanation="")


def _run(outcomes: dict[str, str], error: str | None = None) -> ExecutionResult:
    cases = [
        CaseResult(nodeid=n, name=n.split("::")[-1], outcome=o, message=f"{n} {o}")  # type: ignore[arg-type]
        for n, o in outcomes.items()
    ]
    passed = sum(o == "passed" for o in outcomes.values())
    return ExecutionResult(
        exit_code=0 if passed == len(cases) else 1,
        timed_out=False,
        duration_s=0.1,
        passed=passed,
        failed=len(cases) - passed,
        cases=cases,
        error=error,
    )


def _verdict(ok: bool) -> DebugReport:
    return DebugReport(verdict="pass" if ok else "fail", bugs=[], analysis="")


def _suite() -> Suite:
    return Suite(path="tests/test_m.py", content="def test_a(): pass\n")


def test_the_best_candidate_wins_not_the_last():
    pool = Pool(examples=2)
    right = pool.add_candidate(_code("right"), 1)
    wrong = pool.add_candidate(_code("wrong"), 2)
    s1 = pool.add_suite(_suite(), 1, "m")
    assert s1.path == "tests/test_m_s1.py" and s1.suite.path == "tests/test_m.py"
    ex = {f"{EXAMPLES_PATH}::test_example_1", f"{EXAMPLES_PATH}::test_example_2"}
    pool.record_execution(
        right,
        _run({**dict.fromkeys(ex, "passed"), f"{s1.path}::test_a": "passed"}),
        [s1],
        examples=True,
    )
    pool.record_execution(
        wrong,
        _run({**dict.fromkeys(ex, "failed"), f"{s1.path}::test_a": "failed"}),
        [s1],
        examples=True,
    )
    choice = pool.choose()
    assert choice.winner == right.id and choice.passed_everything
    assert choice.ranking == [right.id, wrong.id]
    assert "examples 2/2" in choice.reason and "tests 1/1" in choice.reason


def test_a_test_that_fails_vouched_code_is_disputed_and_does_not_decide():
    """The examples and the debugger accept c1; one case of the suite fails it. That case is
    disputed, and c1 still passes everything; c2 fails an undisputed case and loses."""
    pool = Pool(examples=1)
    c1 = pool.add_candidate(_code("right"), 1)
    c2 = pool.add_candidate(_code("buggy"), 1, 1)
    s1 = pool.add_suite(_suite(), 1, "m")
    example = f"{EXAMPLES_PATH}::test_example_1"
    good, bad = f"{s1.path}::test_good", f"{s1.path}::test_wrong_expectation"
    pool.record_execution(
        c1, _run({example: "passed", good: "passed", bad: "failed"}), [s1], examples=True
    )
    pool.record_execution(
        c2, _run({example: "passed", good: "failed", bad: "failed"}), [s1], examples=True
    )
    pool.record_review(c1, _verdict(True))
    pool.record_review(c2, _verdict(True))
    disputes = pool.disputes()
    # c2 is vouched for as well (examples + debugger), so both of its failures are disputed
    # candidates; only the case that fails *both* is disputed by c1's evidence too.
    keys = {d.case for d in disputes}
    assert "s1::test_wrong_expectation" in keys
    dispute = next(d for d in disputes if d.case == "s1::test_wrong_expectation")
    assert dispute.candidates == [c1.id, c2.id] and "failed" in dispute.message
    choice = pool.choose()
    assert choice.winner == c1.id


def test_without_examples_nothing_is_disputed_and_tests_decide():
    pool = Pool(examples=0)
    c1 = pool.add_candidate(_code("a"), 1)
    s1 = pool.add_suite(_suite(), 1, "m")
    pool.record_execution(c1, _run({f"{s1.path}::test_a": "failed"}), [s1])
    pool.record_review(c1, _verdict(True))
    assert pool.disputes() == []
    assert not pool.choose().passed_everything


def test_a_candidate_that_passed_everything_is_never_replaced():
    pool = Pool(examples=1)
    first = pool.add_candidate(_code("first"), 1)
    s1 = pool.add_suite(_suite(), 1, "m")
    example = f"{EXAMPLES_PATH}::test_example_1"
    pool.record_execution(
        first, _run({example: "passed", f"{s1.path}::test_a": "passed"}), [s1], examples=True
    )
    pool.record_review(first, _verdict(True))
    for n in range(2, 6):  # later candidates, each worse in some way
        c = pool.add_candidate(_code(f"later {n}"), n)
        pool.record_execution(
            c,
            _run({example: "passed" if n % 2 else "failed", f"{s1.path}::test_a": "passed"}),
            [s1],
            examples=True,
        )
        pool.record_review(c, _verdict(n % 2 == 0))
    assert pool.choose().winner == first.id


def test_agreement_between_candidates_breaks_ties():
    """Same examples and tests score, no debugger: the behaviour two candidates share wins."""
    pool = Pool(examples=0)
    s1 = pool.add_suite(_suite(), 1, "m")
    a = pool.add_candidate(_code("a"), 1)
    b = pool.add_candidate(_code("b"), 1, 1)
    c = pool.add_candidate(_code("c"), 1, 2)
    pool.record_execution(a, _run({f"{s1.path}::t1": "passed", f"{s1.path}::t2": "failed"}), [s1])
    pool.record_execution(b, _run({f"{s1.path}::t1": "failed", f"{s1.path}::t2": "passed"}), [s1])
    pool.record_execution(c, _run({f"{s1.path}::t1": "failed", f"{s1.path}::t2": "passed"}), [s1])
    assert pool.choose().winner == b.id


def test_suites_that_did_not_run_are_errors_and_pending_tracks_cross_execution():
    pool = Pool()
    c1 = pool.add_candidate(
        _code("x ="),
        1,
        static=[StaticFinding(path="m.py", line=1, severity="error", code="E999", message="bad")],
    )
    s1 = pool.add_suite(_suite(), 1, "m")
    pool.add_suite(_suite(), 2, "m")
    assert [s.id for s in pool.pending(c1)] == ["s1", "s2"]
    pool.record_execution(c1, _run({}, error="collection failed"), [s1])
    assert c1.evidence.suite_errors == {"s1": "collection failed"}
    assert [s.id for s in pool.pending(c1)] == ["s2"]
    assert c1.evidence.static_errors == ["m.py:1: bad"]
    choice = pool.choose()
    assert not choice.passed_everything and "1 static error" in choice.reason


def test_a_suite_that_runs_nothing_anywhere_is_the_suites_fault():
    pool = Pool(examples=1)
    c1 = pool.add_candidate(_code("a"), 1)
    s1 = pool.add_suite(_suite(), 1, "m")
    s2 = pool.add_suite(_suite(), 2, "m")
    example = f"{EXAMPLES_PATH}::test_example_1"
    pool.record_execution(
        c1, _run({example: "passed", f"{s1.path}::t": "passed"}), [s1], examples=True
    )
    pool.record_execution(c1, _run({}, error="no tests collected"), [s2])
    pool.record_review(c1, _verdict(True))
    assert pool.broken_suites() == {"s2": "no tests collected"}
    choice = pool.choose()
    assert choice.passed_everything and "1 broken suite(s) ignored" in choice.reason
    # a candidate whose module does not import at all gets no such benefit of the doubt
    bad = Pool()
    c = bad.add_candidate(_code("b"), 1)
    t = bad.add_suite(_suite(), 1, "m")
    bad.record_execution(c, _run({}, error="ImportError"), [t])
    assert bad.broken_suites() == {} and not bad.choose().passed_everything


def test_one_wrong_candidate_that_slipped_through_cannot_overrule_the_tests_that_catch_it():
    """HumanEval/3 in the simulation: buggy code passed both examples and the debugger
    missed the bug. The (right) tests that fail it are only suspect, so it is not approved;
    once right code passes them, they are not even suspect."""
    pool = Pool(examples=1)
    example = f"{EXAMPLES_PATH}::test_example_1"
    s1 = pool.add_suite(_suite(), 1, "m")
    buggy = pool.add_candidate(_code("buggy"), 1)
    pool.record_execution(
        buggy, _run({example: "passed", f"{s1.path}::t_edge": "failed"}), [s1], examples=True
    )
    pool.record_review(buggy, _verdict(True))
    [suspect] = pool.disputes()
    assert not suspect.ignored and suspect.weight == 1
    assert not pool.choose().passed_everything
    right = pool.add_candidate(_code("right"), 2)
    pool.record_execution(
        right, _run({example: "passed", f"{s1.path}::t_edge": "passed"}), [s1], examples=True
    )
    pool.record_review(right, _verdict(True))
    assert pool.disputes() == []  # it tells two vouched-for candidates apart
    choice = pool.choose()
    assert choice.winner == right.id and choice.passed_everything


def test_a_repeated_sample_and_a_second_review_count():
    pool = Pool(examples=1)
    example = f"{EXAMPLES_PATH}::test_example_1"
    s1 = pool.add_suite(_suite(), 1, "m")
    c = pool.add_candidate(_code("right"), 1)
    pool.record_execution(
        c, _run({example: "passed", f"{s1.path}::t_wrong": "failed"}), [s1], examples=True
    )
    pool.record_review(c, _verdict(False))  # a false alarm
    assert pool.disputes() == [] and not pool.choose().passed_everything
    pool.resampled(c)
    pool.record_review(c, _verdict(True))  # 1 pass of 2: not vouched yet (no majority)
    assert pool.disputes() == []
    pool.record_review(c, _verdict(True))
    [dispute] = pool.disputes()
    assert dispute.ignored and dispute.weight == 2
    assert pool.choose().passed_everything


def test_report_lines_name_the_winner_every_candidate_and_the_disputes():
    from council.pool import report_lines

    pool = Pool(examples=1)
    example = f"{EXAMPLES_PATH}::test_example_1"
    s1 = pool.add_suite(_suite(), 1, "m")
    a = pool.add_candidate(_code("a"), 1, provider="lb", model="gen")
    b = pool.add_candidate(_code("b"), 2, provider="lb", model="gen2")
    pool.resampled(a)
    for c, ok in ((a, "passed"), (b, "failed")):
        pool.record_execution(
            c, _run({example: ok, f"{s1.path}::t": "failed"}), [s1], examples=True
        )
        pool.record_review(c, _verdict(True))
        pool.record_review(c, _verdict(True))
    lines = report_lines(pool.candidates, pool.choose(), pool.disputes())
    assert lines[0].startswith("Chosen: c1 (pass 1), examples 1/1")
    assert lines[1].strip().startswith("lb:gen x2: c1") and "lb:gen2: c2" in lines[2]
    assert lines[3] == "Disputed test (ignored): s1::t fails c1"
    assert report_lines([], None, []) == []
