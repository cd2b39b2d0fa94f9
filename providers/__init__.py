"""Model providers, configuration loading and the router.

Every model call in the project goes through this package: `settings` defines the typed
`council.toml` shape, `loading` merges the configuration sources, `openai_compat` talks to
any OpenAI-compatible endpoint, `probe` finds out what an endpoint can do, and `router`
maps council roles to ordered tiers of provider/model targets with retries, cooldowns,
budgets and the local-only privacy policy.
"""
