"""The specialist: a decoder-only transformer in Flax NNX, readable top to bottom.

    tokens [B, T]
      -> Embed                                  [B, T, D]
      -> num_layers x Block:
           x + Attention(RMSNorm(x))            grouped-query, RoPE, causal
           x + SwiGLU(RMSNorm(x))
      -> RMSNorm -> logits = x @ Embed^T        [B, T, V]  (tied head, fp32 logits)
         training: loss = CE(x @ Embed^T)       fused, tile by tile (no [B, T, V] logits)

Conventions match Hugging Face's Llama/Qwen2 code (RoPE with ``rotate_half`` on split halves,
RMSNorm computed in fp32, SwiGLU as ``down(silu(gate(x)) * up(x))``) so that
:mod:`training.hf` converts weights by transposing kernels and nothing else.

Parameters live in ``param_dtype`` (fp32); matmuls run in ``dtype`` (bf16 by default) and
accumulate in fp32, through the hand-written passes of :mod:`training.kernels` (linears,
tiled causal attention, and a training loss that fuses the head with the cross-entropy);
RMSNorm and SwiGLU work on fp32 values and round once. ``cfg.legacy_numerics`` selects the
previous path instead (bf16-output matmuls differentiated by XLA, whole fp32 logits), kept
only for ``council bench train --baseline``. Every kernel carries a partition annotation on
the ``fsdp`` mesh axis; on one device it is inert metadata, under a mesh
:mod:`training.train` turns it into shardings.

Decoding uses an explicit :class:`KVCache` pytree: ``model(tokens, cache=c, pos=p)`` writes
the new keys/values at positions ``p .. p+T-1`` and attends over every cached position
``<= `` the query's. Because the cache has a fixed length and ``pos`` is a traced scalar,
a jitted step compiles once per (batch, T, cache length) bucket; the sampler
(:mod:`training.sample`) and the language server share this path.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from training.config import ModelConfig
from training.kernels import attend, causal_attention, contract, head_cross_entropy

Array = jax.Array

_INIT_STD = 0.02


def _dtype(name: str) -> jnp.dtype:
    return jnp.dtype(name)


class Linear(nnx.Linear):
    """``nnx.Linear`` (same parameters and names) whose matmul is :func:`contract`."""

    legacy: bool = False

    def __call__(self, x: Array) -> Array:  # [B, T, d_in] -> [B, T, d_out] in self.dtype
        if self.legacy:
            return super().__call__(x)
        y = contract("btd,de->bte", x.astype(self.dtype), self.kernel[...])
        if self.bias is not None:
            y = y + self.bias[...]
        return y.astype(self.dtype)


def _linear(
    cfg: ModelConfig,
    d_in: int,
    d_out: int,
    rngs: nnx.Rngs,
    *,
    shard: tuple[str | None, str | None],
    std: float = _INIT_STD,
    bias: bool = False,
) -> Linear:
    layer = Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=_dtype(cfg.dtype),
        param_dtype=_dtype(cfg.param_dtype),
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(std), shard),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (shard[1],)),
        rngs=rngs,
    )
    layer.legacy = cfg.legacy_numerics
    return layer


#: below this many tokens (decoding), ``fused_linear`` runs one dot per linear: copying the
#: kernels into one matrix costs more than the dot it saves (2.6 of a 3.7 ms decode step)
FUSE_MIN_TOKENS = 64


def fused_linear(x: Array, layers: tuple[Linear, ...]) -> Array:
    """Several linears of one input as one matmul over their concatenated kernels:
    ``[B, T, D] -> [B, T, sum(d_out)]`` in fp32 (one dot, one input transpose backward).
    For a few tokens the same columns come from one dot per linear instead."""
    if x.shape[0] * x.shape[1] < FUSE_MIN_TOKENS:
        parts = [contract("btd,de->bte", x, lin.kernel[...]) for lin in layers]
        if layers[0].bias is not None:
            parts = [p + lin.bias[...] for p, lin in zip(parts, layers, strict=True)]
        return jnp.concatenate(parts, axis=-1)
    y = contract("btd,de->bte", x, jnp.concatenate([lin.kernel[...] for lin in layers], axis=1))
    if layers[0].bias is not None:
        y = y + jnp.concatenate([lin.bias[...] for lin in layers])
    return y


class KVCache(NamedTuple):
    """Per-layer keys and values, each ``[B, S, num_kv_heads, head_dim]`` in compute dtype."""

    k: tuple[Array, ...]
    v: tuple[Array, ...]

    @property
    def length(self) -> int:
        return self.k[0].shape[1]


def init_cache(cfg: ModelConfig, batch: int, length: int) -> KVCache:
    """An empty cache holding ``length`` positions for ``batch`` sequences."""
    shape = (batch, length, cfg.num_kv_heads, cfg.head_dim)
    zeros = tuple(jnp.zeros(shape, _dtype(cfg.dtype)) for _ in range(cfg.num_layers))
    return KVCache(k=zeros, v=tuple(jnp.zeros_like(z) for z in zeros))


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, with the statistics in fp32 whatever the compute dtype."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.eps = cfg.norm_eps
        self.dtype = _dtype(cfg.dtype)
        self.legacy = cfg.legacy_numerics
        self.scale = nnx.Param(
            jnp.ones((cfg.hidden_dim,), _dtype(cfg.param_dtype)), out_sharding=(None,)
        )

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.legacy:  # the scale multiplies in the compute dtype
            return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)
        return (x32 * self.scale[...]).astype(self.dtype)  # in fp32, rounded once


def rope_tables(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """cos and sin ``[B, T, 1, hd]`` (fp32) for ``positions [B, T]``: once per forward."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, hd/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, hd]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotary embedding, HF ``rotate_half`` layout, in fp32. x: [B, T, N, hd]."""
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    return x32 * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding of ``x [B, T, N, hd]`` at ``positions [B, T]``, in x's dtype."""
    return apply_rope(x, *rope_tables(positions, x.shape[-1], theta)).astype(x.dtype)


