/**
 * The status-bar item: completion backend state (from `council/inlineStats`) and provider
 * health/latency (from the `council.providers` command, which answers from the server's probe
 * cache and health tracker). Stats are polled every `council.statusBar.refreshSeconds`;
 * providers are asked once the server runs, after each council run, and on click.
 */
import * as vscode from "vscode";
import { ExecuteCommandRequest, State } from "vscode-languageclient/node";

import { InlineStats, ProviderRow, statusView } from "./logic";
import { CouncilServer } from "./server";

export class StatusItem implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem("council.status", vscode.StatusBarAlignment.Right, 100);
  private stats: InlineStats | undefined;
  rows: ProviderRow[] | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(private readonly server: CouncilServer) {
    this.item.name = "SLM Coding Council";
    this.item.command = "slmCouncil.showProviders";
    this.disposables.push(
      this.item,
      server.onState((s) => {
        if (s !== "running") {
          this.stats = undefined;
          this.rows = undefined;
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

  render(): void {
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
      this.stats = (await client.sendRequest("council/inlineStats", { since: Number.MAX_SAFE_INTEGER })) as InlineStats;
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
