"""Typed inputs and outputs of every council stage.

The models that a role must produce (`Plan`, `TechManifest`, `CodeBundle`, `DebugReport`,
`TestSuite`, `Synthesis`) are also the JSON schemas sent to the providers, so they stay small,
flat where possible, and every field has a description the model can read. Fields the
pipeline fills in itself (execution results, static findings, usage) live on separate
models or are excluded from the schemas sent to the models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from council.sandbox import ExecutionResult

Mode = Literal["generate", "debug", "tests", "freeform"]
Agent = Literal["researcher", "generator", "debugger", "tester"]


# -- the request ---------------------------------------------------------------------------


class Diagnostic(BaseModel):
    line: int = Field(description="1-based line")
    message: str
    severity: str = "error"
    source: str | None = None


class RelatedFile(BaseModel):
    path: str
    text: str


class WorkspaceSnippet(BaseModel):
    """Code from another file of the workspace, picked for the request from the workspace
    index (`council.workspace.council_context`): the definition of a name the target uses,
    a test that exercises it, or a similar function."""

    path: str
    start_line: int = Field(description="1-based, inclusive")
    end_line: int
    reason: Literal["definition", "test", "similar"]
    name: str
    text: str


class RequestContext(BaseModel):
    """What the editor (or CLI) knows about where the request comes from."""

    file_path: str | None = None
    file_text: str | None = None
    selection: str | None = None
    symbol: str | None = None
    symbol_kind: str | None = None
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    related_files: list[RelatedFile] = Field(default_factory=list)
    workspace_snippets: list[WorkspaceSnippet] = Field(default_factory=list)
    failing_test: str | None = None
    traceback: str | None = None


class CouncilRequest(BaseModel):
    query: str
    language: str = "python"
    mode: Mode = "freeform"
    context: RequestContext = Field(default_factory=RequestContext)


# -- what the roles produce ----------------------------------------------------------------


class _Out(BaseModel):
    """Model outputs: tolerate extra keys small models like to add, keep only ours."""

    model_config = ConfigDict(extra="ignore")


class AgentTask(_Out):
    agent: Agent
    instruction: str = Field(description="What this agent must do, concretely")


class Plan(_Out):
    goal: str = Field(description="One sentence: what the finished code must do")
    tasks: list[AgentTask] = Field(description="One task per agent that has work to do")
    acceptance_criteria: list[str] = Field(
        default_factory=list, description="Checkable statements the tests should cover"
    )


class TechManifest(_Out):
    summary: str = Field(description="The approach in two or three sentences")
    apis: list[str] = Field(default_factory=list, description="Functions/APIs to use")
    dependencies: list[str] = Field(
        default_factory=list, description="Third-party packages needed (prefer none)"
    )
    pitfalls: list[str] = Field(default_factory=list, description="Edge cases and traps")


class CodeFile(_Out):
    path: str = Field(description="Workspace-relative path, e.g. src/pkg/module.py")
    content: str = Field(description="The complete file content")


class CodeBundle(_Out):
    files: list[CodeFile] = Field(description="Complete contents of every file written")
    explanation: str = Field(description="What the code does and why, briefly")
    assumptions: list[str] = Field(default_factory=list)


class Bug(_Out):
    line: int = Field(description="1-based line in the file where the bug is")
    severity: Literal["critical", "major", "minor"] = "major"
    description: str
    fix: str = Field(description="How to fix it, concretely")
    path: str | None = Field(None, description="File of the bug, if not the main file")


class DebugReport(_Out):
    verdict: Literal["pass", "fail"] = Field(description="fail if any bug was found")
    bugs: list[Bug] = Field(default_factory=list)
    analysis: str = Field("", description="Reasoning, briefly")
    fixed_code: str | None = Field(None, description="Debug mode only: the whole corrected file")


class TestSuite(_Out):
    """What the tester writes; the pipeline then runs it."""

    path: str = Field(description="Test file path, e.g. tests/test_module.py")
    content: str = Field(description="A complete pytest module")
    cases: list[str] = Field(default_factory=list, description="One line per test: what it checks")


class Feedback(_Out):
    agent: Agent
    message: str = Field(description="Targeted, actionable feedback for that agent")


class Synthesis(_Out):
    decision: Literal["APPROVE", "REFINE"]
    score: float = Field(ge=0, le=1, description="Confidence the code is correct and complete")
    summary: str
    feedback: list[Feedback] = Field(default_factory=list)


class FreeformAnswer(_Out):
    answer: str = Field(description="The answer, in Markdown")
    code: CodeBundle | None = None


# -- what the pipeline records ---------------------------------------------------------------


class TestReport(BaseModel):
    verdict: Literal["pass", "fail", "error", "skipped"]
    suite: TestSuite | None = None
    execution: ExecutionResult | None = None
    note: str = ""


class StaticFinding(BaseModel):
    path: str
    line: int
    severity: str
    code: str
    message: str


class RoleUsage(BaseModel):
    role: str
    provider: str
    model: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    estimated: bool = Field(
        False, description="some of these tokens are estimates: the server reported no usage"
    )


class TranscriptEntry(BaseModel):
    stage: str
    role: str
    pass_no: int
    provider: str | None = None
    model: str | None = None
    prompt: str = ""
    response: str = ""
    error: str | None = None
    seconds: float = 0.0


# -- the candidate pool (council/pool.py judges; these are what it records) ---------------


class SuiteRecord(BaseModel):
    """One test suite the tester wrote. ``path`` is where the sandbox runs it (one per
    suite); ``suite.path`` is the tester's own choice."""

    id: str
    pass_no: int
    path: str
    suite: TestSuite
    trusted: bool = Field(False, description="the user's own tests: never disputed")


