/**
 * The extension's pure logic: no `vscode` import, so `node --test` covers it without an
 * editor. extension.ts and friends only wire these functions to the VS Code API.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** Settings that belong to the extension itself; they are never sent to the server. */
export const EXTENSION_KEYS = ["server", "trace", "statusBar"] as const;

/** A change under one of these restarts the server; other `council.*` changes are pushed live. */
export const RESTART_SECTIONS = ["council.server"];

export interface ServerSettings {
  command: string[];
  pythonPath: string;
}

export interface ServerLaunch {
  command: string;
  args: string[];
  /** Where the command came from, for error messages. */
  origin: "council.server.command" | "council.server.pythonPath" | "default";
}

/**
 * How to start `council lsp`: an explicit command wins, then an interpreter (`-m slm_council`
 * works whether or not the venv's `bin/` is on PATH), then `council` from PATH.
 */
export function serverLaunch(s: ServerSettings): ServerLaunch {
  const cmd = (s.command ?? []).filter((x) => typeof x === "string" && x.length > 0);
  if (cmd.length > 0) {
    return { command: cmd[0], args: cmd.slice(1), origin: "council.server.command" };
  }
  if (s.pythonPath && s.pythonPath.trim()) {
    return {
      command: s.pythonPath.trim(),
      args: ["-m", "slm_council", "lsp"],
      origin: "council.server.pythonPath",
    };
  }
  return { command: "council", args: ["lsp"], origin: "default" };
}

/**
 * Resolves a command the way a spawn would: a path is checked as is (relative to `cwd`), a
 * bare name is looked up on PATH. Returns undefined when nothing executable is found, so
 * the extension can say so plainly instead of the client's generic "couldn't start".
 */
export function resolveExecutable(
  command: string,
  envPath: string | undefined,
  cwd: string = process.cwd(),
): string | undefined {
  const executable = (p: string): boolean => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return fs.statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (command.includes("/") || command.includes(path.sep)) {
    const full = path.resolve(cwd, command);
    return executable(full) ? full : undefined;
  }
  for (const dir of (envPath ?? "").split(path.delimiter)) {
    if (!dir) {
      continue;
    }
    const full = path.join(dir, command);
    if (executable(full)) {
      return full;
    }
  }
  return undefined;
}

