"""Inline completion text handling: FIM prompt formats per model family, and post-processing
(single or multi-line mode, overlap and bracket trimming, when the answer is settled).
"""

from __future__ import annotations

import pytest

from council.completion import postprocess as pp
from providers.fim_formats import FORMATS, cut_at_sentinel, detect

# -- FIM formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("qwen2.5-coder:1.5b", "qwen"),
        ("Qwen/Qwen2.5-Coder-0.5B", "qwen"),
        ("codegemma:2b", "qwen"),
        ("deepseek-coder:1.3b-base", "deepseek"),
        ("deepseek-coder-v2:16b", "deepseek"),
        ("codellama:7b-code", "codellama"),
        ("code-llama-13b", "codellama"),
        ("starcoder2:3b", "starcoder"),
        ("bigcode/santacoder", "starcoder"),
        ("stable-code:3b", "starcoder"),
        ("granite-code:3b", "starcoder"),
        ("llama3.2:3b", None),
        ("gpt-4.1-mini", None),
    ],
)
def test_family_is_detected_from_the_model_name(model: str, family: str | None) -> None:
    found = detect(model)
    assert (found.name if found else None) == family


def test_each_family_builds_its_own_prompt() -> None:
    pre, suf = "def f(x):\n    return ", "\n\nprint(f(1))\n"
    assert FORMATS["starcoder"].build(pre, suf) == f"<fim_prefix>{pre}<fim_suffix>{suf}<fim_middle>"
    assert (
        FORMATS["qwen"].build(pre, suf) == f"<|fim_prefix|>{pre}<|fim_suffix|>{suf}<|fim_middle|>"
    )
    assert (
        FORMATS["deepseek"].build(pre, suf)
        == f"<｜fim▁begin｜>{pre}<｜fim▁hole｜>{suf}<｜fim▁end｜>"
    )
    assert FORMATS["codellama"].build(pre, suf) == f"<PRE> {pre} <SUF>{suf} <MID>"
    assert cut_at_sentinel("x + 1<|endoftext|>junk") == "x + 1"
    assert cut_at_sentinel("x + 1 <EOT>") == "x + 1 "
    assert cut_at_sentinel("plain") == "plain"


# -- post-processing ---------------------------------------------------------------------------


def finish(
    prefix: str, suffix: str, raw: str, *, invoked: bool = False, truncated: bool = False
) -> str:
    cursor = pp.Cursor.at(prefix, suffix)
    mode = pp.choose_mode(cursor, invoked=invoked)
    return pp.finish(raw, cursor, mode=mode, max_lines=8, truncated=truncated)


@pytest.mark.parametrize(
    ("prefix", "suffix", "invoked", "mode"),
    [
        ("def f(a):", "\n", False, "multi"),  # after a block header
        ("def f(a):\n    ", "\n", False, "multi"),  # the empty line under a header
        ("def f(a):\n    x = 1\n    ", "\n", False, "single"),  # inside a block, automatic
        ("def f(a):\n    x = 1\n    ", "\n", True, "multi"),  # ... invoked
        ("if x:\n", "\n", False, "multi"),  # empty line under a header
        ("x = 1\n", "\n", False, "single"),  # empty top-level line, automatic
        ("x = 1\n", "\n", True, "multi"),  # ... invoked
        ("x = compute(", ")\n", True, "single"),  # mid-line, even invoked
        ("total = ", "\n", False, "single"),
        ("total = ", "\n", True, "multi"),
    ],
)
def test_mode_follows_the_cursor_context(
    prefix: str, suffix: str, invoked: bool, mode: str
) -> None:
    assert pp.choose_mode(pp.Cursor.at(prefix, suffix), invoked=invoked) == mode


@pytest.mark.parametrize(
    ("line_suffix", "skip"),
    [("", False), ("   ", False), (")", False), ('")', False), ("]):", False), ("bar", True)],
)
def test_automatic_requests_skip_when_code_is_right_of_the_cursor(
    line_suffix: str, skip: bool
) -> None:
    assert pp.skip_automatic(pp.Cursor.at("x = foo", line_suffix + "\n")) is skip


def test_cursor_finds_the_previous_non_blank_line() -> None:
    cursor = pp.Cursor.at("def f():\n\n\n    ", "\n")
    assert cursor.prev_line == "def f():" and cursor.line_prefix == "    "


def test_single_line_keeps_the_first_line() -> None:
    assert finish("x = ", "\n", "compute(1)\ny = 2\n") == "compute(1)"


def test_multi_line_stops_at_the_end_of_the_block() -> None:
    raw = "\n    total = a + b\n    return total\n\ndef other():\n    pass"
    assert finish("def f(a, b):", "\n", raw) == "\n    total = a + b\n    return total"
    dedent = "\n    return a\nprint('after')"
    assert finish("def f(a, b):", "\n", dedent) == "\n    return a"
    body = "x = a\n    if x:\n        return x\n    return 0\nclass C:"
    assert (
        finish("def f(a):\n    ", "\n", body) == "x = a\n    if x:\n        return x\n    return 0"
    )


