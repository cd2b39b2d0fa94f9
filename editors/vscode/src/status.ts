/**
 * The status-bar items. The first: completion backend state (from `council/inlineStats`) and
 * provider health/latency (from the `council.providers` command, which answers from the
 * server's probe cache and health tracker). Stats are polled every
 * `council.statusBar.refreshSeconds`; providers are asked once the server runs, after each
 * council run, and on click.
 *
 * The second: the last inline completion's outcome ("no suggestion — skipped mid-word"),
 * pushed by the server after every request (`council/inlineOutcome`, which the client asks
 * for with an experimental capability) rather than polled: it changes at typing speed. A
 * click runs *Council: Explain Last Completion*.
 */
import * as vscode from "vscode";
import { ClientCapabilities, ExecuteCommandRequest, FeatureState, LanguageClient, State, StaticFeature } from "vscode-languageclient/node";

import {
  ExplainResult,
  explainMarkdown,
  explainParams,
  InlineOutcome,
  newer,
  OUTCOME_CAPABILITY,
  OUTCOME_NOTIFICATION,
  OutcomeStats,
  outcomeView,
} from "./inlineOutcome";
import { InlineStats, ProviderRow, statusView } from "./logic";
import { CouncilServer } from "./server";

/** Asks the server for `council/inlineOutcome` and hands each one to `listener`. */
class OutcomeFeature implements StaticFeature {
  constructor(
    private readonly client: LanguageClient,
    private readonly listener: (o: InlineOutcome) => void,
  ) {}

  fillClientCapabilities(capabilities: ClientCapabilities): void {
    capabilities.experimental = { ...(capabilities.experimental as object | undefined), [OUTCOME_CAPABILITY]: true };
  }

  initialize(): void {
    this.client.onNotification(OUTCOME_NOTIFICATION, (o: InlineOutcome) => this.listener(o));
  }

  getState(): FeatureState {
    return { kind: "static" };
  }

  clear(): void {}
}

/** The scheme of the read-only Explain documents (no "save?" prompt when closed). */
const EXPLAIN_SCHEME = "council-explain";

