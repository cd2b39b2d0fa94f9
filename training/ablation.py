"""``council bench train --ablation``: what each piece of the fast training path is worth.

Each variant is the current step with one piece put back the way JAX does it by default,
compiled and timed in the same interleaved loop as the others, so the figures share the
machine's load and their ratios hold even on a noisy machine:

* ``no_micro_split``: one micro-batch per step instead of ~1,024-token ones (the step's
  working set no longer stays in cache);
* ``autodiff_linears``: the linears' dots still accumulate in fp32 but JAX derives their
  backward pass (the issue's "naive fix": an fp32 cotangent meets bf16 operands, which
  XLA:CPU runs as a slow generic dot);
* ``untiled_attention``: the general masked attention over the whole ``[T, T]`` score
  matrix, with XLA's softmax gradient, instead of the tiled causal kernel;
* ``unfused_head``: the whole fp32 ``[B, T, V]`` logits, then optax's cross-entropy,
  instead of the head fused with the loss tile by tile;
* ``legacy_split``: the previous numerics, with the micro-batch split;
* ``baseline``: the previous implementation (previous numerics, one micro-batch).

A variant swaps a function that :mod:`training.model` looks up when the step is traced,
and only while it is traced and compiled; nothing is patched once the variants are built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import optax

from training import model as model_module
from training.kernels import attend

Array = jax.Array


def _autodiff_contract(spec: str, a: Array, b: Array) -> Array:
    return jnp.einsum(spec, a, b.astype(a.dtype), preferred_element_type=jnp.float32)


def _untiled_attention(q: Array, k: Array, v: Array, scale: float) -> Array:
    t, s = q.shape[1], k.shape[1]
    causal = jnp.arange(s)[None, :] <= jnp.arange(t)[:, None]  # [T, S]
    return attend(q, k, v, causal[None, None, :, None, :], scale)


def _unfused_head(x: Array, w: Array, targets: Array, weights: Array) -> Array:
    logits = model_module.contract("btd,vd->btv", x, w)  # fp32 [B, T, V]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.sum(ce * weights)


#: variant -> (model overrides, micro_tokens (None: the trainer's default), swaps)
VARIANTS: dict[str, tuple[dict[str, Any], int | None, dict[str, Callable[..., Array]]]] = {
    "current": ({}, None, {}),
    "no_micro_split": ({}, 0, {}),
    "autodiff_linears": ({}, None, {"contract": _autodiff_contract}),
    "untiled_attention": ({}, None, {"causal_attention": _untiled_attention}),
    "unfused_head": ({}, None, {"head_cross_entropy": _unfused_head}),
    "legacy_split": ({"legacy_numerics": True}, None, {}),
    "baseline": ({"legacy_numerics": True}, 0, {}),
}


@contextlib.contextmanager
def swapped(swaps: dict[str, Callable[..., Array]]) -> Iterator[None]:
    """``training.model``'s functions replaced by ``swaps`` for the duration."""
    saved = {name: getattr(model_module, name) for name in swaps}
    try:
        for name, fn in swaps.items():
            setattr(model_module, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(model_module, name, fn)


def ablate(
    preset: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    overrides: dict[str, Any],
    peak: float,
) -> dict[str, Any]:
    """Tokens/s of every variant, timed interleaved, and each one's share of ``current``."""
    from training.bench import _prepare, _report, _run_step

    runs = {}
    for name, (extra, micro_tokens, swaps) in VARIANTS.items():
        with swapped(swaps):
            runs[name] = _prepare(
                preset, steps, batch_size, seq_len, 1, overrides | extra, micro_tokens
            )
    for _ in range(steps):
        for run in runs.values():
            _run_step(run)
    reports = {name: _report(run, peak) for name, run in runs.items()}
    current = reports["current"]["tokens_per_s"]
    return {
        name: {
            "tokens_per_s": r["tokens_per_s"],
            "step_time_p50_s": r["step_time_s"]["p50"],
            "micro_batches": r["micro_batches"],
            "current_vs_this": round(current / r["tokens_per_s"], 3),
            "loss_first": r["loss_first"],
            "loss_last": r["loss_last"],
        }
        for name, r in reports.items()
    }
