"""A simulated council team for HumanEval: every role, seeded, served over real HTTP.

Why: whether the council beats its own generator depends on how often the generator and the
tester are wrong, and on what the pipeline does with disagreeing evidence. Real small
models make those rates fixed and unknown; this team makes them parameters, so
``council bench humaneval --simulate generator=0.5,tester=0.85`` measures the *pipeline's*
policy (does it keep correct code? does it approve wrong code?) at known error rates, in
seconds and without a model. It is served by the project's loopback provider
(`providers.loopback`, through its ``responder`` hook), so every call goes through the real
router, HTTP client, structured parsing and sandbox.

Each request is answered from its content alone: the problem is the HumanEval problem whose
prompt appears in the request (every council prompt quotes the file), the role is the JSON
schema asked for (Plan and Synthesis: orchestrator, TechManifest: researcher, CodeBundle:
generator, DebugReport: debugger, TestSuite: tester). Requests it does not recognise (a
capability probe, debug mode's fix) fall through to the loopback's defaults.

- generator: the canonical solution with probability ``generator``, else one of the
  problem's verified wrong variants (council/simmutants.py), for the path the prompt names.
- tester: with probability ``tester`` the official check as one test per case, else the
  same suite with one case's expected value corrupted, so that it rejects correct code.
- debugger: knows right from wrong because the team remembers the code it emitted; says
  pass on right code with probability ``debugger_ok`` (else a false alarm) and finds the
  real bug in wrong code with probability ``debugger_bug`` (else says pass).
- orchestrator: a plain plan; its synthesis approves with probability ``approve_pass`` when
  the prompt shows the executed tests passing and ``approve_fail`` when they do not (so
  the pipeline's evidence gate gets exercised). researcher: a plain manifest.

Determinism: each draw is seeded by (seed, problem, role, the prompt text, n), n counting
identical prompts. Concurrent runs therefore get the same multiset of answers whatever the
arrival order. Volatile text (durations, addresses, temporary paths) is masked first, and
whitespace runs count as one space. The
generator's draw ignores the prompt's Plan and Tech manifest sections (this generator
ignores them too), and ``new_phase()`` restarts the counts: the bench calls it between its
baseline and council phases, so the council's first pass-1 candidate for a problem is the
baseline's answer. The comparison is paired; its expectations are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from council.simmutants import (
    SuiteSource,
    Variant,
    case_program,
    mutants,
    official_program,
    right_code,
    run_programs,
    suite_source,
)
from providers.loopback import LoopbackProvider, Reply, RequestRecord

MODEL = "simteam"
ROLE_OF_SCHEMA = {
    "Plan": "orchestrator",
    "Synthesis": "orchestrator",
    "TechManifest": "researcher",
    "CodeBundle": "generator",
    "DebugReport": "debugger",
    "TestSuite": "tester",
}


@dataclass(frozen=True)
class SimParams:
    """The team's error rates; ``parse("generator=0.5,tester=0.85,seed=0")``."""

    generator: float = 0.5
    tester: float = 0.85
    debugger_ok: float = 0.8
    debugger_bug: float = 0.6
    approve_pass: float = 0.9
    approve_fail: float = 0.2
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> SimParams:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise ValueError(
                    f"--simulate: expected key=value with keys {', '.join(sorted(known))}; "
                    f"got {item!r}"
                )
            try:
                values[key] = int(value) if key == "seed" else float(value)
            except ValueError:
                raise ValueError(f"--simulate: {key} needs a number, got {value!r}") from None
            if key != "seed" and not 0.0 <= values[key] <= 1.0:
                raise ValueError(f"--simulate: {key} is a probability, got {value}")
        return cls(**values)


@dataclass
class Prepared:
    """One problem, ready to simulate: right code, verified wrong variants, verified suite."""

    problem: dict[str, Any]
    right: str
    variants: list[Variant]
    suite: SuiteSource

    @property
    def task_id(self) -> str:
        return str(self.problem["task_id"])


_PREPARED: dict[str, Prepared] = {}
_PREPARE_LOCK = threading.Lock()


