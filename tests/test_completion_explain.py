"""Why a completion came out as it did: post-processing steps, skip reasons, outcomes in
words, the explanation's Markdown, and the cache's candidates (pure functions)."""

from __future__ import annotations

import itertools

import pytest

from council.completion import postprocess as pp
from council.completion.cache import CompletionCache, Key
from council.completion.explain import MAX_TEXT, Candidate, Explanation, outcome, render

CASES = [
    ("def add(a, b):\n    return ", "\n", "a + b\nmore", "single"),
    ("print(", ")\n", '"hi")', "single"),
    ("def f(a, b):", "\n", "\n    total = a + b\n\n    return total", "multi"),
    ("x = foo(bar(", "))\n", "1, 2)) + 3", "single"),
    ("x = ", "\n", "<fim_middle>1<|endoftext|>", "single"),
    ("print(", ")\n", ")", "single"),
]


@pytest.mark.parametrize(("prefix", "suffix", "raw", "mode"), CASES)
@pytest.mark.parametrize("truncated", [False, True])
def test_finish_steps_is_finish_with_a_record(
    prefix: str, suffix: str, raw: str, mode: pp.Mode, truncated: bool
) -> None:
    cursor = pp.Cursor.at(prefix, suffix)
    text, steps = pp.finish_steps(raw, cursor, mode=mode, max_lines=8, truncated=truncated)
    assert text == pp.finish(raw, cursor, mode=mode, max_lines=8, truncated=truncated)
    assert [name.split(" (")[0] for name, _, _ in steps] == [
        "cut at an echoed FIM sentinel",
        "limit lines",
        "trim the overlap with the suffix",
        "balance brackets",
        "strip trailing whitespace",
    ]
    assert steps[0][1] == raw  # each step starts where the one before ended
    for (_, _, after), (_, before, _) in itertools.pairwise(steps):
        assert after == before


def test_skip_reason_tells_mid_word_from_code_after_the_cursor() -> None:
    def why(prefix: str, suffix: str) -> str | None:
        return pp.skip_reason(pp.Cursor.at(prefix, suffix))

    assert why("x = compu", "te_total\n") == "mid-word"
    assert why("x = foo(", "a)\n") == "code after the cursor"
    assert why("x = ", "foo\n") == "code after the cursor"  # not inside a word
    assert why("x = foo(", ")\n") is None and why("x = ", "\n") is None


def test_outcomes_in_words() -> None:
    assert outcome("skipped", "mid-word") == "skipped mid-word"
    assert outcome("skipped", "code after the cursor") == "skipped: code after the cursor"
    assert outcome("empty") == "empty after post-processing"
    assert outcome("manual") == "manual trigger"
    assert outcome("loading") == "backend loading"
    assert outcome("unavailable") == outcome("error") == "backend error"
    assert outcome("superseded") == outcome("cancelled") == "cancelled"
    assert outcome("something-new") == "something-new"


def test_render_fences_what_it_quotes_and_bounds_the_prompt() -> None:
    ex = Explanation("invoked", reason="ok", backend="lb:m", mode="multi", line=0, column=4)
    long_prefix = "# i\n" + "x" * (MAX_TEXT + 10) + "\ny = "
    ex.set_window(long_prefix, "# i\n", "```\n")
    assert len(ex.prefix) == MAX_TEXT and ex.snippets == ""  # clipped: the snippets are gone
    answer = "a ``` b"
    candidate = Candidate(0.7, raw=answer, finish_reason="stop", model_ms=3.0, text=answer)
    candidate.steps = [("balance brackets", answer, answer)]
    ex.candidates.append(candidate)
    ex.suggestions = [answer]
    md = render(ex)
    assert "````text\na ``` b\n````" in md  # a fence longer than the answer's backticks
    assert "## Model answer (temperature 0.7, 3.0 ms, finish: stop)" in md
    assert "**balance brackets**: unchanged" in md
    assert "No inline completion request" in render(None)


def test_cache_keeps_the_other_candidates_and_types_through_them() -> None:
    cache = CompletionCache()
    prefix, suffix = "def f(a, b):\n    return ", "\n"
    cache.put(Key.of("s", prefix, suffix), "a + b", ("a - b", "b + a"), True)
    hit = cache.get("s", prefix, suffix)
    assert hit is not None and (hit.text, hit.more, hit.sampled) == (
        "a + b",
        ("a - b", "b + a"),
        True,
    )
    typed = cache.get("s", prefix + "a ", suffix)  # the others starting with "a " keep their rest
    assert typed is not None and (typed.text, typed.more) == ("+ b", ("- b",))
    cache.put(Key.of("s", "x = ", suffix), "1")
    plain = cache.get("s", "x = ", suffix)
    assert plain is not None and (plain.more, plain.sampled) == ((), False)
