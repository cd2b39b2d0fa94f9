"""Hand-written forward and backward passes for the model's hot spots, and why.

On CPUs with AMX (Sapphire Rapids) the way a matmul is emitted decides its speed by an
order of magnitude: XLA:CPU hands a bf16 x bf16 dot that accumulates and returns fp32
(``preferred_element_type``) to its library kernels (YNNPACK, AMX), and runs a bf16-output
dot, or any dot it cannot prove canonical, as a slow generic fp32 loop. JAX's own
derivatives of such a dot are the slow kind (an fp32 cotangent meets a bf16 operand), so
each piece here is a ``jax.custom_vjp`` whose forward *and* backward dots are all the fast
kind, with fp32 results cast once to the compute dtype and weight gradients kept in fp32:

* :func:`contract`: every linear layer;
* :func:`causal_attention`: tile by tile, skipping the masked upper triangle;
* :func:`head_cross_entropy`: the tied head fused with the loss, tile by tile, so the fp32
  ``[B, T, V]`` logits never exist.

Tiles are sized so that their fp32 blocks stay in cache: on the 2-core machine a pass over
an array in memory costs about as much as the matmul that produced it. Each function is
checked against its plain JAX equivalent in ``tests/test_training_model.py``; the model
(:mod:`training.model`) keeps the previous numerics behind ``ModelConfig.legacy_numerics``
for ``council bench train --baseline``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


# -- matmuls: bf16 x bf16 with fp32 accumulation, forward and backward ------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def contract(spec: str, a: Array, b: Array) -> Array:
    """``einsum(spec, a, b)`` in ``a``'s dtype, accumulated and returned in fp32.

    ``b`` may be an fp32 parameter: it is cast to ``a``'s dtype for the dot and its gradient
    comes back in fp32. The backward pass is written out (below) so that both of its dots
    are the same kind, with the cotangent cast to ``a``'s dtype: JAX's own transpose rule
    would pair an fp32 cotangent with bf16 operands, a mixed dot XLA:CPU upcasts to fp32.
    Every index of one operand must appear in the other or in the output.
    """
    return jnp.einsum(spec, a, b.astype(a.dtype), preferred_element_type=jnp.float32)


def _contract_fwd(spec: str, a: Array, b: Array) -> tuple[Array, tuple[Array, Array]]:
    return contract(spec, a, b), (a, b)


def _contract_bwd(spec: str, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    a, b = res
    inputs, out = spec.split("->")
    sa, sb = inputs.split(",")
    g = g.astype(a.dtype)
    da = jnp.einsum(f"{out},{sb}->{sa}", g, b.astype(a.dtype), preferred_element_type=jnp.float32)
    # A weight gradient contracts over every leading axis ("btd,bte->de"): keep activations
    # [B, T, D], as XLA:CPU makes a library dot of a contraction over two leading axes (by
    # transposing an operand) but upcasts one over a single leading axis to a slow fp32 dot.
    db = jnp.einsum(f"{sa},{out}->{sb}", a, g, preferred_element_type=jnp.float32)
    return da.astype(a.dtype), db.astype(b.dtype)


contract.defvjp(_contract_fwd, _contract_bwd)


# -- attention: softmax(q k^T) v ----------------------------------------------------------


def attend(q: Array, k: Array, v: Array, mask: Array, scale: float) -> Array:
    """``softmax(scale * q k^T + mask) v`` for q ``[B, T, KV, G, hd]``, k/v ``[B, S, KV, hd]``
    and a boolean mask broadcastable to ``[B, KV, T, G, S]``; result ``[B, T, KV, G, hd]``.
    The general form, used when decoding against a cache; scores and softmax in fp32."""
    # T before G: with one KV head the queries and the output need no transpose.
    s = jnp.einsum("btkgd,bskd->bktgs", q, k, preferred_element_type=jnp.float32) * scale
    s = jnp.where(mask, s, jnp.finfo(jnp.float32).min)  # [B, KV, T, G, S]
    p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
    o = jnp.einsum("bktgs,bskd->btkgd", p, v, preferred_element_type=jnp.float32)
    return o.astype(q.dtype)


#: query positions per tile of causal self-attention (training, and prefill without a cache)
ATTN_BLOCK = 128


def _tiles(t: int) -> list[tuple[int, int]]:
    """Query blocks ``[start, end)``; block ``i`` attends to the keys ``[0, end)``."""
    return [(start, min(start + ATTN_BLOCK, t)) for start in range(0, t, ATTN_BLOCK)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def causal_attention(q: Array, k: Array, v: Array, scale: float) -> Array:
    """Causal self-attention (keys = queries), q ``[B, T, KV, G, hd]``, k/v ``[B, T, KV, hd]``
    -> ``[B, T, KV, G, hd]``, tile by tile.

    * Query block ``i`` attends only to the keys up to its own end: the masked upper
      triangle is never computed (about half the scores at 512 tokens), and each tile's
      fp32 scores stay in cache.
    * Queries are laid out ``[B, KV, T*G, hd]`` and keys/values ``[B, KV, hd, S]``, so that
      every dot, forward and backward, finds its operands in the order XLA:CPU's library
      kernels take without transposing a ``[T, S]`` tile.
    * The backward pass uses the flash-attention identity ``dS = P * (dP - rowsum(dO * O))``
      instead of differentiating the softmax.
    """
    return _causal_fwd(q, k, v, scale)[0]


def _heads_major(x: Array) -> Array:  # [B, T, KV, G, hd] -> [B, KV, T*G, hd]
    b, t, kv, g, hd = x.shape
    return x.transpose(0, 2, 1, 3, 4).reshape(b, kv, t * g, hd)


def _causal_fwd(q: Array, k: Array, v: Array, scale: float) -> tuple[Array, tuple[Any, ...]]:
    b, t, kv, g, hd = q.shape
    f32 = jnp.float32
    qm = _heads_major(q)  # [B, KV, T*G, hd]
    kt, vt = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 3, 1)  # [B, KV, hd, S]
    outs, probs = [], []
    for start, end in _tiles(t):
        q_i = qm[:, :, start * g : end * g]  # [B, KV, n, hd], n = (end - start) * G
        s = jnp.einsum("bkmd,bkds->bkms", q_i, kt[..., :end], preferred_element_type=f32)
        row = start + jnp.arange((end - start) * g) // g  # each query row's position
        s = jnp.where(jnp.arange(end)[None, :] <= row[:, None], s * scale, jnp.finfo(f32).min)
        p = jax.nn.softmax(s, axis=-1).astype(q.dtype)  # [B, KV, n, end]
        o = jnp.einsum("bkms,bkds->bkmd", p, vt[..., :end], preferred_element_type=f32)
        outs.append(o.astype(q.dtype))
        probs.append(p)
    om = jnp.concatenate(outs, axis=2)  # [B, KV, T*G, hd]
    out = om.reshape(b, kv, t, g, hd).transpose(0, 2, 1, 3, 4)
    return out, (qm, kt, vt, tuple(probs), om)


def _causal_bwd(scale: float, res: tuple[Any, ...], do: Array) -> tuple[Array, Array, Array]:
    qm, kt, vt, probs, om = res
    b, kv, hd, t = kt.shape
    g = qm.shape[2] // t
    f32 = jnp.float32
    dom = _heads_major(do.astype(qm.dtype))
    # rowsum(dO * O): [B, KV, T*G], as an einsum (4x faster here than multiply-then-sum)
    delta = jnp.einsum("bkmd,bkmd->bkm", dom, om, preferred_element_type=f32)
    dq, dkt, dvt = [], [], []
    for (start, end), p in zip(_tiles(t), probs, strict=True):
        rows = slice(start * g, end * g)
        do_i, q_i = dom[:, :, rows], qm[:, :, rows]
        dp = jnp.einsum("bkmd,bkds->bkms", do_i, vt[..., :end], preferred_element_type=f32)
        ds = (p.astype(f32) * (dp - delta[:, :, rows, None]) * scale).astype(qm.dtype)
        dq.append(jnp.einsum("bkms,bkds->bkmd", ds, kt[..., :end], preferred_element_type=f32))

        # dK^T, dV^T contract over the query rows, split (T, G) so that XLA:CPU makes a
        # library dot of it (see contract): [B, KV, n, G, hd] x [B, KV, n, G, S] -> [B, KV, hd, S]
        n = end - start
        pad = ((0, 0), (0, 0), (0, 0), (0, t - end))
        for out, lhs, rhs in ((dkt, q_i, ds), (dvt, do_i, p)):
            lhs, rhs = lhs.reshape(b, kv, n, g, hd), rhs.reshape(b, kv, n, g, end)
            part = jnp.einsum("bktgd,bktgs->bkds", lhs, rhs, preferred_element_type=f32)
            out.append(jnp.pad(part, pad))
    dqm = jnp.concatenate(dq, axis=2).reshape(b, kv, t, g, hd).transpose(0, 2, 1, 3, 4)
    dk = sum(dkt[1:], dkt[0]).transpose(0, 3, 1, 2)  # [B, S, KV, hd]
    dv = sum(dvt[1:], dvt[0]).transpose(0, 3, 1, 2)
    return dqm.astype(qm.dtype), dk.astype(kt.dtype), dv.astype(vt.dtype)


causal_attention.defvjp(_causal_fwd, _causal_bwd)


# -- the training loss: head and cross-entropy fused, tile by tile --------------------------

#: tokens per chunk (all rows, LOSS_TOKENS / B positions each) and vocabulary entries per
#: block of the fused head + cross-entropy: one fp32 tile of logits at a time, in cache
LOSS_TOKENS = 1024
LOSS_VOCAB = 2048


def head_cross_entropy(
    x: Array,  # [B, T, D] compute dtype, final-norm hidden states
    w: Array,  # [V, D] fp32, the (tied) output projection
    targets: Array,  # [B, T] int32
    weights: Array,  # [B, T] fp32
) -> Array:
    """``sum(weights * CE(x @ w^T, targets))`` over tiles of tokens x vocabulary.

    A whole ``[B, T, V]`` block of fp32 logits is written to and read back from memory by
    every pass over it; tiles that stay in cache made the head 3-6x faster on the 2-core
    CPU. The price is computing each tile's logits twice under differentiation (once for
    the log-sum-exp, once for the gradient): four head matmuls instead of three. Chunks
    split the positions, not the rows, so a batch sharded over devices stays sharded.
    """
    b, t = targets.shape
    span = max(1, min(t, LOSS_TOKENS // b))  # positions per chunk
    pad = -t % span

    def chunks(a: Array) -> Array:  # [B, T, ...] -> [K, B, span, ...] (padding: weight 0)
        a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        return jnp.moveaxis(a.reshape(b, -1, span, *a.shape[2:]), 1, 0)

    v = w.shape[0]
    block = min(LOSS_VOCAB, v)
    if v % block:  # zero rows up to a whole block, masked out of the softmax
        w = jnp.pad(w, ((0, -v % block), (0, 0)))
    return _head_ce((block, v), chunks(x), w, chunks(targets), chunks(weights))


def _tile_logits(x: Array, w_j: Array, j: Array, shape: tuple[int, int]) -> Array:
    """``[B, n, D] x [vb, D] -> [B, n, vb]`` fp32 logits of vocabulary block ``j``."""
    block, vocab = shape
    logits = jnp.einsum("btd,vd->btv", x, w_j, preferred_element_type=jnp.float32)
    if vocab % block:  # the padding rows of the last block
        logits = jnp.where(j * block + jnp.arange(block) < vocab, logits, -jnp.inf)
    return logits


def _chunk_lse(x: Array, w_blocks: Array, shape: tuple[int, int]) -> Array:
    """Log-sum-exp ``[B, n]`` of one chunk's logits, block by block (online softmax)."""

    def body(carry: tuple[Array, Array], blk: tuple[Array, Array]) -> tuple[Any, None]:
        m, s = carry  # running max and sum of exp(logits - max)
        logits = _tile_logits(x, *blk, shape)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[..., None]), axis=-1)
        return (m_new, s), None

    init = (jnp.full(x.shape[:2], -jnp.inf, jnp.float32), jnp.zeros(x.shape[:2], jnp.float32))
    (m, s), _ = jax.lax.scan(body, init, (w_blocks, jnp.arange(w_blocks.shape[0])))
    return m + jnp.log(s)


