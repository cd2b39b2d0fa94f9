"""`council train ...`: the specialist's commands, which live in `training.commands` (one
module per command); this module only hooks them into the top-level parser."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council train` and its subcommands (light: no jax until a command runs)."""
    from training.commands import add_train_parser

    add_train_parser(sub)
    sub.choices["train"].set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the chosen `council train` subcommand."""
    from training.commands import run_train

    return run_train(args)
