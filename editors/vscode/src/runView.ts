/**
 * The *Council* view in the activity bar: every council run the server remembers, live and
 * past, from `council/runs` and `council/run`, refreshed on `council/runsChanged`.
 *
 * A run expands into its stages (role, provider:model, time, tokens, cost), its candidates
 * (click: a diff of the target file against the file with that candidate applied), its test
 * results case by case and its transcript (click: one model call as a read-only document).
 * Its report (the server's Markdown of the whole run) opens from the run's inline action or
 * its *Report* row, also long after the run ended. The documents are virtual (`council-run:`
 * URIs, served from the server's answers), so nothing is written to disk and they are
 * read-only.
 */
import * as vscode from "vscode";
import { Disposable as LcDisposable } from "vscode-languageclient/node";

import {
  Call,
  Candidate,
  callMarkdown,
  candidateDescription,
  candidateLabel,
  diffSides,
  icon,
  parseRunPath,
  RunDetails,
  runDescription,
  runPath,
  RunsChanged,
  RunSummary,
  Stage,
  stageDescription,
  stageLabel,
  TestCase,
  testDescription,
  testsLabel,
} from "./runModel";
import { CouncilServer } from "./server";

export const SCHEME = "council-run";
export const VIEW = "slmCouncil.runs";

type Group = "stages" | "candidates" | "tests" | "transcript";
type Node =
  | { kind: "run"; run: RunSummary }
  | { kind: "report"; session: string }
  | { kind: "group"; session: string; group: Group; label: string; count: number }
  | { kind: "stage"; session: string; stage: Stage; index: number }
  | { kind: "candidate"; session: string; candidate: Candidate }
  | { kind: "test"; session: string; test: TestCase; index: number }
  | { kind: "call"; session: string; call: Call; index: number }
  | { kind: "info"; session: string; label: string };

