/**
 * Council runs with VS Code notification progress and a cancel button.
 *
 * Every council command, from the palette or from a code action, goes through `execute`:
 * it sends `workspace/executeCommand` with its own `workDoneToken`, shows the server's
 * `$/progress` begin/report/end in a notification, and cancels with `$/cancelRequest` plus
 * `window/workDoneProgress/cancel` (the server accepts either) when the button is pressed or
 * *Council: Cancel* runs. Results land where the server put them (edits, diagnostics, a
 * markdown report); this module opens the test file or report and says how it went.
 */
import { randomUUID } from "node:crypto";
import * as vscode from "vscode";
import {
  CancellationTokenSource,
  ExecuteCommandRequest,
  WorkDoneProgress,
  WorkDoneProgressCancelNotification,
} from "vscode-languageclient/node";

import { outcome, RunResult } from "./logic";
import { CouncilServer } from "./server";

const TITLES: Record<string, string> = {
  "council.generate": "Council: Generate",
  "council.debug": "Council: Debug",
  "council.addTests": "Council: Add Tests",
  "council.run": "Council: Run",
  "council.deliberate": "Council: Deliberate",
};

export class Runs {
  private readonly active = new Map<string, CancellationTokenSource>();
  private readonly finishedEmitter = new vscode.EventEmitter<RunResult | undefined>();
  /** Fires after each run (the status bar refreshes provider health then). */
  readonly onFinished = this.finishedEmitter.event;

  constructor(private readonly server: CouncilServer) {}

  get count(): number {
    return this.active.size;
  }

  async execute(command: string, args: unknown[]): Promise<RunResult | undefined> {
    const client = this.server.client;
    if (!client?.isRunning()) {
      void vscode.window.showErrorMessage("Council: the server is not running (Council: Restart Server).");
      return undefined;
    }
    const title = TITLES[command] ?? `Council: ${command}`;
    const token = `council-vscode-${randomUUID()}`;
    const source = new CancellationTokenSource();
    this.active.set(token, source);
    let result: RunResult | undefined;
    try {
      result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title, cancellable: true },
        async (progress, cancel) => {
          let last = 0;
          const sub = client.onProgress(WorkDoneProgress.type, token, (value) => {
            if (value.kind === "end") {
              return;
            }
            const pct = value.percentage;
            const increment = pct !== undefined && pct > last ? pct - last : undefined;
            if (pct !== undefined) {
              last = Math.max(last, pct);
            }
            const message = value.kind === "begin" ? (value.message ?? value.title) : value.message;
            progress.report({ message, increment });
          });
          const onCancel = cancel.onCancellationRequested(() => this.cancelOne(token));
          try {
            return (await client.sendRequest(
              ExecuteCommandRequest.type,
              { command, arguments: args, workDoneToken: token },
              source.token,
            )) as RunResult;
          } finally {
            sub.dispose();
            onCancel.dispose();
          }
        },
      );
    } catch (err) {
      if (source.token.isCancellationRequested) {
        result = { status: "cancelled" };
      } else {
        const msg = err instanceof Error ? err.message : String(err);
        void vscode.window.showErrorMessage(`${title}: ${msg}`);
        this.server.output.error(`${title}: ${msg}`);
        this.finishedEmitter.fire(undefined);
        return undefined;
      }
    } finally {
      this.active.delete(token);
      source.dispose();
    }
    await this.present(title, result);
    this.finishedEmitter.fire(result);
    return result;
  }

  private cancelOne(token: string): void {
    const client = this.server.client;
    if (client?.isRunning()) {
      void client.sendNotification(WorkDoneProgressCancelNotification.type, { token });
    }
    this.active.get(token)?.cancel();
  }

  /** *Council: Cancel*: every run this window started, and any the server knows of. */
  async cancelAll(): Promise<number> {
    const n = this.active.size;
    for (const token of [...this.active.keys()]) {
      this.cancelOne(token);
    }
    const client = this.server.client;
    if (client?.isRunning()) {
      const res = (await client.sendRequest(ExecuteCommandRequest.type, {
        command: "council.cancel",
        arguments: [{}],
      })) as { cancelled?: string[] } | null;
      return Math.max(n, res?.cancelled?.length ?? 0);
    }
    return n;
  }

  private async present(title: string, result: RunResult | undefined): Promise<void> {
    this.server.output.info(`${title}: ${JSON.stringify(result)}`);
    const text = outcome(title, result);
    if (result?.testFile && result.applied) {
      try {
        const doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(result.testFile));
        await vscode.window.showTextDocument(doc, { preview: false, viewColumn: vscode.ViewColumn.Beside });
      } catch (err) {
        this.server.output.warn(`Could not open ${result.testFile}: ${String(err)}`);
      }
    }
    if (!text) {
      return;
    }
    const actions: string[] = [];
    if (result?.report) {
      actions.push("Open Report");
    }
    if (result?.bugs) {
      actions.push("Show Problems");
    }
    // Not awaited: a message with buttons resolves only when dismissed.
    void vscode.window.showInformationMessage(text, ...actions).then(async (pick) => {
      if (pick === "Open Report" && result?.report) {
        await vscode.commands.executeCommand("markdown.showPreview", vscode.Uri.parse(result.report));
      } else if (pick === "Show Problems") {
        await vscode.commands.executeCommand("workbench.actions.view.problems");
      }
    });
  }
}
