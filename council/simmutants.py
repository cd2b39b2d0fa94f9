"""Wrong code and wrong tests for the simulated team, made from HumanEval's own solutions.

The simulated generator (council/simteam.py) must be wrong in the way small models are:
code that looks right, runs, passes some of the docstring's examples, and fails the
official tests. So its wrong answers are single-site AST mutations of the canonical
solution (a flipped comparison, an off-by-one constant, a swapped operator, a dropped
branch or statement, min for max, ...), and each one is *verified* to fail the official
`check` before it is used: run once per problem, in a subprocess with a per-program alarm,
an address-space limit and an overall timeout, and cached for the life of the process. A
mutant that still passes (an equivalent mutant) or that hangs is dropped; one that hangs
would only make every sandbox run of the benchmark wait for its timeout.

Its tester's suites come from the official `check` too: each top-level check statement
(an assert, or a loop of asserts) becomes one test function, preceded by the set-up
statements before it, so a failure names the case. The tester's wrong suites corrupt one
case's expected value (the literal an `==` compares against: an int off by one, a flipped
bool, a changed string or list), or negate the assert where there is no literal, and are
verified to reject the canonical solution.

The right code and every mutant are printed by `ast.unparse`, so right and wrong differ in
exactly the mutated line: the simulated debugger can point at it.
"""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

#: at most this many mutants are tried per problem (spread over the sites found)
MAX_MUTANTS = 16
#: seconds one verification program may run in the child before it counts as hanging
PROGRAM_SECS = 0.5

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BIN_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Add,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_NAME_SWAP = {"min": "max", "max": "min", "any": "all", "all": "any"}
_ATTR_SWAP = {
    "lower": "upper",
    "upper": "lower",
    "startswith": "endswith",
    "endswith": "startswith",
    "isupper": "islower",
    "islower": "isupper",
    "swapcase": "lower",
}
_DROPPABLE_METHODS = {"lower", "upper", "strip", "lstrip", "rstrip", "swapcase", "capitalize"}
_DROPPABLE_FUNCTIONS = {"set", "sorted", "reversed", "abs", "round"}


@dataclass(frozen=True)
class Variant:
    """One wrong version of the solution; ``line`` is 1-based in ``code``."""

    code: str
    kind: str
    line: int
    wrong_line: str
    right_line: str


@dataclass
class SuiteSource:
    """The official check as a pytest module's parts: set-up code and one body per case."""

    preamble: str
    cases: list[str]
    #: (case index, that case's body with its expected value corrupted)
    corrupt: list[tuple[int, str]] = field(default_factory=list)


# -- the right code and its mutants --------------------------------------------------------


def right_code(problem: dict[str, Any]) -> str:
    """The canonical solution as a whole module (prompt + body), as ``ast.unparse`` prints it."""
    return ast.unparse(ast.parse(problem["prompt"] + problem["canonical_solution"])) + "\n"


