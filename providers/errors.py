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
    """Every eligible tier was tried (or cooling down); `attempts` says what happened to each."""

    def __init__(self, message: str, attempts: list[str]) -> None:
        super().__init__(message)
        self.attempts = attempts

    def __str__(self) -> str:
        return self.message + "".join(f"\n  - {a}" for a in self.attempts)
