"""Writing a packed dataset: rows of ``seq_len + 1`` tokens, raw and memory-mappable.

:class:`PackedWriter` streams documents (each followed by eos) into a split's ``.bin`` file,
so a corpus larger than memory packs in constant memory; :func:`write_packed` writes arrays
already in memory (tests, converters). Both end with the same ``manifest.json``, which
:class:`training.packed.PackedData` reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.packed import FORMAT, token_dtype
from training.tokenizer import CodeTokenizer


class PackedWriter:
    """Appends documents (plus an eos) to a row-major ``[rows, row_len]`` file, streaming."""

    def __init__(self, path: Path, row_len: int, dtype: np.dtype, eos_id: int, pad_id: int) -> None:
        self.path, self.row_len, self.dtype = path, row_len, dtype
        self.eos_id, self.pad_id = eos_id, pad_id
        self._file = path.open("wb")
        self._buf = np.empty(row_len * 256, dtype)
        self._fill = 0
        self.rows = self.documents = self.tokens = 0

    def add(self, ids: Sequence[int]) -> None:
        doc = np.asarray([*ids, self.eos_id], dtype=self.dtype)
        self.documents += 1
        self.tokens += len(doc)
        while len(doc):
            take = min(len(doc), len(self._buf) - self._fill)
            self._buf[self._fill : self._fill + take] = doc[:take]
            self._fill += take
            doc = doc[take:]
            if self._fill == len(self._buf):
                self._flush(len(self._buf))

    def _flush(self, n: int) -> None:
        n -= n % self.row_len
        self._file.write(self._buf[:n].tobytes())
        self.rows += n // self.row_len
        rest = self._fill - n
        self._buf[:rest] = self._buf[n : self._fill]
        self._fill = rest

    def close(self) -> None:
        """Pad the last partial row with ``pad`` (masked when read) and close the file."""
        if self._fill:
            pad = -self._fill % self.row_len
            self._buf[self._fill : self._fill + pad] = self.pad_id
            self._fill += pad
        self._flush(self._fill)
        self._file.close()


def manifest_for(
    tokenizer: CodeTokenizer,
    row_len: int,
    splits: dict[str, dict[str, Any]],
    report: dict[str, Any] | None,
    sources: list[str] | None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``manifest.json`` of a packed dataset; ``extra`` keys (provenance) go at the end."""
    return {
        "format": FORMAT,
        "row_len": row_len,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "pad_id": tokenizer.pad_id,
        "fim_ids": {
            "prefix": tokenizer.fim_prefix_id,
            "middle": tokenizer.fim_middle_id,
            "suffix": tokenizer.fim_suffix_id,
            "pad": tokenizer.fim_pad_id,
        },
        "tokenizer": "tokenizer.json",
        "splits": splits,
        "report": report or {},
        "sources": list(sources or []),
        **extra,
    }


def write_packed(
    directory: str | Path,
    splits: dict[str, np.ndarray],
    tokenizer: CodeTokenizer,
    report: dict[str, Any] | None = None,
    sources: list[str] | None = None,
) -> Path:
    """Write in-memory ``[rows, L]`` arrays as a packed dataset directory (every token counts)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    lengths = {np.asarray(a).shape[1] for a in splits.values() if np.asarray(a).ndim == 2}
    if len(lengths) != 1 or any(np.asarray(a).ndim != 2 for a in splits.values()):
        raise ValueError("splits must be 2-D arrays [rows, L] with one common L")
    row_len = lengths.pop()
    meta = {}
    for name, array in splits.items():
        array = np.asarray(array)
        if array.size and (array.min() < 0 or array.max() >= tokenizer.vocab_size):
            raise ValueError(f"split {name!r} has ids outside [0, {tokenizer.vocab_size})")
        (directory / f"{name}.bin").write_bytes(array.astype(dtype).tobytes())
        meta[name] = {
            "file": f"{name}.bin",
            "rows": int(array.shape[0]),
            "documents": int(np.count_nonzero(array == tokenizer.eos_id)),
            "tokens": int(array.size),
        }
    tokenizer.save(directory)
    manifest = manifest_for(tokenizer, row_len, meta, report, sources)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory
