"""What several commands share: loading the settings the way the language server would."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.loading import LoadedSettings


def workspace(args: argparse.Namespace) -> Path:
    """The folder whose council.toml applies: ``--workspace``, else the current directory."""
    return Path(args.workspace).resolve() if args.workspace else Path.cwd()


def load(args: argparse.Namespace) -> LoadedSettings:
    """Settings from every source; problems are printed, and their defaults used, so a bad
    council.toml never stops a command (the same contract as the server's)."""
    from providers.loading import load_settings  # pydantic: `council lsp` loads it later

    loaded = load_settings(workspace(args))
    for problem in loaded.problems:
        print(f"council: config: {problem}", file=sys.stderr)
    return loaded
