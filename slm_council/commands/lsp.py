"""`council lsp`: the language server, what every editor client spawns.

The editor waits for the answer to ``initialize``, so this handler imports nothing but the
server itself: no anyio, no settings, no training parsers (`slm_council.main` leaves those
out when the command line is `council lsp`).
"""

from __future__ import annotations

import argparse
import gc


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council lsp` and its flags."""
    p = sub.add_parser("lsp", help="run the language server (stdio by default)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead, for debugging")
    # vscode-languageclient (TransportKind.stdio) and other clients append --stdio: accepted,
    # stdio is the default anyway
    p.add_argument("--stdio", action="store_true", help="use stdio (the default)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Build the server and serve until the client says exit."""
    # What is imported and built here lives as long as the server, so the garbage collector
    # has nothing to free while pygls and lsprotocol load; its passes over their ~50,000 new
    # objects cost 20-30 ms of the editor's wait for `initialize`. Collection resumes as
    # soon as the server is built.
    gc.disable()
    try:
        # The one upward import: the entry point starts the server; nothing else imports it.
        from server.app import build_server

        server = build_server()
    finally:
        gc.enable()
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    return 0
