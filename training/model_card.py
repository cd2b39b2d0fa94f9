"""Write the model card of the shipped default model from what the run actually recorded.

Every figure on the card is read from files the pipeline wrote (the dataset manifest, the
run's configs and metrics, the evaluation JSON), never typed by hand, so re-running
``make default-model`` regenerates a card that matches the weights beside it.

    python -m training.model_card --data D --run R --eval E.json --out training/default_model
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from pathlib import Path
from typing import Any

REPRODUCE = "make default-model"


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _schedule_changes(records: list[dict[str, Any]]) -> list[str]:
    """A line per point where the logged learning rate jumped back up: a run resumed with a
    longer cosine horizon (``council train fit --steps N`` on an existing run), which the
    saved config, holding only the last horizon, does not show."""
    out = []
    logged = [r for r in records if "lr" in r]
    peak = 0.0
    for before, after in itertools.pairwise(logged):
        peak = max(peak, before["lr"])
        if after["lr"] > 1.2 * before["lr"] and before["lr"] < 0.5 * peak:  # not warmup
            out.append(
                f"- Continued after step {before['step']:,} (learning rate {before['lr']:.2g}) "
                f"with a longer cosine horizon: the rate stepped back up to {after['lr']:.2g} "
                "and decayed again."
            )
    return out


def _data_lines(manifest: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """Where the corpus came from: the stdlib, or installed packages (with licences)."""
    site = manifest.get("site_packages")
    if not site:
        return [
            f"- Source: the standard library of Python {platform.python_version()} "
            "(`council train data --source stdlib`), split by file.",
        ]
    licences: dict[str, int] = {}
    packages = site.get("packages", [])
    for package in packages:
        licences[package.get("license") or "unknown"] = (
            licences.get(package.get("license") or "unknown", 0) + 1
        )
    common = ", ".join(
        f"{name} ({n})" for name, n in sorted(licences.items(), key=lambda x: -x[1])[:6]
    )
    excluded = ", ".join(f"{p['name']} {p['version']}" for p in site.get("excluded", []))
    by_split = site.get("packages_by_split", {})
    return [
        f"- Source: the Python code of {len(packages)} packages installed in this project's "
        "development environment (`council train data --source site-packages`), tests and "
        "vendored copies skipped. Licences (packages): " + common + "; the full list with "
        "versions is in the dataset's manifest.",
        f"- Held out entirely, for evaluation on code the model never saw: {excluded}.",
        f"- Validation: whole packages ({by_split.get('val', '?')} of them, against "
        f"{by_split.get('train', '?')} in training), so the "
        "validation loss is on projects the model never trained on.",
    ]


def _curve(records: list[dict[str, Any]]) -> list[str]:
    """Validation loss against tokens seen: what more tokens would buy."""
    evals = [r for r in records if "val_loss" in r]
    if len(evals) < 2:
        return []
    rows = ["", "Validation loss against tokens seen (from the run's metrics):", ""]
    rows += ["| step | tokens seen | validation loss |", "|---|---|---|"]
    step = max(1, len(evals) // 8)
    for r in [*evals[::step][:-1], evals[-1]]:
        rows.append(
            f"| {r['step']:,} | {r.get('tokens_seen', 0) / 1e6:.1f}M | {r['val_loss']:.3f} |"
        )
    return rows


def _sweep(sweep: list[dict[str, Any]]) -> list[str]:
    if not sweep:
        return []
    rows = [
        "",
        "## How this size was chosen",
        "",
        "A sweep at equal CPU time on this machine, each candidate scored on the held-out "
        "packages through the same completer the editor uses:",
        "",
        "| candidate | params | steps | tokens | exact match | edit similarity | latency p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sweep:
        lat = (c.get("latency") or {}).get("p50_ms")
        rows.append(
            f"| {c['name']} | {c['params'] / 1e6:.1f}M | {c['steps']:,} | "
            f"{c['tokens'] / 1e6:.1f}M | {c['exact_match']:.3f} | {c['edit_similarity']:.3f} | "
            f"{lat if lat is None else f'{lat:.0f} ms'} |"
        )
    if sweep[0].get("note"):
        rows += ["", sweep[0]["note"]]
    return rows


def render(data: Path, run: Path, evaluation: dict[str, Any], extra: dict[str, Any]) -> str:
    from training.config import ModelConfig, param_count

    manifest = json.loads((data / "manifest.json").read_text())
    cfg = ModelConfig.load(run / "model_config.json")
    train_cfg = json.loads((run / "train_config.json").read_text())
    records = _metrics(run)
    last = records[-1]
    evals = [r for r in records if "val_loss" in r]
    report = manifest.get("report", {})
    splits = manifest["splits"]
    he = evaluation.get("humaneval", {})
    pass1 = he.get("pass_at", {}).get("pass@1")
    tok_s = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    warmup = train_cfg.get("warmup_steps") or train_cfg.get("resolved_warmup")
    lines = [
        "# council-specialist-tiny",
        "",
        "The default model behind the council's inline completions: a "
        f"{param_count(cfg) / 1e6:.1f}M-parameter decoder-only transformer (the `tiny` preset "
        "of `training/config.py`) trained from scratch with this repository's training "
        "package. It is small on purpose: it ships inside the package and runs on a laptop "
        "CPU with no download.",
        "",
        "## Be honest about what it is",
        "",
        "It was trained on a 2-core CPU for "
        f"{last['step']:,} steps ({last.get('tokens_seen', 0) / 1e6:.1f}M tokens). It "
        "completes common Python idioms and closes lines; it does not solve programming "
        "problems"
        + (f" (HumanEval pass@1 {pass1:.3f})" if pass1 is not None else "")
        + ". For useful completions point `[completion] backend` at a local code model, e.g. "
        '`backend = "ollama:qwen2.5-coder:1.5b"`, or import Qwen2.5-Coder weights you '
        "downloaded with `council train import` and set `[completion] model_path` to the "
        "result.",
        "",
        "## Model",
        "",
        f"- Architecture: {cfg.num_layers} layers, width {cfg.hidden_dim}, {cfg.num_heads} "
        f"query heads / {cfg.num_kv_heads} key-value head (multi-query), head dim "
        f"{cfg.head_dim}, SwiGLU {cfg.ffn_dim}, RoPE theta {cfg.rope_theta:g}, RMSNorm, tied "
        "embedding.",
        f"- Vocabulary: {cfg.vocab_size:,} (byte-level BPE trained on the same corpus, with "
        "`<|endoftext|>` and the StarCoder FIM sentinels).",
        f"- Context: {cfg.max_seq_len} tokens. Weights: bfloat16 safetensors, Hugging Face "
        "Llama layout (loads in `transformers` as `LlamaForCausalLM`).",
        "",
        "## Data",
        "",
        *_data_lines(manifest, report),
        f"- Files: {report.get('files_seen', '?')} seen, {report.get('files_kept', '?')} kept "
        "after the seed-004 filters, exact and MinHash-LSH near-duplicate removal (Jaccard "
        "0.7) and HumanEval decontamination "
        f"({report.get('decontaminated', 0)} removed).",
        f"- Tokens: {splits['train']['tokens']:,} train / {splits['val']['tokens']:,} "
        f"validation, rows of {manifest['row_len']} tokens.",
        f"- Fill-in-the-middle: rate {train_cfg.get('fim_rate', 0.5)}, PSM and SPM.",
        "",
        "## Training",
        "",
        f"- Steps: {last['step']:,} at batch {train_cfg.get('batch_size')} x "
        f"{manifest['row_len'] - 1} tokens; tokens seen: {last.get('tokens_seen', 0):,}.",
        f"- AdamW, peak learning rate {train_cfg.get('lr')}, to {train_cfg.get('lr_min')} "
        f"(cosine), warmup {warmup if not _schedule_changes(records) else 'linear'}"
        f"{' steps' if not _schedule_changes(records) else ''}, weight decay "
        f"{train_cfg.get('weight_decay')}, clip {train_cfg.get('clip')}.",
        *_schedule_changes(records),
        f"- Hardware: {extra.get('hardware', 'CPU')}; throughput about "
        f"{sorted(tok_s)[len(tok_s) // 2]:,.0f} tokens/s (median)."
        if tok_s
        else f"- Hardware: {extra.get('hardware', 'CPU')}.",
        "",
        "## Evaluation",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    if evals:
        lines.append(f"| final validation loss (train log) | {evals[-1]['val_loss']:.3f} |")
    if "val_loss" in evaluation:
        lines.append(
            f"| validation loss / perplexity (`council train eval`) | "
            f"{evaluation['val_loss']:.3f} / {evaluation['val_ppl']:.1f} |"
        )
    if "fim_exact_match" in evaluation:
        lines.append(
            f"| single-line FIM exact match ({evaluation['fim_cases']} held-out lines) | "
            f"{evaluation['fim_exact_match']:.3f} |"
        )
    unseen = evaluation.get("unseen") or {}
    if unseen.get("cases"):
        names = ", ".join(unseen["packages"])
        lat = unseen.get("latency", {})
        lines += [
            f"| unseen packages ({names}): single-line exact match, {unseen['cases']} "
            f"automatic requests | {unseen['exact_match']:.3f} |",
            f"| ... edit similarity | {unseen['edit_similarity']:.3f} |",
            f"| ... latency p50 / p95 (completer, this CPU) | "
            f"{lat.get('p50_ms', 0):.0f} / {lat.get('p95_ms', 0):.0f} ms |",
        ]
    if pass1 is not None:
        lines.append(f"| HumanEval pass@1 (greedy, {he['problems']} problems) | {pass1:.3f} |")
    lines += _curve(records)
    lines += _sweep(extra.get("sweep", []))
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        REPRODUCE,
        "```",
        "",
        "runs, from a clone:",
        "",
        "```sh",
        *extra.get("commands", []),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--eval", type=Path, required=True, help="council train eval --json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hardware", default="a 2-core x86-64 CPU, no accelerator")
    parser.add_argument("--commands", type=Path, help="file with the exact commands run")
    parser.add_argument("--sweep", type=Path, help="JSON list of the size sweep's results")
    args = parser.parse_args(argv)
    evaluation = json.loads(args.eval.read_text())
    commands = args.commands.read_text().splitlines() if args.commands else []
    sweep = json.loads(args.sweep.read_text()) if args.sweep else []
    card = render(
        args.data,
        args.run,
        evaluation,
        {"hardware": args.hardware, "commands": commands, "sweep": sweep},
    )
    (args.out / "README.md").write_text(card)
    print(f"wrote {args.out / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
