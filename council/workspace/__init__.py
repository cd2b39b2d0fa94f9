"""Workspace context: an in-memory, incremental index of the workspace's Python files.

- `chunks`: a file cut into pieces a model can use (each top-level function, a big class's
  header and methods, the module's own code), and the identifier tokens BM25 scores.
- `index`: the BM25 index itself, thread-safe and updated file by file.
- `scan`: the builder that fills it from disk in a background thread, in batches, with open
  editor buffers taking precedence over the files on disk.
- `completion`: the chunks that best match the code above the cursor, for the inline
  completion prompt; `council_context`: the definitions, tests and similar functions a
  council request gets.

Nothing here imports numpy or pydantic at import time, so the language server can hold a
builder from `initialized` on without paying for them before its first query.
"""
