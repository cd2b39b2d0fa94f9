"""The model file and its configs: shapes, parameter count, KV cache, remat, validation, and
the fast numerics (fp32-accumulating matmuls, tiled attention and loss) against the legacy
path and plain references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import training.kernels as kernels
from training.config import PRESETS, ModelConfig, param_count, parse_overrides, preset
from training.kernels import attend, causal_attention, head_cross_entropy
from training.model import build, init_cache


def _small(**changes) -> ModelConfig:
    base = dict(
        dtype="float32",
        vocab_size=128,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        ffn_dim=96,
    )
    base.update(changes)
    return preset("test", **base)


@pytest.mark.parametrize(
    "kv_heads,tied,bias", [(1, True, False), (2, False, True), (4, True, True)]
)
def test_param_count_matches_the_built_model(kv_heads, tied, bias):
    cfg = _small(num_kv_heads=kv_heads, tie_embeddings=tied, qkv_bias=bias)
    params = nnx.state(build(cfg), nnx.Param)
    assert sum(x.size for x in jax.tree.leaves(params)) == param_count(cfg)


def test_presets_follow_the_seed():
    test, prod = PRESETS["test"], PRESETS["prod"]
    assert (test.hidden_dim, test.num_layers, test.num_heads, test.head_dim) == (256, 6, 4, 64)
    assert (prod.hidden_dim, prod.num_layers, prod.num_heads, prod.ffn_dim) == (1024, 24, 16, 4096)
    assert test.vocab_size == prod.vocab_size == 49152
    assert test.num_kv_heads == prod.num_kv_heads == 1  # multi-query attention
    assert param_count(PRESETS["tiny"]) * 2 < 25 * 2**20  # ships in bf16 under 25 MB


@pytest.fixture
def small_tiles(monkeypatch):
    """Attention and loss tiles small enough that the tests' shapes span several (and
    leave ragged remainders: 24 tokens in tiles of 8 is even, 40 in 16 is not)."""
    monkeypatch.setattr(kernels, "ATTN_BLOCK", 16)
    monkeypatch.setattr(kernels, "LOSS_TOKENS", 32)
    monkeypatch.setattr(kernels, "LOSS_VOCAB", 128)


@pytest.mark.parametrize("block", [128, 8])
def test_kv_cache_decode_equals_full_forward(monkeypatch, block):
    monkeypatch.setattr(kernels, "ATTN_BLOCK", block)  # 8: the full forward is tiled
    model = build(_small(), seed=2)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 128, (2, 24)), jnp.int32)
    full, _ = model(tokens)
    cache = init_cache(model.cfg, 2, 32)
    first, cache = model(tokens[:, :17], cache=cache, pos=0)
    steps = [first]
    for i in range(17, 24):
        logits, cache = model(tokens[:, i : i + 1], cache=cache, pos=i)
        steps.append(logits)
    assert float(jnp.max(jnp.abs(jnp.concatenate(steps, axis=1) - full))) < 1e-4


def test_causal_masking_ignores_the_future():
    model = build(_small(), seed=1)
    a = jnp.asarray([[5, 6, 7, 8, 9, 10]], jnp.int32)
    b = a.at[0, 4:].set(3)
    la, _ = model(a)
    lb, _ = model(b)
    assert float(jnp.max(jnp.abs(la[:, :4] - lb[:, :4]))) < 1e-6
    assert float(jnp.max(jnp.abs(la[:, 4:] - lb[:, 4:]))) > 1e-4


def test_remat_changes_memory_not_maths():
    cfg = _small()
    plain, remat = build(cfg, seed=0), build(cfg.replace(remat=True), seed=0)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 128, (2, 16)), jnp.int32)

    def loss(m):
        return jnp.mean(m(tokens)[0] ** 2)

    ga, gb = nnx.grad(loss)(plain), nnx.grad(loss)(remat)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        assert float(jnp.max(jnp.abs(x - y))) < 1e-6


def test_bf16_compute_keeps_fp32_params_and_logits():
    model = build(_small(dtype="bfloat16"))
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}
    logits, _ = model(jnp.zeros((1, 4), jnp.int32))
    assert logits.dtype == jnp.float32


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        _small(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    assert parse_overrides(["num_layers=2", "dtype=float32", "tie_embeddings=false"]) == {
        "num_layers": 2,
        "dtype": "float32",
        "tie_embeddings": False,
    }
    with pytest.raises(ValueError, match="bad override"):
        parse_overrides(["layers=2"])
    with pytest.raises(ValueError, match="not a valid"):
        parse_overrides(["num_layers=two"])
    # a new width re-derives head_dim unless it is given
    assert preset("test", hidden_dim=128).head_dim == 32


# -- the fast numerics ---------------------------------------------------------------------


def _loss_and_grads(cfg: ModelConfig, tokens: jax.Array, mask: jax.Array):
    def loss(m):
        return m.loss_sums(tokens[:, :-1], tokens[:, 1:], mask[:, 1:])

    value, grads = nnx.value_and_grad(loss)(build(cfg, seed=0))
    return float(value), [
        np.asarray(g, np.float32) for g in jax.tree.leaves(nnx.to_pure_dict(grads))
    ]


def _batch(vocab: int):
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (3, 41)), jnp.int32)
    return tokens, jnp.ones(tokens.shape).at[0, 30:].set(0.0)  # one padded row


@pytest.mark.parametrize("tied", [True, False])
def test_fast_numerics_equal_the_legacy_path_in_fp32(small_tiles, tied):
    """In fp32 the custom VJPs, the tiles and the fused loss change nothing but rounding."""
    cfg = _small(vocab_size=300, tie_embeddings=tied, qkv_bias=not tied)  # 300: ragged blocks
    tokens, mask = _batch(300)
    legacy_loss, legacy_grads = _loss_and_grads(cfg.replace(legacy_numerics=True), tokens, mask)
    loss, grads = _loss_and_grads(cfg, tokens, mask)
    assert loss == pytest.approx(legacy_loss, rel=1e-5)
    for a, b in zip(legacy_grads, grads, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    # the logits path (decoding, evaluation) too
    full_legacy, _ = build(cfg.replace(legacy_numerics=True), seed=0)(tokens)
    full, _ = build(cfg, seed=0)(tokens)
    np.testing.assert_allclose(full, full_legacy, rtol=1e-4, atol=1e-5)


def test_bf16_fast_path_is_closer_to_fp32_than_the_legacy_path(small_tiles):
    """Numerics within tolerance: fp32 accumulation makes the bf16 gradients more accurate."""
    cfg = _small(vocab_size=300)
    tokens, mask = _batch(300)
    ref_loss, ref_grads = _loss_and_grads(cfg, tokens, mask)

    def errors(legacy: bool) -> tuple[float, float]:
        bf16 = cfg.replace(dtype="bfloat16", legacy_numerics=legacy)
        loss, grads = _loss_and_grads(bf16, tokens, mask)
        rel = [
            np.linalg.norm(g - r) / np.linalg.norm(r) for g, r in zip(grads, ref_grads, strict=True)
        ]
        return abs(loss / ref_loss - 1), max(rel)

    (_, legacy_grad), (loss, grad) = errors(True), errors(False)
    assert loss < 1e-4 and grad < 0.03  # bf16 rounding, nothing structural
    assert grad <= 1.2 * legacy_grad


def test_head_cross_entropy_matches_optax(small_tiles):
    """The tiled loss (forward-only and differentiated) against whole logits + optax,
    with token and vocabulary padding and zero weights."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 23, 16)), jnp.float32)  # 69 tokens: 3 chunks of 32
    w = jnp.asarray(rng.normal(size=(300, 16)) * 0.5, jnp.float32)  # 300: 3 blocks of 128
    targets = jnp.asarray(rng.integers(0, 300, (3, 23)), jnp.int32)
    weights = jnp.asarray(rng.integers(0, 2, (3, 23)), jnp.float32)

    def reference(x, w, weights):
        ce = optax.softmax_cross_entropy_with_integer_labels(x @ w.T, targets)
        return jnp.sum(ce * weights)

    def tiled(x, w, weights):
        return head_cross_entropy(x, w, targets, weights)

    assert float(tiled(x, w, weights)) == pytest.approx(float(reference(x, w, weights)), rel=1e-5)
    want = jax.grad(reference, argnums=(0, 1, 2))(x, w, weights)
    got = jax.grad(tiled, argnums=(0, 1, 2))(x, w, weights)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_heads,groups", [(1, 4), (2, 3), (2, 1)])
def test_causal_attention_matches_masked_attention(monkeypatch, kv_heads, groups):
    monkeypatch.setattr(kernels, "ATTN_BLOCK", 8)  # 37 positions: 5 tiles, the last ragged
    rng = np.random.default_rng(2)
    b, t, hd = 2, 37, 8
    q = jnp.asarray(rng.normal(size=(b, t, kv_heads, groups, hd)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, t, kv_heads, hd)), jnp.float32) for _ in range(2))
    out_weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    pos = jnp.arange(t)
    mask = pos[None, None, None, None, :] <= pos[None, None, :, None, None]

    def reference(q, k, v):
        return jnp.sum(attend(q, k, v, mask, 0.3) * out_weights)

    def tiled(q, k, v):
        return jnp.sum(causal_attention(q, k, v, 0.3) * out_weights)

    assert float(tiled(q, k, v)) == pytest.approx(float(reference(q, k, v)), rel=1e-5)
    want = jax.grad(reference, argnums=(0, 1, 2))(q, k, v)
    got = jax.grad(tiled, argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
