"""``council train data``: build a packed, filtered, deduplicated training set."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HELP = "filter, deduplicate, tokenize and pack Python source into a training set"
EPILOG = """\
sources (--source, repeatable):
  stdlib                   this Python's standard library source (offline, ~1,800 files)
  PATH | DIR | 'GLOB'      local .py files (directories are searched recursively)
  hf:NAME[:CONFIG]         a Hugging Face dataset, streamed (needs network; CONFIG with a
                           slash is a data_dir, e.g. hf:bigcode/the-stack:data/python);
                           NAME may be a local folder of parquet/json files

examples:
  council train data --source stdlib --vocab-size 8192 --seq-len 256 --out data/stdlib
  council train data --source ~/src/myproject --source stdlib --tokenizer data/stdlib \\
      --seq-len 512 --out data/mine
  council train data --source hf:codeparrot/codeparrot-clean --max-files 200000 \\
      --tokenizer starcoder2/tokenizer.json --seq-len 2048 --out data/codeparrot
  council train data --source 'examples/**/*.py' --vocab-size 400 --no-dedup --out /tmp/d
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="SRC",
        help="stdlib, a path/dir/glob of .py files, or hf:NAME[:CONFIG] (repeatable)",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--tokenizer",
        default="train",
        metavar="DIR|FILE|train",
        help="tokenizer.json or a directory holding one, or 'train' to train a byte-level "
        "BPE on the kept train files (default)",
    )
    parser.add_argument(
        "--vocab-size", type=int, default=8192, help="vocabulary of a trained tokenizer"
    )
    parser.add_argument(
        "--seq-len", type=int, default=512, help="context length; rows hold seq_len + 1 tokens"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="share of files (by path hash) held out for validation (default 0.05)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="processes for filtering and MinHash (default: CPU count, at most 8)",
    )
    parser.add_argument("--max-files", type=int, help="read at most this many files per source")
    parser.add_argument(
        "--text-column", default="content", help="hf: column holding the source text"
    )
    parser.add_argument("--split", default="train", help="hf: dataset split to stream")
    parser.add_argument("--no-dedup", action="store_true", help="skip MinHash deduplication")
    parser.add_argument("--no-decontam", action="store_true", help="skip HumanEval decontamination")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from training.data import build_dataset
    from training.tokenizer import CodeTokenizer

    started = time.perf_counter()
    try:
        if args.max_files is not None and args.max_files < 1:
            raise ValueError("--max-files must be positive")
        tokenizer = None if args.tokenizer == "train" else CodeTokenizer.from_file(args.tokenizer)
        manifest = build_dataset(
            args.source,
            args.out,
            tokenizer=tokenizer,
            vocab_size=args.vocab_size,
            seq_len=args.seq_len,
            val_fraction=args.val_fraction,
            num_workers=args.num_workers,
            dedup=not args.no_dedup,
            decontam=not args.no_decontam,
            max_files=args.max_files,
            text_column=args.text_column,
            hf_split=args.split,
            force=args.force,
        )
    except ValueError as exc:
        print(f"council train data: {exc}", file=sys.stderr)
        return 2
    from training.data import FilterReport

    print(FilterReport.from_dict(manifest["report"]).table())
    splits = manifest["splits"]
    tokens = sum(s["tokens"] for s in splits.values())
    print(
        f"wrote {args.out}: {splits['train']['rows']:,} train + {splits['val']['rows']:,} val "
        f"rows of {manifest['row_len']} tokens, {tokens:,} tokens, vocab "
        f"{manifest['vocab_size']:,} ({time.perf_counter() - started:.1f}s)"
    )
    return 0