def prepare(problems: Iterable[dict[str, Any]]) -> list[Prepared]:
    """Verify (once per process) each problem's variants and suite cases in one child run:
    variants must fail the official check, the right code must pass every case, and a
    corrupted case must fail the right code with an AssertionError."""
    problems = list(problems)
    with _PREPARE_LOCK:
        todo = list({p["task_id"]: p for p in problems if p["task_id"] not in _PREPARED}.values())
        programs: list[str] = []
        plans: list[tuple[dict[str, Any], str, list[Variant], SuiteSource, int]] = []
        for problem in todo:
            right = right_code(problem)
            variants = mutants(problem)
            suite = suite_source(problem)
            plans.append((problem, right, variants, suite, len(programs)))
            programs.append(official_program(problem, right))
            programs += [official_program(problem, v.code) for v in variants]
            programs += [case_program(problem, right, suite, body) for body in suite.cases]
            programs += [case_program(problem, right, suite, body) for _, body in suite.corrupt]
        outcomes = run_programs(programs) if programs else []
        for problem, right, variants, suite, start in plans:
            at = start
            right_ok = outcomes[at] == "pass"
            at += 1
            kept = [
                v
                for v, o in zip(variants, outcomes[at : at + len(variants)], strict=True)
                if o in ("assert", "error")
            ]
            at += len(variants)
            cases_ok = outcomes[at : at + len(suite.cases)]
            at += len(suite.cases)
            corrupt_ok = outcomes[at : at + len(suite.corrupt)]
            good = {i for i, o in enumerate(cases_ok) if o == "pass"}
            verified = SuiteSource(
                preamble=suite.preamble,
                cases=list(suite.cases),
                corrupt=[
                    (i, body)
                    for (i, body), o in zip(suite.corrupt, corrupt_ok, strict=True)
                    if o == "assert" and i in good
                ],
            )
            if not right_ok:  # cannot happen with the published data; never simulate it
                kept = []
            _PREPARED[problem["task_id"]] = Prepared(problem, right, kept, verified)
        return [_PREPARED[p["task_id"]] for p in problems]


def suite_module(prepared: Prepared, module: str, corrupt: int | None = None) -> str:
    """The tester's pytest module: one test per case of the official check; ``corrupt``
    picks an entry of ``suite.corrupt`` to use instead of its case."""
    problem, suite = prepared.problem, prepared.suite
    entry = problem["entry_point"]
    bodies = list(suite.cases)
    if corrupt is not None:
        index, body = suite.corrupt[corrupt]
        bodies[index] = body
    lines = [
        f'"""Tests for {entry}, one per case of its specification."""',
        f"import {module} as _solution",
        "globals().update({k: v for k, v in vars(_solution).items() if not k.startswith('__')})",
        suite.preamble,
        "",
    ]
    for i, body in enumerate(bodies, 1):
        lines += ["", f"def test_{entry}_{i}():", f"    candidate = {entry}"]
        lines += ["    " + line for line in body.splitlines()]
    return "\n".join(lines) + "\n"


# -- reading the request ------------------------------------------------------------------

_VOLATILE = [
    (re.compile(r"\d+\.\d+m?s\b"), "<t>"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(re.escape(tempfile.gettempdir()) + r"/[^\s'\"):]*"), "<tmp>"),
]
_SECTION = r"## {title}[^\n]*\n(.*?)(?=\n## |\Z)"
_NUMBERED = re.compile(r"^\s*\d+\| ?", re.M)


def _section(text: str, title: str) -> str | None:
    found = re.search(_SECTION.format(title=re.escape(title)), text, re.S)
    return found.group(1) if found else None


def _without(text: str, *titles: str) -> str:
    for title in titles:
        text = re.sub(_SECTION.format(title=re.escape(title)), "", text, flags=re.S)
    return text


def _normalise(text: str) -> str:
    for pattern, mask in _VOLATILE:
        text = pattern.sub(mask, text)
    return " ".join(text.split())


def _code_key(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines())


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass(frozen=True)
class _Label:
    task_id: str
    variant: Variant | None  # None: the right code


