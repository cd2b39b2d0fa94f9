"""Fill-in-the-middle: the training-time transform and the inference-time prompt.

Training (Bavarian et al. 2022, as BigCode's Megatron ``permute`` does it): a document's
tokens are decoded to text, cut at two random *character* positions into prefix / middle /
suffix, and each piece is re-encoded and reassembled with sentinels, half the time as

    PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle> middle
    SPM: <fim_prefix> <fim_suffix> suffix <fim_middle> prefix middle

The transformed document keeps its token length (the three sentinels and any re-tokenization
difference are taken off the suffix, or the suffix is padded with ``pad``), so a packed row keeps
its length and its end-of-text separators stay where they were. Padding gets loss weight 0.

Inference builds the same layout up to ``<fim_middle>`` and lets the model write the middle.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from training.tokenizer import CodeTokenizer

MODES = ("psm", "spm")


class FimParts(NamedTuple):
    """A FIM-formatted document split back into its pieces (token ids)."""

    mode: str
    prefix: list[int]
    middle: list[int]
    suffix: list[int]


def _sentinels(tok: CodeTokenizer) -> tuple[int, int, int]:
    ids = (tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id)
    if None in ids:
        raise ValueError(f"{tok!r} has no fill-in-the-middle sentinels")
    return ids  # type: ignore[return-value]


def fim_prompt_ids(tok: CodeTokenizer, prefix: str, suffix: str, mode: str = "psm") -> list[int]:
    """The prompt that asks the model for the code between ``prefix`` and ``suffix``."""
    pre, mid, suf = _sentinels(tok)
    if mode == "psm":
        return [pre, *tok.encode(prefix), suf, *tok.encode(suffix), mid]
    if mode == "spm":
        return [pre, suf, *tok.encode(suffix), mid, *tok.encode(prefix)]
    raise ValueError(f"unknown FIM mode {mode!r}; choose one of {MODES}")


def stop_ids(tok: CodeTokenizer) -> set[int]:
    """Ids that end a generated middle: eos, fim_pad and any sentinel."""
    ids = {tok.eos_id, tok.fim_pad_id, tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id}
    return {i for i in ids if i is not None}


def permute(
    ids: np.ndarray,
    rng: np.random.Generator,
    tok: CodeTokenizer,
    *,
    fim_rate: float = 0.5,
    spm_rate: float = 0.5,
    truncate_or_pad: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """FIM-transform one document's tokens with probability ``fim_rate``.

    Returns ``(tokens, mask)``: ``mask`` is 0 on padding, 1 elsewhere. With ``truncate_or_pad``
    the result has ``len(ids)`` tokens; a document too short to absorb the sentinels is left
    as it is (Megatron does the same). The random draws happen in a fixed order, so a
    generator seeded the same way gives the same result.
    """
    ids = np.asarray(ids, dtype=np.int32)
    keep = (ids, np.ones(len(ids), np.float32))
    if rng.random() >= fim_rate:
        return keep
    pre_id, mid_id, suf_id = _sentinels(tok)
    text = tok.decode(ids.tolist())
    lo, hi = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
    spm = rng.random() < spm_rate
    prefix, middle, suffix = (
        np.asarray(tok.encode(part), dtype=np.int32) for part in (text[:lo], text[lo:hi], text[hi:])
    )
    suffix_mask = np.ones(len(suffix), np.float32)
    if truncate_or_pad:
        diff = len(prefix) + len(middle) + len(suffix) + 3 - len(ids)
        if diff > 0:
            if len(suffix) <= diff:
                return keep
            suffix, suffix_mask = suffix[: len(suffix) - diff], suffix_mask[: len(suffix) - diff]
        elif diff < 0:
            suffix = np.concatenate([suffix, np.full(-diff, tok.pad_id, np.int32)])
            suffix_mask = np.concatenate([suffix_mask, np.zeros(-diff, np.float32)])
    one = np.ones(1, np.float32)
    if spm:
        parts = [[pre_id, suf_id], suffix, [mid_id], prefix, middle]
        masks = [
            np.ones(2, np.float32),
            suffix_mask,
            one,
            np.ones(len(prefix)),
            np.ones(len(middle)),
        ]
    else:
        parts = [[pre_id], prefix, [suf_id], suffix, [mid_id], middle]
        masks = [one, np.ones(len(prefix)), one, suffix_mask, one, np.ones(len(middle))]
    tokens = np.concatenate([np.asarray(p, np.int32) for p in parts])
    return tokens, np.concatenate(masks).astype(np.float32)


def apply_fim(
    row: np.ndarray,
    valid: int,
    rng: np.random.Generator,
    tok: CodeTokenizer,
    *,
    fim_rate: float,
    spm_rate: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """FIM every document segment of a packed row (segments end at eos), keeping its length.

    Only the first ``valid`` tokens are data; the rest is padding and stays masked.
    """
    row = np.asarray(row, dtype=np.int32)
    out, mask = row.copy(), np.zeros(len(row), np.float32)
    mask[:valid] = 1.0
    if fim_rate <= 0.0:
        return out, mask
    breaks = np.flatnonzero(row[:valid] == tok.eos_id).tolist()
    start = 0
    for end in [*breaks, valid]:
        if end > start:
            seg, seg_mask = permute(row[start:end], rng, tok, fim_rate=fim_rate, spm_rate=spm_rate)
            out[start:end], mask[start:end] = seg, seg_mask
        start = end + 1
    return out, mask


def parse_fim(ids: list[int] | np.ndarray, tok: CodeTokenizer) -> FimParts | None:
    """Split a FIM-formatted document back into pieces, or None if it is not one."""
    pre_id, mid_id, suf_id = _sentinels(tok)
    ids = [int(i) for i in ids]
    if len(ids) < 3 or ids[0] != pre_id or ids.count(mid_id) != 1 or ids.count(suf_id) != 1:
        return None
    m = ids.index(mid_id)
    if ids[1] == suf_id:  # SPM: suffix, then prefix and middle (not separable without text)
        return FimParts("spm", ids[m + 1 :], [], ids[2:m])
    s = ids.index(suf_id)
    if not 0 < s < m:
        return None
    return FimParts("psm", ids[1:s], ids[m + 1 :], ids[s + 1 : m])
