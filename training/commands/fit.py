"""``council train fit``: train the specialist on a packed dataset, resuming where it stopped."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "train a model on a packed dataset (resumes an existing run automatically)"
EPILOG = """examples:
  council train fit --data data/py --out runs/tiny --preset tiny --steps 3000
  council train fit --data data/py --out runs/t1 --preset test --set num_layers=2 --batch-size 32
  council train fit --data data/py --out runs/prod --preset prod --mesh data=1,fsdp=8 \\
      --peak-tflops 197          # TPU v5e-8; add --distributed on every host of a pod slice
  council train fit --data data/py --out runs/ft --init-from hf/qwen-coder --lr 5e-5 --steps 500

Running it again with the same --out continues from the latest checkpoint with the same
batches, so an interrupted run ends where an uninterrupted one would. Flags not given on a
resume keep the run's saved values. With --init-from the model comes from the Hugging Face
directory; --preset then only picks the training defaults.
"""

#: flag -> TrainConfig field, for flags that override the training defaults
_TRAIN_FLAGS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "lr": "lr",
    "lr_min": "lr_min",
    "warmup": "warmup_steps",
    "weight_decay": "weight_decay",
    "fim_rate": "fim_rate",
    "seed": "seed",
    "eval_every": "eval_every",
    "eval_batches": "eval_batches",
    "save_every": "save_every",
    "keep": "keep_checkpoints",
    "log_every": "log_every",
    "mesh": "mesh",
    "peak_tflops": "peak_tflops",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="packed dataset directory")
    parser.add_argument("--out", required=True, type=Path, help="run directory (created)")
    parser.add_argument(
        "--preset",
        choices=["tiny", "test", "prod"],
        help="model and training defaults (default: the run's saved config, else tiny)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field (repeatable), e.g. num_layers=2",
    )
    g = parser.add_argument_group("optimisation (defaults: the preset's)")
    g.add_argument("--steps", type=int, help="optimizer steps in the whole run")
    g.add_argument("--batch-size", type=int, help="global batch in sequences")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--lr-min", type=float, help="learning rate at the last step")
    g.add_argument("--warmup", type=int, help="warmup steps (default: min(2000, 5%% of steps))")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--fim-rate", type=float, help="fraction of documents in FIM form (0.5)")
    g.add_argument("--seed", type=int)
    g = parser.add_argument_group("bookkeeping")
    g.add_argument("--eval-every", type=int, help="steps between validation losses")
    g.add_argument("--eval-batches", type=int, help="validation batches per evaluation")
    g.add_argument("--save-every", type=int, help="steps between checkpoints")
    g.add_argument("--keep", type=int, help="checkpoints to keep (0 = all)")
    g.add_argument("--log-every", type=int, help="steps between metrics lines")
    g.add_argument("--stop-at", type=int, help="end this session after step N (resumable)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = parser.add_argument_group("hardware")
    g.add_argument("--mesh", help="device mesh, e.g. data=-1,fsdp=1 (default) or data=1,fsdp=8")
    g.add_argument(
        "--peak-tflops", type=float, help="per-device peak for MFU (default: measure a matmul)"
    )
    g.add_argument("--init-from", type=Path, help="start from a Hugging Face model directory")
    g.add_argument(
        "--distributed", action="store_true", help="multi-host: jax.distributed.initialize()"
    )
    g.add_argument("--coordinator", help="HOST:PORT of process 0 (default: auto-detect/env)")
    g.add_argument("--num-processes", type=int, help="processes in the job (default: auto)")
    g.add_argument("--process-id", type=int, help="this process's index (default: auto)")


def _train_config(args: argparse.Namespace, run_dir: Path) -> Any:
    from training.config import TrainConfig, train_preset

    saved = run_dir / "train_config.json"
    if args.preset is None and saved.is_file():
        base = TrainConfig.load(saved)
    else:
        base = train_preset(args.preset or "tiny")
    changes = {
        field: getattr(args, flag)
        for flag, field in _TRAIN_FLAGS.items()
        if getattr(args, flag) is not None
    }
    return base.replace(**changes)


def _model_config(args: argparse.Namespace, run_dir: Path) -> Any:
    from training.config import ModelConfig, parse_overrides, preset
    from training.data import PackedData
    from training.fit import resolve_model_config

    overrides = parse_overrides(args.set)
    if args.init_from is not None:
        if overrides:
            raise ValueError("--set cannot change a model imported with --init-from")
        return None
    saved = run_dir / "model_config.json"
    if args.preset is None and saved.is_file():
        cfg = ModelConfig.load(saved)
        return cfg.replace(**overrides) if overrides else cfg
    vocab = int(PackedData(args.data).manifest["vocab_size"])
    return resolve_model_config(preset(args.preset or "tiny"), vocab, overrides)


def _initialize_distributed(args: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` from the flags, else the environment, else detection.

    JAX itself reads ``JAX_COORDINATOR_ADDRESS`` and auto-detects Cloud TPU, SLURM, Open MPI
    and Kubernetes; ``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` are read here for the rest.
    """
    import os

    import jax

    def from_env(value: int | None, name: str) -> int | None:
        raw = os.environ.get(name)
        return value if value is not None or not raw else int(raw)

    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=from_env(args.num_processes, "JAX_NUM_PROCESSES"),
        process_id=from_env(args.process_id, "JAX_PROCESS_ID"),
    )


def run(args: argparse.Namespace) -> int:
    import logging

    import jax

    if getattr(args, "verbose", 0) < 2:  # orbax logs every file it renames at INFO
        logging.getLogger("absl").setLevel(logging.WARNING)

    if args.distributed:
        _initialize_distributed(args)
    from training.fit import fit

    try:
        train_cfg = _train_config(args, args.out)
        model_cfg = _model_config(args, args.out)
        summary = fit(
            args.data,
            args.out,
            train_cfg,
            model_cfg,
            init_from=args.init_from,
            stop_at=args.stop_at,
            quiet=args.quiet,
        )
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        raise SystemExit(f"council train fit: {exc}") from None
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return 0
