"""One settings schema: VS Code's settings and docs/settings.md are generated from the model.

`scripts/gen_settings.py --check` fails when editors/vscode/package.json or docs/settings.md
differ from what providers/settings.py generates, so a field added to the model without
regenerating (or a hand edit of a generated entry) fails here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from providers.fim_formats import FORMATS
from providers.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gen_settings.py"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vscode_properties() -> dict:
    package = json.loads((REPO / "editors/vscode/package.json").read_text(encoding="utf-8"))
    return package["contributes"]["configuration"]["properties"]


def test_generated_files_are_up_to_date() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_check_fails_on_drift_and_regenerating_keeps_the_rest(
    gen: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package, reference = tmp_path / "package.json", tmp_path / "settings.md"
    text = gen.PACKAGE_JSON.read_text(encoding="utf-8")
    edited = text.replace('"SLM Coding Council"', '"SLM Coding Council (edited)"', 1)
    key = '"council.completion.snippets": {'
    assert edited.count(key) == 1  # a key once missing from package.json
    edited = edited.replace(key, '"council.completion.snippetz": {')
    package.write_text(edited, encoding="utf-8")
    reference.write_text(gen.REFERENCE_MD.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(gen, "PACKAGE_JSON", package)
    monkeypatch.setattr(gen, "REFERENCE_MD", reference)

    assert gen.main(["--check"]) == 1
    assert package.read_text(encoding="utf-8") == edited  # --check writes nothing
    assert gen.main([]) == 0
    fixed = package.read_text(encoding="utf-8")
    assert key in fixed and "snippetz" not in fixed
    # outside contributes.configuration, not a byte changed (the edit to displayName stays)
    assert fixed == text.replace('"SLM Coding Council"', '"SLM Coding Council (edited)"', 1)
    assert gen.main(["--check"]) == 0

    reference.write_text(reference.read_text(encoding="utf-8") + "\nhand edit\n")
    assert gen.main(["--check"]) == 1


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    seen.add(model)
    for field in model.model_fields.values():
        for sub in _nested(field.annotation):
            if sub not in seen:
                _models(sub, seen)
    return seen


def _nested(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _nested(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        found += _nested(getattr(meta, "json_schema_input_type", None))
    return found


def test_every_setting_has_a_description() -> None:
    models = _models(Settings, set())
    assert {m.__name__ for m in models} >= {"ProviderConfig", "Tier", "PrivacyRule", "Price"}
    missing = [
        f"{model.__name__}.{name}"
        for model in models
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert missing == []


def test_every_key_is_a_vscode_setting_and_the_drifted_ones_are_back() -> None:
    props = vscode_properties()
    for table, field in Settings.model_fields.items():
        if table in ("council", "completion"):
            assert field.annotation is not None
            for key in field.annotation.model_fields:  # type: ignore[union-attr]
                assert f"council.{table}.{key}" in props
        else:
            assert f"council.{table}" in props
    for key in ("completion.snippets", "completion.snippet_tokens", "council.local_candidates"):
        entry = props[f"council.{key}"]
        assert entry["default"] is None and entry["markdownDescription"]
    assert props["council.completion.snippet_tokens"]["maximum"] == 4096
    sandbox = props["council.sandbox"]["properties"]
    assert set(sandbox) == set(Settings.model_fields["sandbox"].annotation.model_fields)  # type: ignore[union-attr]
    # the extension's own settings are kept
    assert {"council.server.command", "council.trace.server"} <= set(props)


def test_fim_formats_come_from_providers_fim_formats() -> None:
    enum = vscode_properties()["council.completion.fim_format"]["enum"]
    assert enum == ["auto", "suffix", *FORMATS, None]
    assert Settings.model_validate({"completion": {"fim_format": "starcoder-spm"}})


def test_the_neovim_plugin_leaves_server_keys_to_the_server() -> None:
    lua = (REPO / "editors/neovim/lua/council/init.lua").read_text(encoding="utf-8")
    assert 'vim.validate("settings",' in lua  # the table itself is still checked
    assert 'vim.validate("settings.' not in lua
    assert "starcoder" not in lua  # no second copy of the FIM formats


def test_sandbox_limits_are_one_model() -> None:
    from council.sandbox import DEFAULT_LIMITS, SandboxLimits
    from providers import settings

    assert SandboxLimits is settings.SandboxLimits
    assert Settings().sandbox == DEFAULT_LIMITS
    assert not hasattr(settings, "SandboxConfig")


def test_the_sandbox_runs_the_interpreter_its_limits_name(tmp_path: Path) -> None:
    """`[sandbox] python` travels with the limits: a caller that names no interpreter gets it."""
    import anyio

    from council.sandbox import SandboxLimits, run_script

    missing = str(tmp_path / "no-such-python")
    limits = SandboxLimits(timeout_secs=5, python=missing)
    result = anyio.run(lambda: run_script({"hello.py": "print(1)\n"}, "hello.py", limits=limits))
    assert result.error is not None and missing in result.error
