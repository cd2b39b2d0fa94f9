"""Raw fill-in-the-middle prompts, one format per model family.

A provider that takes `suffix` on `/v1/completions` (Ollama, llama.cpp server, vLLM with a
FIM-aware template) builds the prompt itself; that is always preferred. These formats are for
when it cannot: the server refuses or ignores `suffix`, or `[completion] fim_format` names a
family explicitly. The family is guessed from the model name (`detect`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class FimFormat:
    """Prefix-suffix-middle (PSM) layout: ``{pre}{prefix}{suf}{suffix}{mid}`` then the model;
    with ``spm``, suffix-prefix-middle as in StarCoder's training (and the project's own
    specialist, which trains on both and reads SPM best):
    ``{pre}{suf}{suffix}{mid}{prefix}``."""

    name: str
    pre: str
    suf: str
    mid: str
    stops: tuple[str, ...]
    spm: bool = False

    def build(self, prefix: str, suffix: str) -> str:
        if self.spm:
            return f"{self.pre}{self.suf}{suffix}{self.mid}{prefix}"
        return f"{self.pre}{prefix}{self.suf}{suffix}{self.mid}"


STARCODER = FimFormat(
    "starcoder",
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    ("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
)
QWEN = FimFormat(
    "qwen",
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    ("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"),
)
DEEPSEEK = FimFormat(
    "deepseek",
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>"),
)
# Meta's infilling format: the spaces around the sentinels are part of it.
CODELLAMA = FimFormat("codellama", "<PRE> ", " <SUF>", " <MID>", ("<EOT>", "<PRE>", "<SUF>"))

STARCODER_SPM = FimFormat(
    "starcoder-spm",
    STARCODER.pre,
    STARCODER.suf,
    STARCODER.mid,
    STARCODER.stops,
    spm=True,
)

FORMATS: dict[str, FimFormat] = {
    f.name: f for f in (STARCODER, QWEN, DEEPSEEK, CODELLAMA, STARCODER_SPM)
}

# Checked in order; the first pattern found in the lower-cased model name wins.
_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("qwen", re.compile(r"qwen[\w.\-]*coder|codegemma")),
    ("deepseek", re.compile(r"deepseek[\w.\-]*coder")),
    ("codellama", re.compile(r"code-?llama")),
    ("starcoder", re.compile(r"starcoder|santacoder|stable-?code|granite[\w.\-]*code|refact")),
)

# Every sentinel and end token of every family: a model that echoes one has finished.
SENTINELS: tuple[str, ...] = tuple(
    sorted(
        {tok.strip() for f in FORMATS.values() for tok in (f.pre, f.suf, f.mid, *f.stops)}
        | {"<fim_pad>", "<|fim_pad|>"}
    )
)


def detect(model: str) -> FimFormat | None:
    """The FIM format of a model, from its name (e.g. `qwen2.5-coder:1.5b` -> qwen)."""
    lowered = model.lower()
    for name, pattern in _FAMILIES:
        if pattern.search(lowered):
            return FORMATS[name]
    return None


def cut_at_sentinel(text: str) -> str:
    """Drop everything from the first FIM/end sentinel on (models sometimes echo them)."""
    cut = len(text)
    for token in SENTINELS:
        at = text.find(token)
        if at != -1 and at < cut:
            cut = at
    return text[:cut]
