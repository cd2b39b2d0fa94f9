"""One module per `council` subcommand.

Each module exposes ``register(subparsers)``, which adds its subparser with only its own
flags and sets ``handler`` (``args -> int``) as the parser's default. Modules import nothing
heavy at import time: `slm_council.main` imports them all to build the parser, and
`council lsp` must reach ``initialize`` without pydantic, anyio or JAX.
"""
