"""Model FLOPs per token, counted per component, and the machine's measured matmul peak.

MFU (model FLOPs utilisation, PaLM appendix B) is the FLOPs the model *needs* per second
divided by the hardware's peak: recomputation, padding tricks and optimizer arithmetic do
not count. The count here is per matmul so that it stays right for any shape the config
allows, rather than the ``6 * params`` shortcut, which is wrong for this model in three ways:

* grouped-query attention: K and V project to ``num_kv_heads`` heads, not ``num_heads``, so
  they are counted separately from Q (with MQA they are 16x cheaper than Q in ``prod``);
* SwiGLU is three ``D x F`` matmuls (gate, up, down), not two;
* the tied head is one ``D x V`` matmul; the embedding lookup is a gather and costs nothing.

Attention adds ``QK^T`` and ``PV`` (``2 * T * H * hd`` multiply-adds per token), halved
because a causal query attends on average to half the context. Every multiply-add is 2
FLOPs; training is 3x the forward pass (the backward pass computes gradients for both the
activations and the weights).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from training.config import ModelConfig

log = logging.getLogger(__name__)

#: components in the order they run in a block, then the head
COMPONENTS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "attention",
    "o_proj",
    "mlp_gate",
    "mlp_up",
    "mlp_down",
    "lm_head",
)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token for each component, plus ``forward`` and ``total``.

    ``seq_len`` is the length the model sees (the packed row length minus one). Each
    component value already includes the x2 (multiply-add) and the x3 (forward + backward)
    factors and all layers; ``forward`` is the forward-only sum and ``total`` the training
    sum used for MFU.
    """
    d, hd, layers = cfg.hidden_dim, cfg.head_dim, cfg.num_layers
    q_width, kv_width = cfg.num_heads * hd, cfg.num_kv_heads * hd
    forward_macs = {  # multiply-adds per token in the forward pass
        "q_proj": layers * d * q_width,
        "k_proj": layers * d * kv_width,
        "v_proj": layers * d * kv_width,
        # scores (T x hd per head) + weighted values (T x hd per head), causal: half the keys
        "attention": layers * (2 * seq_len * q_width) / 2,
        "o_proj": layers * q_width * d,
        "mlp_gate": layers * d * cfg.ffn_dim,
        "mlp_up": layers * d * cfg.ffn_dim,
        "mlp_down": layers * cfg.ffn_dim * d,
        "lm_head": d * cfg.vocab_size,  # once, whether tied or not
    }
    out = {name: float(2 * 3 * macs) for name, macs in forward_macs.items()}
    out["forward"] = float(sum(2 * macs for macs in forward_macs.values()))
    out["total"] = float(sum(out[name] for name in COMPONENTS))
    return out


def mfu(tokens_per_s: float, flops_per_token_total: float, peak_flops: float) -> float:
    """Model FLOPs utilisation in [0, 1] (0 when the peak is unknown)."""
    return tokens_per_s * flops_per_token_total / peak_flops if peak_flops > 0 else 0.0


def measure_peak_flops(dtype: str = "bfloat16", size: int = 0, repeats: int = 5) -> float:
    """FLOP/s of one device on a large square matmul in ``dtype``: best of ``repeats`` runs.

    This is the honest peak to measure MFU against on a machine whose datasheet number is
    unknown (a CPU) or unreachable in practice. Low-precision operands accumulate in fp32
    (``preferred_element_type``), the form the model's matmuls take: on Sapphire Rapids it
    is the one XLA sends to its AMX kernels, 4-5x the rate of a bf16-output dot. Each run
    chains a few matmuls inside one jitted call so that dispatch overhead does not dilute
    small sizes. ``size`` 0 picks 2048 on a CPU and 8192 on an accelerator.
    """
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    n = size or (2048 if device.platform == "cpu" else 8192)
    chain = 4
    low = jnp.dtype(dtype) != jnp.float32

    @jax.jit
    def run(a: jax.Array, b: jax.Array) -> jax.Array:
        for _ in range(chain):  # a <- (a @ b) / n keeps values finite in low precision
            acc = jnp.dot(a, b, preferred_element_type=jnp.float32 if low else None)
            a = (acc * (1.0 / n)).astype(a.dtype)
        return a

    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(key_a, (n, n), dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (n, n), dtype), device)
    run(a, b).block_until_ready()  # compile and warm up
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    flops = chain * 2 * n**3 / best
    log.info("measured %s matmul peak on %s: %.2f TFLOP/s (n=%d)", dtype, device, flops / 1e12, n)
    return best_known_peak(f"jax:{device.platform}:{device.device_kind}:{dtype}:{n}", flops)


def measure_torch_peak_flops(
    dtype: str = "bfloat16", size: int = 2048, repeats: int = 5
) -> float | None:
    """FLOP/s of torch's CPU matmul in ``dtype`` (oneDNN, AMX where present), or None
    without torch. A second opinion on the CPU's reachable rate: what a hand-tuned library
    gets from the same cores, which XLA's kernels may not match."""
    try:
        import torch
    except ImportError:
        return None
    n = size
    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    best = float("inf")
    with torch.inference_mode():
        torch.matmul(a, b)  # warm up (oneDNN picks and caches its kernel)
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
    flops = 2 * n**3 / best
    log.info("measured torch %s matmul on the CPU: %.2f TFLOP/s (n=%d)", dtype, flops / 1e12, n)
    return best_known_peak(f"torch:cpu:{dtype}:{n}", flops)


def _peaks_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "council" / "peaks.json"


def best_known_peak(kind: str, measured: float) -> float:
    """The higher of ``measured`` and the best earlier measurement of ``kind`` on this
    machine, which is remembered in ``$XDG_CACHE_HOME/council/peaks.json``.

    A peak is the fastest the machine *can* go, so one measurement taken while something
    else runs understates it, and every MFU computed against it is inflated: a training run
    that started beside another job measured 0.14 TFLOP/s and logged an MFU of 1.9. The
    best figure seen is the honest reference. The key includes the processor and its core
    count, so a copied cache or a resized VM does not carry a figure over.
    """
    machine = f"{platform.machine()}:{_cpu_model()}:{os.cpu_count()}"
    key = f"{kind}:{machine}"
    path = _peaks_file()
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    previous = known.get(key)
    if isinstance(previous, (int, float)) and previous > measured:
        log.info("using the best earlier %s peak, %.2f TFLOP/s", kind, previous / 1e12)
        return float(previous)
    known[key] = measured
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a read-only home still gets this run's figure
        log.debug("could not remember the peak: %s", exc)
    return measured


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
