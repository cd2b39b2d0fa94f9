"""``council train import``: a downloaded Llama/Qwen2 model -> a canonical HF directory of ours.

Decision: import writes a *Hugging Face directory* (config.json + one model.safetensors +
tokenizer files, exactly what :func:`training.hf.export_hf` writes), not a training run with
an orbax checkpoint. That format is the one stable interface between the parts
(``import_hf``/``load_for_inference`` read it; ``fit --init-from`` and ``sample`` accept it),
it keeps this command independent of the checkpoint layout, and the result still loads in
``transformers``, vLLM or llama.cpp's converter. Converting (rather than copying) validates
every tensor, normalises shards and stray keys into one file, and drops anything the model
cannot represent with a clear error instead of at training time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "import a Hugging Face Llama/Qwen2 model (safetensors) as a directory the trainer loads"
EPILOG = """examples:
  # a model downloaded beforehand, e.g. `huggingface-cli download Qwen/Qwen2.5-Coder-0.5B
  #   --local-dir models/qwen2.5-coder-0.5b`
  council train import models/qwen2.5-coder-0.5b --out models/qwen-council
  council train import models/qwen2.5-coder-0.5b --out models/qwen-council --dtype bfloat16
  council train import models/deepseek-coder-1.3b --out models/ds  # refused: linear rope_scaling
  council train export models/qwen-council --out models/qwen.gguf --format gguf
"""

_DTYPES = {"auto", "float32", "bfloat16", "float16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("hf_dir", type=Path, help="a Hugging Face model directory")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        default="auto",
        help="storage dtype of the written weights (auto = the source's torch_dtype)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")


def _source_dtype(hf_dir: Path) -> str:
    config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    dtype = config.get("torch_dtype") or config.get("dtype")
    return dtype if dtype in {"float32", "bfloat16", "float16"} else "float32"


def run(args: argparse.Namespace) -> int:
    from training.config import param_count
    from training.hf import export_hf, import_hf

    try:
        model, cfg = import_hf(args.hf_dir)
        dtype = _source_dtype(args.hf_dir) if args.dtype == "auto" else args.dtype
        export_hf(model, args.hf_dir, args.out, dtype, overwrite=args.force)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"council train import: {exc}") from None
    arch = json.loads((args.out / "config.json").read_text(encoding="utf-8"))["architectures"][0]
    print(
        f"imported {args.hf_dir} -> {args.out}: {arch}, {param_count(cfg) / 1e6:.1f}M params, "
        f"{cfg.num_layers} layers, hidden {cfg.hidden_dim}, vocab {cfg.vocab_size}, {dtype}"
    )
    return 0