def _entry(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ValueError(f"no function {name!r} in the solution")


def _node_sites(node: ast.AST) -> list[tuple[str, Any]]:
    """The mutations of ``node`` itself: (kind, argument)."""
    if isinstance(node, ast.Compare):
        return [("comparison", k) for k, op in enumerate(node.ops) if type(op) in _CMP_SWAP]
    if isinstance(node, ast.BinOp | ast.AugAssign):
        return [("operator", None)] if type(node.op) in _BIN_SWAP else []
    if isinstance(node, ast.BoolOp):
        return [("boolean", None)]
    if isinstance(node, ast.UnaryOp):
        return [("negation", None)] if isinstance(node.op, ast.Not) else []
    if isinstance(node, ast.Constant):
        if type(node.value) is int:
            return [("constant", +1), ("constant", -1)]
        return [("constant", None)] if type(node.value) is bool or node.value in ("", " ") else []
    if isinstance(node, ast.Call):
        if _droppable(node):
            return [("dropped call", None)]
        return [("off-by-one count", None)] if _calls(node, "len") else []
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        swaps = _NAME_SWAP if isinstance(node, ast.Name) else _ATTR_SWAP
        return [("call", None)] if name in swaps else []
    if isinstance(node, ast.If | ast.While | ast.IfExp):
        return [("negated condition", None)]
    if isinstance(node, ast.comprehension):
        return [("negated condition", k) for k in range(len(node.ifs))]
    return []


def _sites(func: ast.FunctionDef) -> list[tuple[int, str, Any]]:
    """Every single-site mutation of ``func``: (node index in ``ast.walk``, kind, argument)."""
    found: list[tuple[int, str, Any]] = []
    for index, node in enumerate(ast.walk(func)):
        found += [(index, kind, arg) for kind, arg in _node_sites(node)]
        for name in ("body", "orelse"):
            stmts = getattr(node, name, None)
            if not isinstance(stmts, list):
                continue
            for pos, stmt in enumerate(stmts):
                if isinstance(stmt, ast.If):
                    found.append((index, "dropped branch", (name, pos)))
                elif isinstance(stmt, ast.AugAssign) or (
                    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                ):  # a forgotten update or append; not a docstring, not a first assignment
                    found.append((index, "dropped statement", (name, pos)))
    return found


def _droppable(call: ast.Call) -> bool:
    """A call whose removal leaves code that still runs: `sorted(x)` -> `x`, `s.lower()` ->
    `s`, `f(f(s))` -> `f(s)`."""
    if call.keywords:
        return False
    if isinstance(call.func, ast.Attribute):
        return not call.args and call.func.attr in _DROPPABLE_METHODS
    return (
        isinstance(call.func, ast.Name)
        and len(call.args) == 1
        and not isinstance(call.args[0], ast.Starred)
        and (call.func.id in _DROPPABLE_FUNCTIONS or _calls(call.args[0], call.func.id))
    )


def _calls(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def _apply(func: ast.FunctionDef, index: int, kind: str, arg: Any) -> None:
    nodes = list(ast.walk(func))
    node = nodes[index]
    if kind == "dropped call":
        call = node
        assert isinstance(call, ast.Call)
        inner = call.func.value if isinstance(call.func, ast.Attribute) else call.args[0]
        parent = next(p for p in nodes if call in ast.iter_child_nodes(p))
        _replace_child(parent, call, inner)
        return
    if kind == "off-by-one count":
        parent = next(p for p in nodes if node in ast.iter_child_nodes(p))
        _replace_child(parent, node, ast.BinOp(left=node, op=ast.Add(), right=ast.Constant(1)))
        return
    if kind == "negated condition":
        if isinstance(node, ast.comprehension):
            node.ifs[arg] = ast.UnaryOp(op=ast.Not(), operand=node.ifs[arg])
        else:
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)  # type: ignore[attr-defined]
        return
    if kind == "comparison":
        node.ops[arg] = _CMP_SWAP[type(node.ops[arg])]()  # type: ignore[attr-defined]
    elif kind == "operator":
        node.op = _BIN_SWAP[type(node.op)]()  # type: ignore[attr-defined]
    elif kind == "boolean":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()  # type: ignore[attr-defined]
    elif kind == "negation":
        node.op = ast.UAdd()  # type: ignore[attr-defined]
    elif kind == "constant":
        value = node.value  # type: ignore[attr-defined]
        if isinstance(value, str):
            node.value = " " if value == "" else ""  # type: ignore[attr-defined]
        else:
            node.value = (not value) if arg is None else value + arg  # type: ignore[attr-defined]
    elif kind == "call" and isinstance(node, ast.Name):
        node.id = _NAME_SWAP[node.id]
    elif kind == "call" and isinstance(node, ast.Attribute):
        node.attr = _ATTR_SWAP[node.attr]
    else:  # dropped branch / statement
        name, pos = arg
        stmts: list[ast.stmt] = getattr(node, name)
        del stmts[pos]
        if not stmts:
            stmts.append(ast.Pass())


def _replace_child(parent: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for name, value in ast.iter_fields(parent):
        if value is old:
            setattr(parent, name, new)
        elif isinstance(value, list):
            value[:] = [new if v is old else v for v in value]


def _negation_as_truth(tree: ast.Module) -> None:
    """`+x` is how a dropped `not` is written above; print it as plain `x`, not `+x`."""
    for node in ast.walk(tree):
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.UAdd):
                setattr(node, name, value.operand)
            elif isinstance(value, list):
                value[:] = [
                    v.operand if isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.UAdd) else v
                    for v in value
                ]


def mutants(problem: dict[str, Any], limit: int = MAX_MUTANTS) -> list[Variant]:
    """Unverified single-site mutants of the entry point, at most ``limit``, spread evenly."""
    right = right_code(problem)
    tree = ast.parse(right)
    sites = _sites(_entry(tree, problem["entry_point"]))
    if len(sites) > limit:
        step = len(sites) / limit
        sites = [sites[int(i * step)] for i in range(limit)]
    right_lines = right.splitlines()
    out: list[Variant] = []
    seen = {right}
    for index, kind, arg in sites:
        mutated = copy.deepcopy(tree)
        _apply(_entry(mutated, problem["entry_point"]), index, kind, arg)
        _negation_as_truth(mutated)
        try:
            code = ast.unparse(ast.fix_missing_locations(mutated)) + "\n"
            compile(code, "<mutant>", "exec")
        except (SyntaxError, ValueError, TypeError):
            continue
        if code in seen:
            continue
        seen.add(code)
        lines = code.splitlines()
        line = next(
            (i for i, (a, b) in enumerate(zip(lines, right_lines, strict=False)) if a != b),
            min(len(lines), len(right_lines)) - 1,
        )
        out.append(
            Variant(
                code=code,
                kind=kind,
                line=line + 1,
                wrong_line=lines[line].strip() if line < len(lines) else "",
                right_line=right_lines[line].strip() if line < len(right_lines) else "",
            )
        )
    return out


# -- the official check as separate test cases ---------------------------------------------


def _has_assert(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Assert) for n in ast.walk(stmt))