export class StatusItem implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("council.status", vscode.StatusBarAlignment.Right, 100);
  private readonly completion = vscode.window.createStatusBarItem(
    "council.completion",
    vscode.StatusBarAlignment.Right,
    99,
  );
  private stats: (InlineStats & OutcomeStats) | undefined;
  private last: InlineOutcome | undefined;
  private readonly withFeature = new WeakSet<LanguageClient>();
  private readonly explained = new Map<string, string>();
  private explainCount = 0;
  rows: ProviderRow[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly server: CouncilServer) {
    this.item.name = "SLM Coding Council";
    this.item.command = "slmCouncil.showProviders";
    this.completion.name = "Council: last inline completion";
    this.completion.command = "slmCouncil.explainLastCompletion";
    const explainDocs = new vscode.EventEmitter<vscode.Uri>();
    this.disposables.push(
      this.item,
      this.completion,
      explainDocs,
      vscode.workspace.registerTextDocumentContentProvider(EXPLAIN_SCHEME, {
        onDidChange: explainDocs.event,
        provideTextDocumentContent: (uri) => this.explained.get(uri.toString()) ?? "",
      }),
      server.onState((s) => {
        // CouncilServer fires "starting" after creating the client and before starting it:
        // the one moment a feature (our capability) can still be registered
        const client = server.client;
        if (s === "starting" && client && !this.withFeature.has(client)) {
          this.withFeature.add(client);
          client.registerFeature(new OutcomeFeature(client, (o) => this.outcome(o)));
        }
        if (s !== "running") {
          this.stats = undefined;
          this.rows = undefined;
          this.last = undefined;
        }
        this.render();
        if (s === "running") {
          void this.refresh(true);
        }
      }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration("council.statusBar")) {
          this.schedule();
        }
        // the server reloads its settings on the push; show the new backend soon after
        if (e.affectsConfiguration("council") && !e.affectsConfiguration("council.server")) {
          setTimeout(() => void this.refresh(false), 500);
        }
      }),
    );
    this.render();
    this.item.show();
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) {
      clearInterval(this.timer);
    }
    const secs = Math.max(5, vscode.workspace.getConfiguration("council.statusBar").get<number>("refreshSeconds", 60));
    this.timer = setInterval(() => void this.refresh(false), secs * 1000);
  }

  private outcome(o: InlineOutcome): void {
    this.last = newer(this.last, o);
    this.render();
  }

  render(): void {
    if (this.last && this.server.state === "running") {
      const done = outcomeView(this.last, this.stats);
      this.completion.text = done.text;
      this.completion.tooltip = new vscode.MarkdownString(done.tooltip);
      this.completion.backgroundColor = done.severity
        ? new vscode.ThemeColor(`statusBarItem.${done.severity}Background`)
        : undefined;
      this.completion.show();
    } else {
      this.completion.hide();
    }
    const view = statusView(this.server.state, this.stats, this.rows);
    this.item.text = view.text;
    this.item.tooltip = new vscode.MarkdownString(view.tooltip);
    this.item.backgroundColor = view.severity
      ? new vscode.ThemeColor(`statusBarItem.${view.severity}Background`)
      : undefined;
    this.item.command = this.server.state === "running" ? "slmCouncil.showProviders" : "slmCouncil.showOutput";
  }

  /** Asks the server for the backend state and, with `providers`, the provider rows. */
  async refresh(providers: boolean): Promise<void> {
    const client = this.server.client;
    if (!client || client.state !== State.Running) {
      return;
    }
    try {
      this.stats = (await client.sendRequest("council/inlineStats", { since: Number.MAX_SAFE_INTEGER })) as InlineStats &
        OutcomeStats;
      this.last = newer(this.last, this.stats?.last);
      // the specialist loads in the background: ask again soon until it is ready
      if (this.stats && this.stats.enabled && !this.stats.ready && !this.stats.error) {
        setTimeout(() => void this.refresh(false), 2000);
      }
      if (providers) {
        this.rows = await this.providers();
      }
    } catch (err) {
      this.server.output.warn(`Status refresh failed: ${String(err)}`);
    }
    this.render();
  }

  /** *Council: Explain Last Completion*: the server's explanation of the last completion of
   * the active Python document (or of the last one anywhere), as a Markdown preview. */
  async explain(): Promise<void> {
    const client = this.server.client;
    if (!client || client.state !== State.Running) {
      void vscode.window.showErrorMessage("Council: the server is not running (Council: Restart Server).");
      return;
    }
    const doc = vscode.window.activeTextEditor?.document;
    let result: ExplainResult | undefined;
    try {
      result = (await client.sendRequest(
        "council/explainCompletion",
        explainParams(doc?.uri.toString(), doc?.languageId),
      )) as ExplainResult;
    } catch (err) {
      void vscode.window.showErrorMessage(`Council: explain: ${String(err)}`);
      return;
    }
    // a new name each time: the preview of an older explanation stays as it was
    const uri = vscode.Uri.from({ scheme: EXPLAIN_SCHEME, path: `/Last completion ${++this.explainCount}.md` });
    this.explained.set(uri.toString(), explainMarkdown(result));
    if (this.explained.size > 20) {
      this.explained.delete(this.explained.keys().next().value as string);
    }
    await vscode.commands.executeCommand("markdown.showPreview", uri);
  }

  async providers(): Promise<ProviderRow[] | undefined> {
    const client = this.server.client;
    if (!client || client.state !== State.Running) {
      return undefined;
    }
    const rows = (await client.sendRequest(ExecuteCommandRequest.type, {
      command: "council.providers",
      arguments: [{}],
    })) as ProviderRow[];
    this.rows = rows;
    this.render();
    return rows;
  }

  dispose(): void {
    if (this.timer) {
      clearInterval(this.timer);
    }
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
