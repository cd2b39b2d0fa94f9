"""Crafted inputs the training and completion tests build: code corpora and a tiny model.

`make_module(i)` is a realistic, distinct Python module per `i` (the data pipeline's corpus,
read back from a built dataset with `split_documents`);
`build_echo_model` exports a one-layer model in the Hugging Face format that repeats the
prompt's last token, so the specialist's real code paths run with a predictable answer.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.data import PackedData

# -- a code corpus ------------------------------------------------------------------------------

WORDS = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lamina",
    "sigma",
    "omega",
    "river",
    "stone",
    "cloud",
    "amber",
    "cedar",
    "maple",
    "willow",
    "falcon",
    "heron",
    "otter",
    "badger",
    "lynx",
    "marten",
    "quartz",
    "basalt",
    "granite",
)


def make_module(i: int) -> str:
    """A realistic, distinct Python module (random names and constants per ``i``)."""
    rng = random.Random(i)
    lines = [f'"""Helpers for {rng.choice(WORDS)} {rng.choice(WORDS)} records ({i})."""', ""]
    lines += ["import math", ""]
    for f in range(4):
        a, b, c = rng.sample(WORDS, 3)
        lines += [
            f"def {a}_{b}_{i}_{f}({a}, {c}):",
            f'    """Combine {a} and {c} the {b} way."""',
            f"    total = {a} * {rng.randint(2, 99)} + {c} // {rng.randint(2, 9)}",
            f"    if total > {rng.randint(100, 999)}:",
            f"        return math.sqrt(total) + {rng.random():.3f}",
            f"    {b} = [{c} for {c} in range({rng.randint(3, 30)})]",
            f"    return total - len({b})",
            "",
        ]
    return "\n".join(lines)


def make_corpus() -> list[str]:
    """The data pipeline tests' corpus: 14 modules (the counts they assert follow from it)."""
    return [make_module(i) for i in range(14)]


def split_documents(data: PackedData, split: str) -> list[str]:
    """A built dataset's split, read back: its stream (padding dropped) cut at eos, decoded."""
    import numpy as np

    meta = data.manifest["splits"][split]
    stream = np.asarray(data.rows(split)).reshape(-1)[: meta["tokens"]]
    tok = data.tokenizer
    cuts = np.flatnonzero(stream == tok.eos_id)
    assert len(cuts) == meta["documents"] and (len(stream) == 0 or stream[-1] == tok.eos_id)
    return [tok.decode(seg[:-1]) for seg in np.split(stream, cuts + 1)[:-1]]


# -- the echo model -----------------------------------------------------------------------------

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
