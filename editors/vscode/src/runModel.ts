/**
 * The server's run protocol (`council/runs`, `council/run`, `council/runsChanged`; see the
 * README's language-server section) and how the *Council* view words it. No `vscode`
 * import, so `node --test` checks it without an editor.
 */

export type RunStatus = "running" | "approved" | "best_effort" | "failed" | "cancelled";

export interface RunSummary {
  sessionId: string;
  title: string;
  command: string;
  status: RunStatus;
  uri: string | null;
  mode: string | null;
  startedAt: number;
  finishedAt: number | null;
  seconds: number;
  stage: string | null;
  tokens: number;
  costUsd: number;
  summary: string;
}

export interface Stage {
  stage: string;
  role: string;
  passNo: number;
  provider: string | null;
  model: string | null;
  status: "running" | "ok" | "failed" | "unfinished";
  offset: number;
  seconds: number | null;
  tokens: number;
  costUsd: number;
  detail: string;
}

export interface CodeFile {
  path: string;
  content: string;
}

export interface Candidate {
  id: string;
  passNo: number;
  provider: string | null;
  model: string | null;
  chosen: boolean;
  evidence: string;
  passed: number;
  failed: number;
  files: CodeFile[];
  /** The target file with this candidate applied; diff `original.text` against it. */
  proposed: string | null;
}

export interface TestCase {
  candidate: string | null;
  suite: string;
  test: string;
  outcome: string;
  message: string;
  disputed: boolean;
}

export interface Call {
  stage: string;
  role: string;
  passNo: number;
  provider: string | null;
  model: string | null;
  seconds: number;
  prompt: string;
  response: string;
  error: string | null;
}

export interface Suite {
  id: string;
  passNo: number;
  path: string;
  trusted: boolean;
  content: string;
}

export interface RunDetails extends RunSummary {
  query: string | null;
  councilMode: string | null;
  stages: Stage[];
  original: { path: string; text: string } | null;
  candidates: Candidate[];
  suites: Suite[];
  tests: TestCase[];
  choice: string | null;
  answer: string | null;
  transcript: Call[];
  errors: string[];
  markdown?: string;
}

export interface RunsChanged {
  sessionId: string;
  status: RunStatus;
  event: "started" | "stage" | "finished";
  stage: string | null;
}

export function who(x: { provider: string | null; model: string | null }): string {
  return x.provider ? `${x.provider}:${x.model}` : "-";
}

export function money(usd: number): string {
  return `$${usd.toFixed(4)}`;
}

export function seconds(s: number | null): string {
  return s === null ? "-" : `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

/** Codicon for a run's, a stage's or a test case's state. */
export function icon(state: string): string {
  switch (state) {
    case "running":
      return "sync~spin";
    case "approved":
    case "ok":
    case "passed":
      return "pass";
    case "best_effort":
    case "xfailed":
      return "warning";
    case "cancelled":
    case "unfinished":
    case "skipped":
      return "circle-slash";
    default:
      return "error"; // failed, error
  }
}

export function runDescription(run: RunSummary): string {
  const parts = [run.status.replace("_", " ")];
  if (run.status === "running" && run.stage) {
    parts.push(run.stage);
  }
  parts.push(seconds(run.seconds), `${run.tokens} tok`, money(run.costUsd));
  return parts.join(" · ");
}

export function stageLabel(s: Stage): string {
  return `${s.stage} · ${s.role}${s.passNo > 1 ? ` (pass ${s.passNo})` : ""}`;
}

export function stageDescription(s: Stage): string {
  return [who(s), s.status === "running" ? "running" : seconds(s.seconds), `${s.tokens} tok`, money(s.costUsd)].join(" · ");
}

export function candidateLabel(c: Candidate): string {
  return `${c.id} (pass ${c.passNo})${c.chosen ? " ★ chosen" : ""}`;
}

export function candidateDescription(c: Candidate): string {
  const total = c.passed + c.failed;
  return [who(c), total ? `tests ${c.passed}/${total}` : "no tests"].join(" · ");
}

export function testsLabel(tests: TestCase[]): string {
  const passed = tests.filter((t) => t.outcome === "passed").length;
  return `Tests (${passed}/${tests.length} passed)`;
}

export function testDescription(t: TestCase): string {
  return [t.candidate ?? "", t.suite, t.outcome + (t.disputed ? " (disputed)" : "")].filter(Boolean).join(" · ");
}

/** The two sides of a candidate's diff: what the file was, what it would become. */
export function diffSides(run: RunDetails, c: Candidate): { path: string; before: string; after: string } {
  const first = c.files[0];
  const original = run.original;
  const path = c.proposed !== null && original ? original.path : (first?.path ?? "code.py");
  const before =
    original && (c.proposed !== null || first?.path === original.path) ? original.text : "";
  return { path, before, after: c.proposed ?? first?.content ?? "" };
}

/** A fence that no backtick run inside `text` closes. */
function fenced(text: string, lang: string): string {
  const longest = Math.max(2, ...(text.match(/`+/g) ?? []).map((m) => m.length));
  const fence = "`".repeat(longest + 1);
  return `${fence}${lang}\n${text.trimEnd()}\n${fence}\n`;
}

/** One model call of the transcript as a Markdown document. */
export function callMarkdown(run: RunSummary, call: Call, index: number): string {
  const head = `# ${index + 1}. ${call.stage} · ${call.role} · ${who(call)}\n\n${run.title} (session \`${run.sessionId}\`), pass ${call.passNo}, ${seconds(call.seconds)}\n`;
  const answer = call.error ? `## Error\n\n${call.error}\n` : `## Answer\n\n${fenced(call.response, "text")}`;
  return `${head}\n## Prompt\n\n${fenced(call.prompt, "text")}\n${answer}`;
}

/** Paths of the view's read-only documents (scheme `council-run`): `/<session>/<kind>/<rest>`. */
export function runPath(session: string, kind: "report" | "original" | "candidate" | "call" | "suite", rest: string): string {
  return `/${session}/${kind}/${rest}`;
}

export function parseRunPath(path: string): { session: string; kind: string; rest: string } | undefined {
  const m = /^\/([^/]+)\/([a-z]+)\/(.*)$/.exec(path);
  return m ? { session: m[1], kind: m[2], rest: m[3] } : undefined;
}
