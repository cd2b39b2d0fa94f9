"""The in-process specialist: the project's own small code model behind inline completions.

It is the default ``[completion] backend`` ("specialist"). The model directory is
``[completion] model_path`` or, when that is empty, the default model shipped inside the
package (``training/default_model``). Loading imports JAX and compiles the decode path,
which takes seconds, so the server calls :meth:`Specialist.load` in a worker thread after
``initialized``; until it is ready, :attr:`ready` is False and callers answer with nothing
instead of waiting.

Inference is blocking and single-flight (one :class:`training.sample.Generator`, one lock):
callers run :meth:`infill` in a worker thread. Between calls the generator keeps the KV
cache of the last prompt, so the next keystroke prefills only the tokens that changed. The
prompt is built suffix-first (SPM order) for that reason: typing at the cursor appends to
the prompt instead of editing its middle. A ``cancelled`` callback is checked between decode
steps, so a superseded request stops within one token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "training" / "default_model"


@dataclass
class InfillResult:
    text: str
    model_s: float  # time spent in the model (prefill + decode)
    prompt_tokens: int
    reused_tokens: int  # prompt tokens whose KV cache came from the previous call
    finish_reason: str  # "stop", "length", "context" or "cancelled"


class SpecialistUnavailable(RuntimeError):
    """The model could not be loaded; the message says why and what to configure."""


_shared: dict[tuple[Path, int], Specialist] = {}
_shared_lock = threading.Lock()


def shared(model_path: Path | str | None, *, max_context_tokens: int) -> Specialist:
    """The process's one instance for this model and context, created on first use.

    Inline completions and local council mode both sample from the specialist; sharing
    the instance means one copy of the weights and one set of compiled buckets.
    """
    path = Path(model_path).expanduser() if model_path else DEFAULT_MODEL_DIR
    with _shared_lock:
        key = (path, max_context_tokens)
        if key not in _shared:
            _shared[key] = Specialist(path, max_context_tokens=max_context_tokens)
        return _shared[key]


def any_loaded(model_path: Path | str | None) -> Specialist | None:
    """A ready instance of this model, whatever its context (for local mode)."""
    path = Path(model_path).expanduser() if model_path else DEFAULT_MODEL_DIR
    with _shared_lock:
        ready = [s for (p, _), s in _shared.items() if p == path and s.ready]
    return max(ready, key=lambda s: s.context_tokens) if ready else None


class Specialist:
    """Load once, then answer FIM requests; thread-safe, one inference at a time."""

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        max_context_tokens: int = 512,
        dtype: str = "float32",
    ) -> None:
        self.model_path = Path(model_path).expanduser() if model_path else DEFAULT_MODEL_DIR
        self.max_context_tokens = max_context_tokens
        self.dtype = dtype
        self.ready = False
        self.error: str | None = None
        self.load_s: float | None = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._gen: Any = None
        self._tokenizer: Any = None

    @property
    def context_tokens(self) -> int:
        """Prompt + completion tokens one request can use (the cache length once loaded)."""
        if self._gen is not None:
            return int(self._gen.max_context)
        return self.max_context_tokens

    @property
    def name(self) -> str:
        return f"specialist:{self.model_path.name}"

    def ensure_loaded(self) -> None:
        """Load unless loaded; concurrent callers wait for the one load (blocking)."""
        with self._load_lock:
            if self.ready:
                return
            if self.error:
                raise SpecialistUnavailable(self.error)
            self.load()

    def load(self) -> None:
        """Import JAX, load the model and compile every bucket (blocking; call in a thread)."""
        t0 = time.perf_counter()
        try:
            from training.loading import ModelLoadError, load_for_inference
            from training.sample import Generator

            try:
                model, tokenizer = load_for_inference(self.model_path, dtype=self.dtype)
            except ModelLoadError as exc:
                raise SpecialistUnavailable(
                    f"the specialist model could not be loaded: {exc}. Set [completion] "
                    'model_path, or use a provider: [completion] backend = "ollama:MODEL"'
                ) from None
            if tokenizer.fim_prefix_id is None:
                raise SpecialistUnavailable(
                    f"{self.model_path}: the tokenizer has no FIM sentinels, so the model "
                    "cannot fill in the middle"
                )
            length = min(self.max_context_tokens, model.cfg.max_seq_len)
            gen = Generator(model, tokenizer, cache_buckets=(length,))
            gen.warm_up()
            with self._lock:
                self._gen, self._tokenizer = gen, tokenizer
            self.load_s = time.perf_counter() - t0
            self.ready = True
            log.info("specialist %s ready in %.1fs", self.model_path, self.load_s)
        except SpecialistUnavailable as exc:
            self.error = str(exc)
            raise
        except Exception as exc:  # a broken model must not take the server down
            self.error = f"the specialist failed to load: {type(exc).__name__}: {exc}"
            log.exception("specialist load failed")
            raise SpecialistUnavailable(self.error) from exc

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` costs in the prompt (for context budgeting)."""
        if self._tokenizer is None:
            return max(1, len(text) // 3)
        return len(self._tokenizer.encode(text))

    def infill(
        self,
        prefix: str,
        suffix: str,
        *,
        max_tokens: int = 64,
        stop: Sequence[str] = (),
        temperature: float = 0.0,
        cancelled: Callable[[], bool] | None = None,
        stop_when: Callable[[str], bool] | None = None,
        deadline: float | None = None,
        seed: int = 0,
    ) -> InfillResult:
        """Fill in between ``prefix`` and ``suffix`` (blocking)."""
        if not self.ready:
            raise SpecialistUnavailable(self.error or "the specialist is still loading")
        from training.fim import fim_prompt_ids
        from training.sample import SamplingParams

        with self._lock:
            gen = self._gen
            budget = gen.max_context - max_tokens
            ids = fim_prompt_ids(self._tokenizer, prefix, suffix, mode="spm")
            if len(ids) > budget:  # caller budgets in tokens already; this is the backstop
                ids = _fit(self._tokenizer, prefix, suffix, budget)
            params = SamplingParams(
                max_new_tokens=max_tokens,
                temperature=temperature,
                stop=tuple(stop),
                stop_when=stop_when,
                deadline=deadline,
                seed=seed,
            )
            out = gen.generate([ids], params, cancelled=cancelled, heal=True)[0]
        return InfillResult(
            text=out.text,
            model_s=out.timings.get("total_s", 0.0),
            prompt_tokens=out.prompt_tokens,
            reused_tokens=out.reused_tokens,
            finish_reason=out.finish_reason,
        )


def _fit(tokenizer: Any, prefix: str, suffix: str, budget: int) -> list[int]:
    """Cut the prefix from the left and the suffix from the right until the prompt fits."""
    from training.fim import fim_prompt_ids

    pre, suf = tokenizer.encode(prefix), tokenizer.encode(suffix)
    room = max(1, budget - 3)
    keep_suf = min(len(suf), room // 4)
    keep_pre = min(len(pre), room - keep_suf)
    prefix = tokenizer.decode(pre[len(pre) - keep_pre :]) if keep_pre else ""
    suffix = tokenizer.decode(suf[:keep_suf]) if keep_suf else ""
    return fim_prompt_ids(tokenizer, prefix, suffix, mode="spm")