def _target_logit(x: Array, w: Array, targets: Array) -> Array:
    """``[B, n]``: each token's logit of its target, from the gathered rows of ``w``."""
    return jnp.sum(x.astype(jnp.float32) * w[targets].astype(jnp.float32), axis=-1)


def _tile_grads(
    x: Array, w_j: Array, j: Array, logits: Array, lse: Array, targets: Array, weights: Array
) -> tuple[Array, Array]:
    """One tile's share of dx ``[B, n, D]`` and its block of dW^T ``[D, vb]`` (fp32)."""
    block = w_j.shape[0]
    onehot = targets[..., None] == j * block + jnp.arange(block)
    # d loss / d logits = weight * (softmax - onehot), fed to the dots in bf16
    dlogits = (jnp.exp(logits - lse[..., None]) - onehot) * weights[..., None]
    dlogits = dlogits.astype(x.dtype)  # [B, n, vb]
    dx = jnp.einsum("btv,vd->btd", dlogits, w_j, preferred_element_type=jnp.float32)
    # [B, n, D] x [B, n, vb] -> [D, vb]: a contraction over two axes (see contract) that
    # transposes the small x chunk rather than dlogits
    dw = jnp.einsum("btd,btv->dv", x, dlogits, preferred_element_type=jnp.float32)
    return dx, dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _head_ce(shape: tuple[int, int], x: Array, w: Array, targets: Array, weights: Array) -> Array:
    """Forward only (evaluation): the loss, chunk by chunk, no gradient work."""
    wc = w.astype(x.dtype)
    w_blocks = wc.reshape(-1, shape[0], wc.shape[-1])

    def body(total: Array, chunk: tuple[Array, Array, Array]) -> tuple[Array, None]:
        x_c, t_c, m_c = chunk
        ce = _chunk_lse(x_c, w_blocks, shape) - _target_logit(x_c, wc, t_c)
        return total + jnp.sum(m_c * ce), None

    return jax.lax.scan(body, jnp.float32(0), (x, targets, weights))[0]


