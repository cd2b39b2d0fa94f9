"""Tokenizers: load any Hugging Face ``tokenizer.json`` or train a byte-level BPE on code.

Everything the rest of the package needs from a tokenizer goes through :class:`CodeTokenizer`:
text <-> ids and the ids of the special tokens (end of text, padding and the four
fill-in-the-middle sentinels). Special tokens are looked up by *role* so the same code drives
our own tokenizers (StarCoder names) and the tokenizers of the model families we import
(StarCoder2, Qwen2.5-Coder, DeepSeek-Coder, CodeLlama).

``encode`` treats its input as plain text: a source file that happens to contain the string
``<|endoftext|>`` or ``<fim_prefix>`` is encoded as ordinary bytes, never as the special id, so
training data cannot inject document breaks or sentinels. Special ids are only ever placed
explicitly (the packer's separators, :mod:`training.fim`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

ROLES = ("eos", "pad", "fim_prefix", "fim_middle", "fim_suffix", "fim_pad")

#: The special tokens of our own tokenizers, in id order (StarCoder's ids 0..4).
STARCODER_SPECIALS: dict[str, str] = {
    "eos": "<|endoftext|>",
    "fim_prefix": "<fim_prefix>",
    "fim_middle": "<fim_middle>",
    "fim_suffix": "<fim_suffix>",
    "fim_pad": "<fim_pad>",
}

#: Model families, recognised by their FIM prefix sentinel. Each maps role -> token string.
FAMILIES: dict[str, dict[str, str]] = {
    "starcoder": STARCODER_SPECIALS,
    "qwen": {
        "eos": "<|endoftext|>",
        "fim_prefix": "<|fim_prefix|>",
        "fim_middle": "<|fim_middle|>",
        "fim_suffix": "<|fim_suffix|>",
        "fim_pad": "<|fim_pad|>",
    },
    # DeepSeek-Coder: <｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>middle
    "deepseek": {
        "eos": "<｜end▁of▁sentence｜>",
        "fim_prefix": "<｜fim▁begin｜>",
        "fim_suffix": "<｜fim▁hole｜>",
        "fim_middle": "<｜fim▁end｜>",
    },
    "codellama": {
        "eos": "</s>",
        "fim_prefix": "▁<PRE>",
        "fim_suffix": "▁<SUF>",
        "fim_middle": "▁<MID>",
    },
}

#: End-of-text candidates for tokenizers of no known family, most common first.
_EOS_CANDIDATES = (
    "<|endoftext|>",
    "</s>",
    "<|end_of_text|>",
    "<eos>",
    "<｜end▁of▁sentence｜>",
)


class CodeTokenizer:
    """A ``tokenizers.Tokenizer`` plus the roles of its special tokens."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        special_tokens: dict[str, str] | None = None,
        *,
        family: str | None = None,
        hf_files: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self._tok = tokenizer
        # A twin that encodes special-token strings as plain text (see the module docstring).
        self._plain = Tokenizer.from_str(tokenizer.to_str())
        self._plain.encode_special_tokens = True
        detected, found = _detect(tokenizer)
        self.family = family or detected
        self._hf_files = hf_files or {}
        specials = dict(special_tokens) if special_tokens is not None else found
        if "eos" not in specials:
            raise ValueError("tokenizer has no end-of-text token (looked for " + _eos_list() + ")")
        specials.setdefault("pad", specials["eos"])
        for role, token in specials.items():
            if role not in ROLES:
                raise ValueError(f"unknown special-token role {role!r}; roles are {ROLES}")
            if tokenizer.token_to_id(token) is None:
                raise ValueError(f"special token {token!r} ({role}) is not in the vocabulary")
        self.special_tokens: dict[str, str] = {r: specials[r] for r in ROLES if r in specials}

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> CodeTokenizer:
        """Load ``tokenizer.json`` (or a directory holding it, with its HF config files)."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"no tokenizer.json at {path}")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"cannot read tokenizer {file}: {exc}") from None
        hf_files = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            extra = file.parent / name
            if extra.is_file():
                hf_files[name] = json.loads(extra.read_text(encoding="utf-8"))
        family, specials = _detect(tok)
        for role, key in (("eos", "eos_token"), ("pad", "pad_token")):
            name = _config_token(hf_files, key)
            if name and tok.token_to_id(name) is not None:
                specials[role] = name
        log.info("loaded %s tokenizer from %s (%d tokens)", family, file, tok.get_vocab_size())
        return cls(tok, specials, family=family, hf_files=hf_files)

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json (HF layout)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(directory / "tokenizer.json"))
        for name, content in self._hf_config().items():
            (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
        return directory

    def _hf_config(self) -> dict[str, dict[str, Any]]:
        if self._hf_files:  # a loaded tokenizer keeps its own files (chat template, ...)
            return self._hf_files
        st = self.special_tokens
        extra = [st[r] for r in ("fim_prefix", "fim_middle", "fim_suffix", "fim_pad") if r in st]
        common = {
            "bos_token": st["eos"],
            "eos_token": st["eos"],
            "unk_token": st["eos"],
            "pad_token": st["pad"],
            "additional_special_tokens": extra,
        }
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": 1_000_000,
            "clean_up_tokenization_spaces": False,
            "add_prefix_space": False,
            "add_bos_token": False,
            "add_eos_token": False,
            **common,
        }
        return {"tokenizer_config.json": config, "special_tokens_map.json": common}

    # -- text <-> ids --------------------------------------------------------------------

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Ids of ``text``; no special tokens are added, and none are parsed unless asked."""
        tok = self._tok if allow_special else self._plain
        return tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts at once, in parallel threads (the Rust side)."""
        # encode_batch_fast skips the character offsets we never use (3x faster on code).
        encode = getattr(self._plain, "encode_batch_fast", self._plain.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens included, exactly inverting ``encode``."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self._tok.id_to_token(idx)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (special strings parse as special ids)."""
        return self._tok

    def _id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self._tok.token_to_id(token)

    @property
    def eos_id(self) -> int:
        return int(self._id("eos"))  # type: ignore[arg-type]  # checked in __init__

    @property
    def pad_id(self) -> int:
        return int(self._id("pad"))  # type: ignore[arg-type]

    @property
    def fim_prefix_id(self) -> int | None:
        return self._id("fim_prefix")

    @property
    def fim_middle_id(self) -> int | None:
        return self._id("fim_middle")

    @property
    def fim_suffix_id(self) -> int | None:
        return self._id("fim_suffix")

    @property
    def fim_pad_id(self) -> int | None:
        return self._id("fim_pad")

    @property
    def has_fim(self) -> bool:
        return None not in (self.fim_prefix_id, self.fim_middle_id, self.fim_suffix_id)

    def __repr__(self) -> str:
        return f"CodeTokenizer(family={self.family!r}, vocab_size={self.vocab_size})"


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, show_progress: bool = False
) -> CodeTokenizer:
    """Train a byte-level BPE (StarCoder-style: single digits, GPT-2 byte regex) on ``texts``.

    Byte level means every string round-trips exactly, whatever its unicode or whitespace; the
    five StarCoder special tokens take ids 0..4.
    """
    specials = list(STARCODER_SPECIALS.values())
    floor = len(pre_tokenizers.ByteLevel.alphabet()) + len(specials)
    if vocab_size < floor:
        raise ValueError(f"vocab_size must be at least {floor} (256 bytes + {len(specials)})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(_nonempty(texts), trainer)
    log.info("trained a byte-level BPE with %d tokens", tok.get_vocab_size())
    return CodeTokenizer(tok, dict(STARCODER_SPECIALS), family="starcoder")


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    yield from (t for t in texts if t)


def _detect(tok: Tokenizer) -> tuple[str, dict[str, str]]:
    """(family, role -> token) from the vocabulary alone."""
    for family, specials in FAMILIES.items():
        if tok.token_to_id(specials["fim_prefix"]) is not None:
            found = {r: t for r, t in specials.items() if tok.token_to_id(t) is not None}
            return family, found
    eos = next((t for t in _EOS_CANDIDATES if tok.token_to_id(t) is not None), None)
    return "custom", ({"eos": eos} if eos else {})


def _config_token(hf_files: dict[str, dict[str, Any]], key: str) -> str | None:
    """A token name from tokenizer_config/special_tokens_map (a str or an AddedToken dict)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        value = hf_files.get(name, {}).get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value:
            return value
    return None


def _eos_list() -> str:
    return ", ".join(_EOS_CANDIDATES)