class SimTeam:
    """The responder behind the loopback provider; thread-safe (handlers call it
    concurrently). ``stats`` counts what it answered, per role and kind."""

    def __init__(self, params: SimParams, problems: Sequence[dict[str, Any]]) -> None:
        self.params = params
        self.problems = {p["task_id"]: p for p in problems}
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seen: Counter[tuple[str, str, str]] = Counter()
        self._labels: dict[str, _Label] = {}

    def serve(self) -> LoopbackProvider:
        """A loopback provider (not started) that answers every role through this team."""
        return LoopbackProvider(models=(MODEL,), responder=self.respond)

    def new_phase(self) -> None:
        """Restart the identical-prompt counts (see the module docstring)."""
        with self._lock:
            self._seen.clear()

    # -- the hook ---------------------------------------------------------------------

    def respond(self, record: RequestRecord) -> Reply | None:
        body = record.body if isinstance(record.body, dict) else {}
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        said = [
            (m.get("role"), m.get("content"))
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("content"), str)
        ]
        system = next((text for role, text in said if role == "system"), "")
        # the first user message is the prompt; a later one would be a repair request
        user = next((text for role, text in said if role == "user"), "")
        fmt = body.get("response_format")
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("name") if isinstance(spec, dict) else None
        answer = self.answer(system, user, schema if isinstance(schema, str) else None)
        if answer is None:
            return None
        content = json.dumps(answer)
        prompt_tokens = sum(_tokens(text) for _, text in said)
        return Reply(content=content, usage=(prompt_tokens, _tokens(content)))

    def answer(self, system: str, user: str, schema: str | None) -> dict[str, Any] | None:
        """The JSON object the role answers with, or None when this is not a council call
        about a known problem."""
        role = ROLE_OF_SCHEMA.get(schema or "")
        if role is None or (schema == "DebugReport" and "fixed_code" in system):
            return None
        problem = self._find(user)
        if problem is None:
            return None
        prepared = prepare([problem])[0]
        if schema == "Plan":
            return _plan(problem)
        if schema == "TechManifest":
            return _manifest(problem)
        if schema == "CodeBundle":
            return self._generate(prepared, user)
        if schema == "DebugReport":
            return self._debug(prepared, user)
        if schema == "TestSuite":
            return self._test(prepared, user)
        return self._synthesise(prepared, user)

    def _find(self, text: str) -> dict[str, Any] | None:
        found = [
            p
            for p in self.problems.values()
            if p["entry_point"] in text and p["prompt"].strip() in text
        ]
        return max(found, key=lambda p: len(p["prompt"]), default=None)

    def _draw(self, task_id: str, role: str, key: str) -> random.Random:
        digest = hashlib.sha256(_normalise(key).encode()).hexdigest()
        with self._lock:
            n = self._seen[(task_id, role, digest)]
            self._seen[(task_id, role, digest)] += 1
        material = f"{self.params.seed}|{task_id}|{role}|{digest}|{n}".encode()
        return random.Random(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    # -- the roles --------------------------------------------------------------------

    def _generate(self, prepared: Prepared, user: str) -> dict[str, Any]:
        key = _without(user, "Plan", "Tech manifest")
        rng = self._draw(prepared.task_id, "generator", key)
        right = rng.random() < self.params.generator or not prepared.variants
        variant = None if right else rng.choice(prepared.variants)
        code = prepared.right if variant is None else variant.code
        with self._lock:
            self._labels[_code_key(code)] = _Label(prepared.task_id, variant)
            self.stats["generator_right" if variant is None else "generator_wrong"] += 1
        target = (_section(user, "Write the code to") or "").strip().splitlines()
        path = target[0].strip() if target else "solution.py"
        return {
            "files": [{"path": path, "content": code}],
            "explanation": f"Implements {prepared.problem['entry_point']} as its docstring says.",
            "assumptions": [],
        }

    def _debug(self, prepared: Prepared, user: str) -> dict[str, Any]:
        rng = self._draw(prepared.task_id, "debugger", user)
        code = _first_code_block(_section(user, "Code") or "")
        with self._lock:
            label = self._labels.get(_code_key(code)) if code else None
        variant = label.variant if label is not None else None
        if variant is None:
            if rng.random() < self.params.debugger_ok:
                self._count("debugger_pass_on_right")
                return {"verdict": "pass", "bugs": [], "analysis": "Traced the examples; fine."}
            self._count("debugger_false_alarm")
            lines = [i for i, line in enumerate(code.splitlines(), 1) if line.strip()] or [1]
            return {
                "verdict": "fail",
                "bugs": [
                    {
                        "line": rng.choice(lines),
                        "severity": "major",
                        "description": "This may mishandle an edge case such as empty input.",
                        "fix": "Handle the edge case explicitly.",
                    }
                ],
                "analysis": "Suspicious edge-case handling.",
            }
        if rng.random() < self.params.debugger_bug:
            self._count("debugger_found_bug")
            return {
                "verdict": "fail",
                "bugs": [
                    {
                        "line": variant.line,
                        "severity": "major",
                        "description": f"`{variant.wrong_line}` is wrong ({variant.kind}).",
                        "fix": f"Write `{variant.right_line}` instead.",
                    }
                ],
                "analysis": f"A {variant.kind} bug on line {variant.line}.",
            }
        self._count("debugger_missed_bug")
        return {"verdict": "pass", "bugs": [], "analysis": "Traced the examples; fine."}

    def _test(self, prepared: Prepared, user: str) -> dict[str, Any]:
        rng = self._draw(prepared.task_id, "tester", user)
        module_match = re.search(r"\(module `([A-Za-z_][A-Za-z0-9_]*)`\)", user)
        module = module_match.group(1) if module_match else "solution"
        corrupt = None
        if rng.random() >= self.params.tester and prepared.suite.corrupt:
            corrupt = rng.randrange(len(prepared.suite.corrupt))
        self._count("tester_right" if corrupt is None else "tester_wrong")
        entry = prepared.problem["entry_point"]
        return {
            "path": f"tests/test_{module}.py",
            "content": suite_module(prepared, module, corrupt),
            "cases": [f"{entry}: case {i}" for i in range(1, len(prepared.suite.cases) + 1)],
        }

    def _synthesise(self, prepared: Prepared, user: str) -> dict[str, Any]:
        rng = self._draw(prepared.task_id, "synthesis", user)
        tests = _section(user, "Test execution") or ""
        # Failing tests are listed one per line; disputed ones are left out of that list (the
        # prompt shows them apart, as not blocking), so they do not count against approval.
        failing = re.search(r"^- (?:FAILED|ERROR) .*$", tests, re.M)
        passing = (
            bool(re.search(r"\b\d+ passed", tests))
            and failing is None
            and not re.search(r"timed out|not run|no tests ran", tests, re.I)
        )
        debug = _section(user, "Debugger report") or ""
        approve = rng.random() < (self.params.approve_pass if passing else self.params.approve_fail)
        self._count("orchestrator_approve" if approve else "orchestrator_refine")
        if approve:
            return {"decision": "APPROVE", "score": 0.9, "summary": "Looks done.", "feedback": []}
        if failing:
            message = f"Make this test pass: {failing.group(0)[2:][:300]}"
        elif '"verdict": "fail"' in debug:
            message = "Fix the bug the debugger reported."
        else:
            message = "Check the edge cases of the specification again."
        return {
            "decision": "REFINE",
            "score": 0.4,
            "summary": "Not done yet.",
            "feedback": [{"agent": "generator", "message": message}],
        }


def _first_code_block(section: str) -> str:
    found = re.search(r"```python\n(.*?)\n```", section, re.S)
    return _NUMBERED.sub("", found.group(1)) if found else ""


def _plan(problem: dict[str, Any]) -> dict[str, Any]:
    entry = problem["entry_point"]
    return {
        "goal": f"Implement {entry} as its docstring specifies.",
        "tasks": [
            {"agent": "researcher", "instruction": f"List the edge cases of {entry}."},
            {"agent": "generator", "instruction": f"Write the body of {entry}."},
            {"agent": "debugger", "instruction": f"Trace {entry} on the docstring's examples."},
            {"agent": "tester", "instruction": f"Test {entry} on the examples and edge cases."},
        ],
        "acceptance_criteria": [f"{entry} returns what the docstring's examples show."],
    }


def _manifest(problem: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": f"Implement {problem['entry_point']} with the standard library only.",
        "apis": [],
        "dependencies": [],
        "pitfalls": ["empty input", "boundary values"],
    }
