"""Inline completions: context window -> FIM prompt -> model -> post-processing.

The pieces are small modules so each can be tested on its own:

- `context`: the prefix/suffix window around the cursor (token budget) and snippets from
  other open documents;
- `fim_formats`: the raw fill-in-the-middle prompt of each model family;
- `postprocess`: pure functions that turn a raw model answer into a suggestion;
- `cache`: the LRU of answers, with typed-through reuse;
- `backends`: the in-process specialist (on the thread of `worker`) and any provider
  reached through the router;
- `completer`: ties them together for the language server and `council complete`;
- `explain`: each outcome in words, and the explanation of one request (window, raw
  answers, post-processing steps, timings) as Markdown.

Nothing here imports JAX: the specialist backend loads it in a worker thread.
"""
