"""``council bench train``: training throughput and MFU of a preset on this machine.

The batch is random tokens (no dataset needed) already on the devices, so the figure is the
step itself: forward, backward and the AdamW update, as jitted for training. MFU is model
FLOPs (:func:`training.flops.flops_per_token`, per component) over the best matmul rate
*measured* on this machine in the model's compute dtype: XLA's at fp32 accumulation, and on
a CPU also torch's (oneDNN) when torch is installed, the higher of the two. On a CPU whose
datasheet peak no framework reaches that is the honest reference; both rates are reported.

``baseline=True`` (``--baseline``) also times the previous implementation on the same batch
(``ModelConfig.legacy_numerics``: bf16-output matmuls differentiated by XLA, whole fp32
logits in the loss; and one micro-batch per step, without the CPU split of
:data:`training.train.CPU_MICRO_TOKENS`), alternating steps with the current one so that
both see the same machine load, and reports the speedup. On an accelerator the ``prod`` preset
is timed as well (the seed's 500M model at its 2,048 context), with gradient accumulation
doubled until the step fits in memory.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

log = logging.getLogger(__name__)


def _prepare(
    name: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    overrides: dict[str, Any],
    micro_tokens: int | None = None,
) -> dict[str, Any]:
    """Build, compile and warm up one preset's step; returns what :func:`_time` runs."""
    import jax
    import numpy as np

    from training.config import TrainConfig, preset
    from training.mesh import make_mesh
    from training.train import Trainer

    cfg = preset(name, **overrides)
    seq = seq_len or cfg.max_seq_len
    if seq > cfg.max_seq_len:
        raise ValueError(f"seq_len {seq} exceeds the {name} preset's max_seq_len {cfg.max_seq_len}")
    mesh = make_mesh("data=-1")
    train_cfg = TrainConfig(
        steps=2 * steps + 2, batch_size=batch_size, grad_accum=grad_accum, warmup_steps=1
    )
    trainer = Trainer(cfg, train_cfg, mesh, micro_tokens=micro_tokens)
    state = trainer.init()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (batch_size, seq + 1), dtype=np.int32)
    mask = np.ones(tokens.shape, np.float32)
    batch = (
        jax.device_put(tokens, trainer.batch_sharding),
        jax.device_put(mask, trainer.batch_sharding),
    )
    start = time.perf_counter()
    step = trainer.step_fn.lower(state, *batch).compile()
    compile_s = time.perf_counter() - start
    state, metrics = step(state, *batch)  # warm-up, not timed
    jax.block_until_ready((state, metrics))
    return {
        "name": name,
        "cfg": cfg,
        "seq": seq,
        "overrides": overrides,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "micro_batches": trainer.micro_batches(batch_size, seq + 1),
        "step": step,
        "state": state,
        "batch": batch,
        "compile_s": compile_s,
        "loss_first": float(metrics["loss"]),
        "times": [],
    }


def _run_step(run: dict[str, Any]) -> None:
    import jax

    start = time.perf_counter()
    run["state"], run["metrics"] = run["step"](run["state"], *run["batch"])
    jax.block_until_ready((run["state"], run["metrics"]))
    run["times"].append(time.perf_counter() - start)


def _report(run: dict[str, Any], peak: float) -> dict[str, Any]:
    import jax

    from training.config import param_count
    from training.flops import flops_per_token, mfu

    cfg, seq, times = run["cfg"], run["seq"], run["times"]
    p50 = statistics.median(times)
    tokens_per_step = run["batch_size"] * seq
    flops = flops_per_token(cfg, seq)
    tokens_per_s = tokens_per_step / p50
    return {
        "preset": run["name"],
        "overrides": run["overrides"],
        "params": param_count(cfg),
        "dtype": cfg.dtype,
        "legacy_numerics": cfg.legacy_numerics,
        "seq_len": seq,
        "batch_size": run["batch_size"],
        "grad_accum": run["grad_accum"],
        "micro_batches": run["micro_batches"],
        "tokens_per_step": tokens_per_step,
        "timed_steps": len(times),
        "compile_s": round(run["compile_s"], 3),
        "step_time_s": {
            "p50": round(p50, 4),
            "min": round(min(times), 4),
            "mean": round(statistics.fmean(times), 4),
        },
        "tokens_per_s": round(tokens_per_s, 1),
        "flops_per_token": {k: int(v) for k, v in flops.items()},
        "model_tflops_per_s": round(tokens_per_s * flops["total"] / 1e12, 4),
        "mfu": round(mfu(tokens_per_s, flops["total"], peak * jax.device_count()), 4),
        "loss_first": round(run["loss_first"], 4),
        "loss_last": round(float(run["metrics"]["loss"]), 4),
    }