class CandidateEvidence(BaseModel):
    """What is known about one candidate; outcomes are pytest's (passed/failed/error...)."""

    cases: dict[str, str] = Field(default_factory=dict, description="'s1::test_x' -> outcome")
    suite_errors: dict[str, str] = Field(default_factory=dict, description="suite id -> error")
    examples: dict[str, str] = Field(default_factory=dict, description="example test -> outcome")
    examples_error: str | None = None
    debugger: str | None = Field(None, description="the debugger's latest verdict")
    reviews: list[str] = Field(default_factory=list, description="every debugger verdict")
    bugs: list[str] = Field(default_factory=list)
    static_errors: list[str] = Field(default_factory=list)


class Candidate(BaseModel):
    id: str
    pass_no: int
    index: int = Field(0, description="position among the pass's concurrent candidates")
    provider: str | None = None
    model: str | None = None
    code: CodeBundle
    samples: int = Field(1, description="times the generator wrote exactly this code")
    evidence: CandidateEvidence = Field(default_factory=CandidateEvidence)


class Dispute(BaseModel):
    """A test case that fails every candidate the examples and the debugger accept.

    ``weight`` is how many generated samples those candidates are; from
    :data:`council.pool.DISPUTE_QUORUM` on, the case is left out of the evidence, below it
    it is only suspect (the tester is asked to check it)."""

    case: str
    suite_id: str
    candidates: list[str]
    weight: int = 1
    ignored: bool = False
    message: str = ""


class Choice(BaseModel):
    """The pool's pick and why; ``ranking`` lists every candidate, best first."""

    winner: str
    reason: str
    passed_everything: bool
    ranking: list[str]


Status = Literal["approved", "best_effort", "failed", "cancelled"]


class CouncilResult(BaseModel):
    session_id: str
    status: Status
    mode: Mode
    council_mode: Literal["council", "local"] = Field(
        "council", description="'local' when no chat model was reachable (degraded mode)"
    )
    code: CodeBundle | None = None
    answer: str | None = None
    plan: Plan | None = None
    tech_manifest: TechManifest | None = None
    diagnosis: DebugReport | None = Field(
        None, description="debug mode: the bugs found in the given code, with fixes"
    )
    debug_report: DebugReport | None = None
    static_findings: list[StaticFinding] = Field(default_factory=list)
    test_report: TestReport | None = None
    synthesis: Synthesis | None = None
    refinement_passes: int = 0
    candidates: list[Candidate] = Field(
        default_factory=list, description="every candidate of the run, with its evidence"
    )
    suites: list[SuiteRecord] = Field(default_factory=list, description="every test suite")
    choice: Choice | None = Field(None, description="which candidate became `code`, and why")
    disputed_tests: list[Dispute] = Field(default_factory=list)
    total_duration_secs: float = 0.0
    summary: str = ""
    usage: list[RoleUsage] = Field(default_factory=list)
    cost_usd: float = 0.0
    transcript: list[TranscriptEntry] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    prompt_version: str = ""
