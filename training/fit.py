"""``fit``: a training run from a packed dataset to checkpoints, with exact resume.

The step itself is :class:`training.train.Trainer`; this module is the run around it:
configs saved and checked on resume, validation, metrics lines, the progress bar.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from training import checkpoint
from training.config import ModelConfig, TrainConfig
from training.flops import flops_per_token, measure_peak_flops, mfu
from training.model import Transformer

if TYPE_CHECKING:
    from training.data import PackedData

from training.mesh import make_mesh
from training.train import (
    TOKENIZER_FILES,
    TrainState,
    get_trainer,
)

log = logging.getLogger(__name__)


# -- fit ------------------------------------------------------------------------------------


def resolve_model_config(
    base: ModelConfig, data_vocab: int, overrides: dict[str, Any] | None = None
) -> ModelConfig:
    """The dataset's vocabulary sets the model's unless ``vocab_size`` is overridden."""
    overrides = dict(overrides or {})
    overrides.setdefault("vocab_size", data_vocab)
    return base.replace(**overrides)


def _check_compatible(cfg: ModelConfig, data: PackedData, train_cfg: TrainConfig) -> None:
    data_vocab = int(data.manifest["vocab_size"])
    if cfg.vocab_size < data_vocab:
        raise ValueError(
            f"model vocab_size {cfg.vocab_size} is smaller than the dataset's {data_vocab}: "
            "token ids would be out of range (drop --set vocab_size or match the tokenizer)"
        )
    seq_len = data.row_len - 1
    if seq_len > cfg.max_seq_len:
        raise ValueError(
            f"dataset rows hold {seq_len} positions but max_seq_len is {cfg.max_seq_len}: "
            f"use --set max_seq_len={seq_len} or pack the data with a shorter context"
        )
    if train_cfg.fim_rate > 0 and all(
        v is None for v in (data.manifest.get("fim_ids") or {}).values()
    ):
        raise ValueError(
            f"fim_rate {train_cfg.fim_rate} but the dataset's tokenizer has no FIM tokens "
            "(pass --fim-rate 0)"
        )


def _config_diff(a: ModelConfig, b: ModelConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    return ", ".join(f"{k}: {da[k]} -> {db[k]}" for k in da if da[k] != db[k])


def _copy_tokenizer(data_dir: Path, run_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        src = data_dir / name
        if src.is_file():
            shutil.copyfile(src, run_dir / name)


def _val_batches(data: PackedData, batch_size: int, count: int) -> list[tuple[Any, Any]]:
    """The fixed validation set: the first ``count`` batches of ``val`` in order, no FIM."""
    try:
        rows = data.num_rows("val")
    except ValueError:
        rows = 0
    if rows == 0:
        log.warning("no validation loss: the dataset has no val rows")
        return []
    batches = itertools.islice(data.iterate("val", batch_size, fim_rate=0.0), count)
    return [(b.tokens, b.mask) for b in batches]


def _trim_metrics(path: Path, step: int) -> None:
    """Drop records past ``step``: a run that died after its last checkpoint logged steps
    that the resume is about to redo."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


def _progress(total: int, initial: int, quiet: bool) -> Any:
    from tqdm import tqdm

    disable = quiet or not sys.stderr.isatty() or jax.process_index() != 0
    return tqdm(total=total, initial=initial, disable=disable, file=sys.stderr, unit="step")


