"""Inline completion engine: post-processing, context, FIM formats, cache, backends, CLI.

Providers are the real loopback HTTP server; the specialist is a real (tiny) model exported
to the Hugging Face format, built once per session (`echo_model`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from council.completion import context as cx
from council.completion import postprocess as pp
from council.completion.backends import CancelToken, RouterBackend, fixed_router
from council.completion.cache import CompletionCache, Key
from council.completion.engine import CompletionEngine, InlineRequest, Selected
from council.completion.terminal import LocationError, offset_of, parse_location
from providers.fim_formats import FORMATS, cut_at_sentinel, detect
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from providers.settings import CompletionConfig
from tests.conftest import settings_for

ROOT = Path(__file__).resolve().parent.parent

# -- the fixture model ------------------------------------------------------------------------

ECHO_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def sub(a, b):\n    return a - b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nprint(os.path.join('a', 'b'))\n",
] * 4


def build_echo_model(out: Path) -> Path:
    """A one-layer model whose blocks add nothing: it repeats the prompt's last token.

    Random weights would answer noise (often only whitespace, which post-processing drops);
    with the attention and MLP outputs zeroed the residual stream is the token embedding, and
    with tied embeddings the top logit is that same token. So completions are deterministic
    (the same token again and again), while loading, bucketing, FIM prompting and decoding are the
    real code paths.
    """
    if (out / "config.json").is_file():
        return out
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from training.config import preset
    from training.hf import export_hf
    from training.model import build
    from training.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(ECHO_CORPUS, vocab_size=300)
    tok_dir = out.parent / f"{out.name}-tokenizer"
    tokenizer.save(tok_dir)
    cfg = preset(
        "tiny",
        vocab_size=tokenizer.vocab_size,
        hidden_dim=64,
        num_heads=4,
        num_kv_heads=1,
        num_layers=1,
        ffn_dim=128,
        max_seq_len=512,
        dtype="float32",
    )
    staging = out.parent / f"{out.name}-staging"
    export_hf(build(cfg, seed=0), tok_dir, staging, overwrite=True)
    weights = staging / "model.safetensors"
    tensors = load_file(str(weights))
    for name in tensors:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            tensors[name] = np.zeros_like(tensors[name])
    save_file(tensors, str(weights), metadata={"format": "pt"})
    staging.rename(out)
    return out


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_echo_model(tmp_path_factory.getbasetemp() / "echo-model")


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


# -- the engine against a real (loopback) provider ---------------------------------------------


def _engine(
    lb: LoopbackProvider, model: str, **completion: object
) -> tuple[CompletionEngine, Router]:
    settings = settings_for(
        providers={"lb": {"base_url": lb.base_url}},
        router={"max_retries": 0},
        completion={"backend": f"lb:{model}", **completion},
    )
    router = Router(settings, build_providers(settings))
    backend = RouterBackend(
        settings.completion.backend,
        lambda: fixed_router(router),
        settings.completion.fim_format,
    )
    return CompletionEngine(settings.completion, backend), router


def _completions(lb: LoopbackProvider) -> list[dict]:
    return [r.body for r in lb.requests if r.path.endswith("/completions") and r.body]


@pytest.mark.anyio
async def test_engine_sends_suffix_and_post_processes() -> None:
    with LoopbackProvider(models=("starcoder2:3b",)) as lb:
        engine, router = _engine(lb, "starcoder2:3b")
        lb.script(Reply(content="a + b)\nmore"))
        text = "def add(a, b):\n    return ()\n"
        answer = await engine.complete(
            InlineRequest(text, text.index("()") + 1, False), CancelToken()
        )
        assert (answer.text, answer.reason, answer.via) == ("a + b", "ok", "fim")
        body = _completions(lb)[0]
        assert body["prompt"].endswith("return (") and body["suffix"] == ")\n"
        assert body["stop"] == ["\n"] and body["max_tokens"] == 48
        again = await engine.complete(
            InlineRequest(text, text.index("()") + 1, False), CancelToken()
        )
        assert again.reason == "cached" and len(_completions(lb)) == 1
        await close_all(router.providers)


@pytest.mark.anyio
async def test_a_named_format_is_sent_raw() -> None:
    with LoopbackProvider(models=("mystery-model",)) as lb:
        engine, router = _engine(lb, "mystery-model", fim_format="codellama")
        lb.script(Reply(content="1"))
        answer = await engine.complete(InlineRequest("x = \n", 4, True), CancelToken())
        body = _completions(lb)[0]
        assert answer.text == "1" and answer.via == "fim-raw:codellama"
        assert body["prompt"] == "<PRE> x =  <SUF>\n <MID>" and "suffix" not in body
        assert "<EOT>" in body["stop"] and len(body["stop"]) <= 4
        await close_all(router.providers)


@pytest.mark.anyio
async def test_refused_suffix_falls_back_to_chat_then_to_the_family_format() -> None:
    """Without the canary's verdict (fim_way unknown, e.g. the provider cannot run it), a
    refused suffix goes over chat, then to the family's raw prompt guessed from the name."""
    with LoopbackProvider(models=("qwen2.5-coder:1.5b",), supports_suffix=False) as lb:
        engine, router = _engine(lb, "qwen2.5-coder:1.5b")
        engine.backend._way = "suffix"  # type: ignore[attr-defined]  # as if not asked
        lb.script(Reply(content="```python\nfirst\n```"), Reply(content="second"))
        a = await engine.complete(InlineRequest("x = \ny = 2\n", 4, False), CancelToken())
        assert (a.text, a.via) == ("first", "fim-over-chat")
        b = await engine.complete(InlineRequest("z = \ny = 2\n", 4, False), CancelToken())
        assert (b.text, b.via) == ("second", "fim-raw:qwen")
        paths = [r.path for r in lb.requests]
        assert paths == ["/v1/completions", "/v1/chat/completions", "/v1/completions"]
        chat = lb.requests[1].body["messages"][-1]["content"]
        assert chat == "x = <FILL>\ny = 2\n"
        raw = lb.requests[2].body
        assert raw["prompt"] == "<|fim_prefix|>z = <|fim_suffix|>\ny = 2\n<|fim_middle|>"
        assert "suffix" not in raw
        await close_all(router.providers)


