"""The data pipeline: sources -> filters -> decontamination -> dedup -> split -> tokens -> rows.

Writing (``council train data``, :func:`build_dataset`), one module per stage:

1. :mod:`training.sources`: each ``--source`` as a stream of documents: a hub dataset
   (``hf:NAME[:CONFIG]``, streamed), local ``.py`` files/dirs/globs, ``stdlib``, or
   ``site-packages[=PATH]``, the installed packages of an environment
   (:mod:`training.site_packages`; ``--exclude PKG`` holds packages out for evaluation).
2. :mod:`training.selection`: the seed's filters (:mod:`training.filters`), decontamination
   against HumanEval and exact + MinHash-LSH near-duplicate removal (:mod:`training.dedup`,
   Jaccard 0.7, keep the first of each cluster). Workers do the per-file work; the
   order-dependent dedup runs in the parent, so the result does not depend on the number of
   workers.
3. Here: kept files (in a scratch JSONL) are split into train/val (:func:`split_documents`:
   by a hash of the path for single files, by package for site-packages), a byte-level BPE
   is trained on the train files unless a tokenizer is given, and the files are tokenized in
   parallel (``encode_batch``) and packed (:mod:`training.packing`) back to back with eos
   separators into rows of ``seq_len + 1`` tokens, raw memory-mappable arrays.

Reading is :class:`training.packed.PackedData`, re-exported here with the other names the
rest of the code imports from ``training.data``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training import site_packages
from training.dedup import Decontaminator, NearDedup, minhash_values, shingle_hashes
from training.packed import FORMAT, SPLITS, Batch, PackedData, token_dtype
from training.packing import PackedWriter, manifest_for, write_packed
from training.selection import FilterReport, Kept, chunks, read_texts, select_documents
from training.sources import (
    SITE_PACKAGES,
    Source,
    SourceError,
    check_source,
    iter_documents,
    iter_sources,
    open_source,
    read_source_file,
    site_inventory,
    stdlib_files,
    stdlib_root,
)
from training.tokenizer import CodeTokenizer, train_tokenizer

__all__ = [
    "FORMAT",
    "SPLITS",
    "Batch",
    "Decontaminator",
    "FilterReport",
    "NearDedup",
    "PackedData",
    "PackedWriter",
    "Source",
    "SourceError",
    "assign_splits",
    "build_dataset",
    "check_source",
    "iter_documents",
    "minhash_values",
    "open_source",
    "prepare_out_dir",
    "read_source_file",
    "shingle_hashes",
    "split_documents",
    "split_groups",
    "stdlib_files",
    "stdlib_root",
    "token_dtype",
    "val_score",
    "write_packed",
]

log = logging.getLogger(__name__)

_WORK = ".work"


# -- splitting ---------------------------------------------------------------------------


def val_score(path: str, seed: int | None = None) -> float:
    """A stable number in [0, 1) per name: the split is a property of the file, not the run."""
    key = path if seed is None else f"{seed}:{path}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8]) / 2**64


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


def split_groups(sizes: Mapping[str, int], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """ "train"/"val" per group (package) so that val holds about ``val_fraction`` of the size.

    Groups are visited in an order seeded by ``seed`` (a hash of seed and name) and each goes
    to val while it still fits in the budget; so a package is wholly in one split, the share
    is close to the one asked for whatever the package sizes (a hash threshold alone could
    put a third of the corpus in val by drawing one big package), and a package larger than
    the budget always trains. Same sizes, fraction and seed: same split.
    """
    order = sorted(sizes, key=lambda g: (val_score(g, seed), g))
    budget = val_fraction * sum(sizes.values())
    val: set[str] = set()
    filled = 0
    for group in order:
        if filled + sizes[group] <= budget:
            val.add(group)
            filled += sizes[group]
    if not val and len(sizes) >= 2 and val_fraction > 0:
        val.add(min(order, key=lambda g: sizes[g]))  # at least one held-out package
    return {g: "val" if g in val else "train" for g in sizes}


def split_documents(kept: Sequence[Kept], val_fraction: float, seed: int = 0) -> list[str]:
    """The split of each kept file: single files by path hash, grouped ones by group."""
    out = [""] * len(kept)
    loose = [i for i, k in enumerate(kept) if not k.group]
    loose_splits = assign_splits([kept[i].path for i in loose], val_fraction)
    for i, split in zip(loose, loose_splits, strict=True):
        out[i] = split
    sizes: collections.Counter[str] = collections.Counter()
    for k in kept:
        if k.group:
            sizes[k.group] += k.chars
    by_group = split_groups(sizes, val_fraction, seed)
    for i, k in enumerate(kept):
        if k.group:
            out[i] = by_group[k.group]
    return out


# -- building ----------------------------------------------------------------------------


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse to write into a non-empty directory unless forced."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"--out {out} is not empty; pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)


def _check_sources(sources: Sequence[str], exclude: Sequence[str]) -> Source | None:
    """Fail on a bad spec before any work; the site-packages source, if there is one."""
    if not sources:
        raise ValueError("give at least one --source")
    site_inventory.cache_clear()  # scan the environment as it is now, once per build
    specs = [check_source(spec, exclude) for spec in sources]
    site = [s for s in specs if s.kind == SITE_PACKAGES]
    if len(site) > 1:
        raise ValueError(f"give --source {SITE_PACKAGES} once (one environment per dataset)")
    if exclude and not site:
        raise ValueError(f"--exclude names installed packages: it needs --source {SITE_PACKAGES}")
    return site[0] if site else None


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
    exclude: Sequence[str] = (),
    split_seed: int = 0,
    force: bool = False,
) -> dict[str, Any]:
    """Run the whole pipeline into ``out``; returns the manifest (see the module docstring)."""
    if seq_len < 1:
        raise ValueError("--seq-len must be positive")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError("--val-fraction must be in [0, 1)")
    site = _check_sources(sources, exclude)
    out = Path(out)
    prepare_out_dir(out, force)
    work = out / _WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.perf_counter()
    try:
        docs = iter_sources(
            sources,
            max_files=max_files,
            text_column=text_column,
            hf_split=hf_split,
            exclude=exclude,
            heldout_first=dedup,
        )
        report, kept = select_documents(
            docs, work / "documents.jsonl", num_workers=num_workers, dedup=dedup, decontam=decontam
        )
        if not kept:
            raise ValueError("no file survived the filters; nothing to pack (see the report)")
        log.info("selected %d of %d files in %.1fs", len(kept), report.files_seen, _since(started))
        split_of = split_documents(kept, val_fraction, split_seed)
        for s in split_of:
            report.files[s] += 1
        if tokenizer is None:
            log.info("training a %d-token byte-level BPE on %d files", vocab_size, len(kept))
            texts = (
                text
                for (text, s) in zip(read_texts(work / "documents.jsonl"), split_of, strict=True)
                if s == "train"
            )
            tokenizer = train_tokenizer(texts, vocab_size, show_progress=sys.stderr.isatty())
            log.info("tokenizer trained at %.1fs", _since(started))
        meta, group_tokens = _pack(
            out, work / "documents.jsonl", kept, split_of, tokenizer, seq_len
        )
        for s, m in meta.items():
            report.tokens[s], report.rows[s] = m["tokens"], m["rows"]
        extra = {}
        if site is not None:
            extra["site_packages"] = _site_record(
                site, exclude, kept, split_of, group_tokens, split_seed
            )
        manifest = manifest_for(
            tokenizer, seq_len + 1, meta, report.to_dict(), list(sources), **extra
        )
        tokenizer.save(out)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("packed at %.1fs", _since(started))
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _since(start: float) -> float:
    return time.perf_counter() - start


def _pack(
    out: Path,
    documents: Path,
    kept: Sequence[Kept],
    split_of: Sequence[str],
    tokenizer: CodeTokenizer,
    seq_len: int,
) -> tuple[dict[str, dict[str, Any]], collections.Counter[str]]:
    """Tokenize the kept files into their splits' ``.bin``; (split meta, tokens per group)."""
    row_len = seq_len + 1
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {
        s: PackedWriter(out / f"{s}.bin", row_len, dtype, tokenizer.eos_id, tokenizer.pad_id)
        for s in SPLITS
    }
    group_tokens: collections.Counter[str] = collections.Counter()
    try:
        texts = read_texts(documents)
        for start, chunk in zip(range(0, len(split_of), 256), chunks(texts, 256), strict=False):
            for offset, ids in enumerate(tokenizer.encode_batch(chunk)):
                writers[split_of[start + offset]].add(ids)
                if kept[start + offset].group:
                    group_tokens[kept[start + offset].group] += len(ids) + 1
    finally:
        for w in writers.values():
            w.close()
    meta = {
        s: {"file": w.path.name, "rows": w.rows, "documents": w.documents, "tokens": w.tokens}
        for s, w in writers.items()
    }
    return meta, group_tokens


