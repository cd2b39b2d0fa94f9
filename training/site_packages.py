"""The installed packages of a Python environment as a corpus: files grouped by distribution.

``council train data --source site-packages[=PATH]`` trains on the Python that is already on
the machine, and ``council train eval`` wants whole packages the model never saw. Both need
the same answer to "which files belong to which package", so it lives here:

* A package is a *distribution* (a ``*.dist-info``/``*.egg-info`` folder), and its files
  are the ones its ``RECORD`` lists (:attr:`importlib.metadata.Distribution.files`), not a
  guess from directory names: namespace packages (``google/``, ``jaraco/``) spread over
  several distributions, and one distribution may install several top-level modules.
* Only ``.py`` files inside the environment's site-packages count. ``RECORD`` also lists
  console scripts (``../../../bin/x``) and editable installs point at a source checkout
  elsewhere; neither is the package's installed code.
* Tests (``tests/``, ``test/``, ``testing/`` folders, ``test_*.py``, ``*_test.py``,
  ``conftest.py``) are skipped: they are mostly fixtures and asserts, not the code a
  completion model should learn to write. Vendored copies (``_vendor/``, ``vendor/``,
  ``_vendored/``) are skipped too: they are other projects' code (pip vendors rich and
  requests), which would otherwise leak a held-out package into the training set.
* A file that two distributions both claim (a stale ``RECORD``, an overlapping namespace)
  goes to one owner, so no file is counted twice: a preferred (held-out) distribution first,
  then the first name in sorted order. A distribution name found twice (a stale
  ``dist-info`` left behind by an upgrade) counts once, the newest version.

Everything is sorted, so a scan of the same environment gives the same packages and files.
"""

from __future__ import annotations

import collections
import importlib.metadata
import os
import re
import sysconfig
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

#: Folder names whose contents are tests or test helpers, not library code.
TEST_DIRS = frozenset({"tests", "test", "testing"})
#: Folder names that hold copies of other projects.
VENDOR_DIRS = frozenset({"_vendor", "vendor", "_vendored"})
#: Reasons a listed ``.py`` file is left out before it is read (manifest keys).
SKIP_REASONS = ("tests", "vendored", "outside", "shared", "editable_hook")


def normalize(name: str) -> str:
    """PEP 503 name: ``Jinja2``, ``jinja_2`` and ``jinja.2`` are one package to pip and to us."""
    return re.sub(r"[-_.]+", "-", name).lower()


def default_roots() -> list[Path]:
    """The running interpreter's site-packages (purelib, and platlib where it differs)."""
    paths = sysconfig.get_paths()
    roots = [Path(paths["purelib"])]
    if Path(paths["platlib"]) != roots[0]:
        roots.append(Path(paths["platlib"]))
    return [r for r in roots if r.is_dir()]


def resolve_roots(path: str | Path | None) -> list[Path]:
    """``PATH`` as given to ``site-packages=PATH``: a site-packages folder or an environment.

    An environment (a venv or a prefix, recognised by ``lib/python*/site-packages`` under
    it) stands for its site-packages, so ``site-packages=.venv`` works as well.
    """
    if path is None or str(path) == "":
        roots = default_roots()
        if not roots:
            raise FileNotFoundError("this interpreter has no site-packages folder")
        return roots
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"site-packages path {str(path)!r} is not a directory")
    if _has_metadata(root):
        return [root]
    found = sorted(
        {
            p
            for pattern in ("lib*/python*/site-packages", "Lib/site-packages")
            for p in root.glob(pattern)
        }
    )
    found = [p for p in found if _has_metadata(p)]
    if not found:
        raise FileNotFoundError(
            f"{str(path)!r} holds no *.dist-info or *.egg-info folders and no "
            "lib/python*/site-packages: not a site-packages folder or a Python environment"
        )
    return found


def _has_metadata(folder: Path) -> bool:
    return any(folder.glob("*.dist-info")) or any(folder.glob("*.egg-info"))


def license_of(meta: importlib.metadata.PackageMetadata) -> str:
    """The licence the metadata declares, as one short string ("unknown" when it says none).

    ``License-Expression`` (SPDX, metadata 2.4) wins; then ``License`` when it is a name
    rather than the whole licence text pasted in; then the ``License ::`` classifiers.
    """
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = (meta.get("License") or "").strip()
    classifiers = [
        c.split("::")[-1].strip()
        for c in meta.get_all("Classifier") or []
        if c.startswith("License ::") and c.split("::")[-1].strip() != "OSI Approved"
    ]
    if text and text.upper() != "UNKNOWN" and "\n" not in text and len(text) <= 80:
        return text
    if classifiers:
        return " OR ".join(classifiers)
    if text and text.upper() != "UNKNOWN":
        first = text.splitlines()[0].strip()
        return first[:77] + "..." if len(first) > 80 else first
    return "unknown"


def skip_reason(relative: str) -> str | None:
    """Why a site-packages-relative ``.py`` path is not library code, or None to keep it."""
    parts = relative.split("/")
    name = parts[-1]
    if name.startswith("__editable__"):
        return "editable_hook"  # an editable install's import hook, generated by the installer
    folders = parts[:-1]
    if any(p in VENDOR_DIRS for p in folders):
        return "vendored"
    if any(p in TEST_DIRS for p in folders) or name == "conftest.py":
        return "tests"
    if name.startswith("test_") or name.endswith("_test.py"):
        return "tests"
    return None


