"""The VS Code extension (`editors/vscode`) end to end in a real VS Code.

code-server (VS Code 1.139 in the browser) runs with the packaged `council.vsix` installed,
and Playwright drives Debian's Chromium against it. The extension starts `council lsp` from
this interpreter (`council.server.command` in the workspace's settings); the providers are the
scripted loopback HTTP server in this process.

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
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider, Reply
from tests.test_neovim import FIM, FIXED, ROLES, script_add_tests
from tests.test_pipeline import MODELS, debug_ok, js, plan, suite, synth

REPO = Path(__file__).resolve().parent.parent
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

pytestmark = pytest.mark.timeout(300)


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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "code-server exited:\n" + self.log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        log = self.log.read_text()
        raise AssertionError(f"code-server did not answer /healthz in 60 s:\n{log}")

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
        """F1, type the command's title, run the match."""
        self.page.keyboard.press("F1")
        box = self.page.locator(".quick-input-widget input")
        box.wait_for(state="visible", timeout=10_000)
        box.fill(f">{command}")
        row = self.page.locator(".quick-input-list .monaco-list-row", has_text=command).first
        row.wait_for(state="visible", timeout=10_000)
        self.page.keyboard.press("Enter")

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
        found = _wait(
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


@pytest.fixture
def lb() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=(*MODELS, FIM)) as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path, lb: LoopbackProvider, request: pytest.FixtureRequest) -> Path:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / ".vscode").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'ws'\n", encoding="utf-8")
    (root / "mathx.py").write_text(FIXED, encoding="utf-8")
    (root / "m.py").write_text("def add(a, b):\n", encoding="utf-8")
    config = tmp_path / "cfg" / "council.toml"
    config.parent.mkdir()
    config.write_text(
        f'[providers.lb]\nbase_url = "{lb.base_url}"\n[roles]\n'
        + "".join(f'{r} = "lb:{m}"\n' for r, m in zip(ROLES, MODELS, strict=True))
        + "[router]\nmax_retries = 0\n",
        encoding="utf-8",
    )
    # The extension's own settings: how to start the server, its environment, and one
    # council.toml key mirrored as a VS Code setting (it must reach the server).
    settings = {
        "council.server.command": [sys.executable, "-m", "slm_council", "lsp"],
        "council.server.env": {"COUNCIL_CONFIG": str(config)},
        "council.completion.backend": f"lb:{FIM}",
    }
    marker = request.node.get_closest_marker("vscode_settings")
    if marker is not None:
        settings.update(marker.args[0])
    (root / ".vscode" / "settings.json").write_text(json.dumps(settings, indent=2))
    return root


@pytest.fixture
def vscode(tmp_path: Path, workspace: Path, request: pytest.FixtureRequest) -> Iterator[Workbench]:
    from playwright.sync_api import sync_playwright

    server = CodeServer(tmp_path / "cs", workspace)
    server.root.mkdir()
    install_s = server.install()
    server.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=server.env_paths["chromium"], headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            start = time.monotonic()
            page.goto(server.url)
            page.locator(".monaco-workbench").wait_for(timeout=60_000)
            bench = Workbench(page, request.node.name)
            bench.install_s = install_s  # type: ignore[attr-defined]
            bench.workbench_s = time.monotonic() - start  # type: ignore[attr-defined]
            bench.server = server  # type: ignore[attr-defined]
            try:
                yield bench
            except BaseException:
                raise
            finally:
                with_shot = getattr(request.node, "rep_call", None)
                if with_shot is None or with_shot.failed:
                    bench.shot("final")
                browser.close()
    finally:
        server.stop()


