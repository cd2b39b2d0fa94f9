"""Configuration: shape, precedence, and clear messages for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.loading import ConfigSource, load_settings, merge_and_validate
from providers.settings import Settings

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "config").glob("*.toml"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_complete_and_valid() -> None:
    settings = Settings()
    assert settings.providers["ollama"].is_local
    assert settings.roles.generator[0].target == "ollama:qwen2.5-coder:7b"
    assert settings.council.max_refinement_passes == 3
    assert settings.council.consensus_threshold == 0.8
    assert settings.completion.backend == "specialist"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_load_without_problems(example: Path, tmp_path: Path) -> None:
    loaded = load_settings(None, env={"COUNCIL_CONFIG": str(example)}, home=tmp_path)
    assert loaded.problems == ()
    assert loaded.sources == (str(example),)


def test_examples_cover_every_documented_server() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"ollama", "openai", "vllm", "llamacpp", "lmstudio", "council"} <= names


def test_precedence_user_then_workspace_then_env_then_editor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(
        home / ".config/council/council.toml",
        "[council]\nmax_refinement_passes = 1\n"
        "request_timeout_secs = 11\nbudget_usd = 1.0\nlocal_only = true\n",
    )
    workspace = tmp_path / "ws"
    write(
        workspace / "council.toml",
        "[council]\nmax_refinement_passes = 2\nrequest_timeout_secs = 22\n",
    )
    explicit = write(tmp_path / "explicit.toml", "[council]\nmax_refinement_passes = 4\n")
    loaded = load_settings(
        workspace,
        env={"COUNCIL_CONFIG": str(explicit)},
        home=home,
        overrides={"council": {"local_only": False}},
    )
    council = loaded.settings.council
    assert council.max_refinement_passes == 4  # $COUNCIL_CONFIG over workspace
    assert council.request_timeout_secs == 22  # workspace over user
    assert council.budget_usd == 1.0  # user file over defaults
    assert council.local_only is False  # editor settings over everything
    assert len(loaded.sources) == 4 and loaded.problems == ()


def test_tables_merge_key_by_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(
        home / ".config/council/council.toml",
        '[providers.cloud]\nbase_url = "https://api.example.com/v1"\napi_key_env = "K"\n'
        '[roles]\ngenerator = ["cloud:big"]\ntester = ["cloud:small"]\n',
    )
    workspace = tmp_path / "ws"
    write(workspace / "council.toml", '[roles]\ntester = ["cloud:tiny"]\n')
    settings = load_settings(workspace, env={}, home=home).settings
    assert set(settings.providers) == {"cloud"}
    assert settings.roles.generator[0].target == "cloud:big"
    assert settings.roles.tester[0].target == "cloud:tiny"


def test_broken_toml_names_the_file_and_is_ignored(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    bad = write(workspace / "council.toml", "[council\nmax_refinement_passes = 2\n")
    loaded = load_settings(workspace, env={}, home=tmp_path)
    assert loaded.settings == Settings()
    (problem,) = loaded.problems
    assert problem.source == str(bad) and "not valid TOML" in problem.message
    assert "line 1" in problem.message


def test_bad_values_name_file_key_and_problem_and_keep_the_rest(tmp_path: Path) -> None:
    source = ConfigSource(
        "ws/council.toml",
        {
            "council": {
                "max_refinement_passes": -1,
                "consensus_threshold": 0.5,
                "max_refinment_passes": 2,
            },
            "router": {"classifier": "magic"},
            "providers": {
                "bad": {"base_url": "ftp://nowhere"},
                "good": {"base_url": "http://127.0.0.1:1/v1"},
            },
            "roles": {"generator": ["good:m", "no-colon"], "tester": ["ghost:m"]},
        },
    )
    settings, problems = merge_and_validate([source])
    text = [str(p) for p in problems]
    assert settings.council.consensus_threshold == 0.5  # good sibling kept
    assert settings.council.max_refinement_passes == 3  # bad value -> default
    assert settings.router.classifier == "auto"
    assert "bad" not in settings.providers and "good" in settings.providers
    assert all(p.source == "ws/council.toml" for p in problems)
    assert any(
        "council.max_refinement_passes: Input should be greater than or equal to 0" in t
        for t in text
    )
    assert any("council.max_refinment_passes: unknown key" in t for t in text)
    assert any(t.startswith("ws/council.toml: router.classifier:") for t in text)
    assert any("providers.bad.base_url: must be an http(s) URL" in t for t in text)
    assert any("roles.generator[1].target: expected 'provider:model'" in t for t in text)
    assert any("roles.tester: names unknown provider in 'ghost:m'" in t for t in text)
    assert settings.roles.tester == ()


def test_non_table_values_do_not_crash() -> None:
    settings, problems = merge_and_validate(
        [ConfigSource("a.toml", {"council": 3, "roles": {"generator": 7}, "providers": []})]
    )
    assert settings.council == Settings().council
    assert {p.key for p in problems} >= {"council", "roles.generator", "providers"}


def test_missing_council_config_file_is_reported(tmp_path: Path) -> None:
    loaded = load_settings(None, env={"COUNCIL_CONFIG": str(tmp_path / "nope.toml")}, home=tmp_path)
    assert any("$COUNCIL_CONFIG" in str(p) and "not a file" in str(p) for p in loaded.problems)


def test_locality_is_explicit_or_loopback_only() -> None:
    settings = Settings.model_validate(
        {
            "providers": {
                "a": {"base_url": "http://localhost:11434/v1"},
                "b": {"base_url": "http://127.0.0.2:8000/v1"},
                "c": {"base_url": "http://[::1]:8000/v1"},
                "d": {"base_url": "http://192.168.1.9:8000/v1"},
                "e": {"base_url": "http://192.168.1.9:8000/v1", "local": True},
                "f": {"base_url": "https://api.openai.com/v1"},
            }
        }
    )
    local = {n for n, p in settings.providers.items() if p.is_local}
    assert local == {"a", "b", "c", "e"}


def test_workspace_context_is_on_for_providers_and_off_for_the_specialist_by_default() -> None:
    from providers.settings import CompletionConfig

    assert not CompletionConfig().uses_workspace_context()  # measured: no gain for it
    assert CompletionConfig(backend="lb:m").uses_workspace_context()
    assert CompletionConfig(workspace_context=True).uses_workspace_context()  # bool = on/off
    assert not CompletionConfig(backend="lb:m", workspace_context="off").uses_workspace_context()