class PyFile(NamedTuple):
    """A library file: where it is, and its name relative to its site-packages folder."""

    path: Path
    name: str


@dataclass(frozen=True)
class Package:
    """One installed distribution and its library ``.py`` files (sorted by name)."""

    name: str
    version: str
    license: str
    files: tuple[PyFile, ...]

    @property
    def key(self) -> str:
        return normalize(self.name)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "license": self.license}


@dataclass
class Inventory:
    """A scan of site-packages: the packages with Python files, and what was left out why."""

    roots: list[Path]
    packages: list[Package]
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    without_python: list[str] = field(default_factory=list)
    without_record: list[str] = field(default_factory=list)

    def by_key(self) -> dict[str, Package]:
        return {p.key: p for p in self.packages}

    def check_names(self, names: Iterable[str]) -> list[str]:
        """Normalised ``names``; a name that is not installed is an error (likely a typo)."""
        known = {normalize(n) for n in [*self.by_key(), *self.without_python]}
        keys = sorted({normalize(n) for n in names})
        missing = [k for k in keys if k not in known]
        if missing:
            where = ", ".join(str(r) for r in self.roots)
            raise LookupError(
                f"not installed in {where}: {', '.join(missing)} "
                f"(installed: {', '.join(sorted(self.by_key()))})"
            )
        return keys


def _version_key(version: str) -> tuple[int, object]:
    try:
        from packaging.version import Version

        return (1, Version(version))
    except Exception:  # packaging missing or a version it cannot parse
        return (0, version)


def _distributions(roots: Sequence[Path]) -> list[importlib.metadata.Distribution]:
    """One distribution per normalised name (the newest), sorted by name."""
    found: dict[str, list[importlib.metadata.Distribution]] = collections.defaultdict(list)
    for dist in importlib.metadata.distributions(path=[str(r) for r in roots]):
        name = dist.metadata["Name"]
        if name:
            found[normalize(name)].append(dist)
    return [
        max(found[key], key=lambda d: (d.files is not None, _version_key(d.version)))
        for key in sorted(found)
    ]


def scan(
    roots: str | Path | Sequence[Path] | None = None, *, prefer: Collection[str] = ()
) -> Inventory:
    """List the installed distributions under ``roots`` and their library ``.py`` files.

    ``roots`` is a ``site-packages=PATH`` value (see :func:`resolve_roots`) or already
    resolved folders. A file claimed by several distributions goes to one in ``prefer``
    (normalised names; the held-out ones, so shared code never reaches training), else to
    the first by name.
    """
    if roots is None or isinstance(roots, str | Path):
        roots = resolve_roots(roots)
    roots = [Path(os.path.abspath(r)) for r in roots]
    preferred = {normalize(n) for n in prefer}
    dists = _distributions(roots)
    dists.sort(
        key=lambda d: (
            normalize(d.metadata["Name"]) not in preferred,
            normalize(d.metadata["Name"]),
        )
    )
    inventory = Inventory(roots=roots, packages=[])
    owned: set[Path] = set()
    for dist in dists:
        meta = dist.metadata
        name = meta["Name"]
        if dist.files is None:
            inventory.without_record.append(name)
            continue
        files: list[PyFile] = []
        for entry in dist.files:
            if entry.suffix != ".py":
                continue
            path = Path(os.path.normpath(dist.locate_file(entry)))
            root = next((r for r in roots if path.is_relative_to(r)), None)
            if root is None:
                inventory.skipped["outside"] += 1
                continue
            relative = path.relative_to(root).as_posix()
            reason = skip_reason(relative)
            if reason is None and path in owned:
                reason = "shared"
            if reason is not None:
                inventory.skipped[reason] += 1
                continue
            owned.add(path)
            files.append(PyFile(path, relative))
        if not files:
            inventory.without_python.append(name)
            continue
        files.sort(key=lambda f: f.name)
        inventory.packages.append(Package(name, dist.version or "", license_of(meta), tuple(files)))
    inventory.packages.sort(key=lambda p: p.key)
    inventory.without_python.sort(key=normalize)
    inventory.without_record.sort(key=normalize)
    return inventory


def package_files(
    names: Iterable[str], roots: str | Path | Sequence[Path] | None = None
) -> Iterator[tuple[str, Path]]:
    """(package name, file) for the library ``.py`` files of the named installed packages.

    What the evaluator reads for held-out code: the same files, by the same rules (tests and
    vendored copies skipped), that ``--source site-packages`` would have trained on, had the
    packages not been ``--exclude``d. Unknown names raise :class:`LookupError`.
    """
    wanted = list(names)
    inventory = scan(roots, prefer=wanted)
    packages = inventory.by_key()
    for key in inventory.check_names(wanted):
        if key in packages:  # else installed without Python files
            package = packages[key]
            for file in package.files:
                yield package.name, file.path


def excluded_files(data_dir: str | Path) -> Iterator[tuple[str, Path]]:
    """The held-out packages' files of a dataset built with ``--exclude`` (from its manifest)."""
    import json

    manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
    site = manifest.get("site_packages")
    if not site or not site.get("excluded"):
        raise ValueError(f"{data_dir}: built without --source site-packages --exclude PKG")
    names = [p["name"] for p in site["excluded"]]
    yield from package_files(names, [Path(r) for r in site["roots"]])