def test_multi_line_stops_at_a_blank_line_and_caps_lines() -> None:
    assert finish("def f():", "\n", "\n    a = 1\n\n    b = 2") == "\n    a = 1"
    many = "".join(f"\n    x{i} = {i}" for i in range(20))
    assert finish("def f():", "\n", many).count("\n") == 8


def test_overlap_with_the_rest_of_the_line_is_trimmed() -> None:
    assert finish("print(", ")\n", '"hi")') == '"hi"'
    assert finish('print("hel', '")\n', 'lo")') == "lo"
    assert finish("xs = [", "]\n", "1, 2, 3]") == "1, 2, 3"
    assert finish("d = {'a': ", "}\n", "1}") == "1"
    # an identifier is never split to make an overlap
    assert finish("f(", "b)\n", "ab") == "ab"


def test_overlap_with_the_next_line_is_trimmed() -> None:
    suffix = "\n    return total\n"
    raw = "\n    total = a + b\n    return total"
    assert finish("def f(a, b):", suffix, raw) == "\n    total = a + b"


def test_brackets_balance_against_the_code_around_the_cursor() -> None:
    # the suffix closes both: the completion may close neither
    assert finish("x = foo(bar(", "))\n", "1, 2)) + 3") == "1, 2"
    # the suffix closes one: the completion closes the inner one and goes on
    assert finish("x = foo(bar(", ")\n", "1, 2), 3)") == "1, 2), 3"
    # a closer with nothing to close ends the completion
    assert finish("x = ", "\n", "1)") == "1"
    # a mismatched closer too
    assert finish("x = [", "]\n", "(1, 2]") == "(1, 2"
    # brackets inside strings and comments do not count
    assert finish("s = ", "\n", '")" + "("') == '")" + "("'


def test_bracket_scan_skips_strings_and_comments() -> None:
    assert pp.open_brackets("f(a, ')', \"(\"  # (\nx = [")[0] == ["(", "["]
    assert pp.open_brackets('g("""\n(((\n""", ')[0] == ["("]
    stack, scan = pp.open_brackets("print('it\\'s (")
    assert stack == ["("] and scan.quote == "'"  # the cursor is inside the string
    assert pp.closers_in_suffix("')\n", 1, scan.quote) == 1
    assert pp.closers_in_suffix("x) + y)\n", 2) == 2
    assert pp.closers_in_suffix("(x)\n", 1) == 0


def test_a_truncated_completion_is_trimmed_to_its_last_balanced_point() -> None:
    assert finish("x = ", "\n", "compute(a, b, c", truncated=True) == "compute"
    assert finish("x = ", "\n", "f(1) + g(2, ", truncated=True) == "f(1) + g"
    # not truncated: the model chose to continue on the next line
    assert finish("x = ", "\n", "compute(", truncated=False) == "compute("


def test_empty_and_whitespace_results_are_dropped() -> None:
    assert finish("x = ", "\n", "   ") == ""
    assert finish("x = ", "\n", "\nfoo") == ""
    assert finish("def f():", "\n", "\n\n\n") == ""
    assert finish("x = ", "\n", "<|endoftext|>") == ""
    assert finish("x = ", "\n", "1   ") == "1"


# -- when decoding can stop -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "text", "final"),
    [
        ("def f(x):\n    ", "return x", False),  # the line may go on
        ("def f(x):\n    ", "return x\n", False),  # an indented line may follow
        ("def f(x):\n    ", "return x\n\n", True),  # a blank line ends the block
        ("def f(x):\n    ", "return x\ndef", True),  # a dedent ends it
        ("def f(x):\n    ", "return x\n  ", False),  # indentation still growing
        ("def f(x):\n    ", "y = 1\n    return y\n", False),
        ("x = ", "1\n", True),  # single-line mode: the first line is all
        ("x = ", "1", False),
    ],
)
def test_settled_says_when_post_processing_has_cut_for_good(prefix, text, final):
    cursor = pp.Cursor.at(prefix, "\n")
    mode = pp.choose_mode(cursor, invoked=False)
    assert pp.settled(text, cursor, mode, max_lines=8) is final
    if final:  # whatever the model adds, the answer is the same
        for more in ("\n", "z", "        z", "\n    more()"):
            assert pp.finish(text + more, cursor, mode=mode, max_lines=8) == pp.finish(
                text, cursor, mode=mode, max_lines=8
            )


def test_settled_after_max_lines():
    cursor = pp.Cursor.at("def f(x):\n    ", "\n")
    text = "a = 1\n    b = 2\n"
    assert not pp.settled(text[:-1], cursor, "multi", max_lines=2)
    assert pp.settled(text, cursor, "multi", max_lines=2)
    assert pp.last_complete_line("a = 1\n    b = 2\n    c =") == "a = 1\n    b = 2"
    assert pp.last_complete_line("partial") == ""
