"""``council train export``: a run (or an HF directory) -> Hugging Face Llama format or GGUF."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.model import Transformer

HELP = "export a trained run (or an HF model dir) to Hugging Face safetensors or GGUF"
EPILOG = """examples:
  council train export runs/tiny --out exports/tiny-hf
  council train export runs/tiny --out exports/tiny-hf --dtype bfloat16 --step 2000 --force
  council train export runs/tiny --out exports/tiny.gguf --format gguf --dtype f16
  council train export models/qwen2.5-coder-0.5b --out exports/qwen.gguf --format gguf
"""

log = logging.getLogger(__name__)

_HF_DTYPES = {"float32": "float32", "f32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_HF_DTYPES |= {"float16": "float16", "f16": "float16", "fp16": "float16", "fp32": "float32"}
_GGUF_DTYPES = {"f16": "f16", "float16": "f16", "fp16": "f16", "f32": "f32", "float32": "f32"}
_GGUF_DTYPES |= {"fp32": "f32"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, help="a training run directory, or a Hugging Face model directory"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output directory (hf), or .gguf file / directory for model.gguf (gguf)",
    )
    parser.add_argument("--format", choices=["hf", "gguf"], default="hf")
    parser.add_argument(
        "--dtype",
        default=None,
        help="hf: float32 (default), bfloat16, float16; gguf: f16 (default), f32",
    )
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def _load(source: Path, step: int | None) -> Transformer:
    from training.hf import import_hf, is_hf_dir

    if not source.is_dir():
        raise ValueError(f"{source} is not a directory")
    if (source / "model_config.json").is_file():
        from training.checkpoint import load_model

        model, _ = load_model(source, step)
        return model
    if is_hf_dir(source):
        if step is not None:
            raise ValueError("--step applies to training runs, not Hugging Face directories")
        model, _ = import_hf(source)
        return model
    raise ValueError(
        f"{source} is neither a training run (model_config.json) nor a Hugging Face model "
        "directory (config.json + *.safetensors)"
    )


def run(args: argparse.Namespace) -> int:
    from training.gguf_export import export_gguf
    from training.hf import export_hf

    table = _HF_DTYPES if args.format == "hf" else _GGUF_DTYPES
    dtype = table.get(args.dtype or ("float32" if args.format == "hf" else "f16"))
    if dtype is None:
        raise SystemExit(
            f"council train export: --dtype {args.dtype!r} is not valid for --format "
            f"{args.format}; choose one of {', '.join(sorted(set(table.values())))}"
        )
    try:
        model = _load(args.source, args.step)
        tokenizer_dir = args.source if (args.source / "tokenizer.json").is_file() else None
        if tokenizer_dir is None:
            print(f"warning: no tokenizer.json in {args.source}; exporting weights only")
        if args.format == "hf":
            out = export_hf(model, tokenizer_dir, args.out, dtype, overwrite=args.force)
        else:
            out = args.out if args.out.suffix == ".gguf" else args.out / "model.gguf"
            export_gguf(model, tokenizer_dir, out, dtype, overwrite=args.force)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"council train export: {exc}") from None
    print(f"exported {args.source} -> {out} ({args.format}, {dtype})")
    return 0