def _head_ce_fwd(
    shape: tuple[int, int], x: Array, w: Array, targets: Array, weights: Array
) -> tuple[Array, tuple[Array, Array, Array]]:
    """Under differentiation the loss is the end of the graph, so its gradients are
    computed here, tile by tile, right after each chunk's log-sum-exp: nothing
    ``[B, T, V]``-sized exists, and the backward pass only scales by the cotangent."""
    block = shape[0]
    wc = w.astype(x.dtype)
    w_blocks = wc.reshape(-1, block, wc.shape[-1])  # [V/vb, vb, D]
    nb, d = w_blocks.shape[0], x.shape[-1]

    def chunk_body(carry: tuple[Array, Array], chunk: tuple[Array, ...]) -> tuple[Any, Any]:
        total, dw = carry  # dw: [V/vb, D, vb] fp32
        x_c, t_c, m_c = chunk  # [B, n, D], [B, n], [B, n]
        lse = _chunk_lse(x_c, w_blocks, shape)  # first pass over the blocks

        def block_body(dx: Array, blk: tuple[Array, Array]) -> tuple[Array, Array]:
            logits = _tile_logits(x_c, *blk, shape)  # [B, n, vb], computed again
            dx_j, dw_j = _tile_grads(x_c, *blk, logits, lse, t_c, m_c)
            return dx + dx_j, dw_j

        dx0 = jnp.zeros(x_c.shape, jnp.float32)
        dx_c, dw_c = jax.lax.scan(block_body, dx0, (w_blocks, jnp.arange(nb)))
        ce = lse - _target_logit(x_c, wc, t_c)
        return (total + jnp.sum(m_c * ce), dw + dw_c), (dx_c.astype(x.dtype), ce)

    init = (jnp.float32(0), jnp.zeros((nb, d, block), jnp.float32))
    (total, dw), (dx, ce) = jax.lax.scan(chunk_body, init, (x, targets, weights))
    dw = dw.transpose(0, 2, 1).reshape(nb * block, d)  # [V, D]
    return total, (dx, dw.astype(w.dtype), ce)


def _head_ce_bwd(
    shape: tuple[int, int], res: tuple[Array, Array, Array], g: Array
) -> tuple[Array, Array, None, Array]:
    dx, dw, ce = res
    return (g * dx).astype(dx.dtype), g * dw, None, g * ce


_head_ce.defvjp(_head_ce_fwd, _head_ce_bwd)