def fit(
    data_dir: Path,
    run_dir: Path,
    train_cfg: TrainConfig,
    model_cfg: ModelConfig | None = None,
    *,
    init_from: Path | None = None,
    stop_at: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train on a packed dataset into ``run_dir``, resuming from its latest checkpoint.

    ``model_cfg`` None takes the run's saved config (resume) or the imported one
    (``init_from``, an HF directory, used only when the run has no checkpoint yet).
    ``stop_at`` ends the session after that step (checkpointing it) without changing the
    schedule, which is set by ``train_cfg.steps``: a later call continues exactly.
    Returns a summary (final step, loss, validation loss, throughput).
    """
    from training.data import PackedData

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    data = PackedData(data_dir)
    seq_len = data.row_len - 1
    run_dir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0
    saved_cfg_path = run_dir / "model_config.json"
    saved_cfg = ModelConfig.load(saved_cfg_path) if saved_cfg_path.is_file() else None
    resume_step = checkpoint.latest_step(run_dir)

    imported: Transformer | None = None
    if init_from is not None and model_cfg is not None:
        raise ValueError("--init-from takes the model config from the HF directory: drop --preset")
    if init_from is not None and resume_step is None:
        from training.hf import import_hf

        imported, model_cfg = import_hf(Path(init_from), dtype="bfloat16")
    elif init_from is not None:
        log.info("%s has checkpoints: resuming and ignoring --init-from", run_dir)
    if model_cfg is None:
        if saved_cfg is None:
            raise ValueError(f"{run_dir} holds no model_config.json: choose a preset")
        model_cfg = saved_cfg
    if saved_cfg is not None and saved_cfg != model_cfg and resume_step is not None:
        raise ValueError(
            f"{run_dir} holds a run of a different model ({_config_diff(saved_cfg, model_cfg)}); "
            "use another --out, or the run's own --preset/--set"
        )
    _check_compatible(model_cfg, data, train_cfg)

    mesh = make_mesh(train_cfg.mesh)
    trainer = get_trainer(model_cfg, train_cfg, mesh)
    manager = checkpoint.manager(run_dir, keep=train_cfg.keep_checkpoints)
    if resume_step is not None:
        saved_train = run_dir / "train_config.json"
        if saved_train.is_file() and TrainConfig.load(saved_train) != train_cfg:
            log.warning("train config differs from the saved one: the resume is not exact")
        state, meta = checkpoint.restore(
            manager, resume_step, trainer.abstract_params, trainer.abstract_opt_state
        )
        step, rng = trainer.replicated_scalars(meta["step"], checkpoint.rng_data(meta))
        state = TrainState(step=step, params=state["params"], opt_state=state["opt_state"], rng=rng)
        tokens_seen = int(meta.get("tokens_seen", 0))
        log.info("resuming %s at step %d", run_dir, resume_step)
    else:
        state = trainer.init(imported)
        tokens_seen = 0
    if primary:
        model_cfg.save(saved_cfg_path)
        train_cfg.save(run_dir / "train_config.json")
        _copy_tokenizer(data_dir, run_dir)

    n_devices = jax.device_count()
    flops = flops_per_token(model_cfg, seq_len)
    if train_cfg.peak_tflops is not None:
        peak = train_cfg.peak_tflops * 1e12 * n_devices
    else:
        peak = measure_peak_flops(model_cfg.dtype) * n_devices
    eval_bs = train_cfg.batch_size // train_cfg.grad_accum
    val = _val_batches(data, eval_bs, train_cfg.eval_batches)
    start = int(state.step)
    end = min(train_cfg.steps, stop_at if stop_at is not None else train_cfg.steps)
    tokens_per_step = train_cfg.batch_size * seq_len
    log.info(
        "training %s params on %d %s device(s), mesh %s, steps %d..%d, %d tokens/step "
        "in %d micro-batches",
        f"{sum(p.size for p in jax.tree.leaves(state.params)):,}",
        n_devices,
        jax.default_backend(),
        dict(mesh.shape),
        start,
        end,
        tokens_per_step,
        trainer.micro_batches(train_cfg.batch_size, data.row_len),
    )

    if primary and start > 0:
        _trim_metrics(run_dir / "metrics.jsonl", start)
    if start >= end:
        log.info("%s is already at step %d (of %d): nothing to train", run_dir, start, end)
    metrics_file = (run_dir / "metrics.jsonl").open("a") if primary else None
    bar = _progress(train_cfg.steps, start, quiet)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "start_step": start}
    last: dict[str, Any] = {}
    window_start, window_steps, first = time.perf_counter(), 0, True
    done = start
    try:
        for step in range(start, end):
            batch = data.batch(
                "train",
                step,
                train_cfg.batch_size,
                seed=train_cfg.seed,
                fim_rate=train_cfg.fim_rate,
            )
            state, metrics = trainer.train_step(state, batch.tokens, batch.mask)
            done, window_steps = step + 1, window_steps + 1
            tokens_seen += tokens_per_step
            bar.update(1)
            is_last = done == end
            eval_now = bool(val) and (
                is_last or (train_cfg.eval_every and done % train_cfg.eval_every == 0)
            )
            save_now = is_last or (train_cfg.save_every and done % train_cfg.save_every == 0)
            if not (is_last or eval_now or first or done % train_cfg.log_every == 0):
                continue
            record: dict[str, Any] = {"step": done}
            record.update({k: float(v) for k, v in jax.device_get(metrics).items()})
            elapsed = time.perf_counter() - window_start
            record.pop("weight")
            record["step_time_s"] = elapsed / window_steps
            record["tokens_per_s"] = tokens_per_step * window_steps / elapsed
            record["mfu"] = mfu(record["tokens_per_s"], flops["total"], peak)
            record["tokens_seen"] = tokens_seen
            if first:
                record["includes_compile"] = True
            if eval_now:
                record["val_loss"] = trainer.evaluate(state.params, val)
                record["val_ppl"] = math.exp(min(record["val_loss"], 50.0))
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"loss is {record['loss']} at step {done}")
            if metrics_file is not None:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
            _report(bar, record)
            last = record
            if save_now:
                checkpoint.save(manager, state, tokens_seen=tokens_seen)
            window_start, window_steps, first = time.perf_counter(), 0, False
    except KeyboardInterrupt:
        # A step interrupted mid-call has consumed (donated) the state: nothing to save then.
        if done > start and not any(x.is_deleted() for x in jax.tree.leaves(state)):
            log.warning("interrupted: saving step %d", int(state.step))
            checkpoint.save(manager, state, tokens_seen=tokens_seen)
        raise
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        manager.wait_until_finished()
        manager.close()

    summary.update(
        step=int(state.step),
        loss=last.get("loss"),
        val_loss=last.get("val_loss"),
        tokens_per_s=last.get("tokens_per_s"),
        mfu=last.get("mfu"),
        peak_tflops=peak / 1e12,
        params=sum(int(p.size) for p in jax.tree.leaves(state.params)),
    )
    return summary


def _report(bar: Any, record: dict[str, Any]) -> None:
    text = (
        f"step {record['step']} loss {record['loss']:.4f} lr {record['lr']:.2e} "
        f"gnorm {record['grad_norm']:.3f} {record['tokens_per_s']:,.0f} tok/s "
        f"mfu {record['mfu']:.1%}"
    )
    if "val_loss" in record:
        text += f" val {record['val_loss']:.4f}"
    if bar.disable:
        log.info(text)
    else:
        bar.set_postfix_str(text.split(" ", 2)[2])
        if "val_loss" in record:
            bar.write(text, file=sys.stderr)
