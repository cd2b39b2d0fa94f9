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

import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from training.config import ModelConfig, TrainConfig
from training.mesh import (
    BATCH_AXES,
    _to_global,
    batch_sharding,
    check_shardable,
    put_batch,
)
from training.model import Transformer, build

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

Params = dict[str, Any]
Metrics = dict[str, jax.Array]


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
