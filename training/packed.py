"""Reading a packed dataset: :class:`PackedData`, all that training and evaluation need.

A packed dataset directory holds ``train.bin``/``val.bin`` (token ids, row-major
``[rows, seq_len + 1]``, documents back to back with eos separators, the last row padded),
``tokenizer.json`` and ``manifest.json``. It is written by :mod:`training.packing`.

``batch(split, step, ...)`` is a pure function of its arguments. Train rows come from a
permutation seeded by (seed, epoch); the fill-in-the-middle transform (:mod:`training.fim`)
runs here, at load time, with a generator seeded by (seed, step). A checkpoint therefore only
needs the step to resume the exact data stream. This module imports neither the filters nor
``datasets``, so the trainer does not pay for the pipeline that wrote the data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from training.fim import apply_fim
from training.tokenizer import CodeTokenizer

FORMAT = "council-packed-v1"
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while the ids fit (half the disk and page cache of uint32)."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class Batch(NamedTuple):
    """``tokens[:, :-1]`` is the input, ``tokens[:, 1:]`` the target, ``mask[:, 1:]`` its weight."""

    tokens: np.ndarray  # int32 [B, L]
    mask: np.ndarray  # float32 [B, L], 0 on padding
    step: int


class PackedData:
    """Reader of a packed dataset directory; every batch is a pure function of its arguments."""

    def __init__(self, directory: str | Path, *, fim_spm_rate: float = 0.5) -> None:
        self.directory = Path(directory)
        path = self.directory / "manifest.json"
        if not path.is_file():
            raise ValueError(f"{self.directory} is not a packed dataset (no manifest.json)")
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: format {self.manifest.get('format')!r}, expected {FORMAT}")
        self.row_len = int(self.manifest["row_len"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.fim_spm_rate = fim_spm_rate
        self._rows: dict[str, np.ndarray] = {}
        self._perm: dict[tuple[str, int, int], np.ndarray] = {}
        self._tokenizer: CodeTokenizer | None = None

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def _split(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise ValueError(f"no split {split!r}; the dataset has {self.splits}") from None

    def rows(self, split: str) -> np.ndarray:
        """The split's ``[rows, row_len]`` token array, memory-mapped (not read into RAM)."""
        if split not in self._rows:
            meta = self._split(split)
            n = int(meta["rows"])
            if n == 0:
                self._rows[split] = np.zeros((0, self.row_len), self.dtype)
            else:
                self._rows[split] = np.memmap(
                    self.directory / meta["file"], self.dtype, "r", shape=(n, self.row_len)
                )
        return self._rows[split]

    def num_rows(self, split: str) -> int:
        return int(self._split(split)["rows"])

    @property
    def tokenizer(self) -> CodeTokenizer:
        if self._tokenizer is None:
            self._tokenizer = CodeTokenizer.from_file(self.directory / self.manifest["tokenizer"])
        return self._tokenizer

    def _valid(self, split: str, row: int) -> int:
        """Data tokens in ``row`` (the split's last row may end in padding)."""
        meta = self._split(split)
        n = int(meta["rows"])
        tokens = int(meta.get("tokens", n * self.row_len))
        return self.row_len if row < n - 1 else tokens - (n - 1) * self.row_len

    def steps_per_epoch(self, split: str, batch_size: int) -> int:
        return math.ceil(self.num_rows(split) / batch_size)

    def _permutation(self, split: str, seed: int, epoch: int) -> np.ndarray:
        key = (split, seed, epoch)
        if key not in self._perm:
            if len(self._perm) > 4:
                self._perm.clear()
            rng = np.random.default_rng([seed, epoch, 0])
            self._perm[key] = rng.permutation(self.num_rows(split))
        return self._perm[key]

    def row_indices(self, split: str, step: int, batch_size: int, seed: int = 0) -> list[int]:
        """Rows of batch ``step``: shuffled per epoch for train, in order (then -1 pads) else."""
        n = self.num_rows(split)
        if n == 0:
            raise ValueError(f"split {split!r} has no rows")
        if split == "train":
            out = []
            for i in range(step * batch_size, (step + 1) * batch_size):
                epoch, pos = divmod(i, n)
                out.append(int(self._permutation(split, seed, epoch)[pos]))
            return out
        local = step % self.steps_per_epoch(split, batch_size)
        return [r if r < n else -1 for r in range(local * batch_size, (local + 1) * batch_size)]

    def batch(
        self, split: str, step: int, batch_size: int, *, seed: int = 0, fim_rate: float = 0.0
    ) -> Batch:
        """Batch number ``step`` (a pure function of the arguments: resuming is exact).

        Train rows cycle through a fresh permutation each epoch. Other splits go in order and
        pad the last batch with fully masked rows, so every batch has the same shape.
        """
        if step < 0 or batch_size < 1 or seed < 0:
            raise ValueError("step and seed must be >= 0 and batch_size >= 1")
        if not 0.0 <= fim_rate <= 1.0:
            raise ValueError("fim_rate must be in [0, 1]")
        data = self.rows(split)
        tokens = np.full((batch_size, self.row_len), int(self.manifest["pad_id"]), np.int32)
        mask = np.zeros((batch_size, self.row_len), np.float32)
        rng = np.random.default_rng([seed, step, 1]) if fim_rate > 0 else None
        tok = self.tokenizer if rng is not None else None
        if tok is not None and not tok.has_fim:
            raise ValueError(f"fim_rate={fim_rate} but the dataset's tokenizer has no FIM tokens")
        for j, r in enumerate(self.row_indices(split, step, batch_size, seed)):
            if r < 0:
                continue
            valid = self._valid(split, r)
            if rng is not None and tok is not None:
                tokens[j], mask[j] = apply_fim(
                    data[r], valid, rng, tok, fim_rate=fim_rate, spm_rate=self.fim_spm_rate
                )
            else:
                tokens[j] = data[r]
                mask[j, :valid] = 1.0
        return Batch(tokens, mask, step)

    def iterate(
        self,
        split: str,
        batch_size: int,
        *,
        start_step: int = 0,
        seed: int = 0,
        fim_rate: float = 0.0,
    ) -> Iterator[Batch]:
        """Batches from ``start_step`` on: forever for train, one pass for other splits."""
        step = start_step
        end = None if split == "train" else self.steps_per_epoch(split, batch_size)
        while end is None or step < end:
            yield self.batch(split, step, batch_size, seed=seed, fim_rate=fim_rate)
            step += 1