def _wait(predicate: Any, timeout: float, what: str, diag: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    extra = diag() if callable(diag) else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{extra}")


def _chat(lb: LoopbackProvider, model: str) -> list[Any]:
    """The model's chat requests, not the capability probes `council.providers` sends."""
    return [
        r
        for r in lb.requests
        if r.model == model
        and r.path.endswith("/chat/completions")
        and '"probe"' not in json.dumps(r.body.get("response_format"))
    ]


def _server_started(bench: Workbench) -> float:
    """Waits for the status-bar item to show the backend; returns seconds waited."""
    start = time.monotonic()
    _wait(
        lambda: f"lb:{FIM}" in bench.status_text(),
        90,
        "the status bar to show the completion backend (extension active, server started)",
        lambda: bench.status_text() + "\n" + bench.server.extension_host_logs(),  # type: ignore[attr-defined]
    )
    # provider health comes from council.providers, whose probes reach the loopback: wait for
    # them, so they cannot take a reply a test scripts afterwards
    _wait(lambda: " up" in bench.status_text(), 30, "provider health in the status bar")
    return time.monotonic() - start


def test_extension_starts_server_and_add_tests_runs_from_the_palette(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    waited = _server_started(bench)
    bench.shot("server-started")
    status = bench.status_text()
    assert re.search(r"\d+/\d+ up", status), status

    # Show Providers: a quick pick with one row per provider:model, with health and roles
    bench.palette("Council: Show Providers")
    rows = bench.page.locator(".quick-input-list .monaco-list-row", has_text="lb:orch")
    rows.first.wait_for(timeout=15_000)
    row_text = rows.first.inner_text()
    assert "local" in row_text and "orchestrator" in row_text, row_text
    bench.shot("providers")
    bench.page.keyboard.press("Escape")

    script_add_tests(lb, delay=2.0)  # the first call waits, so the progress is seen
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Add Tests")
    toast = bench.toast("Council: Add Tests")
    toast.wait_for(timeout=15_000)
    # the server's $/progress reaches the notification: the orchestrator's stage is named
    stage = bench.wait_notification("orchestrator", 10)
    bench.shot("add-tests-progress")
    # a cancellable notification has a Cancel button
    assert toast.locator(".monaco-button", has_text="Cancel").count() >= 1, stage

    bench.page.locator(".tab", has_text="test_mathx.py").first.wait_for(timeout=60_000)
    outcome = bench.wait_notification("passed")
    bench.shot("add-tests-done")
    assert "Created tests/test_mathx.py" in outcome and "2 passed, 0 failed" in outcome, outcome
    # the test file was created and shown; the edit is unsaved until the user saves it
    target = workspace / "tests" / "test_mathx.py"
    assert target.exists()
    bench.editor_shows("def test_adds_positive")
    bench.page.keyboard.press("Control+S")
    _wait(lambda: "def test_adds_positive" in target.read_text(), 10, "the saved test file")
    assert target.read_text().count("def test_adds_positive") == 1
    # the orchestrator really received the request, and the tester's suite ran in the sandbox
    assert any(r.model == "tst" for r in lb.requests), [r.model for r in lb.requests]
    print(
        json.dumps(
            {
                "install_s": round(bench.install_s, 1),  # type: ignore[attr-defined]
                "workbench_s": round(bench.workbench_s, 1),  # type: ignore[attr-defined]
                "server_ready_s": round(waited, 1),
                "status": status,
            }
        )
    )


def test_inline_suggestion_appears_as_ghost_text_and_tab_accepts_it(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    _server_started(bench)
    lb.script(*[Reply(content="a + b") for _ in range(40)], model=FIM)
    bench.open_file("m.py")
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.type("    return ", delay=40)
    ghost = bench.page.locator(".editor-instance .ghost-text-decoration")
    ghost.first.wait_for(timeout=20_000)

    def shown() -> str:  # Monaco renders ghost text as one span per token
        return "".join(ghost.all_inner_texts()).replace("\xa0", " ")

    _wait(lambda: "a + b" in shown(), 10, "the ghost text 'a + b'", shown)
    bench.shot("ghost-text")
    bench.page.keyboard.press("Tab")
    # (the accepted text ends a line, so VS Code asks again and may show a new suggestion;
    # only accepted text is saved)
    bench.page.keyboard.press("Control+S")
    target = workspace / "m.py"
    _wait(lambda: "return a + b" in target.read_text(), 10, "the saved file", target.read_text)
    bench.shot("accepted")
    assert target.read_text().splitlines()[1] == "    return a + b", target.read_text()
    fim = [r for r in lb.requests if r.model == FIM]
    assert fim, "no completion request reached the provider"


def test_cancel_button_in_the_progress_notification_stops_the_run(
    vscode: Workbench, lb: LoopbackProvider
) -> None:
    bench = vscode
    _server_started(bench)
    script_add_tests(lb, delay=30)  # the orchestrator would answer only after 30 s
    bench.open_file("mathx.py")
    bench.palette("Council: Add Tests")
    toast = bench.toast("Council: Add Tests")
    toast.wait_for(timeout=15_000)
    _wait(lambda: _chat(lb, "orch"), 15, "the orchestrator's request")
    bench.shot("before-cancel")
    start = time.monotonic()
    toast.hover()  # the buttons of a toast are shown on hover
    toast.locator(".monaco-button", has_text="Cancel").click()
    message = bench.wait_notification("cancelled", 15)
    took = time.monotonic() - start
    bench.shot("cancelled")
    assert "Council: Add Tests: cancelled" in message, message
    # the provider saw the client hang up: the HTTP request was really closed
    orch = _chat(lb, "orch")[0]
    _wait(lambda: orch.client_disconnected_at is not None, 10, "the orchestrator call closed")
    assert took < 15, took
    assert not (bench.server.workspace / "tests" / "test_mathx.py").exists()  # type: ignore[attr-defined]
    # the palette's Council: Cancel stops a run too (all of this window's runs)
    lb.clear()  # the first run's unused replies and records
    script_add_tests(lb, delay=30)
    bench.palette("Council: Add Tests")
    bench.toast("Council: Add Tests").wait_for(timeout=15_000)
    _wait(lambda: _chat(lb, "orch"), 15, "the second run's orchestrator request")
    bench.palette("Council: Cancel")
    assert "cancelled 1 run(s)" in bench.wait_notification("Council: cancelled", 15)
    second = _chat(lb, "orch")[0]
    _wait(lambda: second.client_disconnected_at is not None, 10, "the second run's call closed")
    bench.shot("palette-cancel")


def test_run_asks_for_a_query_and_opens_the_markdown_report(
    vscode: Workbench, lb: LoopbackProvider
) -> None:
    bench = vscode
    _server_started(bench)
    lb.script(js(goal="explain", tasks=[{"agent": "researcher", "instruction": "x"}]), model="orch")
    lb.script(js(answer="Use `functools.cache` on the function."), model="res")
    bench.open_file("mathx.py")
    bench.palette("Council: Run...")
    box = bench.page.locator(".quick-input-widget input")
    bench.page.locator(".quick-input-widget", has_text="Ask the council").wait_for(timeout=10_000)
    box.fill("how do I memoise add?")
    bench.shot("run-query")
    bench.page.keyboard.press("Enter")
    # the server writes the report outside the workspace and asks VS Code to show it
    bench.page.locator(".tab", has_text=".md").first.wait_for(timeout=30_000)
    bench.editor_shows("functools.cache", 10_000)
    outcome = bench.wait_notification("Open Report")  # the outcome's button
    bench.shot("run-report")
    assert "Council: Run:" in outcome, outcome
    # the open file went along as context
    orch = _chat(lb, "orch")[0]
    assert "mathx.py" in json.dumps(orch.body), orch.body


def test_debug_publishes_diagnostics_and_the_quick_fix_repairs_the_code(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    (workspace / "mathx.py").write_text("def add(a: int, b: int) -> int:\n    return a - b\n")
    _server_started(bench)
    lb.script(plan("debugger"), synth("APPROVE", 0.9), model="orch")
    lb.script(
        js(
            verdict="fail",
            analysis="subtracts",
            fixed_code=FIXED,
            bugs=[
                {"line": 2, "severity": "critical", "description": "Subtracts.", "fix": "Use +."}
            ],
        ),
        debug_ok(),
        model="dbg",
    )
    lb.script(suite(), model="tst")
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Debug")
    outcome = bench.wait_notification("bug(s) found", 60)
    assert "Council: Debug: 1 bug(s) found" in outcome, outcome
    # the diagnostic is in the editor: a squiggle, and the Problems panel lists it
    bench.page.locator(".editor-instance .squiggly-error").first.wait_for(timeout=10_000)
    bench.palette("View: Focus Problems")
    problems = bench.page.locator(".markers-panel", has_text="Subtracts.")
    problems.first.wait_for(timeout=10_000)
    bench.shot("problems")
    # the quick fix from the lightbulb menu applies the debugger's fixed code
    bench.focus_editor()
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.press("ArrowUp")
    bench.page.keyboard.press("End")
    bench.page.keyboard.press("Control+.")
    fix = bench.page.locator(".action-widget .monaco-list-row", has_text="Council")
    fix.first.wait_for(timeout=10_000)
    bench.shot("quick-fix-menu")
    fix.first.click()
    bench.editor_shows("return a + b", 10_000)
    bench.page.keyboard.press("Control+S")
    target = workspace / "mathx.py"
    _wait(lambda: "return a + b" in target.read_text(), 10, "the fixed file", target.read_text)
    bench.shot("fixed")


def test_settings_changes_reach_the_server_and_server_settings_restart_it(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    _server_started(bench)
    settings_file = workspace / ".vscode" / "settings.json"
    settings = json.loads(settings_file.read_text())
    # a council.toml key as a VS Code setting: pushed live (didChangeConfiguration)
    settings["council.completion.backend"] = "lb:gen"
    settings_file.write_text(json.dumps(settings, indent=2))
    _wait(lambda: "lb:gen" in bench.status_text(), 30, "the new backend", bench.status_text)
    bench.shot("backend-changed")
    log = bench.server.extension_host_logs  # type: ignore[attr-defined]
    assert "Restarting the council server" not in log()
    # a server setting: the extension restarts the server with the new environment
    settings["council.server.env"] = {**settings["council.server.env"], "COUNCIL_E2E_MARK": "1"}
    settings_file.write_text(json.dumps(settings, indent=2))
    _wait(lambda: "Restarting the council server" in log(), 30, "a restart", log)
    # Council: Restart Server from the palette while that restart is still under way: the
    # two run one after the other (a half-started client is never stopped)
    bench.palette("Council: Restart Server")
    _wait(lambda: log().count("Restarting the council server") == 2, 30, "the second restart", log)
    _wait(lambda: log().count("Starting ") == 3, 30, "the third server start", log)
    _wait(lambda: "lb:gen" in bench.status_text(), 60, "the server back", bench.status_text)
    assert "can't be stopped" not in log() and "SIGKILL" not in log(), log()
    bench.palette("Council: Show Server Log")
    bench.page.locator(
        ".output-view, .panel", has_text="Restarting the council server"
    ).first.wait_for(timeout=10_000)
    bench.shot("server-log")


def test_generate_code_action_replaces_the_function_and_keeps_typing_during_the_run(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    from tests.test_server import STUB, script_generate

    bench = vscode
    (workspace / "mathx.py").write_text(STUB)
    _server_started(bench)
    script_generate(lb, delay=4.0)  # the generator answers after 4 s
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    # the code action from the lightbulb menu (Ctrl+.), not the palette: the extension routes
    # the server's command through the same notification progress
    bench.page.keyboard.press("Control+.")
    action = bench.page.locator(
        ".action-widget .monaco-list-row", has_text="Council: Generate implementation of add"
    )
    action.first.wait_for(timeout=10_000)
    bench.shot("code-actions")
    action.first.click()
    bench.toast("Council: Generate").wait_for(timeout=15_000)
    _wait(lambda: _chat(lb, "gen"), 20, "the generator's request")
    # the user keeps typing while the council works: a comment above the function
    bench.focus_editor()
    bench.page.keyboard.press("Control+Home")
    bench.page.keyboard.type("# typed during the run\n")
    outcome = bench.wait_notification("Replaced", 60)
    bench.shot("generated")
    assert "Council: Generate: Replaced `add`" in outcome, outcome
    bench.editor_shows("return a + b", 10_000)
    bench.page.keyboard.press("Control+S")
    target = workspace / "mathx.py"
    _wait(lambda: "return a + b" in target.read_text(), 10, "the saved file", target.read_text)
    text = target.read_text()
    assert text.startswith("# typed during the run\ndef add("), text
    assert "pass" not in text and text.count("def add") == 1, text
    assert 'return "keep me"' in text  # the rest of the file is untouched


@pytest.mark.vscode_settings({"council.deliberate": {"members": ["lb:res", "lb:gen"]}})
def test_deliberate_asks_for_a_question_and_reports_the_standings(
    vscode: Workbench, lb: LoopbackProvider
) -> None:
    # `council.deliberate` is a whole council.toml table given as a VS Code setting
    bench = vscode
    _server_started(bench)
    for m in ("res", "gen"):
        lb.script(Reply(content=f"answer from {m}"), js(ranking=["A"]), model=m)
    lb.script(js(answer="Use a dict with move_to_end.", dissent=["none"]), model="orch")
    bench.palette("Council: Deliberate...")
    bench.page.locator(".quick-input-widget", has_text="deliberate").wait_for(timeout=10_000)
    bench.page.locator(".quick-input-widget input").fill("How should an LRU cache be built?")
    bench.page.keyboard.press("Enter")
    bench.page.locator(".tab", has_text=".md").first.wait_for(timeout=30_000)
    bench.editor_shows("Council deliberation", 10_000)
    bench.editor_shows("move_to_end")
    outcome = bench.wait_notification("Open Report")
    bench.shot("deliberation")
    assert "Council: Deliberate: approved: Use a dict with move_to_end." in outcome, outcome
    # both configured members answered and ranked; the chairman (orchestrator) summed up
    assert len(_chat(lb, "res")) == 2 and len(_chat(lb, "gen")) == 2, [r.model for r in lb.requests]
    assert len(_chat(lb, "orch")) == 1


@pytest.mark.vscode_settings({"council.server.command": ["/nonexistent/bin/council", "lsp"]})
def test_a_missing_server_command_is_reported_by_name(vscode: Workbench) -> None:
    bench = vscode
    bench.open_file("mathx.py")  # activates the extension
    message = bench.wait_notification("cannot start the server", 30)
    bench.shot("missing-server")
    assert 'council.server.command names "/nonexistent/bin/council"' in message, message
    assert "Open Settings" in message, message
    _wait(
        lambda: bench.status_text().strip() == "Council", 10, "the error state", bench.status_text
    )
    # the editor keeps working: typing in the file is unaffected
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.type("# still editing\n")
    bench.editor_shows("# still editing")
