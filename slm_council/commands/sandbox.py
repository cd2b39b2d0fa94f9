"""`council sandbox`: which OS layers contain generated code on this machine, so a user can
see what a missing bubblewrap or cgroup costs before trusting `council run`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council sandbox` and its flags."""
    p = sub.add_parser(
        "sandbox",
        help="show which OS layers contain generated code on this machine",
        description="Probe the sandbox's layers (bubblewrap namespaces, cgroups, rlimits, ...) "
        "and print what each stops and what happens without it. Exit status 1 when a layer "
        "is missing.",
    )
    p.add_argument("--check", action="store_true", help="probe and print the layers (default)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Probe and print; the exit status says whether every layer is there."""
    from council.sandbox.layers import print_layers

    return print_layers(as_json=args.json)
