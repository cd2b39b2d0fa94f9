/**
 * SLM Coding Council for VS Code: starts `council lsp` and adds the palette commands, the
 * status-bar item and the output channel. Code actions, diagnostics and inline completions
 * come from the server through vscode-languageclient.
 */
import * as vscode from "vscode";

import { fileArgs, ProviderRow } from "./logic";
import { Runs } from "./runs";
import { RunsView } from "./runView";
import { CouncilServer } from "./server";
import { StatusItem } from "./status";

let server: CouncilServer | undefined;

/** Returned from activate() so tests and other extensions can reach the client. */
export interface CouncilApi {
  server: CouncilServer;
  runs: Runs;
}

export async function activate(context: vscode.ExtensionContext): Promise<CouncilApi> {
  const output = vscode.window.createOutputChannel("Council", { log: true });
  // the interceptor runs only after start(), by which time `runs` exists
  server = new CouncilServer(context, output, (command, args) => runs.execute(command, args));
  const runs = new Runs(server);
  const status = new StatusItem(server);
  runs.onFinished(() => void status.refresh(true));
  // the Council view in the activity bar: every run the server remembers (runView.ts)
  context.subscriptions.push(new RunsView(server));
  context.subscriptions.push(output, server, status);

  const fileCommand = (serverCommand: string) => async () => {
    const editor = vscode.window.activeTextEditor;
    if (!editor || editor.document.languageId !== "python") {
      void vscode.window.showWarningMessage("Council: open a Python file first.");
      return;
    }
    if (editor.document.isUntitled) {
      void vscode.window.showWarningMessage("Council: save the file first; results are written next to it.");
      return;
    }
    const sel = editor.selection;
    const range = {
      start: { line: sel.start.line, character: sel.start.character },
      end: { line: sel.end.line, character: sel.end.character },
    };
    await runs.execute(serverCommand, [fileArgs(editor.document.uri.toString(), range)]);
  };

  const queryCommand = (serverCommand: string, prompt: string, placeHolder: string) => async () => {
    const query = await vscode.window.showInputBox({ prompt, placeHolder, ignoreFocusOut: true });
    if (!query || !query.trim()) {
      return;
    }
    const doc = vscode.window.activeTextEditor?.document;
    const args: Record<string, unknown> = { query: query.trim() };
    if (doc && !doc.isUntitled && doc.uri.scheme === "file") {
      args.uri = doc.uri.toString();
    }
    await runs.execute(serverCommand, [args]);
  };

  context.subscriptions.push(
    vscode.commands.registerCommand("slmCouncil.generate", fileCommand("council.generate")),
    vscode.commands.registerCommand("slmCouncil.debug", fileCommand("council.debug")),
    vscode.commands.registerCommand("slmCouncil.addTests", fileCommand("council.addTests")),
    vscode.commands.registerCommand(
      "slmCouncil.run",
      queryCommand("council.run", "Ask the council (the open file is sent as context)", "e.g. add retries to fetch()"),
    ),
    vscode.commands.registerCommand(
      "slmCouncil.deliberate",
      queryCommand("council.deliberate", "A question for the council to deliberate", "e.g. which data structure fits an LRU cache?"),
    ),
    vscode.commands.registerCommand("slmCouncil.cancel", async () => {
      const n = await runs.cancelAll();
      void vscode.window.showInformationMessage(n ? `Council: cancelled ${n} run(s).` : "Council: nothing to cancel.");
    }),
    vscode.commands.registerCommand("slmCouncil.showProviders", () => showProviders(status, output)),
    vscode.commands.registerCommand("slmCouncil.explainLastCompletion", () => status.explain()),
    vscode.commands.registerCommand("slmCouncil.restartServer", () => server!.restart()),
    vscode.commands.registerCommand("slmCouncil.showOutput", () => output.show()),
  );

  await server.start();
  return { server, runs };
}

async function showProviders(status: StatusItem, output: vscode.LogOutputChannel): Promise<void> {
  let rows: ProviderRow[] | undefined;
  try {
    rows = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: "Council: probing providers" },
      () => status.providers(),
    );
  } catch (err) {
    void vscode.window.showErrorMessage(`Council: providers: ${String(err)}`);
    return;
  }
  if (!rows) {
    void vscode.window.showErrorMessage("Council: the server is not running (Council: Restart Server).");
    return;
  }
  output.info("Providers:\n" + rows.map((r) => `  ${r.provider}:${r.model} ${r.health} ${r.latency_ms ?? "-"} ms ${r.error ?? ""}`).join("\n"));
  const items = rows.map((r) => ({
    label: `${r.reachable ? "$(pass-filled)" : "$(error)"} ${r.provider}:${r.model}`,
    description: [
      r.reachable ? r.health : "unreachable",
      r.latency_ms != null ? `${Math.round(r.latency_ms)} ms` : undefined,
      r.local ? "local" : "cloud",
      r.fim ? "FIM" : undefined,
      r.cooldown_s > 0 ? `cooling down ${Math.ceil(r.cooldown_s)} s` : undefined,
    ]
      .filter(Boolean)
      .join(" · "),
    detail: [r.roles.length ? `roles: ${r.roles.join(", ")}` : "no role", r.base_url, r.error ?? ""]
      .filter(Boolean)
      .join(" — "),
  }));
  await vscode.window.showQuickPick(items, { title: "Council providers", placeHolder: `${rows.length} provider:model targets` });
}

export async function deactivate(): Promise<void> {
  await server?.stop();
}
