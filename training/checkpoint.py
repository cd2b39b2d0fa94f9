"""Orbax checkpoints of a training run, and loading a run's parameters for inference.

Layout: ``RUN/checkpoints/<step>/`` with three items, so that inference restores only what
it needs:

* ``params``: the model parameters (nnx pure dict, fp32), sharded as they were trained;
* ``opt_state``: the optax state (AdamW moments, step counts);
* ``meta``: JSON with the step, the data position (the step again: batches are a pure
  function of it), the RNG key data and the tokens seen.

Arrays are restored straight into the shardings of the mesh that resumes, which need not
be the one that saved (orbax reshards), so a run saved on a TPU v5e-8 loads on one CPU.
Saving is asynchronous: the device-to-host copy happens before :func:`save` returns (the
step's buffers can be donated right after), the file writes in the background.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from training.config import ModelConfig

if TYPE_CHECKING:
    from training.model import Transformer
    from training.train import TrainState

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


def manager(run_dir: Path, keep: int = 3) -> ocp.CheckpointManager:
    """The run's checkpoint manager (``keep`` 0 keeps every checkpoint)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep or None, create=True)
    return ocp.CheckpointManager(
        (Path(run_dir) / CHECKPOINT_DIR).absolute(),
        options=options,
        item_names=("params", "opt_state", "meta"),
    )


def steps(run_dir: Path) -> list[int]:
    """Steps with a finished checkpoint, ascending (orbax commits atomically)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def latest_step(run_dir: Path) -> int | None:
    found = steps(run_dir)
    return found[-1] if found else None


def save(mngr: ocp.CheckpointManager, state: TrainState, *, tokens_seen: int) -> int:
    """Checkpoint ``state`` (params, optimizer, step/data position, RNG); returns the step.

    The step comes from the state itself, so an interrupted loop can never label a state
    with the wrong data position.
    """
    step = int(state.step)
    if step in mngr.all_steps():  # e.g. interrupted right after a periodic save
        return step
    meta = {
        "step": step,
        "data_step": step,
        "rng": np.asarray(jax.random.key_data(state.rng)).astype(np.uint32).tolist(),
        "tokens_seen": int(tokens_seen),
    }
    mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )
    log.info("checkpoint saved at step %d", step)
    return step


def restore(
    mngr: ocp.CheckpointManager, step: int, abstract_params: Any, abstract_opt_state: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """({"params", "opt_state"}, meta) of ``step``, laid out like the abstract targets."""
    out = mngr.restore(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return {"params": out.params, "opt_state": out.opt_state}, dict(out.meta)


def rng_data(meta: dict[str, Any]) -> np.ndarray:
    """The raw key data saved by :func:`save` (``jax.random.wrap_key_data`` restores it)."""
    return np.asarray(meta["rng"], np.uint32)


def load_model(run_dir: Path, step: int | None = None) -> tuple[Transformer, ModelConfig]:
    """The parameters of ``step`` (default: the latest) in a fresh model on one device."""
    from flax import nnx

    from training.model import build

    run_dir = Path(run_dir)
    cfg_path = run_dir / "model_config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{run_dir} is not a training run (no model_config.json)")
    cfg = ModelConfig.load(cfg_path)
    available = steps(run_dir)
    if not available:
        raise ValueError(f"{run_dir} has no checkpoints yet")
    if step is None:
        step = available[-1]
    elif step not in available:
        raise ValueError(f"{run_dir} has no checkpoint at step {step}; it has {available}")

    abstract = nnx.eval_shape(lambda: build(cfg))
    graphdef, abstract_params, rest = nnx.split(abstract, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        nnx.to_pure_dict(abstract_params),
    )
    # orbax logs two WARNINGs (through absl) about read-only mode on every load; they are
    # expected here and only confuse users of `sample`/`eval`/`export`.
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        mngr = ocp.CheckpointManager(
            (run_dir / CHECKPOINT_DIR).absolute(),
            options=ocp.CheckpointManagerOptions(read_only=True),
            item_names=("params", "opt_state", "meta"),
        )
    finally:
        absl_log.setLevel(level)
    try:
        params = mngr.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target))
        ).params
    finally:
        mngr.close()
    return nnx.merge(graphdef, params, rest), cfg
