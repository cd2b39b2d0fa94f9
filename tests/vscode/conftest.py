"""Fixtures of the VS Code end-to-end tests: the loopback provider, a workspace whose
settings point the extension at it, and a code-server with the extension in Chromium.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.loopback import LoopbackProvider
from tests.scenarios import FIM, FIXED, MODELS, council_toml
from tests.vscode.harness import CHROMIUM_ARGS, CodeServer, Workbench


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
    config.write_text(council_toml(lb.base_url), encoding="utf-8")
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
