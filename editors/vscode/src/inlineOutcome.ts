/**
 * "Why no suggestion?": the pure logic of the completion status item and of *Council: Explain
 * Last Completion* (no `vscode` import, so `node --test` covers it). The server words each
 * outcome ("skipped mid-word", "empty after post-processing") and renders the explanation as
 * Markdown, so both editors show the same text; this module only lays it out.
 */

/** One completion request's record: the `council/inlineOutcome` notification's params, and
 * `last` of `council/inlineStats` (server/inline.py RequestStat). */
export interface InlineOutcome {
  seq: number;
  uri: string;
  trigger: string;
  reason: string;
  outcome: string;
  items: number;
  handlerMs: number;
  modelMs: number;
}

/** The fields of `council/inlineStats` this module reads. */
export interface OutcomeStats {
  last?: InlineOutcome | null;
  trigger?: string | null;
  candidates?: number | null;
}

/** The answer of `council/explainCompletion`. */
export interface ExplainResult {
  found: boolean;
  markdown: string;
}

/** The notification the server sends to clients that advertise this experimental capability. */
export const OUTCOME_NOTIFICATION = "council/inlineOutcome";
export const OUTCOME_CAPABILITY = "councilInlineOutcome";

const FAILURES = new Set(["error", "unavailable", "timeout"]);

export interface OutcomeView {
  text: string;
  tooltip: string;
  /** Set for a backend failure, so the item stands out. */
  severity?: "warning";
}

function fileName(uri: string): string {
  const last = uri.split("/").pop() ?? uri;
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

/** The status item for the last outcome, e.g. "$(sparkle) Council: no suggestion — empty after
 * post-processing". A newer record (higher `seq`) replaces an older one. */
export function outcomeView(o: InlineOutcome, stats?: OutcomeStats): OutcomeView {
  const shown = o.items > 0;
  const what = shown ? (o.items > 1 ? `${o.items} suggestions` : o.outcome) : `no suggestion — ${o.outcome}`;
  const failed = FAILURES.has(o.reason);
  const text = `${failed ? "$(warning)" : "$(sparkle)"} Council: ${what}`;
  const lines = [
    `**Last inline completion:** ${shown ? o.outcome : `no suggestion — ${o.outcome}`}`,
    "",
    `${o.trigger} request in \`${fileName(o.uri)}\`, ${Math.round(o.handlerMs)} ms` +
      (o.modelMs > 0 ? ` (${Math.round(o.modelMs)} ms in the model)` : ""),
  ];
  if (stats?.trigger === "manual") {
    lines.push("", "`completion.trigger` is manual: press Alt+\\ (*Trigger Inline Suggestion*) to ask.");
  }
  if (stats?.candidates && stats.candidates > 1) {
    lines.push("", `Up to ${stats.candidates} candidates on invoked requests: Alt+] / Alt+[ cycle.`);
  }
  lines.push("", "Click to explain it: the prompt, the model's answer, each post-processing step.");
  return { text, tooltip: lines.join("\n"), severity: failed ? "warning" : undefined };
}

/** The newer of two records (either may be missing). */
export function newer(a: InlineOutcome | undefined, b: InlineOutcome | null | undefined): InlineOutcome | undefined {
  if (!b) {
    return a;
  }
  return !a || b.seq > a.seq ? b : a;
}

/** Params of `council/explainCompletion`: the active Python document, else the server's last. */
export function explainParams(uri: string | undefined, languageId: string | undefined): { uri?: string } {
  return uri && languageId === "python" ? { uri } : {};
}

/** What the Explain document shows: the server's Markdown, or why there is none. */
export function explainMarkdown(result: ExplainResult | null | undefined): string {
  if (!result || typeof result.markdown !== "string") {
    return "# Council: last inline completion\n\nThe server sent no explanation.\n";
  }
  return result.markdown;
}
