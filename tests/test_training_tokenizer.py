"""The code tokenizer: lossless round trips on tricky text, single-id special tokens, the
family detected from a saved tokenizer, and the saved files loading in transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training_fixtures import make_corpus
from training.tokenizer import CodeTokenizer, train_tokenizer


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def tok(corpus: list[str]) -> CodeTokenizer:
    return train_tokenizer(corpus, 400)


# -- tokenizer ---------------------------------------------------------------------------

TRICKY = [
    "def f(x):\n\treturn x  # tab\n",
    "  leading and trailing spaces   \n\n\n",
    "unicode: héllo wörld — “quotes” 漢字 🐍🚀 \u200b zero-width",
    "windows\r\nline\r\nends",
    "literal specials <|endoftext|> <fim_prefix> <fim_middle> in text",
    "\x00\x01 control bytes \x7f",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_round_trips_any_text(tok: CodeTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.eos_id not in ids and tok.fim_prefix_id not in ids  # plain text stays plain


def test_tokenizer_special_tokens_are_single_ids(tok: CodeTokenizer, tmp_path: Path) -> None:
    assert tok.vocab_size == 400
    expected = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
    ids = [tok.eos_id, tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id, tok.fim_pad_id]
    assert ids == [0, 1, 2, 3, 4] and tok.pad_id == tok.eos_id
    for token, idx in zip(expected, ids, strict=True):
        assert tok.encode(token, allow_special=True) == [idx]
    assert tok.decode([tok.fim_prefix_id, *tok.encode("x"), tok.eos_id]) == "<fim_prefix>x" + (
        "<|endoftext|>"
    )

    tok.save(tmp_path)
    again = CodeTokenizer.from_file(tmp_path)
    assert again.family == "starcoder" and again.special_tokens == tok.special_tokens
    assert again.encode(TRICKY[2]) == tok.encode(TRICKY[2])
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (
        config["eos_token"] == "<|endoftext|>"
        and "<fim_middle>" in (config["additional_special_tokens"])
    )


def test_tokenizer_family_detection(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    def build(tokens: list[str]) -> Tokenizer:
        t = Tokenizer(models.WordLevel({"a": 0}, unk_token="a"))
        t.add_special_tokens(tokens)
        return t

    qwen = CodeTokenizer(
        build(
            ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"]
        )
    )
    assert qwen.family == "qwen" and qwen.special_tokens["fim_pad"] == "<|fim_pad|>"
    assert qwen.fim_suffix_id == 4 and qwen.eos_id == 1
    build(["<｜end▁of▁sentence｜>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"]).save(
        str(tmp_path / "tokenizer.json")
    )
    deepseek = CodeTokenizer.from_file(tmp_path / "tokenizer.json")
    assert deepseek.family == "deepseek" and deepseek.fim_pad_id is None
    assert (deepseek.fim_prefix_id, deepseek.fim_suffix_id, deepseek.fim_middle_id) == (2, 3, 4)
    build(["</s>", "<pad>"]).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    plain = CodeTokenizer.from_file(tmp_path)
    assert (plain.family, plain.eos_id, plain.pad_id, plain.has_fim) == ("custom", 1, 2, False)
    with pytest.raises(ValueError, match="end-of-text"):
        CodeTokenizer(build(["<x>"]))


def test_saved_tokenizer_loads_in_transformers(tok: CodeTokenizer, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = TRICKY[2]
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text
    assert hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id
    assert hf.convert_tokens_to_ids("<fim_middle>") == tok.fim_middle_id
