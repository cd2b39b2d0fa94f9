"""Inline completion context: the prefix and suffix windows, definitions and snippets sent
with the prompt, and the completion cache (exact hits, typed-through reuse, LRU eviction).
"""

from __future__ import annotations

from council.completion import context as cx
from council.completion.cache import CompletionCache, Key

# -- context -----------------------------------------------------------------------------------


def test_prefix_window_fits_the_budget_and_starts_at_a_line() -> None:
    lines = [f"value_{i} = compute({i})\n" for i in range(200)]
    prefix = "".join(lines) + "result = "
    head = cx.fit_prefix(prefix, 100, cx.approx_tokens)
    assert cx.approx_tokens(head) <= 100
    assert head.endswith("result = ") and prefix.endswith(head)
    assert prefix[len(prefix) - len(head) - 1] == "\n"
    assert cx.fit_prefix("short = ", 100, cx.approx_tokens) == "short = "


def test_prefix_window_start_is_stable_while_typing() -> None:
    body = "".join(f"value_{i} = compute({i})\n" for i in range(200))
    starts = set()
    for typed in range(1, 30):
        prefix = body + "result = compute_total"[:typed]
        head = cx.fit_prefix(prefix, 120, cx.approx_tokens)
        starts.add(len(prefix) - len(head))
        line = prefix.count("\n", 0, len(prefix) - len(head))
        assert line % cx.SNAP_LINES == 0
    assert len(starts) == 1


def test_a_huge_cursor_line_is_cut_inside_the_line() -> None:
    prefix = "x = " + "a" * 3000
    head = cx.fit_prefix(prefix, 50, cx.approx_tokens)
    assert 0 < cx.approx_tokens(head) <= 50 and prefix.endswith(head)


def test_suffix_window_fits_the_budget_and_ends_at_a_line() -> None:
    suffix = "\n" + "".join(f"line_{i} = {i}\n" for i in range(200))
    tail = cx.fit_suffix(suffix, 40, cx.approx_tokens)
    assert cx.approx_tokens(tail) <= 40 and tail.endswith("\n") and suffix.startswith(tail)
    assert cx.fit_suffix("", 40, cx.approx_tokens) == ""


def test_definitions_and_imports_are_found_in_half_typed_code() -> None:
    text = (
        "import os\nfrom pathlib import Path\n\n"
        "class Shape:\n    def area(self,\n             scale: float) -> float:\n"
        "        return 0\n\nasync def fetch(url):\n    retu"
    )
    defs = cx.definitions(text)
    assert [d.name for d in defs] == ["Shape", "area", "fetch"]
    assert defs[1].signature == "def area(self, scale: float) -> float:"
    assert defs[2].signature == "async def fetch(url):"
    assert cx.imports(text) == ["import os", "from pathlib import Path"]


def test_snippets_bring_used_signatures_and_lost_imports_within_budget() -> None:
    geometry = cx.OtherDocument(
        "geometry.py", cx.definitions("def area(r):\n    pass\ndef unused():\n    pass\n")
    )
    body = "import math\n" + "".join(f"v{i} = {i}\n" for i in range(300))
    prefix = body + "x = area(2)\ny = "
    window = cx.build_window(
        prefix, "\n", budget=120, count=cx.approx_tokens, others=[geometry], snippet_budget=40
    )
    assert window.snippets == "import math\n# geometry.py: def area(r):\n"
    assert window.prefix.startswith(window.snippets) and window.prefix.endswith("y = ")
    assert "unused" not in window.prefix
    assert cx.approx_tokens(window.prefix) <= 120 * 0.75 + 1
    tight = cx.build_window(
        prefix, "\n", budget=120, count=cx.approx_tokens, others=[geometry], snippet_budget=5
    )
    assert tight.snippets == "import math\n"


def test_snippet_index_recomputes_only_on_change() -> None:
    index = cx.SnippetIndex()
    first = index.get("a", 1, "def f():\n    pass\n")
    assert index.get("a", 1, "def f():\n    pass\n") is first
    assert [d.name for d in index.get("a", 2, "def g():\n    pass\n")] == ["g"]
    index.retain(["b"])
    assert index.get("a", 2, "def h():\n    pass\n")[0].name == "h"


# -- cache -------------------------------------------------------------------------------------


def test_cache_exact_hit_and_typed_through_reuse() -> None:
    cache = CompletionCache()
    prefix, suffix = "def add(a, b):\n    return ", "\n"
    cache.put(Key.of("s", prefix, suffix), "a + b")
    assert cache.get("s", prefix, suffix).text == "a + b"
    hit = cache.get("s", prefix + "a +", suffix)
    assert hit is not None and (hit.text, hit.typed) == (" b", 3)
    assert cache.get("s", prefix + "a + b", suffix) is None  # nothing left to suggest
    assert cache.get("s", prefix + "x", suffix) is None  # typed something else
    assert cache.get("s", prefix + "a", "\nmore\n") is None  # the suffix changed
    assert cache.get("other-scope", prefix + "a", suffix) is None


def test_cache_typed_through_with_a_long_prefix_and_lru_eviction() -> None:
    cache = CompletionCache(capacity=2)
    prefix = "x = 1\n" * 200 + "y = "
    cache.put(Key.of("s", prefix, ""), "compute(1)")
    assert cache.get("s", prefix + "comp", "").text == "ute(1)"
    assert cache.get("s", "z" + prefix + "comp", "").text == "ute(1)"  # only the tail matters
    cache.put(Key.of("s", "a", ""), "1")
    cache.put(Key.of("s", "b", ""), "2")
    assert len(cache) == 2 and cache.get("s", prefix, "") is None