def _site_record(
    site: Source,
    exclude: Sequence[str],
    kept: Sequence[Kept],
    split_of: Sequence[str],
    group_tokens: Mapping[str, int],
    split_seed: int,
) -> dict[str, Any]:
    """The manifest's account of a site-packages source: each package, its split and licence.

    Excluded packages are listed with their files, so an evaluator can find the held-out code
    again (:func:`training.site_packages.excluded_files`).
    """
    keys = {site_packages.normalize(n) for n in exclude}
    inventory = site_inventory(site.target, tuple(sorted(keys)))
    kept_files: collections.Counter[str] = collections.Counter(k.group for k in kept if k.group)
    split_by_group = {k.group: s for k, s in zip(kept, split_of, strict=True) if k.group}
    packages, excluded = [], []
    for package in inventory.packages:
        group = f"pkg:{package.key}"
        entry = {**package.to_dict(), "files": len(package.files)}
        if package.key in keys:
            excluded.append(entry)
            continue
        entry["split"] = split_by_group.get(group, "none")  # "none": every file filtered out
        entry["kept"] = kept_files[group]
        entry["tokens"] = group_tokens.get(group, 0)
        packages.append(entry)
    count = collections.Counter(p["split"] for p in packages)
    return {
        "roots": [str(r) for r in inventory.roots],
        "split": "by package",
        "split_seed": split_seed,
        "packages_by_split": {s: count[s] for s in (*SPLITS, "none")},
        "skipped_files": dict(inventory.skipped),
        "without_python": inventory.without_python,
        "without_record": inventory.without_record,
        "excluded": excluded,
        "packages": packages,
    }
