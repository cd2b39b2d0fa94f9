"""Paths inside a sandbox run: what a model may name, and how files get in.

Model-supplied paths are relative, `/`-separated and never climb out; workspace entries
copied in may not smuggle symlinks that point outside the workspace. Errors are
`SandboxPathError`, whose message names the path and the reason, raised before anything runs.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

RESERVED = ".council"
"""Where the parent's bookkeeping (junit, progress, violations) appears inside a run."""
_DRIVE = re.compile(r"^[A-Za-z]:")


class SandboxPathError(ValueError):
    """A path given for the sandbox is unsafe or unusable; the message names it and says why."""


def safe_relative_path(path: str) -> PurePosixPath:
    """Normalise a model-supplied relative path, rejecting anything that could leave the root.

    Rejected: empty, absolute in POSIX or Windows form, backslashes (Windows separators would
    be literal characters here, a confusing file name at best), NUL bytes, and any `..`.
    """
    if not isinstance(path, str) or not path.strip():
        raise SandboxPathError(f"{path!r}: empty path")
    if "\x00" in path:
        raise SandboxPathError(f"{path!r}: contains a NUL byte")
    if "\\" in path:
        raise SandboxPathError(f"{path!r}: contains a backslash (use '/' separators)")
    if path.startswith("/") or _DRIVE.match(path):
        raise SandboxPathError(f"{path!r}: absolute path; paths must be relative")
    pure = PurePosixPath(path)
    if ".." in pure.parts:
        raise SandboxPathError(f"{path!r}: contains '..'")
    if not pure.parts:
        raise SandboxPathError(f"{path!r}: names the root itself, not a file")
    return pure


def confine(root: Path, path: str) -> Path:
    """`root / path`, resolved, refusing symlinks that lead out of `root`.

    Only components that already exist can be symlinks; a missing tail resolves lexically,
    and `safe_relative_path` has already ruled out `..`.
    """
    relative = safe_relative_path(path)
    base = root.resolve()
    current = base
    for part in relative.parts:
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(base):
            raise SandboxPathError(
                f"{path!r}: {current.relative_to(base)} is a symlink to {current.resolve()}, "
                f"outside {base}"
            )
    target = (base / relative).resolve()
    if not target.is_relative_to(base):  # e.g. a link out and back in that we did not see
        raise SandboxPathError(f"{path!r}: resolves to {target}, outside {base}")
    return target


# -- models --------------------------------------------------------------------------------


def validate_inputs(files: Mapping[str, str], copy: Sequence[str], workspace: Path | None) -> None:
    """Reject bad paths before anything is created, so the caller's error is immediate."""
    for name in [*files, *copy]:
        if safe_relative_path(name).parts[0] == RESERVED:
            raise SandboxPathError(f"{name!r}: {RESERVED}/ is reserved for the sandbox itself")
    if copy and workspace is None:
        raise SandboxPathError(f"{copy[0]!r}: `copy` needs a workspace to copy from")


def _check_tree_links(source: Path, workspace: Path, entry: str) -> None:
    """Every symlink under a copied directory must stay inside the workspace and not loop."""
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        for name in [*dirnames, *filenames]:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = link.resolve()
            shown = link.relative_to(workspace)
            if not target.is_relative_to(workspace):
                raise SandboxPathError(
                    f"{entry!r}: {shown} is a symlink to {target}, outside the workspace"
                )
            if link.is_dir() and link.parent.resolve().is_relative_to(target):
                raise SandboxPathError(f"{entry!r}: {shown} is a symlink loop")


def copy_in(workspace: Path, entries: Sequence[str], root: Path) -> None:
    ws = workspace.resolve()
    for entry in entries:
        source = confine(ws, entry)
        if not source.exists():
            raise SandboxPathError(f"{entry!r}: not found in workspace {ws}")
        destination = root / safe_relative_path(entry)
        try:
            if source.is_dir():
                _check_tree_links(source, ws, entry)
                shutil.copytree(
                    source,
                    destination,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    ignore_dangling_symlinks=True,
                    dirs_exist_ok=True,
                )
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
        except OSError as exc:
            raise SandboxPathError(f"{entry!r}: cannot copy into the sandbox: {exc}") from exc


def write_files(files: Mapping[str, str], root: Path) -> None:
    for name, content in files.items():
        target = confine(root, name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as exc:
            raise SandboxPathError(f"{name!r}: cannot write into the sandbox: {exc}") from exc


def tree_bytes(root: Path) -> int:
    """Bytes of the regular files under `root`: what a run's tmpfs must hold before any write."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total
