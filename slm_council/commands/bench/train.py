"""`council bench train`: optimizer steps per second and MFU of the specialist's training
step, optionally against the legacy numerics and with each optimisation undone."""

from __future__ import annotations

import argparse

from slm_council.commands.bench.report import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench train` and its flags."""
    p = sub.add_parser("train", help="training step throughput and MFU (imports jax)")
    p.add_argument("--preset", default="test", help="model preset to time")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=0, help="context (0 = preset's)")
    p.add_argument("--baseline", action="store_true", help="also time the legacy numerics path")
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also time the step with each optimisation undone, one at a time",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Time the step and print the report."""
    from training.bench import bench_train  # imports jax

    return emit(
        bench_train(
            preset=args.preset,
            steps=args.steps,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            baseline=args.baseline,
            ablation=args.ablation,
        )
    )
