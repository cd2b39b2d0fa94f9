"""`python -m providers.loopback`: run the scripted server by hand."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence

from providers.loopback.provider import LoopbackProvider

# -- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a loopback provider in the foreground (for the demo and manual poking)."""
    parser = argparse.ArgumentParser(
        prog="python -m providers.loopback",
        description="Scripted OpenAI-compatible server on 127.0.0.1 (stands in for providers).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--models", default="loopback-chat", help="comma-separated model ids")
    parser.add_argument("--no-suffix", action="store_true", help="refuse FIM `suffix`")
    parser.add_argument("--no-json-schema", action="store_true", help="refuse json_schema")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        parser.error("--models needs at least one model id")
    provider = LoopbackProvider(
        models=models,
        supports_suffix=not args.no_suffix,
        supports_json_schema=not args.no_json_schema,
        chunk_delay=args.chunk_delay,
        require_api_key=args.api_key,
        host=args.host,
        port=args.port,
    )
    print(provider.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
