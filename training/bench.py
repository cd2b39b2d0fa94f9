"""``council bench train``: training throughput and MFU of a preset on this machine.

The batch is random tokens (no dataset needed) already on the devices, so the figure is the
step itself: forward, backward and the AdamW update, as jitted for training. MFU is model
FLOPs (:func:`training.flops.flops_per_token`, per component) over the *measured* matmul
peak of this machine in the model's compute dtype, which is the honest reference on a CPU
whose datasheet peak no framework reaches. On an accelerator the ``prod`` preset is timed
as well (the seed's 500M model at its 2,048 context), with gradient accumulation doubled
until the step fits in memory.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

log = logging.getLogger(__name__)


def _bench_one(
    name: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    overrides: dict[str, Any],
    peak_per_device: float,
) -> dict[str, Any]:
    import jax
    import numpy as np

    from training.config import param_count, preset
    from training.flops import flops_per_token, mfu
    from training.train import TrainConfig, Trainer, make_mesh

    cfg = preset(name, **overrides)
    seq = seq_len or cfg.max_seq_len
    if seq > cfg.max_seq_len:
        raise ValueError(f"seq_len {seq} exceeds the {name} preset's max_seq_len {cfg.max_seq_len}")
    mesh = make_mesh("data=-1")
    train_cfg = TrainConfig(
        steps=steps + 2, batch_size=batch_size, grad_accum=grad_accum, warmup_steps=1
    )
    trainer = Trainer(cfg, train_cfg, mesh)
    state = trainer.init()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (batch_size, seq + 1), dtype=np.int32)
    mask = np.ones(tokens.shape, np.float32)
    tokens_dev = jax.device_put(tokens, trainer.batch_sharding)
    mask_dev = jax.device_put(mask, trainer.batch_sharding)

    start = time.perf_counter()
    step = trainer.step_fn.lower(state, tokens_dev, mask_dev).compile()
    compile_s = time.perf_counter() - start
    state, metrics = step(state, tokens_dev, mask_dev)  # warm-up, not timed
    jax.block_until_ready((state, metrics))
    first_loss = float(metrics["loss"])
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, tokens_dev, mask_dev)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)

    p50 = statistics.median(times)
    tokens_per_step = batch_size * seq
    flops = flops_per_token(cfg, seq)
    peak = peak_per_device * jax.device_count()
    tokens_per_s = tokens_per_step / p50
    return {
        "preset": name,
        "overrides": overrides,
        "params": param_count(cfg),
        "dtype": cfg.dtype,
        "seq_len": seq,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "tokens_per_step": tokens_per_step,
        "timed_steps": steps,
        "compile_s": round(compile_s, 3),
        "step_time_s": {
            "p50": round(p50, 4),
            "min": round(min(times), 4),
            "mean": round(statistics.fmean(times), 4),
        },
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": {k: int(v) for k, v in flops.items()},
        "model_tflops_per_s": round(tokens_per_s * flops["total"] / 1e12, 4),
        "mfu": round(mfu(tokens_per_s, flops["total"], peak), 4),
        "loss_first": round(first_loss, 4),
        "loss_last": round(float(metrics["loss"]), 4),
    }


def _is_oom(exc: Exception) -> bool:
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def bench_train(
    preset: str = "test",
    steps: int = 10,
    batch_size: int = 8,
    seq_len: int = 0,
    *,
    overrides: dict[str, Any] | None = None,
    include_prod: bool | None = None,
    peak_size: int = 0,
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``preset`` after compiling; JSON-able report.

    ``include_prod`` None means: on an accelerator, when timing another preset, time
    ``prod`` too (under the key ``"prod"``). ``peak_size`` is the peak matmul's side
    (0: :func:`training.flops.measure_peak_flops` picks).
    """
    import jax

    from training.config import preset as get_preset
    from training.flops import measure_peak_flops

    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    overrides = dict(overrides or {})
    backend = jax.default_backend()
    devices = jax.devices()
    if batch_size % len(devices):
        raise ValueError(f"batch_size {batch_size} must be a multiple of {len(devices)} devices")
    dtype = get_preset(preset, **overrides).dtype
    peak = measure_peak_flops(dtype, size=peak_size)
    report: dict[str, Any] = {
        "backend": backend,
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "peak_tflops_per_device": round(peak / 1e12, 4),
        "peak_source": f"measured {dtype} matmul on this machine",
    }
    report.update(_bench_one(preset, steps, batch_size, seq_len, 1, overrides, peak))
    if include_prod is None:
        include_prod = backend != "cpu" and preset != "prod" and not overrides
    if include_prod:
        accum = 1
        while True:
            try:
                report["prod"] = _bench_one("prod", steps, batch_size, 0, accum, {}, peak)
                break
            except Exception as exc:  # XLA raises a generic runtime error on OOM
                if not _is_oom(exc) or accum * 2 > batch_size // len(devices):
                    report["prod"] = {"error": str(exc).splitlines()[0][:300]}
                    break
                accum *= 2
                log.warning("prod batch %d does not fit; grad_accum %d", batch_size, accum)
    return report