class Attention(nnx.Module):
    """Grouped-query attention: num_heads queries share num_kv_heads keys/values."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        d, hd = cfg.hidden_dim, cfg.head_dim
        out_std = _INIT_STD / (2 * cfg.num_layers) ** 0.5  # GPT-2 residual scaling
        self.q_proj = _linear(
            cfg, d, cfg.num_heads * hd, rngs, shard=("fsdp", None), bias=cfg.qkv_bias
        )
        self.k_proj = _linear(
            cfg, d, cfg.num_kv_heads * hd, rngs, shard=("fsdp", None), bias=cfg.qkv_bias
        )
        self.v_proj = _linear(
            cfg, d, cfg.num_kv_heads * hd, rngs, shard=("fsdp", None), bias=cfg.qkv_bias
        )
        self.o_proj = _linear(cfg, cfg.num_heads * hd, d, rngs, shard=(None, "fsdp"), std=out_std)

    def __call__(
        self,
        x: Array,  # [B, T, D]
        positions: Array,  # [B, T]
        rot: tuple[Array, Array],  # RoPE cos, sin: [B, T, 1, hd]
        layer_cache: tuple[Array, Array] | None,
        pos: Array | None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        cfg = self.cfg
        b, t, _ = x.shape
        h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        if cfg.legacy_numerics:  # three bf16 projections, RoPE rounded in between
            q = rope(self.q_proj(x).reshape(b, t, h, hd), positions, cfg.rope_theta)
            k = rope(self.k_proj(x).reshape(b, t, kv, hd), positions, cfg.rope_theta)
            v = self.v_proj(x).reshape(b, t, kv, hd)
        else:  # one matmul; RoPE on its fp32 output
            qkv = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))  # [B, T, (H+2KV) hd]
            q, k, v = jnp.split(qkv.reshape(b, t, h + 2 * kv, hd), (h, h + kv), axis=2)
            q = apply_rope(q, *rot).astype(x.dtype)
            k = apply_rope(k, *rot).astype(x.dtype)
            v = v.astype(x.dtype)

        if layer_cache is None:  # training / full forward: keys are this chunk
            keys, values = k, v
            key_pos = positions  # [B, S=T]
            new_cache = None
        else:  # decode: write this chunk at pos, attend over the whole cache
            ck, cv = layer_cache
            keys = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, pos, 0, 0))
            values = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, pos, 0, 0))
            key_pos = jnp.broadcast_to(jnp.arange(ck.shape[1])[None, :], (b, ck.shape[1]))
            new_cache = (keys, values)

        q = q.reshape(b, t, kv, cfg.kv_groups, hd)  # [B, T, KV, G, hd]
        keys, values = keys.astype(q.dtype), values.astype(q.dtype)  # [B, S, KV, hd]
        causal = key_pos[:, None, None, None, :] <= positions[:, None, :, None, None]
        if cfg.legacy_numerics:  # bf16 scores, XLA's softmax gradient
            scores = jnp.einsum("btkgd,bskd->bktgs", q, keys).astype(jnp.float32)
            scores = scores / jnp.sqrt(jnp.float32(hd))
            scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
            out = jnp.einsum("bktgs,bskd->btkgd", probs, values)
        elif layer_cache is None:
            out = causal_attention(q, keys, values, 1.0 / hd**0.5)  # [B, T, KV, G, hd]
        else:
            out = attend(q, keys, values, causal, 1.0 / hd**0.5)
        return self.o_proj(out.reshape(b, t, h * hd)), new_cache


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)): three matmuls, ffn_dim wide."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        out_std = _INIT_STD / (2 * cfg.num_layers) ** 0.5
        self.legacy = cfg.legacy_numerics
        self.gate_proj = _linear(cfg, cfg.hidden_dim, cfg.ffn_dim, rngs, shard=("fsdp", None))
        self.up_proj = _linear(cfg, cfg.hidden_dim, cfg.ffn_dim, rngs, shard=("fsdp", None))
        self.down_proj = _linear(
            cfg, cfg.ffn_dim, cfg.hidden_dim, rngs, shard=(None, "fsdp"), std=out_std
        )

    def __call__(self, x: Array) -> Array:  # [B, T, D] -> [B, T, D]
        if self.legacy:
            return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))
        # gate and up as one matmul; silu(gate) * up from its fp32 output, rounded once
        gate, up = jnp.split(fused_linear(x, (self.gate_proj, self.up_proj)), 2, axis=-1)
        return self.down_proj((jax.nn.silu(gate) * up).astype(x.dtype))  # [B, T, F] -> [B, T, D]


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        self.attn_norm = RMSNorm(cfg)
        self.attn = Attention(cfg, rngs)
        self.mlp_norm = RMSNorm(cfg)
        self.mlp = SwiGLU(cfg, rngs)

    def __call__(
        self,
        x: Array,
        positions: Array,
        rot: tuple[Array, Array],
        layer_cache: tuple[Array, Array] | None,
        pos: Array | None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        h, new_cache = self.attn(self.attn_norm(x), positions, rot, layer_cache, pos)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return x, new_cache


def _block_forward(
    layer: Block, x: Array, positions: Array, rot: tuple[Array, Array]
) -> tuple[Array, None]:
    return layer(x, positions, rot, None, None)


class Transformer(nnx.Module):
    """The whole model. ``model(tokens)`` for training; add ``cache``/``pos`` to decode."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.embed = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_dim,
            dtype=_dtype(cfg.dtype),
            param_dtype=_dtype(cfg.param_dtype),
            embedding_init=nnx.with_partitioning(
                nnx.initializers.normal(_INIT_STD), ("fsdp", None)
            ),
            rngs=rngs,
        )
        self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg)
        self.lm_head = (
            None
            if cfg.tie_embeddings
            else _linear(cfg, cfg.hidden_dim, cfg.vocab_size, rngs, shard=("fsdp", None))
        )

    def hidden(
        self,
        tokens: Array,  # [B, T] int32
        *,
        cache: KVCache | None = None,
        pos: Array | int = 0,
    ) -> tuple[Array, KVCache | None]:
        """The final-norm hidden states ``[B, T, D]`` (compute dtype) and the updated cache."""
        b, t = tokens.shape
        cfg = self.cfg
        static_pos = pos if isinstance(pos, int) else None
        pos = jnp.asarray(pos, jnp.int32)
        positions = jnp.broadcast_to(pos + jnp.arange(t, dtype=jnp.int32)[None, :], (b, t))
        if static_pos is not None:  # training: RoPE's tables are constants, [1, T, 1, hd]
            with jax.ensure_compile_time_eval():  # (else XLA recomputes cos/sin in each use)
                row = static_pos + jnp.arange(t)[None, :]
                rot = rope_tables(row, cfg.head_dim, cfg.rope_theta)
        else:  # decoding at a traced position: [B, T, 1, hd]
            rot = rope_tables(positions, cfg.head_dim, cfg.rope_theta)
        if self.cfg.legacy_numerics:
            x = self.embed(tokens)  # [B, T, D]
        else:  # gather fp32 rows, then cast: the gradient scatters into fp32
            x = jnp.take(self.embed.embedding[...], tokens, axis=0).astype(self.embed.dtype)
        new_k: list[Array] = []
        new_v: list[Array] = []
        for i, layer in enumerate(self.layers):
            if cache is None and self.cfg.remat:  # training: keep only block inputs
                x, _ = nnx.remat(_block_forward)(layer, x, positions, rot)
                continue
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            x, updated = layer(x, positions, rot, layer_cache, None if cache is None else pos)
            if updated is not None:
                new_k.append(updated[0])
                new_v.append(updated[1])
        out_cache = KVCache(tuple(new_k), tuple(new_v)) if cache is not None else None
        return self.norm(x), out_cache

    def head(self) -> tuple[Array, str]:
        """The output projection and its einsum letters: the tied ``[V, D]`` embedding
        (``"vd"``) or the untied ``[D, V]`` kernel (``"dv"``), both fp32."""
        if self.lm_head is None:
            return self.embed.embedding[...], "vd"
        return self.lm_head.kernel[...], "dv"

    def __call__(
        self,
        tokens: Array,  # [B, T] int32
        *,
        cache: KVCache | None = None,
        pos: Array | int = 0,
    ) -> tuple[Array, KVCache | None]:
        """Logits ``[B, T, V]`` in fp32 and the updated cache (None without one)."""
        x, out_cache = self.hidden(tokens, cache=cache, pos=pos)
        return self.project(x), out_cache

    def project(self, x: Array) -> Array:
        """Hidden states ``[B, T, D]`` -> fp32 logits ``[B, T, V]`` (the head). Decoding
        projects only the positions it samples from: for a 256-token prefill chunk the
        head would otherwise be a third of the work."""
        if self.cfg.legacy_numerics:
            logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
        else:
            w, w_spec = self.head()
            logits = contract(f"btd,{w_spec}->btv", x, w)  # [B, T, V]
        return logits.astype(jnp.float32)

    def loss_sums(
        self,
        tokens: Array,  # [B, T] int32 inputs
        targets: Array,  # [B, T] int32 next tokens
        weights: Array,  # [B, T] fp32 (0 = padding)
    ) -> Array:
        """``sum(weights * cross-entropy)`` in fp32, without materialising the logits.

        The training loss: the head and the cross-entropy run together over tiles of
        tokens x vocabulary (:func:`head_cross_entropy`), so the fp32 ``[B, T, V]`` logits
        (805 MB for the ``test`` preset's batch of 8 x 512) never exist.
        """
        x, _ = self.hidden(tokens)
        if self.cfg.legacy_numerics:  # the pre-AMX path: whole logits, optax's loss
            # imported here: optax is in the [train] extra and inference never gets here (flax
            # pulls optax in today; the model does not count on it)
            import optax

            logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
            ce = optax.softmax_cross_entropy_with_integer_labels(
                logits.astype(jnp.float32), targets
            )
            return jnp.sum(ce * weights)
        w, w_spec = self.head()
        w = w if w_spec == "vd" else w.T  # [V, D]
        return head_cross_entropy(x, w, targets, weights.astype(jnp.float32))


def build(cfg: ModelConfig, seed: int = 0, *, shard: bool = False) -> Transformer:
    """A freshly initialised model (fp32 params, ``cfg.dtype`` compute).

    With ``shard=False`` the partition annotations stay metadata (no mesh needed). With
    ``shard=True`` call it under ``jax.set_mesh(mesh)``: each parameter is created already
    laid out on the mesh, so a 500M model never materialises whole on one device.
    """
    with nnx.use_eager_sharding(shard):
        return Transformer(cfg, nnx.Rngs(params=seed))
