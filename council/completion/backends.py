"""Where suggestions come from: the in-process specialist, or a provider through the router.

Both answer `infill(prefix, suffix, ...)` asynchronously and honour a `CancelToken`:

- `SpecialistBackend` loads the model in a daemon thread (JAX is imported there, never at
  server start-up) and runs inference on one dedicated daemon thread, so the event loop never
  blocks and requests run in arrival order; the token is polled between decode steps, so a
  superseded request stops within one token. Daemon threads because a model still compiling
  must not hold up the editor's `exit`.
- `RouterBackend` sends a `CompletionRequest` through `Router.complete` (retries, cooldowns,
  privacy rules and budgets apply as for any call). By default it sends `suffix` and lets the
  provider format the FIM prompt; `providers.openai_compat` falls back to an infill prompt
  over chat when the endpoint refuses `suffix`. With `fim_format = "auto"` and a model whose
  family is known from its name, a refusal switches later requests to the raw FIM prompt of
  that family (a code model does better with its own sentinels than with chat); a named
  format is always sent raw. Cancelling the awaiting task closes the HTTP request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from council.completion.context import approx_tokens
from council.completion.worker import Worker, settle
from council.imports import numpy
from providers.base import CompletionRequest
from providers.fim_formats import FORMATS, FimFormat, detect
from providers.router import Router
from providers.settings import CompletionConfig, Tier
from providers.specialist import DEFAULT_MODEL_DIR, Specialist, SpecialistUnavailable, shared

log = logging.getLogger(__name__)

MAX_STOPS = 4  # the OpenAI API takes at most four stop sequences


class CancelToken:
    """Set once, by the event loop; read from any thread (the specialist polls it)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        if self._event.is_set():
            return
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        if self.cancelled:
            callback()
        else:
            self._callbacks.append(callback)


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    model_s: float
    finish_reason: str | None  # "stop", "length", "cancelled", ...
    via: str  # "specialist", "fim", "fim-over-chat", "fim-raw:qwen", ...
    prompt_tokens: int = 0
    reused_tokens: int = 0  # the specialist's KV cache reuse from the previous request


class BackendUnavailable(RuntimeError):
    """The backend cannot answer (still loading, or failed to load); the message says why."""