@pytest.mark.anyio
async def test_suffix_format_stays_on_chat_when_refused() -> None:
    with LoopbackProvider(models=("qwen2.5-coder:1.5b",), supports_suffix=False) as lb:
        engine, router = _engine(lb, "qwen2.5-coder:1.5b", fim_format="suffix")
        lb.script(Reply(content="1"), Reply(content="2"))
        for line in ("x = \n", "y = \n"):
            answer = await engine.complete(InlineRequest(line, 4, False), CancelToken())
            assert answer.via == "fim-over-chat"
        await close_all(router.providers)


@pytest.mark.anyio
async def test_cancel_and_timeout_close_the_http_request() -> None:
    with LoopbackProvider(models=("m",)) as lb:
        engine, router = _engine(lb, "m", timeout_secs=0.3)
        lb.script(Reply(content="slow", delay=5))
        started = time.monotonic()
        answer = await engine.complete(InlineRequest("x = \n", 4, False), CancelToken())
        assert answer.reason == "timeout" and time.monotonic() - started < 2
        record = await asyncio.to_thread(
            lb.wait_for, lambda r: r.client_disconnected_at is not None, 10
        )
        assert record.body["prompt"] == "x = "

        await close_all(router.providers)

        # cancellation, with a timeout long enough that only the token can end the request:
        # with the 0.3 s one, a request slow to go out (seen twice in full-suite runs on the
        # 2-core machine) timed out before the server saw it
        engine, router = _engine(lb, "m", timeout_secs=30)
        lb.script(Reply(content="slow", delay=5))
        token = CancelToken()
        task = asyncio.ensure_future(engine.complete(InlineRequest("y = \n", 4, False), token))
        await asyncio.to_thread(lb.wait_for, lambda r: r.body and r.body["prompt"] == "y = ", 10)
        token.cancel()
        answer = await asyncio.wait_for(task, 2)
        assert answer.reason == "superseded"
        await asyncio.to_thread(
            lb.wait_for,
            lambda r: r.body["prompt"] == "y = " and r.client_disconnected_at is not None,
            10,
        )
        await close_all(router.providers)


@pytest.mark.anyio
async def test_engine_cheap_answers_need_no_model() -> None:
    with LoopbackProvider(models=("m",)) as lb:
        engine, router = _engine(lb, "m")
        skipped = await engine.complete(InlineRequest("x = foo\n", 5, False), CancelToken())
        assert skipped.reason == "skipped"
        off, _ = _engine(lb, "m", enabled=False)
        assert (await off.complete(InlineRequest("x = \n", 4, True), CancelToken())).reason == (
            "disabled"
        )
        assert lb.requests == []
        await close_all(router.providers)


@pytest.mark.anyio
async def test_selected_completion_item_is_part_of_the_prefix_and_the_answer() -> None:
    with LoopbackProvider(models=("m",)) as lb:
        engine, router = _engine(lb, "m")
        lb.script(Reply(content="('a', 'b')"))
        text = "import os\nos.path.jo\n"
        cursor = text.index("\n", 10)
        start = text.index("jo")
        request = InlineRequest(text, cursor, False, Selected(start, cursor, "join"))
        answer = await engine.complete(request, CancelToken())
        assert answer.text == "('a', 'b')" and answer.insert_text == "join('a', 'b')"
        assert _completions(lb)[0]["prompt"].endswith("os.path.join")
        await close_all(router.providers)


def test_settings_validate_completion_fields() -> None:
    assert CompletionConfig().max_context_tokens == 384
    with pytest.raises(ValueError, match="provider:model"):
        CompletionConfig(backend="ollama")
    with pytest.raises(ValueError):
        CompletionConfig(fim_format="gpt")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CompletionConfig(max_tokens=0)