def _bench_one(
    name: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    overrides: dict[str, Any],
    peak_per_device: float,
) -> dict[str, Any]:
    run = _prepare(name, steps, batch_size, seq_len, grad_accum, overrides)
    for _ in range(steps):
        _run_step(run)
    return _report(run, peak_per_device)


def _is_oom(exc: Exception) -> bool:
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def measure_peaks(dtype: str, size: int = 0) -> dict[str, float | None]:
    """Per-device matmul rates (FLOP/s) in ``dtype``: XLA's, and torch's on a CPU."""
    import jax

    from training.flops import measure_peak_flops, measure_torch_peak_flops

    peaks: dict[str, float | None] = {"jax": measure_peak_flops(dtype, size=size)}
    if jax.default_backend() == "cpu":
        peaks["torch"] = measure_torch_peak_flops(dtype, size=size or 2048)
    return peaks


def bench_train(
    preset: str = "test",
    steps: int = 10,
    batch_size: int = 8,
    seq_len: int = 0,
    *,
    overrides: dict[str, Any] | None = None,
    include_prod: bool | None = None,
    peak_size: int = 0,
    baseline: bool = False,
    ablation: bool = False,
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``preset`` after compiling; JSON-able report.

    ``baseline`` also times the legacy numerics path on the same batch (under the key
    ``"baseline"``, with ``"speedup"``). ``include_prod`` None means: on an accelerator,
    when timing another preset, time ``prod`` too (under the key ``"prod"``). ``peak_size``
    is the peak matmul's side (0: :func:`training.flops.measure_peak_flops` picks).
    ``ablation`` adds :func:`training.ablation.ablate`'s table under ``"ablation"``.
    """
    import jax

    from training.config import preset as get_preset

    if steps < 1 or batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    overrides = dict(overrides or {})
    backend = jax.default_backend()
    devices = jax.devices()
    if batch_size % len(devices):
        raise ValueError(f"batch_size {batch_size} must be a multiple of {len(devices)} devices")
    dtype = get_preset(preset, **overrides).dtype
    measured = measure_peaks(dtype, peak_size)
    peak = max(v for v in measured.values() if v)
    report: dict[str, Any] = {
        "backend": backend,
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "peak_tflops_per_device": round(peak / 1e12, 4),
        "peak_source": f"best measured {dtype} matmul on this machine (fp32 accumulation)",
        "peaks_tflops_per_device": {
            k: None if v is None else round(v / 1e12, 4) for k, v in measured.items()
        },
    }
    runs = [_prepare(preset, steps, batch_size, seq_len, 1, overrides)]
    if baseline:  # the previous implementation: its numerics, one micro-batch per step
        legacy = overrides | {"legacy_numerics": True}
        runs.append(_prepare(preset, steps, batch_size, seq_len, 1, legacy, micro_tokens=0))
    for _ in range(steps):  # alternate, so that both see the same machine load
        for run in runs:
            _run_step(run)
    report.update(_report(runs[0], peak))
    if baseline:
        report["baseline"] = _report(runs[1], peak)
        report["speedup"] = round(report["tokens_per_s"] / report["baseline"]["tokens_per_s"], 3)
    if ablation:
        from training.ablation import ablate

        report["ablation"] = ablate(preset, steps, batch_size, seq_len, overrides, peak)
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
