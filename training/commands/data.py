"""``council train data``: build a packed, filtered, deduplicated training set."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

HELP = "filter, deduplicate, tokenize and pack Python source into a training set"
EPILOG = """\
sources (--source, repeatable):
  stdlib                   this Python's standard library source (offline, ~1,800 files)
  site-packages[=PATH]     the installed packages of this interpreter (or of the environment
                           or site-packages folder PATH): library .py files from each
                           distribution's RECORD, tests and vendored copies skipped; the
                           validation split is whole packages; --exclude PKG holds packages
                           out (for evaluation) and removes training files that copy them
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
  council train data --source site-packages --exclude rich --exclude click \\
      --vocab-size 8192 --seq-len 512 --out data/site-packages
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="SRC",
        help="stdlib, site-packages[=PATH], a path/dir/glob of .py files, or hf:NAME[:CONFIG] "
        "(repeatable)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PKG",
        help="site-packages: leave this installed package (distribution name) out of both "
        "splits, for evaluation on code the model never saw (repeatable, or comma-separated)",
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
        help="share held out for validation (default 0.05): files by path hash, or, for "
        "site-packages, whole packages holding about this share of the code",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="site-packages: seed of the order packages are drawn for validation (default 0)",
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
        exclude = [name.strip() for arg in args.exclude for name in arg.split(",") if name.strip()]
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
            exclude=exclude,
            split_seed=args.split_seed,
            force=args.force,
        )
    except ValueError as exc:
        print(f"council train data: {exc}", file=sys.stderr)
        return 2
    from training.data import FilterReport

    print(FilterReport.from_dict(manifest["report"]).table())
    if "site_packages" in manifest:
        print(site_summary(manifest["site_packages"]))
    splits = manifest["splits"]
    tokens = sum(s["tokens"] for s in splits.values())
    print(
        f"wrote {args.out}: {splits['train']['rows']:,} train + {splits['val']['rows']:,} val "
        f"rows of {manifest['row_len']} tokens, {tokens:,} tokens, vocab "
        f"{manifest['vocab_size']:,} ({time.perf_counter() - started:.1f}s)"
    )
    return 0


def site_summary(site: dict[str, Any]) -> str:
    """What a site-packages source held: packages per split, the held-out ones, the skips."""
    by_split = site["packages_by_split"]
    val = [p["name"] for p in site["packages"] if p["split"] == "val"]
    skipped = ", ".join(f"{n:,} {why}" for why, n in site["skipped_files"].items() if n)
    lines = [
        f"site-packages {', '.join(site['roots'])}: {by_split['train']} packages in train, "
        f"{by_split['val']} in val ({', '.join(val) or '-'})"
        + (
            f", {by_split['none']} with no file kept (all filtered, or past --max-files)"
            if by_split["none"]
            else ""
        ),
        f"  excluded: {', '.join(p['name'] for p in site['excluded']) or '-'}",
        f"  files skipped before reading: {skipped or '-'}",
    ]
    return "\n".join(lines)
