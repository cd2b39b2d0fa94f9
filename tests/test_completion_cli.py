"""`council complete FILE:LINE:COL`: a provider backend and the specialist (the tiny echo
model from `tests.training_fixtures`, exported to the Hugging Face format once per session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from council.completion.terminal import LocationError, offset_of, parse_location
from providers.loopback import LoopbackProvider, Reply
from tests.training_fixtures import build_echo_model


@pytest.fixture(scope="session")
def echo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_echo_model(tmp_path_factory.getbasetemp() / "echo-model")


# -- council complete ---------------------------------------------------------------------------


def test_locations_are_one_based() -> None:
    loc = parse_location("src/app.py:2:5")
    assert (loc.path, loc.line, loc.column) == (Path("src/app.py"), 2, 5)
    assert offset_of("ab\ncdef\n", 2, 3) == 5
    assert offset_of("ab\ncdef\n", 2, 5) == 7  # the end of the line
    for bad in ("app.py", "app.py:x:1", "app.py:0:1"):
        with pytest.raises(LocationError):
            parse_location(bad)
    with pytest.raises(LocationError, match="past the end of line"):
        offset_of("ab\n", 1, 9)


def _cli(args: list[str], config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COUNCIL_CONFIG": str(config), "HOME": str(cwd / "home")}
    return subprocess.run(
        [sys.executable, "-m", "slm_council", "complete", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_council_complete_prints_the_completion(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def add(a, b):\n    return \n", encoding="utf-8")
    with LoopbackProvider(models=("starcoder2:3b",)) as lb:
        config = tmp_path / "council.toml"
        config.write_text(
            f'[providers.lb]\nbase_url = "{lb.base_url}"\n'
            '[completion]\nbackend = "lb:starcoder2:3b"\n',
            encoding="utf-8",
        )
        lb.script(Reply(content="a + b\n\nprint(1)"), Reply(content="a - b"))
        plain = _cli([f"{source}:2:12"], config, tmp_path)
        assert plain.returncode == 0 and plain.stdout == "a + b\n"
        report = json.loads(
            _cli([f"{source}:2:12", "--json", "--no-invoked"], config, tmp_path).stdout
        )
        assert report["text"] == "a - b" and report["backend"] == "lb:starcoder2:3b"
        assert report["mode"] == "single" and report["timings_ms"]["total"] > 0
        assert [r.body["max_tokens"] for r in lb.requests] == [128, 48]
        bad = _cli([f"{source}:9:1"], config, tmp_path)
        assert bad.returncode == 2 and "past the end of the file" in bad.stderr


@pytest.mark.slow
def test_council_complete_with_the_specialist(tmp_path: Path, echo_model: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("total = fo\n", encoding="utf-8")
    config = tmp_path / "council.toml"
    config.write_text(f'[completion]\nmodel_path = "{echo_model}"\n', encoding="utf-8")
    result = _cli([f"{source}:1:11", "--json"], config, tmp_path)
    report = json.loads(result.stdout)
    # the echo model repeats a token; with token healing the first one is re-chosen among
    # tokens extending the prompt's last, so assert the shape, not the exact letters
    assert report["reason"] == "ok" and report["text"].strip(), report
    assert report["via"] == "specialist" and report["timings_ms"]["load"] > 0
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[completion]\nmodel_path = "{tmp_path / "nope"}"\n', encoding="utf-8")
    failed = _cli([f"{source}:1:11"], broken, tmp_path)
    assert failed.returncode == 1 and "is not a model directory" in failed.stderr
