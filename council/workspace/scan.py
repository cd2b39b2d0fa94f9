"""Filling the index from the workspace in a background thread, and keeping it current.

The builder owns one worker thread. It walks the workspace once (bounded by `max_files`,
`max_file_kb` and the excluded folder names), reading, chunking and indexing files in
batches; between batches it handles what the editor reported (an open buffer changed, a
file was saved, created or deleted), so a buffer the user is typing in is indexed before
the rest of a 5,000-file walk. Nothing here runs on the server's event loop: a request
made during the build queries whatever is indexed so far, and the worker only takes the
index's lock to swap in one file at a time.

Open buffers win over the disk: while a file is open its editor text is what is indexed,
and disk events for it are ignored until it is closed. A rescan (after a save, when the
client cannot watch files) compares each file's size and mtime with what was indexed, so
it reads only what changed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from council.imports import numpy
from council.workspace.chunks import prepare
from council.workspace.index import Index, file_stamp

log = logging.getLogger(__name__)

BATCH = 32  # files per batch of the initial walk; editor events are handled between batches


@dataclass(frozen=True)
class Limits:
    max_files: int = 20_000
    max_file_bytes: int = 512 * 1024
    exclude: frozenset[str] = frozenset(
        {".git", ".venv", "venv", "node_modules", "__pycache__", "build", "dist", ".tox"}
    )

    def excluded(self, folder: str) -> bool:
        """Excluded by name, or hidden (`.git`, `.mypy_cache`: tools' folders, not code)."""
        return folder in self.exclude or folder.startswith(".")

    @classmethod
    def of(cls, config: Any) -> Limits:
        """From a `providers.settings.WorkspaceConfig`."""
        return cls(config.max_files, config.max_file_kb * 1024, frozenset(config.exclude))


@dataclass
class WalkResult:
    files: list[tuple[str, Path]]  # (relative path with '/', absolute path)
    too_big: int = 0
    over_limit: int = 0  # files left out by max_files


def walk(root: Path, limits: Limits) -> WalkResult:
    """The workspace's `.py` files in a stable order, within the limits."""
    result = WalkResult([])
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not limits.excluded(d))
        base = Path(folder)
        for name in sorted(names):
            if not name.endswith(".py"):
                continue
            path = base / name
            try:
                if path.stat().st_size > limits.max_file_bytes:
                    result.too_big += 1
                    continue
            except OSError:
                continue
            if len(result.files) >= limits.max_files:
                result.over_limit += 1
                continue
            result.files.append((path.relative_to(root).as_posix(), path))
    return result