# -- council complete ---------------------------------------------------------------------------


def test_locations_are_one_based() -> None:
    loc = parse_location("src/app.py:2:5")
    assert (loc.path, loc.line, loc.column) == (Path("src/app.py"), 2, 5)
    assert offset_of("ab\ncdef\n", 2, 3) == 5
    assert offset_of("ab\ncdef\n", 2, 5) == 7  # the end of the line
    for bad in ("app.py", "app.py:x:1", "app.py:0:1"):
        with pytest.raises(LocationError):
            parse_location(bad)
    with pytest.raises(LocationError, match="past the end of line"):
        offset_of("ab\n", 1, 9)


def _cli(args: list[str], config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COUNCIL_CONFIG": str(config), "HOME": str(cwd / "home")}
    return subprocess.run(
        [sys.executable, "-m", "slm_council", "complete", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_council_complete_prints_the_completion(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def add(a, b):\n    return \n", encoding="utf-8")
    with LoopbackProvider(models=("starcoder2:3b",)) as lb:
        config = tmp_path / "council.toml"
        config.write_text(
            f'[providers.lb]\nbase_url = "{lb.base_url}"\n'
            '[completion]\nbackend = "lb:starcoder2:3b"\n',
            encoding="utf-8",
        )
        lb.script(Reply(content="a + b\n\nprint(1)"), Reply(content="a - b"))
        plain = _cli([f"{source}:2:12"], config, tmp_path)
        assert plain.returncode == 0 and plain.stdout == "a + b\n"
        report = json.loads(
            _cli([f"{source}:2:12", "--json", "--no-invoked"], config, tmp_path).stdout
        )
        assert report["text"] == "a - b" and report["backend"] == "lb:starcoder2:3b"
        assert report["mode"] == "single" and report["timings_ms"]["total"] > 0
        assert [r.body["max_tokens"] for r in lb.requests] == [128, 48]
        bad = _cli([f"{source}:9:1"], config, tmp_path)
        assert bad.returncode == 2 and "past the end of the file" in bad.stderr


@pytest.mark.slow
def test_council_complete_with_the_specialist(tmp_path: Path, echo_model: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("total = fo\n", encoding="utf-8")
    config = tmp_path / "council.toml"
    config.write_text(f'[completion]\nmodel_path = "{echo_model}"\n', encoding="utf-8")
    result = _cli([f"{source}:1:11", "--json"], config, tmp_path)
    report = json.loads(result.stdout)
    # the echo model repeats a token; with token healing the first one is re-chosen among
    # tokens extending the prompt's last, so assert the shape, not the exact letters
    assert report["reason"] == "ok" and report["text"].strip(), report
    assert report["via"] == "specialist" and report["timings_ms"]["load"] > 0
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[completion]\nmodel_path = "{tmp_path / "nope"}"\n', encoding="utf-8")
    failed = _cli([f"{source}:1:11"], broken, tmp_path)
    assert failed.returncode == 1 and "is not a model directory" in failed.stderr


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


class _TypingBackend:
    """A backend that 'decodes' a fixed answer one character per millisecond and honours
    `settled` and `deadline` as the specialist does (the engine is what is under test)."""

    name = "typist"
    ready = True
    error = None

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.emitted = 0

    def start(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)

    def prompt_budget(self, configured: int, max_new_tokens: int) -> int:
        return configured

    async def infill(self, prefix, suffix, *, settled=None, deadline=None, **_):
        from council.completion.backends import ModelAnswer

        text, reason = "", "length"
        for ch in self.answer:
            if deadline is not None and time.perf_counter() >= deadline:
                reason = "deadline"
                break
            text += ch
            await asyncio.sleep(0.001)
            if settled is not None and settled(text):
                reason = "stop"
                break
        self.emitted = len(text)
        return ModelAnswer(text, 0.0, reason, "typist")

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_decoding_stops_where_post_processing_cuts_and_within_the_budget():
    body = "total = a + b\n    return total\n\ndef other():\n    pass\n" + "# noise\n" * 40
    prefix, suffix = "def add(a, b):\n    ", "\n"
    request = InlineRequest(text=prefix + suffix, offset=len(prefix), invoked=False)
    backend = _TypingBackend(body)
    engine = CompletionEngine(CompletionConfig(max_latency_ms=60_000), backend)
    answer = await engine.complete(request, CancelToken())
    assert answer.text == "total = a + b\n    return total"
    assert answer.finish_reason == "stop"
    assert backend.emitted == len("total = a + b\n    return total\n\n")  # not the whole body
    slow = _TypingBackend("total = a + b\n    return total + " + "x" * 10_000)
    engine = CompletionEngine(CompletionConfig(max_latency_ms=200), slow)
    started = time.perf_counter()
    answer = await engine.complete(request, CancelToken())
    assert time.perf_counter() - started < 2.0
    assert answer.finish_reason == "deadline"
    assert answer.text == "total = a + b"  # the last complete line, not the partial one
