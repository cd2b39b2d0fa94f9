"""Unseen-package completion cases: built from real files, scored as the editor shows them,
and the same figures through the LSP bench and the in-process evaluator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from council.completion.unseen import build_cases, score, statement_lines, summarize

SOURCE = '''\
"""Module docstring
spanning lines."""
import os


def f(a,
      b):
    """Doc."""
    x = (a +
         b)
    if x:
        return os.sep
    return x
'''


def test_statement_lines_skip_docstring_and_continuation_lines():
    lines = SOURCE.split("\n")
    starts = [lines[i].strip() for i in statement_lines(SOURCE)]
    assert starts == [
        '"""Module docstring',
        "import os",
        "def f(a,",
        '"""Doc."""',
        "x = (a +",
        "if x:",
        "return os.sep",
        "return x",
    ]
    assert statement_lines("def broken(:\n") == []


def test_cases_reduce_the_line_to_its_indentation_and_spread_over_packages(tmp_path: Path):
    files = []
    for package in ("alpha", "beta"):
        for n in range(3):
            path = tmp_path / package / f"m{n}.py"
            path.parent.mkdir(exist_ok=True)
            path.write_text(SOURCE)
            files.append((package, path))
    cases = build_cases(files, 7, seed=3)
    assert len(cases) == 7
    assert sorted({c.package for c in cases}) == ["alpha", "beta"]
    assert abs(sum(c.package == "alpha" for c in cases) - 3.5) <= 0.5
    assert build_cases(files, 7, seed=3) == cases  # reproducible
    for case in cases:
        original = SOURCE.split("\n")[case.line]
        line = case.text.split("\n")[case.line]
        assert line == original[: case.column] and not line.strip()
        assert case.expected == original.strip()
        assert case.text[: case.offset].endswith(line)
        assert case.text[case.offset :].startswith("\n")


def test_scoring_uses_the_first_line_and_reports_similarity():
    assert score("return x\n    more", "return x") == (True, 1.0)
    hit, ratio = score("return y", "return x")
    assert not hit and 0.8 < ratio < 1
    assert score("", "return x") == (False, 0.0)


def test_summary_counts_per_package_and_latency(tmp_path: Path):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    cases = build_cases([("alpha", path)], 4, seed=0)
    results = [(c, c.expected if i % 2 else "", 10.0 * (i + 1)) for i, c in enumerate(cases)]
    summary = summarize(results)
    assert summary["cases"] == 4 and summary["exact_match"] == 0.5
    assert summary["answered"] == 0.5
    assert summary["per_package"] == {"alpha": {"cases": 4, "exact_match": 0.5}}
    assert summary["latency"]["p50_ms"] == pytest.approx(25.0)


@pytest.mark.slow
def test_train_eval_scores_unseen_packages_with_the_shipped_model():
    """`council train eval --unseen` runs the cases through the server's completer
    with the specialist backend, in process, and reports exact match, similarity, latency."""
    env_cases = ["--unseen-cases", "6"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "slm_council",
            "train",
            "eval",
            "training/default_model",
            "--unseen",
            "click",
            *env_cases,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(done.stdout)["unseen"]
    assert report["cases"] == 6 and report["packages"] == ["click"]
    assert 0 <= report["exact_match"] <= 1 and report["latency"]["p50_ms"] > 0
    assert len(report["examples"]) == 5
