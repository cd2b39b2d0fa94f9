"""The `council` command: builds the parser from one module per command and dispatches.

Each command module registers its own subparser and handler (``set_defaults(handler=...)``),
so adding a command touches one new file and the tuple below, never an if-chain. This module
only sets up logging and turns the failures users cause into one line and an exit status;
heavy packages are imported inside the handler that needs them, so `council --help` and
`council lsp` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from providers.errors import ProviderError
from providers.secrets import RedactingFilter
from slm_council.commands import (
    ask,
    bench,
    complete,
    config,
    deliberate,
    demo,
    lsp,
    providers,
    run,
    sandbox,
)
from slm_council.commands import train as train_command
from slm_council.extras import missing_train_module, train_extra_hint

#: In the order `council --help` lists them.
COMMANDS = (
    providers,
    config,
    ask,
    lsp,
    run,
    deliberate,
    demo,
    sandbox,
    complete,
    train_command,
    bench,
)


def setup_logging(verbosity: int) -> None:
    """One stderr handler, redacting secrets, replacing whatever was there (the CLI owns
    the process; tests that call `main` in-process restore the root logger themselves)."""
    level = logging.WARNING - 10 * min(verbosity, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def build_parser(*, train: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `train=False` leaves out `council train`, whose parsers import
    seven modules (see `main`)."""
    parser = argparse.ArgumentParser(
        prog="council",
        description="SLM Coding Council: a council of small language models for your editor.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--workspace", help="workspace folder whose council.toml applies (default: cwd)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        if train or module is not train_command:
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, set up logging, run the command's handler; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # An editor that starts `council lsp` waits for `initialize`: skip the training parsers
    # when the command line cannot be `council train` (and asks for no --help).
    is_lsp = "lsp" in argv and "train" not in argv and not {"-h", "--help"} & set(argv)
    args = build_parser(train=not is_lsp).parse_args(argv)
    setup_logging(args.verbose)
    try:
        # `lsp`'s handler imports neither anyio nor the settings: the editor waits for
        # `initialize`. Every other handler imports what it needs itself.
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("council: cancelled", file=sys.stderr)
        return 130
    except ProviderError as exc:  # already redacted and readable; no traceback for users
        print(f"council: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a base install reaching training code
        module = missing_train_module(exc)
        if module is None:
            raise
        print(train_extra_hint(_command_line(args), module), file=sys.stderr)
        return 1


def _command_line(args: argparse.Namespace) -> str:
    """`council train fit`, `council bench humaneval`: the command as the user typed it."""
    sub = getattr(args, "train_command", None) or getattr(args, "bench", None)
    return " ".join(["council", args.command, *([sub] if sub else [])])


if __name__ == "__main__":
    sys.exit(main())