class Backend(Protocol):
    name: str

    @property
    def ready(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    def start(self) -> None:
        """Begin loading in the background, if there is anything to load."""

    def count_tokens(self, text: str) -> int: ...

    def prompt_budget(self, configured: int, max_new_tokens: int) -> int:
        """Prompt tokens that fit beside `max_new_tokens` of output."""

    async def infill(
        self,
        prefix: str,
        suffix: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        temperature: float,
        cancel: CancelToken,
        path: str | None = None,
        settled: Callable[[str], bool] | None = None,
        deadline: float | None = None,
        seed: int = 0,
    ) -> ModelAnswer:
        """`settled(text)` True: post-processing has cut the text for good, stop decoding.
        `deadline` (time.perf_counter()): decode no more tokens after it (finish_reason
        "deadline"). Both are hints a backend that cannot stop early may ignore. `seed`
        varies sampled candidates (temperature > 0) where the backend takes one."""

    async def aclose(self) -> None: ...


class SpecialistBackend:
    """The in-process model (`providers.specialist.Specialist`)."""

    def __init__(self, specialist: Specialist) -> None:
        self.specialist = specialist
        self.name = specialist.name
        self._error: str | None = None
        self._started = False
        self._warmed = False
        self._done = threading.Event()
        self._worker: Worker | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._warmed and self.specialist.ready

    @property
    def error(self) -> str | None:
        return self._error

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name="specialist-load", daemon=True).start()

    def loaded(self) -> asyncio.Future[None]:
        """Resolves when loading ends, either way (`error` says how)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                future.set_result(None)
            else:
                self._waiters.append((loop, future))
        return future

    def _load(self) -> None:
        try:
            path = Path(self.specialist.model_path)
            if not path.is_dir():  # say so without paying for importing JAX
                raise SpecialistUnavailable(
                    f"the specialist model could not be loaded: {path} is not a model "
                    "directory. Set [completion] model_path to a training run or a Hugging "
                    'Face export, or use a provider: [completion] backend = "ollama:MODEL"'
                )
            numpy()  # first, under the lock: JAX imports it (see council.imports)
            self.specialist.ensure_loaded()
            # One real infill, so the first request does not pay for compiling the decode
            # step (a warm-up prompt of end tokens can stop before its first decode).
            self.specialist.infill("def add(a, b):\n    return", "\n", max_tokens=2)
            self._warmed = True
        except SpecialistUnavailable as exc:
            self._error = str(exc)
        except Exception as exc:  # load() contains its own failures; this is a backstop
            log.exception("specialist load failed")
            self._error = f"the specialist failed to load: {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._done.set()
                waiters, self._waiters = self._waiters, []
            for loop, future in waiters:
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(settle, future, None, None)

    def count_tokens(self, text: str) -> int:
        if not self.specialist.ready:
            return approx_tokens(text)
        return self.specialist.count_tokens(text)

    def prompt_budget(self, configured: int, max_new_tokens: int) -> int:
        context = getattr(self.specialist, "context_tokens", None) or getattr(
            self.specialist, "max_context_tokens", configured + max_new_tokens
        )
        # 3 FIM sentinels, and a margin for counting line by line (see LineTokenCounter)
        room = int((int(context) - max_new_tokens - 3) * 0.92)
        return max(16, min(configured, room))

    async def infill(
        self,
        prefix: str,
        suffix: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        temperature: float,
        cancel: CancelToken,
        path: str | None = None,
        settled: Callable[[str], bool] | None = None,
        deadline: float | None = None,
        seed: int = 0,
    ) -> ModelAnswer:
        if not self.ready:
            raise BackendUnavailable(self._error or "the specialist is still loading")
        if self._worker is None:
            self._worker = Worker("specialist-infer")

        def run() -> ModelAnswer:
            if cancel.cancelled:
                return ModelAnswer("", 0.0, "cancelled", "specialist")
            if deadline is not None and time.perf_counter() >= deadline:
                return ModelAnswer("", 0.0, "deadline", "specialist")  # a queued extra, too late
            started = time.perf_counter()  # the whole call: prompt encoding is model work too
            out = self.specialist.infill(
                prefix,
                suffix,
                max_tokens=max_tokens,
                stop=tuple(stop),
                temperature=temperature,
                cancelled=lambda: cancel.cancelled,
                stop_when=settled,
                deadline=deadline,
                seed=seed,
            )
            elapsed = time.perf_counter() - started
            return ModelAnswer(
                out.text,
                max(out.model_s, elapsed),
                out.finish_reason,
                "specialist",
                out.prompt_tokens,
                out.reused_tokens,
            )

        return await self._worker.submit(run)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.stop()


RouterLease = Callable[[], AbstractAsyncContextManager[Router]]


@contextlib.asynccontextmanager
async def fixed_router(router: Router) -> AsyncIterator[Router]:
    """A lease on a router the caller owns (the CLI)."""
    yield router


class RouterBackend:
    """A `provider:model` target reached through the router."""

    def __init__(self, target: str, lease: RouterLease, fim_format: str = "auto") -> None:
        self.tier = Tier(target=target)
        self.name = target
        self._lease = lease
        self._forced: FimFormat | None = FORMATS.get(fim_format)
        self._family = detect(self.tier.model) if fim_format == "auto" else None
        self._suffix_refused = False
        #: how the provider found FIM works (providers.openai_compat.fim_way), asked once
        self._way: str | None = None

    @property
    def ready(self) -> bool:
        return True

    @property
    def error(self) -> str | None:
        return None

    def start(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def prompt_budget(self, configured: int, max_new_tokens: int) -> int:
        return configured

    @property
    def raw_format(self) -> FimFormat | None:
        """The family format sent raw now (None: `suffix` is sent)."""
        if self._forced is not None:
            return self._forced
        if self._way in FORMATS:
            return FORMATS[self._way]
        if self._way == "none":  # the canary found neither suffix nor a raw prompt works
            return None
        return self._family if self._suffix_refused else None

    async def _find_way(self) -> None:
        """With ``fim_format = "auto"``, ask the provider once how FIM really works there:
        a server may accept ``suffix`` and scramble it (llama-cpp-python)."""
        if self._forced is not None or self._way is not None:
            return
        async with self._lease() as router:
            provider = router.providers.get(self.tier.provider)
            find = getattr(provider, "fim_way", None)
            if find is not None:
                self._way = await find(self.tier.model) or "none"
            else:
                self._way = "suffix"

    async def infill(
        self,
        prefix: str,
        suffix: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        temperature: float,
        cancel: CancelToken,
        path: str | None = None,
        settled: Callable[[str], bool] | None = None,
        deadline: float | None = None,
        seed: int = 0,
    ) -> ModelAnswer:
        # A provider answers whole (no stream): `settled` and `deadline` cannot stop it
        # early; its time is bounded by completion.timeout_secs instead. The request has no
        # seed field: sampled candidates differ by the provider's own randomness.
        await self._find_way()
        fmt = self.raw_format
        stops = list(stop)
        if fmt is not None:  # the family's end token first: the list may be cut to four
            stops = [fmt.stops[0], *stops, *(s for s in fmt.stops[1:] if s not in stops)]
            request = CompletionRequest(
                prompt=fmt.build(prefix, suffix),
                max_tokens=max_tokens,
                temperature=temperature,
                stop=tuple(stops[:MAX_STOPS]),
            )
        else:
            request = CompletionRequest(
                prompt=prefix,
                suffix=suffix,
                max_tokens=max_tokens,
                temperature=temperature,
                stop=tuple(stops[:MAX_STOPS]),
            )
        async with self._lease() as router:
            routed = await router.complete("completion", request, tiers=[self.tier], path=path)
        result = routed.result
        if result.via == "fim-over-chat" and self._family is not None:
            log.info(
                "%s refused suffix; later requests use the raw %s FIM prompt",
                self.name,
                self._family.name,
            )
            self._suffix_refused = True
        via = f"fim-raw:{fmt.name}" if fmt is not None else result.via
        return ModelAnswer(
            result.text, result.latency_s, result.finish_reason, via, result.usage.prompt_tokens
        )

    async def aclose(self) -> None:
        return None


def build_backend(
    config: CompletionConfig, lease: RouterLease, *, reuse: Backend | None = None
) -> Backend:
    """The backend `[completion] backend` names; `reuse` is kept when it is the same model
    (a change to, say, `max_lines` must not reload and recompile the specialist)."""
    if config.backend == "specialist":
        path = Path(config.model_path).expanduser() if config.model_path else DEFAULT_MODEL_DIR
        context = config.max_context_tokens + config.max_tokens_multiline + 3
        if (
            isinstance(reuse, SpecialistBackend)
            and reuse.specialist.model_path == path
            and reuse.specialist.max_context_tokens == context
        ):
            return reuse
        return SpecialistBackend(shared(path, max_context_tokens=context))
    return RouterBackend(config.backend, lease, config.fim_format)
