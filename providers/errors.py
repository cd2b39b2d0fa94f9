"""Typed provider failures.

The router decides what to do from the class alone: `Retryable` failures are retried inside a
tier with backoff and count towards the endpoint's cooldown; everything else escalates to the
next tier at once (or, for policy errors, stops the run). Messages are redacted of secrets
before they are built, so they are safe to log and to show in the editor.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Base class; `target` is the `provider:model` that failed, when known."""

    def __init__(self, message: str, *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target
        self.message = message

    def __str__(self) -> str:
        return f"{self.target}: {self.message}" if self.target else self.message


class Retryable(ProviderError):
    """Transient: worth trying the same endpoint again after a pause."""

    retry_after: float | None = None


class RateLimited(Retryable):
    def __init__(
        self, message: str, *, target: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, target=target)
        self.retry_after = retry_after


class ServerFault(Retryable):
    def __init__(self, message: str, *, target: str | None = None, status: int = 500) -> None:
        super().__init__(message, target=target)
        self.status = status


class ProviderTimeout(Retryable):
    pass


class ConnectionFailed(Retryable):
    pass


class MalformedResponse(Retryable):
    """The endpoint answered 200 with something that is not the protocol (bad JSON, cut stream)."""


class RequestRejected(ProviderError):
    """4xx other than 429: retrying the same request will not help; the next tier might."""

    def __init__(self, message: str, *, target: str | None = None, status: int = 400) -> None:
        super().__init__(message, target=target)
        self.status = status


class CapabilityMissing(RequestRejected):
    """The endpoint refused a feature (FIM `suffix`, JSON schema); callers fall back."""

    def __init__(self, message: str, *, target: str | None = None, capability: str = "") -> None:
        super().__init__(message, target=target, status=400)
        self.capability = capability


class QualityFailure(ProviderError):
    """Raised by a caller's acceptance check (e.g. output still invalid after one repair)."""


class PolicyError(ProviderError):
    """A configuration or policy refuses the call; escalation cannot fix it."""


class NoTiers(PolicyError):
    pass


class LocalOnlyViolation(PolicyError):
    pass


class BudgetExceeded(PolicyError):
    pass


class AllTiersFailed(ProviderError):
    """Every eligible tier was tried (or cooling down); `attempts` says what happened to each,
    and `errors` holds the failures themselves, so that :meth:`hint` can say what to do."""

    def __init__(
        self, message: str, attempts: list[str], errors: list[ProviderError] | None = None
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.errors = list(errors or [])

    def __str__(self) -> str:
        return self.message + "".join(f"\n  - {a}" for a in self.attempts)

    def hint(self) -> str:
        """What to do, from what actually failed last: a server that answered with output
        that could not be used needs a different fix than one that cannot be reached."""
        last = self.errors[-1] if self.errors else None
        if isinstance(last, QualityFailure | MalformedResponse):
            return (
                f"The server answered, but its output could not be used ({last}). A stronger "
                "model for this role, or an escalation tier under [roles], may help."
            )
        if isinstance(last, CapabilityMissing):
            return (
                f"The server does not support what was asked ({last}); set that capability "
                "to false under the provider's [capabilities] so the fallback is used."
            )
        if isinstance(last, RequestRejected):
            return (
                f"The server refused the request ({last}). Check the model name, the API key "
                "and the server's limits (context length)."
            )
        if isinstance(last, ServerFault):
            return f"The server failed ({last}); its own log says why."
        if isinstance(last, RateLimited):
            return f"The server is rate-limiting ({last}); wait, or add another tier."
        return (
            "Check that the provider is running and configured, or add an escalation tier "
            "for that role under [roles]."
        )
