import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";

import {
  councilTable,
  fileArgs,
  outcome,
  ProviderRow,
  providerHealth,
  resolveExecutable,
  serverLaunch,
  statusView,
} from "../logic";

test("serverLaunch: explicit command, then interpreter, then council on PATH", () => {
  assert.deepEqual(serverLaunch({ command: ["/v/bin/council", "lsp"], pythonPath: "/usr/bin/python3" }), {
    command: "/v/bin/council",
    args: ["lsp"],
    origin: "council.server.command",
  });
  assert.deepEqual(serverLaunch({ command: [], pythonPath: " /v/bin/python " }), {
    command: "/v/bin/python",
    args: ["-m", "slm_council", "lsp"],
    origin: "council.server.pythonPath",
  });
  assert.deepEqual(serverLaunch({ command: [""], pythonPath: "" }), {
    command: "council",
    args: ["lsp"],
    origin: "default",
  });
});

test("resolveExecutable finds files on PATH and refuses non-executables", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "council-test-"));
  const exe = path.join(dir, "council");
  fs.writeFileSync(exe, "#!/bin/sh\n");
  fs.chmodSync(exe, 0o755);
  const plain = path.join(dir, "notexec");
  fs.writeFileSync(plain, "");
  assert.equal(resolveExecutable("council", `/nonexistent${path.delimiter}${dir}`), exe);
  assert.equal(resolveExecutable("council", "/nonexistent"), undefined);
  assert.equal(resolveExecutable(exe, ""), exe);
  assert.equal(resolveExecutable("./council", "", dir), exe);
  assert.equal(resolveExecutable(plain, ""), undefined);
  assert.equal(resolveExecutable(dir, ""), undefined); // a directory is not a command
});

test("councilTable keeps only values the user set, most specific scope first", () => {
  const table = councilTable([
    { key: "council.server.command", globalValue: ["x"] },
    { key: "council.trace.server", globalValue: "verbose" },
    { key: "council.completion.backend", globalValue: "ollama:a", workspaceValue: "lb:fim" },
    { key: "council.completion.max_tokens" }, // never set
    { key: "council.council.local_only", globalValue: false },
    { key: "council.council.budget_usd", globalValue: null }, // null is our "unset" default
    { key: "council.roles", workspaceFolderValue: { generator: ["lb:gen"] }, globalValue: { tester: "x:y" } },
    { key: "council.providers", globalValue: { lb: { base_url: "http://127.0.0.1:1/v1" } } },
  ]);
  assert.deepEqual(table, {
    completion: { backend: "lb:fim" },
    council: { local_only: false },
    roles: { generator: ["lb:gen"] },
    providers: { lb: { base_url: "http://127.0.0.1:1/v1" } },
  });
});

test("councilTable merges a table with its own dotted keys", () => {
  const table = councilTable([
    { key: "council.council", globalValue: { budget_usd: 1, engine: "local" } },
    { key: "council.council.budget_usd", globalValue: 2 },
  ]);
  assert.deepEqual(table, { council: { budget_usd: 2, engine: "local" } });
});

const row = (provider: string, model: string, reachable: boolean, latency: number | null): ProviderRow => ({
  provider,
  model,
  roles: ["generator"],
  base_url: "http://127.0.0.1:1/v1",
  local: true,
  reachable,
  latency_ms: latency,
  health: reachable ? "ok" : "down",
  cooldown_s: 0,
  fim: null,
  error: reachable ? null : "connection refused",
});

test("providerHealth counts providers, not models, and takes the median latency", () => {
  const h = providerHealth([row("a", "m1", true, 10), row("a", "m2", false, null), row("b", "m", true, 30), row("c", "m", false, null)]);
  assert.deepEqual(h, { up: 2, total: 3, p50: 20 });
  assert.deepEqual(providerHealth([]), { up: 0, total: 0, p50: undefined });
});

test("statusView shows backend state and provider health", () => {
  assert.match(statusView("starting").text, /loading~spin/);
  const stopped = statusView("failed");
  assert.equal(stopped.severity, "error");
  const loading = statusView("running", { backend: "specialist", enabled: true, ready: false, error: null, loadSeconds: null });
  assert.equal(loading.text, "$(hubot) specialist (loading)");
  const ready = statusView(
    "running",
    { backend: "lb:fim", enabled: true, ready: true, error: null, loadSeconds: 1.25 },
    [row("lb", "a", true, 12), row("cloud", "b", false, null)],
  );
  assert.equal(ready.text, "$(hubot) lb:fim · 1/2 up · 12 ms");
  assert.equal(ready.severity, "warning");
  assert.match(ready.tooltip, /loaded in 1\.3 s/);
  assert.match(ready.tooltip, /\| cloud:b \| unreachable \| — \|/);
  const broken = statusView("running", { backend: "specialist", enabled: true, ready: false, error: "no such dir", loadSeconds: null });
  assert.match(broken.tooltip, /failed\*\*: no such dir/);
  assert.equal(statusView("running", { backend: "specialist", enabled: false, ready: false, error: null, loadSeconds: null }).text, "$(hubot) completions off");
});

test("outcome describes each kind of result; failures are left to the server", () => {
  assert.equal(outcome("T", { status: "failed" }), undefined);
  assert.equal(outcome("T", { status: "cancelled" }), "T: cancelled.");
  assert.equal(
    outcome("T", { status: "approved", applied: true, message: "Created tests/test_m.py.", testFile: "file:///t", passed: 2, failed: 0 }),
    "T: Created tests/test_m.py. (2 passed, 0 failed in the sandbox).",
  );
  assert.equal(outcome("T", { status: "approved", bugs: 3 }), "T: 3 bug(s) found; see the Problems panel for fixes.");
  assert.equal(outcome("T", { status: "approved", applied: false }), "T: not applied.");
  assert.equal(
    outcome("T", { status: "approved", applied: false, reason: "rejected in review", message: "Not applied: rejected in review." }),
    "T: not applied: rejected in review.",
  );
  assert.equal(outcome("T", { status: "approved", summary: "ok", report: "file:///r.md" }), "T: ok");
  assert.equal(outcome("T", null), "T: no answer from the server.");
  assert.equal(outcome("T", { status: "approved", finalAnswer: "Use a dict.\nMore." }), "T: approved: Use a dict.");
  assert.match(outcome("T", { status: "approved", finalAnswer: "x".repeat(200) }) ?? "", /^T: approved: x{117}\.\.\.$/);
});

test("fileArgs trims the query and omits an empty one", () => {
  const range = { start: { line: 1, character: 0 }, end: { line: 1, character: 0 } };
  assert.deepEqual(fileArgs("file:///m.py", range), { uri: "file:///m.py", range });
  assert.deepEqual(fileArgs("file:///m.py", range, "  go  "), { uri: "file:///m.py", range, query: "go" });
});
