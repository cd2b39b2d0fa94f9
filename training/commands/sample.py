"""``council train sample``: generate from a run or a Hugging Face model directory."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "generate text or a FIM infill from a trained/imported model (KV cache, bucketed shapes)"
EPILOG = """examples:
  council train sample runs/tiny --prompt 'def add(a, b):\\n    return '
  council train sample runs/tiny --prompt-file snippet.py --temperature 0.8 --top-p 0.95 -n 3
  council train sample runs/tiny --fim-prefix 'def area(r):\\n    return ' --fim-suffix '\\n'
  council train sample ~/models/qwen2.5-coder-0.5b --prompt 'import os\\n' --stop '\\n\\n'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="training run directory or Hugging Face model directory")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="prompt text (\\n and \\t escapes are understood)")
    src.add_argument("--prompt-file", help="read the prompt from this file ('-' = stdin)")
    parser.add_argument("--fim-prefix", help="infill mode: text before the hole")
    parser.add_argument("--fim-suffix", default="", help="infill mode: text after the hole")
    parser.add_argument("--fim-mode", choices=["psm", "spm"], default="psm")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", "--num-samples", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--step", type=int, help="checkpoint step of a run (default: latest)")
    parser.add_argument("--json", action="store_true", help="print completions and timings")


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def run(args: argparse.Namespace) -> int:
    from training.loading import ModelLoadError, load_for_inference
    from training.sample import Generator, SamplingParams

    if args.fim_prefix is None and args.prompt is None and args.prompt_file is None:
        raise SystemExit("council train sample: give --prompt, --prompt-file or --fim-prefix")
    try:
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            stop=tuple(_unescape(s) for s in args.stop),
            seed=args.seed,
        )
        t0 = time.perf_counter()
        model, tokenizer = load_for_inference(args.model, dtype=args.dtype, step=args.step)
    except (ModelLoadError, ValueError) as exc:
        raise SystemExit(f"council train sample: {exc}") from None
    gen = Generator(model, tokenizer)
    load_s = time.perf_counter() - t0
    if args.fim_prefix is not None:
        from training.fim import fim_prompt_ids

        if tokenizer.fim_prefix_id is None:
            raise SystemExit("council train sample: this tokenizer has no FIM sentinel tokens")
        ids = fim_prompt_ids(
            tokenizer, _unescape(args.fim_prefix), _unescape(args.fim_suffix), mode=args.fim_mode
        )
    else:
        if args.prompt_file == "-":
            text = sys.stdin.read()
        elif args.prompt_file:
            with open(args.prompt_file, encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = _unescape(args.prompt)
        ids = tokenizer.encode(text)
        if not ids:
            raise SystemExit("council train sample: the prompt is empty")
    outs = gen.generate([ids] * args.num_samples, params)
    if args.json:
        print(
            json.dumps(
                {
                    "load_s": round(load_s, 3),
                    "completions": [
                        {
                            "text": c.text,
                            "tokens": len(c.token_ids),
                            "finish_reason": c.finish_reason,
                            "timings": {k: round(v, 4) for k, v in c.timings.items()},
                        }
                        for c in outs
                    ],
                },
                indent=2,
            )
        )
        return 0
    for i, c in enumerate(outs):
        if len(outs) > 1:
            print(f"--- sample {i + 1} ({c.finish_reason}) ---")
        print(c.text)
    return 0
