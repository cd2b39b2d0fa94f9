"""Fill-in-the-middle training transforms: permuting documents (PSM and SPM), keeping the
length, padding and masking, per-segment application, and the inference prompt layout.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.training_fixtures import make_corpus, make_module
from training.fim import apply_fim, fim_prompt_ids, parse_fim, permute
from training.tokenizer import CodeTokenizer, train_tokenizer


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="module")
def tok(corpus: list[str]) -> CodeTokenizer:
    return train_tokenizer(corpus, 400)


# -- fill-in-the-middle ------------------------------------------------------------------


@pytest.mark.parametrize("spm_rate", [0.0, 1.0])
def test_fim_permute_reassembles_the_document(tok: CodeTokenizer, spm_rate: float) -> None:
    text = make_module(3)
    ids = np.array(tok.encode(text))
    for seed in range(5):
        rng = np.random.default_rng(seed)
        out, mask = permute(ids, rng, tok, fim_rate=1.0, spm_rate=spm_rate, truncate_or_pad=False)
        assert mask.all()
        parts = parse_fim(out, tok)
        assert parts is not None and parts.mode == ("psm" if spm_rate == 0 else "spm")
        assert out[0] == tok.fim_prefix_id and list(out).count(tok.fim_middle_id) == 1
        if parts.mode == "spm":
            assert out[1] == tok.fim_suffix_id
        whole = tok.decode(parts.prefix) + tok.decode(parts.middle) + tok.decode(parts.suffix)
        assert whole == text


def test_fim_keeps_length_truncating_the_suffix(tok: CodeTokenizer) -> None:
    text = make_module(4)
    ids = np.array(tok.encode(text))
    out, mask = permute(ids, np.random.default_rng(0), tok, fim_rate=1.0, spm_rate=0.0)
    assert len(out) == len(ids) and mask.all()
    parts = parse_fim(out, tok)
    assert parts is not None and parts.mode == "psm"
    prefix, middle = tok.decode(parts.prefix), tok.decode(parts.middle)
    assert text.startswith(prefix + middle)
    suffix = tok.decode(parts.suffix)  # lost its tail to make room for the three sentinels
    assert text[len(prefix + middle) :].startswith(suffix)
    assert len(prefix + middle + suffix) < len(text)
    unchanged, _ = permute(ids, np.random.default_rng(0), tok, fim_rate=0.0)
    assert np.array_equal(unchanged, ids)


def test_fim_pads_when_retokenizing_shrinks_and_masks_the_padding(tok: CodeTokenizer) -> None:
    text = "def spaced_out(value):\n    return value + 1\n" * 3
    # One token per character: re-encoding the pieces merges them, so the result is shorter.
    ids = np.array([i for ch in text for i in tok.encode(ch)])
    out, mask = permute(ids, np.random.default_rng(1), tok, fim_rate=1.0, spm_rate=0.0)
    assert len(out) == len(ids)
    pad = mask == 0
    assert pad.any() and (out[pad] == tok.pad_id).all()
    parts = parse_fim(out, tok)
    assert parts is not None and parts.suffix[-1] == tok.pad_id  # Megatron pads the suffix
    suffix = [t for t in parts.suffix if t != tok.pad_id]
    assert tok.decode(parts.prefix) + tok.decode(parts.middle) + tok.decode(suffix) == text


def test_apply_fim_transforms_each_segment_and_keeps_eos_in_place(tok: CodeTokenizer) -> None:
    docs = [tok.encode(make_module(i)[:300]) for i in range(3)]
    row = np.array([t for d in docs for t in (*d, tok.eos_id)] + [tok.pad_id] * 7)
    valid = len(row) - 7
    out, mask = apply_fim(row, valid, np.random.default_rng(0), tok, fim_rate=1.0)
    assert len(out) == len(row) and not mask[valid:].any()
    eos_at = np.flatnonzero(row[:valid] == tok.eos_id)
    assert (out[eos_at] == tok.eos_id).all()
    bounds = list(zip([0, *(eos_at[:-1] + 1)], eos_at, strict=True))
    # Each document is FIM'd, except one whose suffix is too short to give up the sentinels'
    # room: that one stays as it was (Megatron's rule).
    fimmed = [out[a] == tok.fim_prefix_id for a, _ in bounds]
    assert sum(fimmed) >= 2
    assert all(
        f or np.array_equal(out[a:b], row[a:b]) for f, (a, b) in zip(fimmed, bounds, strict=True)
    )


def test_fim_prompt_layout(tok: CodeTokenizer) -> None:
    pre, suf = tok.encode("def f(x):\n    return "), tok.encode("\n\nprint(f(2))\n")
    p, m, s = tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id
    assert fim_prompt_ids(tok, "def f(x):\n    return ", "\n\nprint(f(2))\n") == [
        p,
        *pre,
        s,
        *suf,
        m,
    ]
    assert fim_prompt_ids(tok, "def f(x):\n    return ", "\n\nprint(f(2))\n", "spm") == [
        p,
        s,
        *suf,
        m,
        *pre,
    ]
    with pytest.raises(ValueError, match="mode"):
        fim_prompt_ids(tok, "a", "b", "msp")
