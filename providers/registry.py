"""Build the live providers for a configuration.

Kept separate from the router so callers (CLI, language server, tests) can add providers that
are not HTTP endpoints, such as the in-process specialist model, under their own names.
"""

from __future__ import annotations

from collections.abc import Mapping

from providers.base import Provider
from providers.openai_compat import OpenAICompatProvider
from providers.settings import Settings


def build_providers(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    extra: Mapping[str, Provider] | None = None,
) -> dict[str, Provider]:
    built: dict[str, Provider] = {
        name: OpenAICompatProvider(
            name,
            config,
            timeout_secs=settings.council.request_timeout_secs,
            probe_timeout_secs=settings.router.probe_timeout_secs,
            env=env,
        )
        for name, config in settings.providers.items()
    }
    built.update(extra or {})
    return built


async def close_all(providers: Mapping[str, Provider]) -> None:
    for provider in providers.values():
        await provider.aclose()
