"""VS Code: the server's life under the extension: live settings, restarts, a missing command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.loopback import LoopbackProvider
from tests.vscode.harness import Workbench, server_started
from tests.waits import wait_until

pytestmark = pytest.mark.timeout(300)


def test_settings_changes_reach_the_server_and_server_settings_restart_it(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    server_started(bench)
    settings_file = workspace / ".vscode" / "settings.json"
    settings = json.loads(settings_file.read_text())
    # a council.toml key as a VS Code setting: pushed live (didChangeConfiguration)
    settings["council.completion.backend"] = "lb:gen"
    settings_file.write_text(json.dumps(settings, indent=2))
    wait_until(lambda: "lb:gen" in bench.status_text(), 30, "the new backend", bench.status_text)
    bench.shot("backend-changed")
    log = bench.server.extension_host_logs  # type: ignore[attr-defined]
    assert "Restarting the council server" not in log()
    # a server setting: the extension restarts the server with the new environment
    settings["council.server.env"] = {**settings["council.server.env"], "COUNCIL_E2E_MARK": "1"}
    settings_file.write_text(json.dumps(settings, indent=2))
    wait_until(lambda: "Restarting the council server" in log(), 30, "a restart", log)
    # Council: Restart Server from the palette while that restart is still under way: the
    # two run one after the other (a half-started client is never stopped)
    bench.palette("Council: Restart Server")
    wait_until(
        lambda: log().count("Restarting the council server") == 2, 30, "the second restart", log
    )
    wait_until(lambda: log().count("Starting ") == 3, 30, "the third server start", log)
    wait_until(lambda: "lb:gen" in bench.status_text(), 60, "the server back", bench.status_text)
    assert "can't be stopped" not in log() and "SIGKILL" not in log(), log()
    bench.palette("Council: Show Server Log")
    bench.page.locator(
        ".output-view, .panel", has_text="Restarting the council server"
    ).first.wait_for(timeout=10_000)
    bench.shot("server-log")


@pytest.mark.vscode_settings({"council.server.command": ["/nonexistent/bin/council", "lsp"]})
def test_a_missing_server_command_is_reported_by_name(vscode: Workbench) -> None:
    bench = vscode
    bench.open_file("mathx.py")  # activates the extension
    message = bench.wait_notification("cannot start the server", 30)
    bench.shot("missing-server")
    assert 'council.server.command names "/nonexistent/bin/council"' in message, message
    assert "Open Settings" in message, message
    wait_until(
        lambda: bench.status_text().strip() == "Council", 10, "the error state", bench.status_text
    )
    # the editor keeps working: typing in the file is unaffected
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.type("# still editing\n")
    bench.editor_shows("# still editing")
