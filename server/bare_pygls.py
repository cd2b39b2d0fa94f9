"""The yardstick for `council bench server`: a pygls server that imports nothing else.

It registers no features, so `initialize` costs exactly what pygls and lsprotocol cost to
import and start. The benchmark spawns it interleaved with `council lsp` and reports the
ratio of their p50s; `council lsp` aims to stay within 10% of it (`python -m
server.bare_pygls`). Nothing in the project imports this module.
"""

from __future__ import annotations

from pygls.lsp.server import LanguageServer


def main() -> None:
    LanguageServer("bare-pygls", "0").start_io()


if __name__ == "__main__":
    main()
