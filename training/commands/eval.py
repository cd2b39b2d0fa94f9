"""``council train eval``: validation loss, HumanEval pass@k, single-line FIM exact match."""

from __future__ import annotations

import argparse
import json
import time

HELP = "evaluate a model: held-out loss/perplexity, HumanEval pass@k, FIM exact match"
EPILOG = """examples:
  council train eval runs/tiny --data data/stdlib                 # loss + FIM on the val split
  council train eval runs/tiny --humaneval --limit 20             # pass@1 on 20 problems
  council train eval runs/tiny --humaneval --samples 10 --k 1,10  # pass@1 and pass@10
  council train eval runs/tiny --fim-files 'src/**/*.py' --fim-cases 200 --json
  council train eval runs/tiny --unseen attrs,click --unseen-cases 200  # as the editor asks
  council train eval runs/tiny --data data/sp --unseen ""  # the packages --exclude'd from data
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="training run directory or Hugging Face model directory")
    parser.add_argument("--data", help="packed dataset directory: loss and FIM on its val split")
    parser.add_argument("--loss-batches", type=int, default=50, help="max validation batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--humaneval", action="store_true", help="run HumanEval in the sandbox")
    parser.add_argument("--limit", type=int, help="HumanEval: first N problems only")
    parser.add_argument("--samples", type=int, default=1, help="HumanEval: samples per problem")
    parser.add_argument("--k", default="1", help="HumanEval: comma-separated k for pass@k")
    parser.add_argument("--temperature", type=float, default=0.2, help="HumanEval with n > 1")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per solution run")
    parser.add_argument("--fim-cases", type=int, default=100, help="single-line FIM cases")
    parser.add_argument("--fim-files", help="glob of held-out .py files for FIM (else --data)")
    parser.add_argument("--fim-mode", choices=["psm", "spm"], default="psm")
    parser.add_argument("--no-fim", action="store_true")
    parser.add_argument(
        "--unseen",
        metavar="PKGS",
        help="single-line completion on these installed packages, asked as the editor does "
        '(comma-separated; "" = the packages --data was built without, else '
        "council.completion.unseen.HELDOUT_PACKAGES); uses the run's latest checkpoint",
    )
    parser.add_argument("--unseen-cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--step", type=int, help="checkpoint step of a run (default: latest)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import glob
    from pathlib import Path

    from training import evaluate as ev
    from training.loading import ModelLoadError, load_for_inference
    from training.sample import Generator

    if not (args.data or args.humaneval or args.fim_files or args.unseen is not None):
        raise SystemExit(
            "council train eval: nothing to do: give --data, --humaneval, --fim-files or --unseen"
        )
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
        model, tokenizer = load_for_inference(args.model, dtype=args.dtype, step=args.step)
    except (ModelLoadError, ValueError) as exc:
        raise SystemExit(f"council train eval: {exc}") from None
    gen = Generator(model, tokenizer)
    report: dict[str, object] = {"model": str(args.model)}
    t0 = time.perf_counter()
    data = None
    if args.data:
        from training.data import PackedData

        data = PackedData(args.data)
        report.update(
            ev.validation_loss(
                model, data, batch_size=args.batch_size, max_batches=args.loss_batches
            )
        )
    if not args.no_fim and (args.fim_files or data is not None):
        if tokenizer.fim_prefix_id is None:
            report["fim"] = "skipped: the tokenizer has no FIM sentinels"
        else:
            if args.fim_files:
                paths = sorted(glob.glob(args.fim_files, recursive=True))
                docs = [Path(p).read_text(encoding="utf-8", errors="replace") for p in paths]
            else:
                assert data is not None
                docs = ev.documents_from_rows(data.rows("val"), tokenizer.eos_id, tokenizer)
            cases = ev.single_line_cases(docs, args.fim_cases, seed=args.seed)
            try:
                report.update(ev.fim_exact_match(gen, cases, mode=args.fim_mode))
            except ValueError as exc:
                report["fim"] = f"skipped: {exc}"
    if args.humaneval:
        problems = ev.load_humaneval(args.limit)
        result = ev.run_humaneval(
            ev.humaneval_generator(
                gen, max_new_tokens=args.max_new_tokens, temperature=args.temperature
            ),
            problems=problems,
            n=args.samples,
            ks=ks,
            timeout=args.timeout,
        )
        report["humaneval"] = result.to_dict()
    if args.unseen is not None:
        report["unseen"] = ev.unseen_completion(
            args.model, _unseen_packages(args), cases=args.unseen_cases, seed=args.seed
        )
    report["eval_s"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        if key == "humaneval":
            he = report["humaneval"]
            assert isinstance(he, dict)
            scores = ", ".join(f"{k} {v:.3f}" for k, v in he["pass_at"].items())
            print(
                f"humaneval: {scores} over {he['problems']} problems x {he['samples_per_problem']}"
            )
        elif key == "unseen":
            un = report["unseen"]
            assert isinstance(un, dict)
            print(
                f"unseen: exact match {un.get('exact_match')}, edit similarity "
                f"{un.get('edit_similarity')}, latency {un.get('latency')} over "
                f"{un.get('cases')} cases in {', '.join(un['packages'])}"
            )
        elif key != "examples":
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def _unseen_packages(args: argparse.Namespace) -> list[str]:
    """--unseen's list; "" means the data's excluded packages, or the default held-out set."""
    named = [p.strip() for p in args.unseen.split(",") if p.strip()]
    if named:
        return named
    if args.data:
        import json
        from pathlib import Path

        manifest = json.loads((Path(args.data) / "manifest.json").read_text())
        excluded = (manifest.get("site_packages") or {}).get("excluded") or []
        if excluded:
            return [p["name"] for p in excluded]
    from council.completion.unseen import HELDOUT_PACKAGES

    return list(HELDOUT_PACKAGES)