class Builder:
    """The index of one workspace root and the thread that keeps it current."""

    def __init__(self, root: Path, limits: Limits, index: Index | None = None) -> None:
        self.root = root
        self.limits = limits
        self.index = index or Index()
        self.building = True
        self.indexed = 0  # files read by the walk so far
        self.total = 0  # files the walk found (known once the walk's listing is done)
        self.too_big = 0
        self.over_limit = 0
        self.build_seconds: float | None = None
        self.done = threading.Event()  # the first walk is finished
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._buffers: dict[str, str] = {}  # worker thread only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="council-index", daemon=True)

    # -- what the editor reports (any thread) -----------------------------------------------

    def start(self) -> Builder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._events.put(("stop", None))

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def relative(self, path: Path) -> str | None:
        """`path` relative to the root, or None when it is outside or excluded."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        parts = rel.parts
        if not parts or any(self.limits.excluded(p) for p in parts[:-1]):
            return None
        return rel.as_posix()

    def buffer(self, rel: str, text: str) -> None:
        """An open document's text (opened, or changed): indexed instead of the file."""
        self._events.put(("buffer", (rel, text)))

    def closed(self, rel: str) -> None:
        """The document was closed: the file on disk (if any) is indexed again."""
        self._events.put(("closed", rel))

    def changed(self, rel: str) -> None:
        """The file changed or was created on disk."""
        self._events.put(("disk", rel))

    def deleted(self, rel: str) -> None:
        """The file, or a folder and everything under it, was deleted."""
        self._events.put(("deleted", rel))

    def rescan(self) -> None:
        """Compare the whole tree with the index (a save when files cannot be watched)."""
        self._events.put(("rescan", None))

    def idle(self, timeout: float = 10) -> bool:
        """Wait until the walk is done and every reported event handled (tests, benches)."""
        marker = threading.Event()
        self._events.put(("mark", marker))
        return self.done.wait(timeout) and marker.wait(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "building": self.building,
            "indexed": self.indexed,
            "total": self.total,
            "tooBig": self.too_big,
            "overLimit": self.over_limit,
            "buildSeconds": self.build_seconds,
            **self.index.stats(),
        }

    # -- the worker thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            numpy()  # queries need it: import it here (under the lock), not on a request

            self._walk()
            while not self._stop.is_set():
                self._handle(self._events.get())
        except Exception:  # the index is a hint: a failure must never reach a request
            log.exception("workspace index: the builder stopped")
        finally:
            self.building = False
            self.done.set()

    def _walk(self) -> None:
        started = time.perf_counter()
        found = walk(self.root, self.limits)
        self.total, self.too_big, self.over_limit = (
            len(found.files),
            found.too_big,
            found.over_limit,
        )
        for batch in _batches(found.files, BATCH):
            self._drain()
            if self._stop.is_set():
                return
            for rel, path in batch:
                if rel not in self._buffers:
                    self._read(rel, path)
                self.indexed += 1
            time.sleep(0)  # let the event loop's thread have the interpreter
        self.build_seconds = round(time.perf_counter() - started, 3)
        self.building = False
        self.done.set()
        log.info("workspace index: %d files in %.1fs", self.indexed, self.build_seconds)

    def _drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "buffer":
            rel, text = value
            self._buffers[rel] = text
            self.index.apply(prepare(rel, text))
        elif kind == "closed":
            self._buffers.pop(value, None)
            self._refresh(value)
        elif kind == "disk":
            if value not in self._buffers:
                self._refresh(value)
        elif kind == "deleted":
            prefix = value.rstrip("/") + "/"
            for rel in self.index.paths():
                if (rel == value or rel.startswith(prefix)) and rel not in self._buffers:
                    self.index.remove(rel)
        elif kind == "rescan":
            self._rescan()
        elif kind == "mark":
            value.set()
        self.index.compact()

    def _refresh(self, rel: str) -> None:
        path = self.root / rel
        if not path.is_file() or self.relative(path) is None:
            self.index.remove(rel)
        else:
            self._read(rel, path)

    def _read(self, rel: str, path: Path) -> None:
        try:
            stamp = file_stamp(path)
            if stamp[0] > self.limits.max_file_bytes:
                self.index.remove(rel)
                return
            if self.index.stamp(rel) == stamp:
                return
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.debug("workspace index: skipping %s: %s", rel, exc)
            return
        self.index.apply(prepare(rel, text, stamp=stamp, absolute=path))

    def _rescan(self) -> None:
        found = walk(self.root, self.limits)
        seen = set()
        for rel, path in found.files:
            seen.add(rel)
            if rel not in self._buffers:
                self._read(rel, path)
        for rel in self.index.paths():
            if rel not in seen and rel not in self._buffers:
                self.index.remove(rel)


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_now(root: Path, limits: Limits, *, extra: Iterable[tuple[str, str]] = ()) -> Index:
    """A one-shot index, built in the calling thread (the CLI, the benchmarks)."""
    index = Index()
    for rel, path in walk(root, limits).files:
        try:
            index.apply(
                prepare(
                    rel, path.read_text(encoding="utf-8"), stamp=file_stamp(path), absolute=path
                )
            )
        except (OSError, UnicodeDecodeError):
            continue
    for rel, text in extra:
        index.apply(prepare(rel, text))
    return index