def suite_source(problem: dict[str, Any]) -> SuiteSource:
    """Split ``check(candidate)`` into cases; corruptions are proposed, not yet verified."""
    tree = ast.parse(problem["test"])
    check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    preamble = ast.unparse(
        ast.Module(body=[n for n in tree.body if n is not check], type_ignores=[])
    )
    setup: list[ast.stmt] = []
    cases: list[str] = []
    corrupt: list[tuple[int, str]] = []
    for stmt in check.body:
        if not _has_assert(stmt):
            setup.append(stmt)
            continue
        body = [*setup, stmt]
        cases.append(ast.unparse(ast.Module(body=body, type_ignores=[])))
        broken = _corrupted(stmt)
        if broken is not None:
            text = ast.unparse(ast.Module(body=[*setup, broken], type_ignores=[]))
            corrupt.append((len(cases) - 1, text))
    return SuiteSource(preamble=preamble, cases=cases, corrupt=corrupt)


def _corrupted(stmt: ast.stmt) -> ast.stmt | None:
    """``stmt`` with its (first) assert's expected literal changed, else the assert negated."""
    stmt = copy.deepcopy(stmt)
    target = stmt if isinstance(stmt, ast.Assert) else None
    if target is None:
        target = next((n for n in ast.walk(stmt) if isinstance(n, ast.Assert)), None)
    if target is None:
        return None
    test = target.test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        for side in ("comparators", "left"):
            node = test.comparators[0] if side == "comparators" else test.left
            try:
                value = ast.literal_eval(node)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            wrong = _wrong_value(value)
            if wrong is not None and wrong != value:
                replacement = ast.parse(repr(wrong), mode="eval").body
                if side == "comparators":
                    test.comparators[0] = replacement
                else:
                    test.left = replacement
                return ast.fix_missing_locations(stmt)
    target.test = ast.UnaryOp(op=ast.Not(), operand=test)
    return ast.fix_missing_locations(stmt)


def _wrong_value(value: Any) -> Any:
    """A plausible miscalculation of ``value``: the tester's arithmetic slipped."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0
    if isinstance(value, str):
        return value[:-1] if len(value) > 1 else value + "a"
    if isinstance(value, list | tuple):
        if not value:
            return type(value)([0])
        last = _wrong_value(value[-1])
        items = [*value[:-1], last] if last is not None else list(value[:-1])
        return type(value)(items)
    if value is None:
        return 0
    return None


# -- verification: run programs in a child, one alarm each ---------------------------------

_CHILD = r"""
import json, os, resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
out = os.fdopen(os.dup(1), "w")
sys.stdout = open(os.devnull, "w")
class Hung(BaseException):
    pass
def alarm(*_):
    raise Hung()
signal.signal(signal.SIGALRM, alarm)
job = json.load(sys.stdin)
for index, program in job["programs"]:
    outcome = "pass"
    signal.setitimer(signal.ITIMER_REAL, job["secs"])
    try:
        exec(compile(program, "<program>", "exec"), {"__name__": "sim_check"})
    except Hung:
        outcome = "hung"
    except AssertionError:
        outcome = "assert"
    except BaseException as exc:
        outcome = "error"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    out.write(json.dumps([index, outcome]) + "\n")
    out.flush()
"""


def run_programs(programs: Sequence[str], secs: float = PROGRAM_SECS) -> list[str]:
    """Outcome of each program: pass, assert, error or hung. One child runs them in order;
    if the child itself stops answering (a hang the alarm cannot interrupt, in C code), the
    program it was on counts as hung and a new child carries on after it."""
    outcomes: dict[int, str] = {}
    todo = list(enumerate(programs))
    while todo:
        payload = json.dumps({"programs": todo, "secs": secs})
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _CHILD],
                input=payload,
                capture_output=True,
                text=True,
                timeout=10 + (secs + 0.5) * len(todo),
            )
            stdout = done.stdout
        except subprocess.TimeoutExpired as exc:
            raw = exc.stdout or ""
            stdout = raw.decode() if isinstance(raw, bytes) else raw
        for line in stdout.splitlines():
            try:
                index, outcome = json.loads(line)
            except ValueError:
                continue
            outcomes[int(index)] = str(outcome)
        remaining = [(i, p) for i, p in todo if i not in outcomes]
        if remaining:  # the child died or hung on the first of these
            outcomes[remaining[0][0]] = "hung"
            remaining = remaining[1:]
        todo = remaining
    return [outcomes[i] for i in range(len(programs))]


def official_program(problem: dict[str, Any], code: str) -> str:
    return f"{code}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def case_program(problem: dict[str, Any], code: str, suite: SuiteSource, body: str) -> str:
    indented = "\n".join("    " + line for line in body.splitlines())
    return (
        f"{code}\n{suite.preamble}\n"
        f"def _case():\n    candidate = {problem['entry_point']}\n{indented}\n_case()\n"
    )


def iter_cases(suite: SuiteSource) -> Iterator[tuple[int, str]]:
    yield from enumerate(suite.cases)
