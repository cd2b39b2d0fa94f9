"""Placeholder until this command lands (being built now)."""

from __future__ import annotations

import argparse

HELP = "(not built yet)"
EPILOG = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    raise SystemExit("council train: this command is not built yet")
