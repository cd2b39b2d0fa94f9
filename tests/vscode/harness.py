"""Driving a real VS Code for the extension's end-to-end tests (fixtures: `conftest.py`).

code-server (VS Code 1.139 in the browser) runs with the packaged `council.vsix` installed,
and Playwright drives Debian's Chromium against it. The extension starts `council lsp` from
this interpreter (`council.server.command` in the workspace's settings); the providers are the
scripted loopback HTTP server in the test process.

What the tests need is installed by `make test` (`make vscode-e2e`): Debian's chromium, Node
24 and code-server in `~/.cache/council/vscode-e2e` (scripts/setup-e2e.sh), and the `.vsix`
built from the working tree. A missing piece is a failure that says how to get it, not a
skip. Screenshots of each step go to `build/e2e/vscode/` (or `$COUNCIL_E2E_ARTIFACTS`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from providers.loopback import LoopbackProvider
from tests.scenarios import FIM
from tests.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
EXTENSION = REPO / "editors" / "vscode"
VSIX = EXTENSION / "council.vsix"
CACHE = Path(os.environ.get("COUNCIL_E2E_CACHE", Path.home() / ".cache" / "council" / "vscode-e2e"))
ARTIFACTS = Path(os.environ.get("COUNCIL_E2E_ARTIFACTS", REPO / "build" / "e2e" / "vscode"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The workbench's own noise the tests turn off: welcome page, tips, update checks, AI chat.
USER_SETTINGS = {
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "workbench.enableExperiments": False,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
    "telemetry.telemetryLevel": "off",
    "update.mode": "none",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "chat.disableAIFeatures": True,
    "security.workspace.trust.enabled": False,
    "editor.inlineSuggest.enabled": True,
    "files.autoSave": "off",
    "window.restoreWindows": "none",
}

TOAST = ".notifications-toasts .notification-toast"


def _env() -> dict[str, str]:
    """Paths from scripts/setup-e2e.sh; a clear failure when it has not run."""
    path = CACHE / "env.json"
    assert path.exists(), (
        f"{path} is missing: run `make vscode-e2e` (or editors/vscode/scripts/setup-e2e.sh)"
    )
    env: dict[str, str] = json.loads(path.read_text())
    for key in ("node", "code_server", "chromium"):
        assert Path(env[key]).exists(), f"{key}: {env[key]} is missing; rerun setup-e2e.sh"
    assert VSIX.exists(), f"{VSIX} is missing: `make vscode-e2e` builds it (npm run package)"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CodeServer:
    """One code-server process with its own user data, extensions and HOME."""

    def __init__(self, root: Path, workspace: Path) -> None:
        self.env_paths = _env()
        self.root = root
        self.workspace = workspace
        self.port = _free_port()
        self.user_data = root / "user-data"
        self.extensions = root / "extensions"
        self.log = root / "code-server.log"
        node_bin = str(Path(self.env_paths["node"]).parent)
        self.env = {
            **os.environ,
            "PATH": f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(root / "home"),
            "XDG_CONFIG_HOME": str(root / "home" / ".config"),
            "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *args: str) -> list[str]:
        return [
            self.env_paths["code_server"],
            "--user-data-dir",
            str(self.user_data),
            "--extensions-dir",
            str(self.extensions),
            *args,
        ]

    def install(self) -> float:
        (self.user_data / "User").mkdir(parents=True, exist_ok=True)
        (self.user_data / "User" / "settings.json").write_text(json.dumps(USER_SETTINGS))
        start = time.monotonic()
        done = subprocess.run(
            self._cmd("--install-extension", str(VSIX), "--force"),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"install failed:\n{done.stdout}\n{done.stderr}"
        installed = [p.name for p in self.extensions.iterdir() if p.is_dir()]
        assert any(n.startswith("slm-council.slm-council-") for n in installed), installed
        return time.monotonic() - start

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._cmd(
                "--auth",
                "none",
                "--bind-addr",
                f"127.0.0.1:{self.port}",
                "--disable-telemetry",
                "--disable-update-check",
                "--disable-workspace-trust",
                "--disable-getting-started-override",
                str(self.workspace),
            ),
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = self.proc

        def healthy() -> bool:
            assert proc.poll() is None, "code-server exited:\n" + self.log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return True
            except OSError:
                return False

        wait_until(healthy, 60, "code-server to answer /healthz", diag=self.log.read_text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?folder={self.workspace}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)

    def extension_host_logs(self) -> str:
        """The extension host's and our output channel's logs, for failure messages."""
        out = []
        logs = self.user_data / "logs"
        if logs.exists():
            for p in sorted(logs.rglob("*.log")):
                if "exthost" in p.name or "Council" in p.name or "council" in str(p):
                    text = p.read_text(errors="replace")[-3000:]
                    out.append(f"--- {p.relative_to(logs)}\n{text}")
        return "\n".join(out)[-12000:]


class Workbench:
    """The VS Code UI in Chromium, through Playwright; screenshots named by step."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.shots = ARTIFACTS / name
        shutil.rmtree(self.shots, ignore_errors=True)
        self.shots.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def shot(self, step: str) -> Path:
        self.n += 1
        self.page.wait_for_timeout(400)  # let notifications finish fading in
        path = self.shots / f"{self.n:02d}-{step}.png"
        self.page.screenshot(path=str(path))
        return path

    def palette(self, command: str) -> None:
        """F1, type the command's title, run the row whose label starts with that title.

        The first row is not enough: "Council: Run..." also matches "Council: Open Run
        Report...", which the fuzzy ranking may put first.
        """
        self.page.keyboard.press("F1")
        box = self.page.locator(".quick-input-widget input")
        box.wait_for(state="visible", timeout=10_000)
        box.fill(f">{command}")
        label = self.page.locator(".quick-input-list .monaco-list-row .label-name")
        # the label starts with the title (some add a qualifier: "(Errors, Warnings, Infos)")
        exact = label.filter(has_text=re.compile(rf"^\s*{re.escape(command)}"))
        exact.first.wait_for(state="visible", timeout=10_000)
        exact.first.click()

    def open_file(self, name: str) -> None:
        self.page.keyboard.press("F1")
        box = self.page.locator(".quick-input-widget input")
        box.wait_for(state="visible", timeout=10_000)
        box.fill(name)
        row = self.page.locator(".quick-input-list .monaco-list-row", has_text=name).first
        row.wait_for(state="visible", timeout=10_000)
        self.page.keyboard.press("Enter")
        self.page.locator(".tab.active", has_text=name).wait_for(timeout=10_000)
        self.page.locator(".monaco-editor textarea").first.wait_for(timeout=10_000)
        self.focus_editor()

    def focus_editor(self) -> None:
        self.page.locator(".editor-instance .monaco-editor .view-lines").first.click()

    def status_text(self) -> str:
        # the DOM id is "<publisher>.<extension>.<item id>"
        item = self.page.locator('.statusbar-item[id$="council.status"]')
        return item.inner_text(timeout=5000) if item.count() else ""

    def toast(self, text: str) -> Any:
        return self.page.locator(TOAST, has_text=text).first

    def notifications(self) -> list[str]:
        return [t.strip() for t in self.page.locator(TOAST).all_inner_texts()]

    def wait_notification(self, text: str, timeout: float = 30) -> str:
        found = wait_until(
            lambda: next((n for n in self.notifications() if text in n), None),
            timeout,
            f"a notification saying {text!r}",
            self.notifications,
        )
        return str(found)

    def editor_shows(self, text: str, timeout: float = 5000) -> None:
        self.page.locator(".editor-instance .view-lines", has_text=text).first.wait_for(
            timeout=timeout
        )


def chat(lb: LoopbackProvider, model: str) -> list[Any]:
    """The model's chat requests, not the capability probes `council.providers` sends."""
    return [
        r
        for r in lb.requests
        if r.model == model
        and r.path.endswith("/chat/completions")
        and '"probe"' not in json.dumps(r.body.get("response_format"))
    ]


def server_started(bench: Workbench) -> float:
    """Waits for the status-bar item to show the backend; returns seconds waited."""
    start = time.monotonic()
    wait_until(
        lambda: f"lb:{FIM}" in bench.status_text(),
        90,
        "the status bar to show the completion backend (extension active, server started)",
        lambda: bench.status_text() + "\n" + bench.server.extension_host_logs(),  # type: ignore[attr-defined]
    )
    # provider health comes from council.providers, whose probes reach the loopback: wait for
    # them, so they cannot take a reply a test scripts afterwards
    wait_until(lambda: " up" in bench.status_text(), 30, "provider health in the status bar")
    return time.monotonic() - start
