"""Every candidate a run produces, the evidence about each, and the choice between them.

The council's judge is tests that another small model wrote, and those are wrong often
enough (about 15% for a 7B coder, Chen et al., ACL 2025) that trusting them made
self-debugging *worse* than the generator alone. So nothing here trusts one signal:

* Every candidate is kept with all its evidence: each test case of every suite the run
  produced (cross-execution, as in CodeT's dual agreement: every candidate runs every
  suite), the docstring's examples (the user wrote those), the debugger's verdict and bugs,
  and static errors.
* A test case is *disputed* when it fails a candidate that the docstring examples and the
  debugger both accept. It goes back to the tester as suspect, is shown apart in the
  synthesis prompt, and cannot alone block approval.
* The final code is the best candidate by the evidence, in this order: it compiles; the
  share of docstring examples it passes; the share of undisputed test cases it passes; the
  debugger's verdict; then how many other candidates behave exactly like it on the tests
  (agreement between independent samples is evidence, CodeT); then the earlier one. So a
  candidate that passed everything is never replaced by one that did not.

The pool holds data and decides; running code and asking models is the pipeline's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from council.sandbox import ExecutionResult
from council.schemas import (
    Candidate,
    Choice,
    CodeBundle,
    DebugReport,
    Dispute,
    StaticFinding,
    SuiteRecord,
    TestSuite,
)

#: generated samples of vouched-for code a test must fail before it is left out of the
#: evidence (see :meth:`Pool.disputes`)
DISPUTE_QUORUM = 2

#: the pytest module the docstring examples are written to (one test per example)
EXAMPLES_PATH = "tests/test_council_examples.py"


@dataclass
class Pool:
    """The candidates and suites of one run; ``examples`` is how many the docstring has."""

    examples: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    suites: list[SuiteRecord] = field(default_factory=list)
    _messages: dict[tuple[str, str], str] = field(default_factory=dict)

    # -- recording ----------------------------------------------------------------------

    def add_candidate(
        self,
        code: CodeBundle,
        pass_no: int,
        index: int = 0,
        *,
        provider: str | None = None,
        model: str | None = None,
        static: Iterable[StaticFinding] = (),
    ) -> Candidate:
        candidate = Candidate(
            id=f"c{len(self.candidates) + 1}",
            pass_no=pass_no,
            index=index,
            provider=provider,
            model=model,
            code=code,
        )
        candidate.evidence.static_errors = [
            f"{f.path}:{f.line}: {f.message}" for f in static if f.severity == "error"
        ]
        self.candidates.append(candidate)
        return candidate

    def add_suite(
        self, suite: TestSuite, pass_no: int, module: str, *, trusted: bool = False
    ) -> SuiteRecord:
        """Keep ``suite``. A tester's suite runs under a path of its own
        (``tests/test_<module>_s<N>.py``) so that every suite of the run can be collected
        together against one candidate, while ``suite.path`` stays the tester's (where tests
        mode writes it). A ``trusted`` suite (the user's own tests) runs where it lives and
        is never disputed."""
        sid = f"s{len(self.suites) + 1}"
        path = suite.path if trusted else f"tests/test_{module}_{sid}.py"
        record = SuiteRecord(id=sid, pass_no=pass_no, path=path, suite=suite, trusted=trusted)
        self.suites.append(record)
        return record

    def record_review(self, candidate: Candidate, debug: DebugReport | None) -> None:
        if debug is None:
            return
        candidate.evidence.debugger = debug.verdict
        candidate.evidence.reviews.append(debug.verdict)
        candidate.evidence.bugs = [
            f"line {b.line} ({b.severity}): {b.description}" for b in debug.bugs
        ][:8]

    def resampled(self, candidate: Candidate) -> None:
        """The generator wrote ``candidate``'s code again: one more independent sample
        agreeing on it (CodeT counts identical outputs as consensus)."""
        candidate.samples += 1

    def pending(self, candidate: Candidate) -> list[SuiteRecord]:
        """Suites not yet run against ``candidate``."""
        ev = candidate.evidence
        seen = {key.split("::", 1)[0] for key in ev.cases} | set(ev.suite_errors)
        return [s for s in self.suites if s.id not in seen]

    def record_execution(
        self,
        candidate: Candidate,
        execution: ExecutionResult,
        suites: Iterable[SuiteRecord],
        *,
        examples: bool = False,
    ) -> None:
        """File each case of one sandbox run under its suite (by path); a suite that ran no
        case (it did not import, the run timed out) gets the run's error instead."""
        ev = candidate.evidence
        by_path = {s.path: s for s in suites}
        counted: set[str] = set()
        for case in execution.cases:
            path = case.nodeid.split("::", 1)[0]
            name = case.nodeid.split("::", 1)[-1]
            if examples and path == EXAMPLES_PATH:
                ev.examples[name] = case.outcome
                counted.add(EXAMPLES_PATH)
            elif path in by_path:
                key = f"{by_path[path].id}::{name}"
                ev.cases[key] = case.outcome
                counted.add(path)
                if case.outcome in ("failed", "error") and case.message:
                    self._messages.setdefault((candidate.id, key), case.message.strip()[:300])
        problem = execution.error or ("timed out" if execution.timed_out else "no test ran")
        for path, suite in by_path.items():
            if path not in counted:
                ev.suite_errors[suite.id] = problem
        if examples and EXAMPLES_PATH not in counted:
            ev.examples_error = problem

    # -- judging ------------------------------------------------------------------------

    def vouched(self, candidate: Candidate) -> bool:
        """The docstring examples all pass and the debugger, by the majority of its reviews
        and in the latest, found nothing."""
        ev = candidate.evidence
        passes = ev.reviews.count("pass")
        return (
            self.examples > 0
            and len(ev.examples) >= self.examples
            and all(o == "passed" for o in ev.examples.values())
            and ev.debugger == "pass"
            and passes * 2 > len(ev.reviews)
            and not ev.static_errors
        )

    def disputes(self) -> list[Dispute]:
        """Test cases that fail *every* vouched-for candidate that ran them.

        A case that passes one vouched-for candidate and fails another tells the candidates
        apart; it is not evidence against the test. A case failed by vouched-for code of
        :data:`DISPUTE_QUORUM` samples or more is ``ignored`` in the evidence; below that it
        is only suspect: one wrong candidate that slipped past the examples and the debugger
        must not be able to overrule the tests that catch it."""
        trusted = {s.id for s in self.suites if s.trusted}
        vouched = [c for c in self.candidates if self.vouched(c)]
        found: list[Dispute] = []
        keys = sorted({k for c in vouched for k in c.evidence.cases})
        for key in keys:
            if key.split("::", 1)[0] in trusted:
                continue
            ran = [c for c in vouched if key in c.evidence.cases]
            if not all(c.evidence.cases[key] in ("failed", "error") for c in ran):
                continue
            weight = sum(c.samples for c in ran)
            found.append(
                Dispute(
                    case=key,
                    suite_id=key.split("::", 1)[0],
                    candidates=[c.id for c in ran],
                    weight=weight,
                    ignored=weight >= DISPUTE_QUORUM,
                    message=self._messages.get((ran[0].id, key), ""),
                )
            )
        return found

    def _signature(self, candidate: Candidate, disputed: set[str]) -> tuple[tuple[str, bool], ...]:
        cases = candidate.evidence.cases
        return tuple(sorted((k, v == "passed") for k, v in cases.items() if k not in disputed))

    def score(self, candidate: Candidate, disputed: set[str] | None = None) -> tuple[float, ...]:
        """The ranking key (higher is better); see the module docstring for the order."""
        disputed = self.disputes_keys() if disputed is None else disputed
        ev = candidate.evidence
        compiles = 0.0 if ev.static_errors else 1.0
        if self.examples:
            examples = sum(o == "passed" for o in ev.examples.values()) / self.examples
        else:
            examples = 1.0
        undisputed = [v for k, v in ev.cases.items() if k not in disputed]
        errored = len(set(ev.suite_errors) - set(self.broken_suites()))
        total = len(undisputed) + errored
        tests = sum(v == "passed" for v in undisputed) / total if total else 0.5
        debugger = ev.reviews.count("pass") / len(ev.reviews) if ev.reviews else 0.5
        mine = self._signature(candidate, disputed)
        agreement = (candidate.samples - 1) + sum(
            other.samples
            for other in self.candidates
            if other.id != candidate.id and mine and self._signature(other, disputed) == mine
        )
        order = -float(self.candidates.index(candidate))
        return (compiles, examples, tests, debugger, float(agreement), order)

    def disputes_keys(self) -> set[str]:
        """The disputed cases left out of the evidence."""
        return {d.case for d in self.disputes() if d.ignored}

    def broken_suites(self) -> dict[str, str]:
        """Suites that ran no test against any candidate, although some candidate ran other
        tests fine (so its module imports): the suite is at fault, and it is left out of
        the evidence like a disputed test. Suite id -> the error."""
        broken: dict[str, str] = {}
        for suite in self.suites:
            ran = [c for c in self.candidates if suite.id in c.evidence.suite_errors]
            if not ran or any(
                k.startswith(f"{suite.id}::") for c in self.candidates for k in c.evidence.cases
            ):
                continue
            healthy = any(
                any(
                    o == "passed"
                    for o in (*c.evidence.cases.values(), *c.evidence.examples.values())
                )
                for c in ran
            )
            if healthy:
                broken[suite.id] = ran[0].evidence.suite_errors[suite.id]
        return broken

    def passed_everything(self, candidate: Candidate, disputed: set[str] | None = None) -> bool:
        """Compiles, every example and every undisputed case passed, the debugger's latest
        review and at least half of them found nothing,
        and there was evidence to pass (at least one example or undisputed case)."""
        disputed = self.disputes_keys() if disputed is None else disputed
        ev = candidate.evidence
        undisputed = [v for k, v in ev.cases.items() if k not in disputed]
        examples_ok = len(ev.examples) >= self.examples and all(
            o == "passed" for o in ev.examples.values()
        )
        return (
            not ev.static_errors
            and examples_ok
            and not set(ev.suite_errors) - set(self.broken_suites())
            and all(v == "passed" for v in undisputed)
            and (bool(undisputed) or self.examples > 0)
            and (
                not ev.reviews
                or (ev.debugger == "pass" and 2 * ev.reviews.count("pass") >= len(ev.reviews))
            )
        )

    def choose(self) -> Choice:
        if not self.candidates:
            raise ValueError("the pool has no candidate")
        disputed = self.disputes_keys()
        ranked = sorted(self.candidates, key=lambda c: self.score(c, disputed), reverse=True)
        best = ranked[0]
        return Choice(
            winner=best.id,
            reason=self.explain(best, disputed),
            passed_everything=self.passed_everything(best, disputed),
            ranking=[c.id for c in ranked],
        )

    def explain(self, candidate: Candidate, disputed: set[str] | None = None) -> str:
        """One line of evidence for ``candidate``, as the result and the prompts show it."""
        disputed = self.disputes_keys() if disputed is None else disputed
        ev = candidate.evidence
        parts = [f"{candidate.id} (pass {candidate.pass_no})"]
        if ev.static_errors:
            parts.append(f"{len(ev.static_errors)} static error(s)")
        if self.examples:
            ok = sum(o == "passed" for o in ev.examples.values())
            parts.append(f"examples {ok}/{self.examples}")
        undisputed = {k: v for k, v in ev.cases.items() if k not in disputed}
        broken = set(self.broken_suites())
        if undisputed or ev.suite_errors:
            ok = sum(v == "passed" for v in undisputed.values())
            suites = len(
                {k.split("::", 1)[0] for k in undisputed} | (set(ev.suite_errors) - broken)
            )
            parts.append(f"tests {ok}/{len(undisputed)} over {suites} suite(s)")
        if set(ev.suite_errors) - broken:
            parts.append(f"{len(set(ev.suite_errors) - broken)} suite(s) did not run")
        if set(ev.suite_errors) & broken:
            parts.append(f"{len(set(ev.suite_errors) & broken)} broken suite(s) ignored")
        ignored = [k for k in ev.cases if k in disputed and ev.cases[k] != "passed"]
        if ignored:
            parts.append(f"{len(ignored)} disputed test(s) ignored")
        if ev.debugger:
            parts.append(f"debugger: {ev.debugger}")
        return ", ".join(parts)

    def get(self, candidate_id: str) -> Candidate:
        return next(c for c in self.candidates if c.id == candidate_id)

    def module_of(self, candidate: Candidate) -> str:
        files = candidate.code.files
        return PurePosixPath(files[0].path).stem if files else "solution"


def report_lines(
    candidates: list[Candidate], choice: Choice | None, disputes: list[Dispute]
) -> list[str]:
    """Plain lines on how a run chose its code, for the CLI and the editor's run report:
    the winner and why, every candidate's evidence, and the disputed tests."""
    if not candidates or choice is None:
        return []
    pool = Pool(
        examples=max((len(c.evidence.examples) for c in candidates), default=0),
        candidates=list(candidates),
    )
    lines = [f"Chosen: {choice.reason}"]
    if len(candidates) > 1:
        for cid in choice.ranking:
            c = pool.get(cid)
            who = f"{c.provider}:{c.model}" if c.provider else "?"
            times = f" x{c.samples}" if c.samples > 1 else ""
            lines.append(f"  {who}{times}: {pool.explain(c)}")
    for d in disputes:
        state = "ignored" if d.ignored else "suspect"
        lines.append(f"Disputed test ({state}): {d.case} fails {', '.join(d.candidates)}")
    return lines