export class RunsView implements vscode.TreeDataProvider<Node>, vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly treeEmitter = new vscode.EventEmitter<Node | undefined>();
  readonly onDidChangeTreeData = this.treeEmitter.event;
  private readonly docEmitter = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.docEmitter.event;
  private readonly details = new Map<string, Promise<RunDetails | undefined>>();
  private readonly disposables: vscode.Disposable[] = [];
  private subscription: LcDisposable | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private runs: RunSummary[] = [];

  constructor(private readonly server: CouncilServer) {
    this.disposables.push(
      this.treeEmitter,
      this.docEmitter,
      vscode.window.registerTreeDataProvider(VIEW, this),
      vscode.workspace.registerTextDocumentContentProvider(SCHEME, this),
      server.onState((state) => this.serverState(state)),
      vscode.commands.registerCommand("slmCouncil.showRuns", () => vscode.commands.executeCommand(`${VIEW}.focus`)),
      vscode.commands.registerCommand("slmCouncil.refreshRuns", () => this.refresh(true)),
      vscode.commands.registerCommand("slmCouncil.openRunReport", (node?: Node | string) => this.openReport(node)),
      vscode.commands.registerCommand("slmCouncil.openCandidateDiff", (session: string, id: string) =>
        this.openCandidate(session, id),
      ),
      vscode.commands.registerCommand("slmCouncil.openRunDocument", (uri: vscode.Uri) => this.openDocument(uri)),
    );
    this.serverState(server.state);
  }

  /** A new client on every (re)start: subscribe to its notifications; a restarted server
   * has no history, so the view is rebuilt. */
  private serverState(state: string): void {
    if (state !== "running" || !this.server.client) {
      return;
    }
    this.subscription?.dispose();
    this.details.clear();
    this.subscription = this.server.client.onNotification("council/runsChanged", (change: RunsChanged) => {
      this.details.delete(change.sessionId);
      this.docEmitter.fire(vscode.Uri.from({ scheme: SCHEME, path: runPath(change.sessionId, "report", "report.md") }));
      this.refresh(false);
    });
    this.refresh(true);
  }

  /** Runs change stage every few hundred ms: changes are gathered into one redraw. */
  refresh(now: boolean): void {
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
    }
    this.refreshTimer = setTimeout(() => this.treeEmitter.fire(undefined), now ? 0 : 150);
  }

  private async request<T>(method: string, params: object): Promise<T | undefined> {
    const client = this.server.client;
    if (!client?.isRunning()) {
      return undefined;
    }
    try {
      return (await client.sendRequest(method, params)) as T;
    } catch (err) {
      this.server.output.warn(`${method}: ${String(err)}`);
      return undefined;
    }
  }

  private run(session: string): Promise<RunDetails | undefined> {
    let found = this.details.get(session);
    if (!found) {
      found = this.request<RunDetails>("council/run", { sessionId: session });
      this.details.set(session, found);
      void found.then((d) => d === undefined && this.details.delete(session));
    }
    return found;
  }

  // -- the tree --------------------------------------------------------------------------------

  async getChildren(node?: Node): Promise<Node[]> {
    if (!node) {
      const answer = await this.request<{ runs: RunSummary[] }>("council/runs", {});
      this.runs = answer?.runs ?? [];
      return this.runs.map((run) => ({ kind: "run", run }));
    }
    if (node.kind === "run") {
      const d = await this.run(node.run.sessionId);
      const s = node.run.sessionId;
      if (!d) {
        return [{ kind: "info", session: s, label: "No details: the server no longer has this run." }];
      }
      const groups: Node[] = [{ kind: "report", session: s }];
      groups.push({ kind: "group", session: s, group: "stages", label: `Stages (${d.stages.length})`, count: d.stages.length });
      if (d.candidates.length) {
        groups.push({ kind: "group", session: s, group: "candidates", label: `Candidates (${d.candidates.length})`, count: d.candidates.length });
      }
      if (d.tests.length) {
        groups.push({ kind: "group", session: s, group: "tests", label: testsLabel(d.tests), count: d.tests.length });
      }
      if (d.transcript.length) {
        groups.push({ kind: "group", session: s, group: "transcript", label: `Transcript (${d.transcript.length} calls)`, count: d.transcript.length });
      }
      return groups;
    }
    if (node.kind === "group") {
      const d = await this.run(node.session);
      const s = node.session;
      switch (node.group) {
        case "stages":
          return (d?.stages ?? []).map((stage, index) => ({ kind: "stage", session: s, stage, index }));
        case "candidates":
          return (d?.candidates ?? []).map((candidate) => ({ kind: "candidate", session: s, candidate }));
        case "tests":
          return (d?.tests ?? []).map((test, index) => ({ kind: "test", session: s, test, index }));
        case "transcript":
          return (d?.transcript ?? []).map((call, index) => ({ kind: "call", session: s, call, index }));
      }
    }
    return [];
  }

  getTreeItem(node: Node): vscode.TreeItem {
    const Collapsed = vscode.TreeItemCollapsibleState.Collapsed;
    switch (node.kind) {
      case "run": {
        const r = node.run;
        const item = new vscode.TreeItem(r.title, Collapsed);
        item.id = `run:${r.sessionId}`;
        item.description = runDescription(r);
        item.tooltip = new vscode.MarkdownString(
          `**${r.title}** (${r.status})\n\n${r.summary || ""}\n\nsession \`${r.sessionId}\`, started ${new Date(r.startedAt * 1000).toLocaleTimeString()}`,
        );
        item.iconPath = new vscode.ThemeIcon(icon(r.status));
        item.contextValue = r.status === "running" ? "councilRun.running" : "councilRun";
        return item;
      }
      case "report": {
        const item = new vscode.TreeItem("Report", vscode.TreeItemCollapsibleState.None);
        item.id = `${node.session}:report`;
        item.iconPath = new vscode.ThemeIcon("book");
        item.description = "the whole run as Markdown";
        item.command = { command: "slmCouncil.openRunReport", title: "Open Report", arguments: [node.session] };
        return item;
      }
      case "group": {
        const item = new vscode.TreeItem(node.label, Collapsed);
        item.id = `${node.session}:${node.group}`;
        item.iconPath = new vscode.ThemeIcon(
          { stages: "list-ordered", candidates: "git-compare", tests: "beaker", transcript: "comment-discussion" }[node.group],
        );
        return item;
      }
      case "stage": {
        const s = node.stage;
        const item = new vscode.TreeItem(stageLabel(s), vscode.TreeItemCollapsibleState.None);
        item.id = `${node.session}:stage:${node.index}`;
        item.description = stageDescription(s);
        item.tooltip = s.detail || undefined;
        item.iconPath = new vscode.ThemeIcon(icon(s.status));
        return item;
      }
      case "candidate": {
        const c = node.candidate;
        const item = new vscode.TreeItem(candidateLabel(c), vscode.TreeItemCollapsibleState.None);
        item.id = `${node.session}:candidate:${c.id}`;
        item.description = candidateDescription(c);
        item.tooltip = c.evidence || undefined;
        item.iconPath = new vscode.ThemeIcon(c.chosen ? "star-full" : "file-code");
        item.command = { command: "slmCouncil.openCandidateDiff", title: "Open Diff", arguments: [node.session, c.id] };
        return item;
      }
      case "test": {
        const t = node.test;
        const item = new vscode.TreeItem(t.test, vscode.TreeItemCollapsibleState.None);
        item.id = `${node.session}:test:${node.index}`;
        item.description = testDescription(t);
        item.tooltip = t.message || t.outcome;
        item.iconPath = new vscode.ThemeIcon(icon(t.outcome));
        const uri = this.uri(node.session, "suite", t.suite.includes("/") ? t.suite : `${t.suite}/${t.suite}.py`);
        item.command = { command: "slmCouncil.openRunDocument", title: "Open Suite", arguments: [uri] };
        return item;
      }
      case "call": {
        const c = node.call;
        const item = new vscode.TreeItem(`${c.stage} · ${c.role}`, vscode.TreeItemCollapsibleState.None);
        item.id = `${node.session}:call:${node.index}`;
        item.description = `${c.provider ? `${c.provider}:${c.model}` : "-"} · ${c.seconds.toFixed(2)} s`;
        item.iconPath = new vscode.ThemeIcon(c.error ? "error" : "comment");
        const uri = this.uri(node.session, "call", `${node.index + 1}-${c.role}.md`);
        item.command = { command: "slmCouncil.openRunDocument", title: "Open Call", arguments: [uri] };
        return item;
      }
      case "info":
        return new vscode.TreeItem(node.label, vscode.TreeItemCollapsibleState.None);
    }
  }

  // -- documents -------------------------------------------------------------------------------

  private uri(session: string, kind: Parameters<typeof runPath>[1], rest: string): vscode.Uri {
    return vscode.Uri.from({ scheme: SCHEME, path: runPath(session, kind, rest) });
  }

  async provideTextDocumentContent(uri: vscode.Uri): Promise<string> {
    const where = parseRunPath(uri.path);
    // the report is asked for afresh (a live run's report: as it is now), with its Markdown
    const d =
      where &&
      (await (where.kind === "report"
        ? this.request<RunDetails>("council/run", { sessionId: where.session, markdown: true })
        : this.run(where.session)));
    if (!where || !d) {
      return "The server no longer has this run (it keeps the last 50, and forgets them when it restarts).";
    }
    const [first] = where.rest.split("/");
    const candidate = d.candidates.find((x) => x.id === first);
    switch (where.kind) {
      case "report":
        return d.markdown ?? "";
      case "original":
        return candidate ? diffSides(d, candidate).before : "";
      case "candidate":
        return candidate ? diffSides(d, candidate).after : "";
      case "call": {
        const index = Number.parseInt(first, 10) - 1;
        const call = d.transcript[index];
        return call ? callMarkdown(d, call, index) : "";
      }
      case "suite":
        return (
          d.suites.find((s) => s.id === first || s.path === where.rest)?.content ??
          "# The run kept no code for these tests (the docstring's examples are written by the server)."
        );
    }
    return "";
  }

  private async openDocument(uri: vscode.Uri): Promise<void> {
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc, { preview: true });
  }

  private async openCandidate(session: string, id: string): Promise<void> {
    const d = await this.run(session);
    const c = d?.candidates.find((x) => x.id === id);
    if (!d || !c) {
      void vscode.window.showWarningMessage("Council: the server no longer has this run.");
      return;
    }
    const { path } = diffSides(d, c);
    const name = path.split("/").pop() ?? path;
    const left = this.uri(session, "original", `${c.id}/${path}`);
    const right = this.uri(session, "candidate", `${c.id}/${path}`);
    await vscode.commands.executeCommand("vscode.diff", left, right, `${name}: original ↔ ${c.id} (${d.title})`, {
      preview: true,
    });
  }

  /** From the view (a run node or its session) or the palette (pick a run). */
  private async openReport(node?: Node | string): Promise<void> {
    let session = typeof node === "string" ? node : node?.kind === "run" ? node.run.sessionId : undefined;
    if (!session) {
      const answer = await this.request<{ runs: RunSummary[] }>("council/runs", {});
      const pick = await vscode.window.showQuickPick(
        (answer?.runs ?? []).map((r) => ({ label: r.title, description: runDescription(r), session: r.sessionId })),
        { title: "Council runs", placeHolder: "A run to open the report of" },
      );
      session = pick?.session;
    }
    if (session) {
      const uri = this.uri(session, "report", "report.md");
      this.docEmitter.fire(uri); // already open: show it as it is now
      await vscode.window.showTextDocument(await vscode.workspace.openTextDocument(uri), { preview: true });
    }
  }

  dispose(): void {
    this.subscription?.dispose();
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
    }
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
