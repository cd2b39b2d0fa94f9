"""``council train <command>``: one module per command, imported only when it runs.

Each module defines ``HELP`` (one line), ``EPILOG`` (examples shown by ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``. Keeping the heavy imports (jax, flax,
datasets) inside ``run`` keeps ``council --help`` and the language server's start-up fast.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

#: command name -> module under training.commands
COMMANDS: dict[str, str] = {
    "tokenizer": "tokenizer",
    "data": "data",
    "fit": "fit",
    "sample": "sample",
    "eval": "eval",
    "export": "export",
    "import": "import_",
}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"training.commands.{COMMANDS[name]}")


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``council train ...`` and its subcommands on the top-level parser."""
    train = sub.add_parser("train", help="train, evaluate and convert the specialist model")
    tsub = train.add_subparsers(dest="train_command", required=True)
    for name in COMMANDS:
        mod = _module(name)
        p = tsub.add_parser(
            name,
            help=mod.HELP,
            description=mod.HELP,
            epilog=mod.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)


def run_train(args: argparse.Namespace) -> int:
    return int(_module(args.train_command).run(args) or 0)
