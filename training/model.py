"""The specialist: a decoder-only transformer in Flax NNX, readable top to bottom.

    tokens [B, T]
      -> Embed                                  [B, T, D]
      -> num_layers x Block:
           x + Attention(RMSNorm(x))            grouped-query, RoPE, causal
           x + SwiGLU(RMSNorm(x))
      -> RMSNorm -> logits = x @ Embed^T        [B, T, V]  (tied head, fp32 logits)

Conventions match Hugging Face's Llama/Qwen2 code (RoPE with ``rotate_half`` on split halves,
RMSNorm computed in fp32, SwiGLU as ``down(silu(gate(x)) * up(x))``) so that
:mod:`training.hf` converts weights by transposing kernels and nothing else.

Parameters live in ``param_dtype`` (fp32); matmuls run in ``dtype`` (bf16 by default).
Every kernel carries a partition annotation on the ``fsdp`` mesh axis; on one device it is
inert metadata, under a mesh :mod:`training.train` turns it into shardings.

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

Array = jax.Array

_INIT_STD = 0.02


def _dtype(name: str) -> jnp.dtype:
    return jnp.dtype(name)


def _linear(
    cfg: ModelConfig,
    d_in: int,
    d_out: int,
    rngs: nnx.Rngs,
    *,
    shard: tuple[str | None, str | None],
    std: float = _INIT_STD,
    bias: bool = False,
) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=_dtype(cfg.dtype),
        param_dtype=_dtype(cfg.param_dtype),
        kernel_init=nnx.with_partitioning(nnx.initializers.normal(std), shard),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (shard[1],)),
        rngs=rngs,
    )


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
        self.scale = nnx.Param(
            jnp.ones((cfg.hidden_dim,), _dtype(cfg.param_dtype)), out_sharding=(None,)
        )

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)


def rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding, HF ``rotate_half`` layout. x: [B, T, N, hd], positions: [B, T]."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))  # [hd/2]
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, hd/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]  # [B, T, 1, hd]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


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
        layer_cache: tuple[Array, Array] | None,
        pos: Array | None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        cfg = self.cfg
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, cfg.num_heads, cfg.head_dim)
        k = self.k_proj(x).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        v = self.v_proj(x).reshape(b, t, cfg.num_kv_heads, cfg.head_dim)
        q = rope(q, positions, cfg.rope_theta)
        k = rope(k, positions, cfg.rope_theta)

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

        # [B, T, KV, G, hd] x [B, S, KV, hd] -> [B, KV, G, T, S]
        q = q.reshape(b, t, cfg.num_kv_heads, cfg.kv_groups, cfg.head_dim)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, keys.astype(q.dtype))
        scores = scores.astype(jnp.float32) / jnp.sqrt(jnp.float32(cfg.head_dim))
        causal = key_pos[:, None, None, None, :] <= positions[:, None, None, :, None]
        scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", probs, values.astype(q.dtype))
        out = out.reshape(b, t, cfg.num_heads * cfg.head_dim)
        return self.o_proj(out), new_cache


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x)): three matmuls, ffn_dim wide."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs) -> None:
        out_std = _INIT_STD / (2 * cfg.num_layers) ** 0.5
        self.gate_proj = _linear(cfg, cfg.hidden_dim, cfg.ffn_dim, rngs, shard=("fsdp", None))
        self.up_proj = _linear(cfg, cfg.hidden_dim, cfg.ffn_dim, rngs, shard=("fsdp", None))
        self.down_proj = _linear(
            cfg, cfg.ffn_dim, cfg.hidden_dim, rngs, shard=(None, "fsdp"), std=out_std
        )

    def __call__(self, x: Array) -> Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


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
        layer_cache: tuple[Array, Array] | None,
        pos: Array | None,
    ) -> tuple[Array, tuple[Array, Array] | None]:
        h, new_cache = self.attn(self.attn_norm(x), positions, layer_cache, pos)
        x = x + h
        x = x + self.mlp(self.mlp_norm(x))
        return x, new_cache


def _block_forward(layer: Block, x: Array, positions: Array) -> tuple[Array, None]:
    return layer(x, positions, None, None)


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

    def __call__(
        self,
        tokens: Array,  # [B, T] int32
        *,
        cache: KVCache | None = None,
        pos: Array | int = 0,
    ) -> tuple[Array, KVCache | None]:
        """Logits ``[B, T, V]`` in fp32 and the updated cache (None without one)."""
        b, t = tokens.shape
        pos = jnp.asarray(pos, jnp.int32)
        positions = jnp.broadcast_to(pos + jnp.arange(t, dtype=jnp.int32)[None, :], (b, t))
        x = self.embed(tokens)  # [B, T, D]
        new_k: list[Array] = []
        new_v: list[Array] = []
        for i, layer in enumerate(self.layers):
            if cache is None and self.cfg.remat:  # training: keep only block inputs
                x, _ = nnx.remat(_block_forward)(layer, x, positions)
                continue
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            x, updated = layer(x, positions, layer_cache, None if cache is None else pos)
            if updated is not None:
                new_k.append(updated[0])
                new_v.append(updated[1])
        x = self.norm(x)
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
        out_cache = KVCache(tuple(new_k), tuple(new_v)) if cache is not None else None
        return logits.astype(jnp.float32), out_cache


def build(cfg: ModelConfig, seed: int = 0, *, shard: bool = False) -> Transformer:
    """A freshly initialised model (fp32 params, ``cfg.dtype`` compute).

    With ``shard=False`` the partition annotations stay metadata (no mesh needed). With
    ``shard=True`` call it under ``jax.set_mesh(mesh)``: each parameter is created already
    laid out on the mesh, so a 500M model never materialises whole on one device.
    """
    with nnx.use_eager_sharding(shard):
        return Transformer(cfg, nnx.Rngs(params=seed))
