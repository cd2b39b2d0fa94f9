/**
 * The language client for `council lsp`: start, stop, restart, settings sync.
 *
 * Settings: the server receives only the `council.*` values the user set (see
 * `councilTable`), as `initializationOptions`, as the answer to `workspace/configuration`,
 * and pushed with `workspace/didChangeConfiguration` when they change. Changes under
 * `council.server.*` restart the process instead.
 */
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  LanguageClient,
  LanguageClientOptions,
  RevealOutputChannelOn,
  ServerOptions,
  State,
} from "vscode-languageclient/node";

import { councilTable, Inspected, RESTART_SECTIONS, resolveExecutable, serverLaunch, ServerState } from "./logic";

export type CommandInterceptor = (command: string, args: unknown[]) => Promise<unknown>;

/** Every contributed `council.*` key, read from our own package.json. */
function contributedKeys(context: vscode.ExtensionContext): string[] {
  const props = context.extension.packageJSON?.contributes?.configuration?.properties ?? {};
  return Object.keys(props);
}

export function currentTable(context: vscode.ExtensionContext, scope?: vscode.Uri): Record<string, unknown> {
  const cfg = vscode.workspace.getConfiguration(undefined, scope);
  const items: Inspected[] = [];
  for (const key of contributedKeys(context)) {
    const i = cfg.inspect(key);
    if (i) {
      items.push({
        key,
        globalValue: i.globalValue,
        workspaceValue: i.workspaceValue,
        workspaceFolderValue: i.workspaceFolderValue,
      });
    }
  }
  return councilTable(items);
}

export class CouncilServer implements vscode.Disposable {
  client: LanguageClient | undefined;
  state: ServerState = "stopped";
  private readonly stateEmitter = new vscode.EventEmitter<ServerState>();
  readonly onState = this.stateEmitter.event;
  private readonly disposables: vscode.Disposable[] = [];
  /** Start, stop and restart run one at a time, in order: a restart asked for while the
   * server is still starting waits for that start instead of stopping a half-started client
   * (which vscode-languageclient refuses, leaving a stray process). */
  private lifecycle: Promise<void> = Promise.resolve();

  constructor(
    private readonly context: vscode.ExtensionContext,
    readonly output: vscode.LogOutputChannel,
    private readonly intercept: CommandInterceptor,
  ) {
    this.disposables.push(
      this.stateEmitter,
      vscode.workspace.onDidChangeConfiguration((e) => void this.configurationChanged(e)),
    );
  }

  private setState(s: ServerState): void {
    this.state = s;
    this.stateEmitter.fire(s);
  }

  private enqueue(op: () => Promise<void>): Promise<void> {
    const next = this.lifecycle.then(op, op);
    this.lifecycle = next.catch(() => undefined);
    return next;
  }

  start(): Promise<void> {
    return this.enqueue(() => (this.client ? Promise.resolve() : this.doStart()));
  }

  stop(): Promise<void> {
    return this.enqueue(() => this.doStop());
  }

  restart(): Promise<void> {
    return this.enqueue(async () => {
      this.output.info("Restarting the council server");
      await this.doStop();
      await this.doStart();
    });
  }

  private async doStart(): Promise<void> {
    const cfg = vscode.workspace.getConfiguration("council.server");
    const launch = serverLaunch({
      command: cfg.get<string[]>("command", []),
      pythonPath: cfg.get<string>("pythonPath", ""),
    });
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const env = { ...process.env, ...cfg.get<Record<string, string>>("env", {}) };
    if (!resolveExecutable(launch.command, env.PATH, folder)) {
      this.setState("failed");
      const hint =
        launch.origin === "default"
          ? '"council" is not on PATH. Install the server ("pip install slm-council") or set council.server.pythonPath or council.server.command.'
          : `${launch.origin} names "${launch.command}", which is not an executable file.`;
      this.output.error(`Cannot start the council server: ${hint}`);
      void vscode.window
        .showErrorMessage(`Council: cannot start the server: ${hint}`, "Open Settings", "Show Log")
        .then((pick) => {
          if (pick === "Open Settings") {
            void vscode.commands.executeCommand("workbench.action.openSettings", "council.server");
          } else if (pick === "Show Log") {
            this.output.show();
          }
        });
      return;
    }
    this.output.info(`Starting ${[launch.command, ...launch.args].join(" ")}`);
    const serverOptions: ServerOptions = {
      command: launch.command,
      args: launch.args,
      // no `transport`: TransportKind.stdio would append --stdio (accepted, but the command
      // the user configured should run as written)
      options: { cwd: folder, env },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [
        { scheme: "file", language: "python" },
        { scheme: "untitled", language: "python" },
      ],
      outputChannel: this.output,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: { council: currentTable(this.context) },
      middleware: {
        executeCommand: (command, args, next) =>
          command.startsWith("council.") && command !== "council.cancel" && command !== "council.providers"
            ? this.intercept(command, args)
            : next(command, args),
        workspace: {
          configuration: async (params, token, next) => {
            const others = params.items.some((i) => i.section !== "council")
              ? ((await next(params, token)) as unknown[])
              : [];
            return params.items.map((item, i) =>
              item.section === "council"
                ? currentTable(this.context, item.scopeUri ? vscode.Uri.parse(item.scopeUri) : undefined)
                : Array.isArray(others)
                  ? others[i]
                  : null,
            );
          },
        },
      },
    };
    const client = new LanguageClient("council", "Council", serverOptions, clientOptions);
    // Proposed in vscode-languageclient 9/10 (inline completion); a no-op where it is built in.
    client.registerProposedFeatures();
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) {
        this.setState("running");
      } else if (e.newState === State.Starting) {
        this.setState("starting");
      } else if (this.client === client) {
        this.setState("stopped");
      }
    });
    this.client = client;
    this.setState("starting");
    try {
      await client.start();
    } catch (err) {
      this.setState("failed");
      this.output.error(`The council server failed to start: ${String(err)}`);
      void vscode.window.showErrorMessage(`Council: the server failed to start: ${String(err)}. See the Council output.`);
    }
  }

  private async doStop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.output.warn(`Stopping the server: ${String(err)}`);
      }
    }
    this.setState("stopped");
  }


  private async configurationChanged(e: vscode.ConfigurationChangeEvent): Promise<void> {
    if (RESTART_SECTIONS.some((s) => e.affectsConfiguration(s))) {
      await this.restart();
      return;
    }
    if (e.affectsConfiguration("council") && this.client?.isRunning()) {
      await this.client.sendNotification(DidChangeConfigurationNotification.type, {
        settings: { council: currentTable(this.context) },
      });
    }
  }

  dispose(): void {
    void this.stop();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