/** What `WorkspaceConfiguration.inspect` reports for one key (the fields we use). */
export interface Inspected {
  key: string;
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

/**
 * The `council` table sent to the server: only the values the user set, most specific scope
 * first. Why not `getConfiguration("council")` whole: it includes every contributed default,
 * which would override the workspace's `council.toml` (editor settings rank highest, see
 * DESIGN §3). `null` means "unset" (our contributed defaults are null) and is dropped.
 * Keys are `council.<table>[.<key>]`; the table names match `council.toml`.
 */
export function councilTable(items: Inspected[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const item of items) {
    const parts = item.key.split(".");
    if (parts[0] !== "council" || parts.length < 2) {
      continue;
    }
    if ((EXTENSION_KEYS as readonly string[]).includes(parts[1])) {
      continue;
    }
    const value = [item.workspaceFolderValue, item.workspaceValue, item.globalValue].find(
      (v) => v !== undefined && v !== null,
    );
    if (value === undefined) {
      continue;
    }
    let node = out;
    for (const part of parts.slice(1, -1)) {
      const next = node[part];
      if (typeof next !== "object" || next === null || Array.isArray(next)) {
        node[part] = {};
      }
      node = node[part] as Record<string, unknown>;
    }
    const leaf = parts[parts.length - 1];
    const existing = node[leaf];
    if (isObject(existing) && isObject(value)) {
      node[leaf] = { ...value, ...existing };
    } else {
      node[leaf] = value;
    }
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** One row of the server's `council.providers` command (providers/probe.py ProviderRow). */
export interface ProviderRow {
  provider: string;
  model: string;
  roles: string[];
  base_url: string;
  local: boolean;
  reachable: boolean;
  latency_ms: number | null;
  health: string;
  cooldown_s: number;
  fim: boolean | null;
  error: string | null;
}

/** The server's `council/inlineStats` answer (the fields the status bar shows). */
export interface InlineStats {
  backend: string | null;
  enabled: boolean;
  ready: boolean;
  error: string | null;
  loadSeconds: number | null;
  counters?: Record<string, number>;
}

export type ServerState = "starting" | "running" | "stopped" | "failed";

export interface StatusView {
  text: string;
  tooltip: string;
  /** "error" or "warning" colours the item; undefined leaves the theme's colour. */
  severity?: "error" | "warning";
}

function median(xs: number[]): number | undefined {
  if (xs.length === 0) {
    return undefined;
  }
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Providers are unique by name; a provider is up when any of its models is reachable. */
export function providerHealth(rows: ProviderRow[]): { up: number; total: number; p50?: number } {
  const byName = new Map<string, boolean>();
  for (const r of rows) {
    byName.set(r.provider, (byName.get(r.provider) ?? false) || r.reachable);
  }
  const latencies = rows.filter((r) => r.reachable && r.latency_ms !== null);
  return {
    up: [...byName.values()].filter(Boolean).length,
    total: byName.size,
    p50: median(latencies.map((r) => r.latency_ms as number)),
  };
}

/** The status-bar item: the completion backend and provider health/latency. */
export function statusView(
  state: ServerState,
  stats?: InlineStats,
  rows?: ProviderRow[],
): StatusView {
  if (state === "starting") {
    return { text: "$(loading~spin) Council", tooltip: "Council: starting the server" };
  }
  if (state === "stopped" || state === "failed") {
    return {
      text: "$(error) Council",
      tooltip: "Council: the server is not running. Click for the log; *Council: Restart Server* starts it.",
      severity: "error",
    };
  }
  const lines = ["**SLM Coding Council**", ""];
  let text = "$(hubot) ";
  let severity: StatusView["severity"];
  if (!stats) {
    text += "Council";
  } else if (!stats.enabled) {
    text += "completions off";
    lines.push("Inline completions: disabled (`council.completion.enabled`)");
  } else {
    const backend = stats.backend ?? "?";
    text += backend;
    if (stats.error) {
      text += " $(warning)";
      severity = "warning";
      lines.push(`Completion backend \`${backend}\`: **failed**: ${stats.error}`);
    } else if (!stats.ready) {
      text += " (loading)";
      lines.push(`Completion backend \`${backend}\`: loading`);
    } else {
      const load = stats.loadSeconds != null ? ` (loaded in ${stats.loadSeconds.toFixed(1)} s)` : "";
      lines.push(`Completion backend \`${backend}\`: ready${load}`);
    }
  }
  if (rows && rows.length > 0) {
    const h = providerHealth(rows);
    text += ` · ${h.up}/${h.total} up`;
    if (h.p50 !== undefined) {
      text += ` · ${Math.round(h.p50)} ms`;
    }
    if (h.up < h.total && severity === undefined) {
      severity = "warning";
    }
    lines.push("", "| provider:model | health | latency |", "|---|---|---|");
    for (const r of rows) {
      const lat = r.latency_ms != null ? `${Math.round(r.latency_ms)} ms` : "—";
      lines.push(`| ${r.provider}:${r.model} | ${r.reachable ? r.health : "unreachable"} | ${lat} |`);
    }
  }
  lines.push("", "Click to show providers.");
  return { text, tooltip: lines.join("\n"), severity };
}

/** A council command's answer (server/features/commands.py), the fields we read. */
export interface RunResult {
  status?: string;
  summary?: string;
  message?: string;
  applied?: boolean;
  /** Why an edit was not applied, e.g. "rejected in review" (council.confirm_edits). */
  reason?: string;
  testFile?: string;
  passed?: number;
  failed?: number;
  bugs?: number;
  report?: string;
  finalAnswer?: string;
  sessionId?: string;
}

/** The one-line outcome shown after a run; undefined when the server already said it. */
export function outcome(title: string, r: RunResult | null | undefined): string | undefined {
  if (!r) {
    return `${title}: no answer from the server.`;
  }
  if (r.status === "cancelled") {
    return `${title}: cancelled.`;
  }
  if (r.status === "failed") {
    return undefined; // the server shows failures with window/showMessage
  }
  if (r.testFile !== undefined) {
    const tests = `${r.passed ?? 0} passed, ${r.failed ?? 0} failed in the sandbox`;
    return r.applied ? `${title}: ${r.message ?? "tests written"} (${tests}).` : `${title}: not applied.`;
  }
  if (r.bugs !== undefined) {
    return `${title}: ${r.bugs} bug(s) found; see the Problems panel for fixes.`;
  }
  if (r.applied !== undefined) {
    if (r.applied) {
      return `${title}: ${r.message ?? "applied"}`;
    }
    return r.reason ? `${title}: not applied: ${r.reason}.` : `${title}: not applied.`;
  }
  if (r.finalAnswer) {
    const first = r.finalAnswer.trim().split("\n")[0];
    const short = first.length > 120 ? `${first.slice(0, 117)}...` : first;
    return `${title}: ${r.status ?? "done"}: ${short}`;
  }
  return `${title}: ${r.summary ?? r.status ?? "done"}`;
}

/** LSP `Range` as the server's commands take it. */
export interface Span {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

/** Arguments for council.generate / debug / addTests from the editor's state. */
export function fileArgs(uri: string, range: Span, query?: string): Record<string, unknown> {
  const args: Record<string, unknown> = { uri, range };
  if (query && query.trim()) {
    args.query = query.trim();
  }
  return args;
}
