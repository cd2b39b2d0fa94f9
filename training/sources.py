"""Where the corpus comes from: each ``--source`` as a stream of :class:`Document`.

Sources are Hugging Face ``datasets`` iterables of ``{"path", "content", "group"}`` rows: a
hub dataset (``hf:NAME[:CONFIG]``, streamed), local ``.py`` files/dirs/globs, ``stdlib`` (the
running Python's own standard library source), or ``site-packages[=PATH]``, the installed
packages of an environment (:mod:`training.site_packages`). Everything local is listed in
sorted order, so the same inputs give the same stream and the same dataset.

``group`` is the unit the train/validation split keeps together: a package for
site-packages (validation is code from projects the model never saw), empty for the other
sources, whose files are split one by one.
"""

from __future__ import annotations

import functools
import glob
import io
import logging
import os
import socket
import sysconfig
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

from training import site_packages

log = logging.getLogger(__name__)

SITE_PACKAGES = "site-packages"


class Document(NamedTuple):
    """One source file on its way through the pipeline."""

    path: str  # a readable name: stdlib/json/decoder.py, site-packages/rich/console.py
    content: str
    group: str = ""  # the split unit ("pkg:NAME"); empty: split by file
    heldout: bool = False  # an --exclude'd package's file: indexed for dedup, never kept


class SourceError(ValueError):
    """A source spec that cannot be read (bad path, no network for the hub, ...)."""


@dataclass(frozen=True)
class Source:
    """A parsed ``--source``: ``stdlib``, ``site-packages[=PATH]``, a path/glob, or ``hf:...``."""

    kind: str  # "stdlib" | "site-packages" | "local" | "hf"
    target: str = ""
    config: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Source:
        spec = spec.strip()
        if spec == "stdlib":
            return cls("stdlib")
        if spec == SITE_PACKAGES or spec.startswith(SITE_PACKAGES + "="):
            return cls(SITE_PACKAGES, spec.partition("=")[2])
        if spec.startswith("hf:"):
            name, _, config = spec[3:].partition(":")
            if not name:
                raise SourceError(f"bad source {spec!r}: expected hf:NAME[:CONFIG]")
            return cls("hf", name, config or None)
        if not spec:
            raise SourceError("empty --source")
        return cls("local", spec)


def stdlib_root() -> Path:
    """The running interpreter's standard library folder."""
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


def _file_rows(files: Sequence[tuple[str, str, str]]) -> Iterator[dict[str, str]]:
    for file, name, group in files:
        try:
            yield {"path": name, "content": read_source_file(Path(file)), "group": group}
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


@functools.lru_cache(maxsize=4)
def site_inventory(target: str, exclude: tuple[str, ...] = ()) -> site_packages.Inventory:
    """The scan behind ``site-packages[=target]`` (cached: the pipeline asks several times).

    ``exclude`` names must be installed there (a misspelt name would silently leak the
    package into training), and they win any file two distributions both claim.
    """
    try:
        inventory = site_packages.scan(target or None, prefer=exclude)
        inventory.check_names(exclude)
    except (FileNotFoundError, LookupError) as exc:
        raise SourceError(f"--source {SITE_PACKAGES}: {exc}") from None
    if not inventory.packages:
        raise SourceError(f"--source {SITE_PACKAGES}: no installed package has Python files")
    return inventory


def site_files(
    target: str, exclude: Sequence[str] = (), *, heldout: bool = False
) -> list[tuple[str, str, str]]:
    """(file, name, group) of the packages kept (or, with ``heldout``, the excluded ones)."""
    keys = {site_packages.normalize(n) for n in exclude}
    inventory = site_inventory(target, tuple(sorted(keys)))
    return [
        (str(f.path), f"{SITE_PACKAGES}/{f.name}", f"pkg:{p.key}")
        for p in inventory.packages
        if (p.key in keys) == heldout
        for f in p.files
    ]


def open_source(
    spec: str,
    *,
    max_files: int | None = None,
    text_column: str = "content",
    split: str = "train",
    exclude: Sequence[str] = (),
) -> Iterable[dict[str, str]]:
    """The ``{"path", "content", "group"}`` rows of one ``--source`` spec, in a stable order.

    Local sources are a ``datasets.IterableDataset`` over the sorted files; hub sources stream
    through ``datasets.load_dataset(..., streaming=True)``. ``exclude`` names packages to
    leave out of a site-packages source.
    """
    src = Source.parse(spec)
    if src.kind == "hf":
        rows: Iterable[dict[str, str]] = _hf_rows(src.target, src.config, split, text_column)
        if max_files is not None:
            rows = _take(rows, max_files)
        return rows
    if src.kind == "stdlib":
        root = stdlib_root()
        files = [(str(p), "stdlib/" + p.relative_to(root).as_posix(), "") for p in stdlib_files()]
    elif src.kind == SITE_PACKAGES:
        files = site_files(src.target, exclude)
    else:
        files = [(str(p), name, "") for p, name in local_files(src.target)]
    if not files:
        raise SourceError(f"source {spec!r} holds no .py files")
    return file_rows(files[:max_files] if max_files is not None else files)


def file_rows(files: Sequence[tuple[str, str, str]]) -> Iterable[dict[str, str]]:
    """The rows of (file, name, group) triples, read lazily, as a ``datasets`` iterable."""
    import datasets

    # A tuple keeps it one shard: iteration order is the given (sorted) file order.
    return datasets.IterableDataset.from_generator(_file_rows, gen_kwargs={"files": tuple(files)})


def check_source(spec: str, exclude: Sequence[str] = ()) -> Source:
    """Parse a spec and, for local ones, check that it names some files (cheap, no reading)."""
    src = Source.parse(spec)
    if src.kind == "local" and not local_files(src.target):
        raise SourceError(f"source {spec!r} holds no .py files")
    if src.kind == SITE_PACKAGES:
        site_inventory(src.target, tuple(sorted(site_packages.normalize(n) for n in exclude)))
    return src


def _take(rows: Iterable[dict[str, str]], n: int) -> Iterator[dict[str, str]]:
    for i, row in enumerate(rows):
        if i >= n:
            return
        yield row


def iter_documents(
    sources: Sequence[str], *, max_files: int | None, text_column: str, hf_split: str
) -> Iterator[tuple[str, str]]:
    """(path, content) of every file of every source, in order (what a tokenizer trains on)."""
    for doc in iter_sources(
        sources, max_files=max_files, text_column=text_column, hf_split=hf_split
    ):
        yield doc.path, doc.content


def iter_sources(
    sources: Sequence[str],
    *,
    max_files: int | None = None,
    text_column: str = "content",
    hf_split: str = "train",
    exclude: Sequence[str] = (),
    heldout_first: bool = False,
) -> Iterator[Document]:
    """Every :class:`Document` of every source, in order.

    With ``heldout_first``, the ``exclude``d packages' files come first, flagged ``heldout``,
    so that deduplication can index them before it sees any training file.
    """
    if heldout_first and exclude:
        for spec in sources:
            src = Source.parse(spec)
            if src.kind == SITE_PACKAGES:
                for row in file_rows(site_files(src.target, exclude, heldout=True)):
                    yield Document(row["path"], row["content"], row["group"], heldout=True)
    for spec in sources:
        rows = open_source(
            spec, max_files=max_files, text_column=text_column, split=hf_split, exclude=exclude
        )
        for row in rows:
            yield Document(row["path"], row["content"], row.get("group") or "")
