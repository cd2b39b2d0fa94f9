"""The training loop: AdamW + warmup/cosine, gradient accumulation, a data/fsdp mesh, exact resume.

One jitted call is one optimizer step. The global batch ``[B, L]`` is split into
``grad_accum`` micro-batches that a ``lax.scan`` runs through forward and backward, summing
gradients of the *token-summed* loss; dividing by the batch's total token weight at the end
makes accumulation the same update as one big batch (padding-aware, unlike averaging the
micro-batch means). Parameters and optimizer state are donated, so a step needs one copy.

Parallelism is a ``jax.sharding`` mesh with two axes, as in MaxText:

* ``data``: pure data parallelism (parameters replicated);
* ``fsdp``: parameters and optimizer state sharded along the annotated dimension of every
  kernel (see :mod:`training.model`), gathered layer by layer by XLA.

The batch dimension is sharded over both axes, so every device sees ``B / (data * fsdp)``
rows of each micro-batch. The same code runs on one CPU (a 1x1 mesh), on 8 forced host
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``, how the tests check that
sharding changes nothing) and on several hosts.

Recipes (``council train fit --help`` has the flags):

* TPU v5e-8 (one host, 8 chips, 16 GB each): ``pip install -U "jax[tpu]"`` then ``council
  train fit --data D --out RUN --preset prod --mesh data=1,fsdp=8 --grad-accum 8
  --peak-tflops 197``. The seed's global batch of 64 sequences is then 8 micro-batches of
  one sequence per chip: fsdp=8 shards the 405M parameters, gradients and AdamW moments
  (6.5 GB replicated, 0.8 GB per chip sharded) and leaves the room to the activations of a
  2,048-token sequence (the attention matrices dominate; the model does not rematerialise).
* One or more GPUs: ``pip install -U "jax[cuda12]"``, same command with ``--mesh data=-1``
  (all GPUs data-parallel) or ``data=1,fsdp=-1``.
* Multi-host (TPU pod slices, GPU clusters): run the same command on every host with
  ``--distributed``. On Cloud TPU and SLURM ``jax.distributed.initialize()`` finds the
  coordinator itself; elsewhere pass ``--coordinator HOST:PORT --num-processes N
  --process-id I`` (or set ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``). Each process reads the same deterministic global batch and hands its
  own rows to ``jax.make_array_from_process_local_data``. RUN must be on storage every host
  sees (a GCS bucket path through gcsfuse, NFS): orbax writes one checkpoint from all hosts,
  process 0 writes the metrics and config files.

The learning rate at optimizer step ``s`` (1-based) is ``schedule(s)``: linear 0 -> ``lr``
over ``warmup`` steps, then cosine to ``lr_min`` exactly at the last step. Weight decay
(0.1, decoupled) applies to matrices only (kernels and the tied embedding); RMSNorm scales
and biases are not decayed, because shrinking a norm scale or a bias towards zero is not a
useful prior and hurts small models (GPT-3, LLaMA and nanoGPT do the same).

Checkpoints (:mod:`training.checkpoint`) hold params, optimizer state, the step (which is
also the data position: batches are a pure function of the step), the RNG key and the
tokens seen; resuming replays exactly the same batches and updates, so a run that stops
and resumes ends with the same parameters as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from training import checkpoint
from training.config import ModelConfig
from training.flops import flops_per_token, measure_peak_flops, mfu
from training.model import Transformer, build

if TYPE_CHECKING:
    from training.data import PackedData

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp")
#: the batch dimension is split over both mesh axes (MaxText's layout)
BATCH_AXES = ("data", "fsdp")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

Params = dict[str, Any]
Metrics = dict[str, jax.Array]


def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=-1,fsdp=1"`` -> ``{"data": -1, "fsdp": 1}`` (missing axes are 1)."""
    sizes = {"data": 1, "fsdp": 1}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name not in sizes:
            raise ValueError(f"bad mesh {spec!r}: expected e.g. data=-1,fsdp=1")
        try:
            sizes[name] = int(raw)
        except ValueError:
            raise ValueError(f"bad mesh {spec!r}: {raw!r} is not an integer") from None
        if sizes[name] == 0 or sizes[name] < -1:
            raise ValueError(f"bad mesh {spec!r}: sizes are positive or -1")
    if list(sizes.values()).count(-1) > 1:
        raise ValueError(f"bad mesh {spec!r}: at most one axis may be -1")
    return sizes


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of one run (the model's shape is :class:`ModelConfig`)."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # global, in sequences, per optimizer step
    grad_accum: int = 1  # micro-batches per step (batch_size must divide by it)
    lr: float = 1e-3  # peak learning rate
    lr_min: float = 1e-4  # reached at the last step
    warmup_steps: int | None = None  # None: min(2000, 5% of steps)
    weight_decay: float = 0.1
    clip: float = 1.0  # global gradient-norm clip
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    seed: int = 0  # initialisation, data order and the checkpointed RNG
    fim_rate: float = 0.5  # fraction of documents turned into fill-in-the-middle examples
    eval_every: int = 200  # 0 = only at the end
    eval_batches: int = 8
    save_every: int = 500  # a checkpoint is also written at the end
    keep_checkpoints: int = 3
    log_every: int = 10
    mesh: str = "data=-1,fsdp=1"  # -1 = all remaining devices
    peak_tflops: float | None = None  # per device, for MFU; None = measure a matmul

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "grad_accum", "eval_batches", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("eval_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.batch_size % self.grad_accum:
            problems.append(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum "
                f"({self.grad_accum})"
            )
        if not 0 < self.lr_min <= self.lr and not (self.lr_min == 0 <= self.lr):
            problems.append(f"need 0 <= lr_min ({self.lr_min}) <= lr ({self.lr})")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.steps:
            problems.append(f"warmup_steps ({self.warmup_steps}) must be in [0, steps)")
        if not 0.0 <= self.fim_rate <= 1.0:
            problems.append(f"fim_rate ({self.fim_rate}) must be in [0, 1]")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            problems.append("peak_tflops must be positive")
        try:
            parse_mesh(self.mesh)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def warmup(self) -> int:
        """Warmup steps: as given, else the seed's 2,000 capped at 5% of a shorter run."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(2000, max(1, round(0.05 * self.steps))) if self.steps > 1 else 0

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config keys: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        data = self.to_dict() | {"resolved_warmup": self.warmup}
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        data = json.loads(path.read_text())
        data.pop("resolved_warmup", None)
        return cls.from_dict(data)


#: Training defaults per model preset. ``prod`` is seed 004 (3e-4 -> 3e-5, 2,000 warmup
#: steps at 50k steps, global batch 64). The small models take a 3x higher peak (small
#: transformers tolerate and need larger steps: GPT-3's table goes from 6e-4 at 125M up to
#: 1e-3 and beyond below that) with the same 10:1 decay, and their warmup is the 5% rule.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=3000, batch_size=16, lr=1e-3, lr_min=1e-4),
    "test": TrainConfig(steps=2000, batch_size=32, lr=1e-3, lr_min=1e-4),
    "prod": TrainConfig(
        steps=50_000,
        batch_size=64,
        lr=3e-4,
        lr_min=3e-5,
        eval_every=1000,
        eval_batches=16,
        save_every=1000,
        log_every=50,
    ),
}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """The training defaults for a model preset, with overrides."""
    try:
        base = TRAIN_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}"
        ) from None
    return base.replace(**overrides) if overrides else base


# -- mesh and shardings -----------------------------------------------------------------


def make_mesh(spec: str, devices: list[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (default: all, across every process)."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = parse_mesh(spec)
    fixed = math.prod(v for v in sizes.values() if v != -1)
    if -1 in sizes.values():
        if len(devices) % fixed:
            raise ValueError(f"mesh {spec!r} does not divide {len(devices)} devices")
        sizes = {k: (len(devices) // fixed if v == -1 else v) for k, v in sizes.items()}
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(
            f"mesh {spec!r} needs {math.prod(sizes.values())} devices, {len(devices)} present"
        )
    shape = (sizes["data"], sizes["fsdp"])
    # Auto axes: XLA propagates shardings from the parameters and the batch (GSPMD style).
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def _to_global(value: Any, like: jax.ShapeDtypeStruct) -> jax.Array:
    """A host value (the same on every process) laid out as ``like`` says."""
    host = np.asarray(value, like.dtype)
    return jax.make_array_from_callback(like.shape, like.sharding, lambda index: host[index])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES, None))


def put_batch(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global batch (the same on every process) -> a sharded ``jax.Array``.

    Each process passes only the rows its devices hold; on one process that is all of them.
    """
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    index = sharding.addressable_devices_indices_map(array.shape)
    starts = [sl[0].indices(array.shape[0]) for sl in index.values()]
    lo, hi = min(s[0] for s in starts), max(s[1] for s in starts)
    return jax.make_array_from_process_local_data(sharding, array[lo:hi], array.shape)


def check_shardable(cfg: ModelConfig, mesh: Mesh, batch_size: int, grad_accum: int) -> None:
    """Readable errors for shapes the mesh cannot split evenly."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = batch_size // grad_accum
    if micro % shards:
        raise ValueError(
            f"micro-batch {micro} (batch_size {batch_size} / grad_accum {grad_accum}) must be "
            f"a multiple of the {shards} devices in mesh data={mesh.shape['data']},"
            f"fsdp={mesh.shape['fsdp']}"
        )
    fsdp = mesh.shape["fsdp"]
    dims = {"hidden_dim": cfg.hidden_dim, "vocab_size": cfg.vocab_size}
    bad = [f"{k}={v}" for k, v in dims.items() if v % fsdp]
    if bad:
        raise ValueError(f"fsdp={fsdp} must divide {', '.join(bad)}")


# -- optimizer ----------------------------------------------------------------------------


def lr_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Learning rate as a function of the optimizer's update count (0-based).

    optax evaluates the schedule at the count *before* the update, so the count is shifted
    by one: the first update uses ``lr / warmup`` (not 0) and the last exactly ``lr_min``.
    """
    base = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.lr,
        warmup_steps=cfg.warmup,
        decay_steps=cfg.steps,
        end_value=cfg.lr_min,
    )
    return lambda count: base(count + 1)


def decay_mask(params: Params) -> Params:
    """True for matrices (kernels, the embedding), False for norm scales and biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.clip),
        optax.adamw(
            lr_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        ),
    )


# -- the step -------------------------------------------------------------------------------


class TrainState(NamedTuple):
    """Everything a step reads and writes; donated to the step and checkpointed."""

    step: jax.Array  # int32 scalar: optimizer steps done (== the next batch's index)
    params: Params  # nested dict of fp32 arrays (nnx pure dict)
    opt_state: optax.OptState
    rng: jax.Array  # typed PRNG key, advanced every step (reserved for stochastic layers)


def token_loss(
    model: Transformer, tokens: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(sum of masked next-token cross-entropies, sum of weights) for ``[B, L]`` rows.

    Input is ``tokens[:, :-1]``, target ``tokens[:, 1:]``, weight ``mask[:, 1:]``; the
    cross-entropy runs in fp32 whatever the compute dtype, fused with the head
    (:meth:`Transformer.loss_sums`).
    """
    weights = mask[:, 1:].astype(jnp.float32)
    return model.loss_sums(tokens[:, :-1], tokens[:, 1:], weights), jnp.sum(weights)


#: On a CPU each micro-batch is split further, down to about this many tokens: a smaller
#: step's working set stays in cache (tiny and test presets, batch 8 x 512 on the 2-core
#: machine: 1.1-1.2x with micro-batches of 2 rows). The update does not change: gradients
#: are token-weighted sums, whatever the split.
CPU_MICRO_TOKENS = 1024


def micro_batches(rows: int, length: int, grad_accum: int, shards: int, tokens: int) -> int:
    """Micro-batches per step: ``grad_accum``, times the finest split of each into equal
    row groups that still hold ``tokens`` tokens and a multiple of ``shards`` rows."""
    per = rows // grad_accum
    split = 1
    for k in range(2, per + 1):
        if per % k == 0 and (per // k) % shards == 0 and (per // k) * length >= tokens > 0:
            split = k
    return grad_accum * split


class Trainer:
    """A model's graph, the optimizer and the jitted step/eval functions for one mesh.

    ``micro_tokens`` (None: :data:`CPU_MICRO_TOKENS` on a CPU, 0 elsewhere) bounds the
    tokens of a micro-batch, see :func:`micro_batches`; 0 keeps ``grad_accum`` as given.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        mesh: Mesh,
        *,
        micro_tokens: int | None = None,
    ) -> None:
        check_shardable(model_cfg, mesh, train_cfg.batch_size, train_cfg.grad_accum)
        self.model_cfg = model_cfg
        self.train_cfg = train_cfg
        self.mesh = mesh
        if micro_tokens is None:
            micro_tokens = CPU_MICRO_TOKENS if jax.default_backend() == "cpu" else 0
        self.micro_tokens = micro_tokens
        self.tx = make_optimizer(train_cfg)
        self.schedule = lr_schedule(train_cfg)
        self.batch_sharding = batch_sharding(mesh)
        self.replicated = NamedSharding(mesh, P())

        with jax.set_mesh(mesh):
            abstract = nnx.eval_shape(lambda: build(model_cfg, train_cfg.seed, shard=True))
        self.graphdef, abstract_params, self.rest = nnx.split(abstract, nnx.Param, ...)
        specs = nnx.to_pure_dict(nnx.get_partition_spec(abstract_params))
        self.param_shardings: Params = jax.tree.map(
            lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P)
        )
        shapes = nnx.to_pure_dict(abstract_params)
        self.abstract_params: Params = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            shapes,
            self.param_shardings,
        )
        abstract_opt = jax.eval_shape(self.tx.init, self.abstract_params)
        self.opt_shardings = optax.tree_utils.tree_map_params(
            self.tx,
            lambda _, sharding: sharding,
            abstract_opt,
            self.param_shardings,
            transform_non_params=lambda _: self.replicated,
        )
        self.state_shardings = TrainState(
            step=self.replicated,
            params=self.param_shardings,
            opt_state=self.opt_shardings,
            rng=self.replicated,
        )
        self.abstract_opt_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_opt,
            self.opt_shardings,
        )
        self.step_fn = self._make_step()
        self.eval_fn = self._make_eval()
        self._init_fn = self._make_init()

    # -- state --------------------------------------------------------------------------

    def init(self, model: Transformer | None = None) -> TrainState:
        """A fresh state: parameters from ``model`` (e.g. imported weights) or a new init.

        A new init runs jitted with sharded outputs, so each device creates only its own
        shards: a 500M model never materialises whole on one device.
        """
        if model is None:
            params, opt_state = self._init_fn()
        else:
            host = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            params = jax.tree.map(_to_global, host, self.abstract_params)
            opt_state = jax.jit(self.tx.init, out_shardings=self.opt_shardings)(params)
        step, rng = self.replicated_scalars(
            0, jax.random.key_data(jax.random.key(self.train_cfg.seed))
        )
        return TrainState(step=step, params=params, opt_state=opt_state, rng=rng)

    def replicated_scalars(self, step: int, rng_data: Any) -> tuple[jax.Array, jax.Array]:
        """The step counter and PRNG key as replicated arrays (also across processes)."""
        key_data = np.asarray(rng_data, np.uint32)
        make = jax.jit(
            lambda: (jnp.asarray(step, jnp.int32), jax.random.wrap_key_data(jnp.asarray(key_data))),
            out_shardings=(self.replicated, self.replicated),
        )
        return make()

    def model(self, params: Params) -> Transformer:
        """A model object over ``params`` (for sampling or export after training)."""
        return nnx.merge(self.graphdef, params, self.rest)

    # -- jitted functions --------------------------------------------------------------

    def _loss_sums(
        self, params: Params, tokens: jax.Array, mask: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        return token_loss(nnx.merge(self.graphdef, params, self.rest), tokens, mask)

    def micro_batches(self, rows: int, length: int) -> int:
        """Micro-batches in one step over a ``[rows, length]`` batch."""
        shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        return micro_batches(rows, length, self.train_cfg.grad_accum, shards, self.micro_tokens)

    def _make_step(self) -> Callable[..., tuple[TrainState, Metrics]]:
        micro_sharding = NamedSharding(self.mesh, P(None, BATCH_AXES, None))
        grad_fn = jax.value_and_grad(self._loss_sums, has_aux=True)

        def step(
            state: TrainState, tokens: jax.Array, mask: jax.Array
        ) -> tuple[TrainState, Metrics]:
            rows, length = tokens.shape
            accum = self.micro_batches(rows, length)

            def split(x: jax.Array) -> jax.Array:
                # [B, L] -> [K, B/K, L]; micro-batch j takes rows j, j+K, ... so that every
                # device holds a share of every micro-batch (no resharding between them).
                x = x.reshape(rows // accum, accum, length).swapaxes(0, 1)
                return jax.lax.with_sharding_constraint(x, micro_sharding)

            def micro_step(
                grads: Params, xs: tuple[jax.Array, jax.Array]
            ) -> tuple[Params, tuple[jax.Array, jax.Array]]:
                (loss_sum, weight), g = grad_fn(state.params, *xs)
                grads = jax.tree.map(jnp.add, grads, g)
                grads = jax.lax.with_sharding_constraint(grads, self.param_shardings)
                return grads, (loss_sum, weight)

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            grads, (loss_sums, weights) = jax.lax.scan(
                micro_step, zeros, (split(tokens), split(mask))
            )
            total = jnp.maximum(jnp.sum(weights), 1.0)
            grads = jax.tree.map(lambda g: g / total, grads)
            grad_norm = optax.tree.norm(grads)
            updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            rng, _ = jax.random.split(state.rng)
            metrics = {
                "loss": jnp.sum(loss_sums) / total,
                "grad_norm": grad_norm,
                "lr": jnp.asarray(self.schedule(state.step), jnp.float32),
                "weight": jnp.sum(weights),
            }
            new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
            return new_state, metrics

        return jax.jit(
            step,
            in_shardings=(self.state_shardings, self.batch_sharding, self.batch_sharding),
            out_shardings=(self.state_shardings, self.replicated),
            donate_argnums=(0,),
        )

    def _make_eval(self) -> Callable[..., tuple[jax.Array, jax.Array]]:
        return jax.jit(
            self._loss_sums,
            in_shardings=(self.param_shardings, self.batch_sharding, self.batch_sharding),
            out_shardings=(self.replicated, self.replicated),
        )

    def _make_init(self) -> Callable[[], tuple[Params, optax.OptState]]:
        def init() -> tuple[Params, optax.OptState]:
            model = build(self.model_cfg, self.train_cfg.seed)
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            return params, self.tx.init(params)

        return jax.jit(init, out_shardings=(self.param_shardings, self.opt_shardings))

    # -- host-side helpers ---------------------------------------------------------------

    def train_step(
        self, state: TrainState, tokens: np.ndarray, mask: np.ndarray
    ) -> tuple[TrainState, Metrics]:
        """One optimizer step on a global numpy batch ``[B, L]`` (``state`` is donated)."""
        return self.step_fn(
            state,
            put_batch(np.asarray(tokens, np.int32), self.batch_sharding),
            put_batch(np.asarray(mask, np.float32), self.batch_sharding),
        )

    def evaluate(self, params: Params, batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Token-weighted mean loss over ``batches`` (nan when there are none)."""
        loss_sum, weight = 0.0, 0.0
        for tokens, mask in batches:
            s, w = self.eval_fn(
                params,
                put_batch(np.asarray(tokens, np.int32), self.batch_sharding),
                put_batch(np.asarray(mask, np.float32), self.batch_sharding),
            )
            loss_sum += float(s)
            weight += float(w)
        return loss_sum / weight if weight else float("nan")


def _step_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the fields the compiled functions do not depend on reset to defaults."""
    fields = ("steps", "batch_size", "grad_accum", "lr", "lr_min", "weight_decay", "clip")
    fields += ("b1", "b2", "eps", "seed")
    return TrainConfig(warmup_steps=cfg.warmup, **{f: getattr(cfg, f) for f in fields})


@functools.lru_cache(maxsize=4)
def _cached_trainer(model_cfg: ModelConfig, step_cfg: TrainConfig, mesh: Mesh) -> Trainer:
    return Trainer(model_cfg, step_cfg, mesh)


def get_trainer(model_cfg: ModelConfig, train_cfg: TrainConfig, mesh: Mesh) -> Trainer:
    """A :class:`Trainer`, shared between calls with the same model, optimisation and mesh.

    Trainers hold no training state, only compiled functions, so a notebook or a test that
    calls :func:`fit` again (a resume) reuses the compiled step instead of recompiling.
    """
    return _cached_trainer(model_cfg, _step_config(train_cfg), mesh)


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
