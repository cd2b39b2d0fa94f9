"""Sampling with the KV cache, and the evaluators (HumanEval through the real sandbox)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from training import evaluate as ev
from training.config import preset
from training.model import build
from training.sample import Generator, SamplingParams
from training.tokenizer import train_tokenizer

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def sub(a, b):\n    return a - b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nprint(os.path.join('a', 'b'))\n",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = preset(
        "test",
        vocab_size=tokenizer.vocab_size,
        hidden_dim=64,
        num_heads=4,
        num_kv_heads=2,
        num_layers=2,
        ffn_dim=128,
        max_seq_len=128,
        dtype="float32",
    )
    return build(cfg, seed=3)


def _is_greedy_continuation(model, ids, generated, stop_ids):
    """One teacher-forced full forward: each generated token is the argmax after its prefix."""
    seq = jnp.asarray([list(ids) + list(generated)], jnp.int32)
    logits, _ = model(seq)
    best = np.asarray(jnp.argmax(logits[0, len(ids) - 1 :], axis=-1))
    if list(best[: len(generated)]) != list(generated):
        return False
    # it stopped early only because the next argmax was an end token
    return len(generated) == 12 or int(best[len(generated)]) in stop_ids


def test_greedy_generation_matches_full_forward_and_reuses_prefix(model, tokenizer):
    gen = Generator(model, tokenizer, chunk_buckets=(8, 32), cache_buckets=(64, 128))
    ids = tokenizer.encode("def add(a, b):\n    return")
    params = SamplingParams(max_new_tokens=12)
    first = gen.generate([ids], params)[0]
    assert first.reused_tokens == 0
    assert _is_greedy_continuation(model, ids, first.token_ids, gen.stop_ids)

    # the next keystroke: the prompt grows by what was generated; only the new part prefills
    longer = ids + first.token_ids[:4]
    second = gen.generate([longer], params)[0]
    assert second.reused_tokens >= len(ids)
    fresh = Generator(model, tokenizer, chunk_buckets=(8, 32), cache_buckets=(64, 128))
    assert second.token_ids == fresh.generate([longer], params)[0].token_ids


def test_repeated_calls_do_not_recompile(model, tokenizer):
    gen = Generator(model, tokenizer, chunk_buckets=(8, 32), cache_buckets=(128,))
    params = SamplingParams(max_new_tokens=6, temperature=0.7, top_p=0.9)
    gen.generate([tokenizer.encode("import os\n")], params)
    decode_compiles = gen._decode._cache_size()
    prefill_compiles = gen._prefill._cache_size()
    for text in ["import os\nprint", "def sub(a, b):", "class Point:\n    def", "x = 1"]:
        gen.generate([tokenizer.encode(text)], SamplingParams(max_new_tokens=6, temperature=0.3))
    assert gen._decode._cache_size() == decode_compiles == 1
    assert gen._prefill._cache_size() <= 2  # one per chunk bucket, never per prompt length
    assert prefill_compiles >= 1


def test_sampling_controls(model, tokenizer):
    gen = Generator(model, tokenizer, chunk_buckets=(16,), cache_buckets=(128,))
    ids = tokenizer.encode("def sub(a, b):\n")
    greedy = gen.generate([ids], SamplingParams(max_new_tokens=10))[0]
    # a vanishing nucleus keeps only the top token: the same as greedy whatever the temperature
    nucleus = gen.generate([ids], SamplingParams(max_new_tokens=10, temperature=5.0, top_p=1e-6))
    assert nucleus[0].token_ids == greedy.token_ids
    a = gen.generate([ids] * 3, SamplingParams(max_new_tokens=10, temperature=2.0, seed=1))
    b = gen.generate([ids] * 3, SamplingParams(max_new_tokens=10, temperature=2.0, seed=1))
    assert [c.token_ids for c in a] == [c.token_ids for c in b]  # seeded
    assert len({tuple(c.token_ids) for c in a}) > 1  # rows draw independently
    # a stop sequence cuts the text before it and ends generation there
    text = greedy.text
    if len(text) >= 3:
        stop = text[1:3]
        cut = gen.generate([ids], SamplingParams(max_new_tokens=10, stop=(stop,)))[0]
        assert cut.finish_reason == "stop"
        assert cut.text == text[: text.find(stop)]
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        gen.generate([[10**6]], SamplingParams())


def test_context_overflow_keeps_the_recent_tokens(model, tokenizer):
    gen = Generator(model, tokenizer, chunk_buckets=(16, 64), cache_buckets=(64,))
    ids = tokenizer.encode("x = 1\n" * 60)
    out = gen.generate([ids], SamplingParams(max_new_tokens=8))[0]
    assert out.prompt_tokens <= 64 - 8
    assert len(out.token_ids) <= 8


def test_infill_builds_a_fim_prompt(model, tokenizer):
    gen = Generator(model, tokenizer, chunk_buckets=(32,), cache_buckets=(128,))
    out = gen.infill("def add(a, b):\n    return ", "\n", SamplingParams(max_new_tokens=5), "psm")
    assert (
        out.prompt_tokens
        == len(tokenizer.encode("def add(a, b):\n    return ")) + len(tokenizer.encode("\n")) + 3
    )
    assert out.finish_reason in {"stop", "length"}


def test_pass_at_k_estimator():
    assert ev.pass_at_k(10, 0, 1) == 0.0
    assert ev.pass_at_k(10, 10, 1) == 1.0
    assert ev.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert ev.pass_at_k(5, 1, 5) == 1.0
    assert ev.pass_at_k(4, 1, 2) == pytest.approx(0.5)


@pytest.mark.slow
def test_humaneval_harness_runs_solutions_in_the_sandbox():
    """Canonical solutions pass, wrong ones fail, hangs time out: the harness can tell."""
    problems = ev.load_humaneval(limit=3)
    assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    good = {p["prompt"]: p["canonical_solution"] for p in problems}

    right = ev.run_humaneval(lambda prompt, n: [good[prompt]] * n, problems=problems, n=2, ks=(1,))
    assert right.pass_at["pass@1"] == 1.0

    def mixed(prompt: str, n: int) -> list[str]:
        return [good[prompt], "    return None\n"]

    half = ev.run_humaneval(mixed, problems=problems, n=2, ks=(1, 2))
    assert half.pass_at == {"pass@1": 0.5, "pass@2": 1.0}

    hang = ev.run_humaneval(
        lambda prompt, n: ["    while True:\n        pass\n"] * n,
        problems=problems[:1],
        n=1,
        timeout=2.0,
    )
    assert hang.pass_at["pass@1"] == 0.0


def test_single_line_fim_cases_and_documents_from_rows(tokenizer):
    docs = ["a = 1\nb = 2\nc = 3\n", "def f():\n    return 4\n"]
    cases = ev.single_line_cases(docs, count=10, seed=1)
    assert len(cases) == 2
    for case in cases:
        assert case.prefix + case.middle + case.suffix in docs
        assert case.middle.strip()

    eos = tokenizer.eos_id
    flat = [eos]
    for d in docs:
        flat += [*tokenizer.encode(d), eos]
    flat += tokenizer.encode("partial")
    width = 8
    flat += [eos] * (-len(flat) % width)
    rows = np.asarray(flat, np.int32).reshape(-1, width)
    assert ev.documents_from_rows(rows, eos, tokenizer)[:2] == docs


def test_prefill_near_the_end_of_the_cache_keeps_bucket_shapes(model, tokenizer):
    """A chunk that would overrun the cache starts earlier instead of taking an odd size."""
    gen = Generator(model, tokenizer, chunk_buckets=(8, 32), cache_buckets=(128,))
    rng = np.random.default_rng(5)
    first = rng.integers(5, tokenizer.vocab_size, 100).tolist()
    gen.generate([first], SamplingParams(max_new_tokens=2))
    longer = first + rng.integers(5, tokenizer.vocab_size, 25).tolist()
    out = gen.generate([longer], SamplingParams(max_new_tokens=3))[0]
    assert out.reused_tokens >= 100  # so the remaining 25 tokens start at position >= 100
    assert gen._prefill._cache_size() <= 2  # only the 8 and 32 buckets were ever compiled
    fresh = Generator(model, tokenizer, chunk_buckets=(8, 32), cache_buckets=(128,))
    assert out.token_ids == fresh.generate([longer], SamplingParams(max_new_tokens=3))[0].token_ids


def test_stop_when_and_deadline_end_decoding_early(model, tokenizer):
    import time

    gen = Generator(model, tokenizer, chunk_buckets=(16,), cache_buckets=(128,))
    ids = tokenizer.encode("def sub(a, b):\n")
    full = gen.generate([ids], SamplingParams(max_new_tokens=40))[0]
    if len(full.token_ids) < 4:
        pytest.skip("the random model ended at once; nothing to stop early")
    seen: list[str] = []

    def enough(text: str) -> bool:
        seen.append(text)
        return len(seen) >= 3

    early = gen.generate([ids], SamplingParams(max_new_tokens=40, stop_when=enough))[0]
    assert early.finish_reason == "stop" and len(early.token_ids) == 3
    assert early.token_ids == full.token_ids[:3]
    assert seen == [tokenizer.decode(full.token_ids[: n + 1]) for n in range(3)]
    late = gen.generate([ids], SamplingParams(max_new_tokens=40, deadline=time.perf_counter()))[0]
    assert late.finish_reason == "deadline" and len(late.token_ids) == 1  # from the prefill
