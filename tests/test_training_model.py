"""The model file and its configs: shapes, parameter count, KV cache, remat, validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from training.config import PRESETS, ModelConfig, param_count, parse_overrides, preset
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


def test_kv_cache_decode_equals_full_forward():
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
