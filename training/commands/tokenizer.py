"""``council train tokenizer``: train a byte-level BPE on a corpus, or load and save one."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HELP = "train a byte-level BPE tokenizer on Python source (or load a tokenizer.json)"
EPILOG = """\
examples:
  council train tokenizer --source stdlib --vocab-size 8192 --out tok/stdlib-8k
  council train tokenizer --source ~/src --source stdlib --vocab-size 16384 --out tok/16k
  council train tokenizer --from starcoder2-3b/tokenizer.json --out tok/starcoder2

Trained tokenizers use StarCoder's special tokens: <|endoftext|> (end of text and padding),
<fim_prefix> <fim_middle> <fim_suffix> <fim_pad> (ids 0..4). Loaded ones keep their own and
are recognised by family (StarCoder, Qwen2.5-Coder, DeepSeek-Coder, CodeLlama).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--source",
        action="append",
        metavar="SRC",
        help="stdlib, a path/dir/glob of .py files, or hf:NAME[:CONFIG] (repeatable)",
    )
    what.add_argument(
        "--from", dest="from_file", metavar="PATH", help="tokenizer.json (or its dir) to load"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size to train")
    parser.add_argument("--max-files", type=int, help="read at most this many files per source")
    parser.add_argument(
        "--text-column", default="content", help="hf: column holding the source text"
    )
    parser.add_argument("--split", default="train", help="hf: dataset split to stream")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from training import filters
    from training.data import check_source, iter_documents, prepare_out_dir
    from training.tokenizer import CodeTokenizer, train_tokenizer

    started = time.perf_counter()
    counts = {"used": 0, "skipped": 0}

    def texts() -> Iterator[str]:
        docs = iter_documents(
            args.source,
            max_files=args.max_files,
            text_column=args.text_column,
            hf_split=args.split,
        )
        for _, text in docs:
            if filters.first_failure(text) is None:
                counts["used"] += 1
                yield text
            else:
                counts["skipped"] += 1

    try:
        if args.from_file:
            tok = CodeTokenizer.from_file(args.from_file)
            prepare_out_dir(args.out, args.force)
        else:
            for spec in args.source:
                check_source(spec)
            prepare_out_dir(args.out, args.force)
            tok = train_tokenizer(texts(), args.vocab_size)
            if not counts["used"]:
                raise ValueError("no file survived the quality filters; nothing to train on")
        tok.save(args.out)
    except ValueError as exc:
        print(f"council train tokenizer: {exc}", file=sys.stderr)
        return 2
    ids = ", ".join(f"{role}={tok.token_to_id(t)}" for role, t in tok.special_tokens.items())
    origin = (
        f"loaded {args.from_file}"
        if args.from_file
        else f"trained on {counts['used']:,} files ({counts['skipped']:,} filtered out)"
    )
    print(
        f"{tok.family} tokenizer, {tok.vocab_size:,} tokens, {origin} -> {args.out} "
        f"[{ids}] ({time.perf_counter() - started:.1f}s)"
    )
    return 0
