"""Hugging Face and GGUF interop, checked against the real ``transformers`` and ``gguf`` code.

Every parity test compares logits of our JAX model and HF's torch model (both fp32) on the
same random tokens. Norm scales and biases are perturbed first: at their init values (ones,
zeros) a mapping mistake on them would go unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from slm_council.main import main  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.gguf_export import export_gguf, unpermute_qk  # noqa: E402
from training.hf import export_hf, hf_state_dict, import_hf  # noqa: E402
from training.model import build  # noqa: E402

torch.set_num_threads(2)

VOCAB = 320  # room for the byte-level tokenizer's 256 bytes + specials + merges
SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500.0,  # not the default, so a dropped theta shows
    "initializer_range": 0.1,  # logits of a useful size, not ~0
}
TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 24)).astype(np.int32)


def hf_model(family: str, *, tied: bool, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    if family == "llama":
        config = transformers.LlamaConfig(**SHAPE, tie_word_embeddings=tied)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**SHAPE, tie_word_embeddings=tied)
        model = transformers.Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    return model.eval()


def save_hf(tmp_path: Path, family: str, *, tied: bool, name: str = "hf") -> tuple[Path, Any]:
    model = hf_model(family, tied=tied)
    out = tmp_path / name
    model.save_pretrained(out)
    return out, model


def torch_logits(model: Any, tokens: np.ndarray = TOKENS) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens.astype(np.int64))).logits.float().numpy()


def our_logits(model: Any, tokens: np.ndarray = TOKENS) -> np.ndarray:
    logits, _ = model(jnp.asarray(tokens))
    return np.asarray(logits)


def assert_close(ours: np.ndarray, theirs: np.ndarray, tol: float = 1e-4) -> None:
    assert ours.shape == theirs.shape
    assert np.abs(theirs).max() > 0.5  # large enough that a wrong weight cannot hide
    diff = float(np.abs(ours - theirs).max())
    assert diff <= tol, f"max abs logit diff {diff}"


def tiny_tokenizer(out: Path) -> Path:
    """A real byte-level BPE tokenizer (HF files), built like ours: StarCoder-style."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i)\n"] * 20
    tok.train_from_iterator(text, trainer)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    special = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    config = special | {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def random_ours(*, qkv_bias: bool, tied: bool, vocab: int = VOCAB, head_dim: int = 16) -> Any:
    """Our model in fp32 with non-trivial norm scales and biases."""
    cfg = ModelConfig(
        vocab_size=vocab,
        hidden_dim=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=head_dim,
        ffn_dim=128,
        max_seq_len=64,
        rope_theta=500.0,
        tie_embeddings=tied,
        qkv_bias=qkv_bias,
        dtype="float32",
    )
    model = build(cfg, seed=1)
    rng = np.random.default_rng(1)
    norms = [model.norm] + [n for layer in model.layers for n in (layer.attn_norm, layer.mlp_norm)]
    for norm in norms:
        norm.scale.set_value(jnp.asarray(1 + 0.3 * rng.standard_normal(64), jnp.float32))
    for layer in model.layers:
        for proj in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj):
            proj.kernel.set_value(proj.kernel.get_value() * 5)
            if qkv_bias:
                proj.bias.set_value(jnp.asarray(rng.standard_normal(proj.bias.shape), jnp.float32))
    return model


def load_transformers(path: Path, dtype: Any = None) -> Any:
    dtype = dtype or torch.float32
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize(
    ("family", "tied"), [("llama", True), ("llama", False), ("qwen2", True)], ids=str
)
def test_import_matches_transformers_logits(tmp_path: Path, family: str, tied: bool) -> None:
    path, hf = save_hf(tmp_path, family, tied=tied)
    has_head = "lm_head.weight" in set(
        __import__("safetensors").safe_open(str(path / "model.safetensors"), "numpy").keys()
    )
    assert has_head == (not tied)  # the case under test really is tied / untied on disk

    model, cfg = import_hf(path)
    assert cfg.tie_embeddings == tied and cfg.qkv_bias == (family == "qwen2")
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.dtype) == (2, 16, 500.0, "float32")
    assert_close(our_logits(model), torch_logits(hf))


def test_import_bfloat16_checkpoint_and_serving_dtype(tmp_path: Path) -> None:
    hf = hf_model("qwen2", tied=True).to(torch.bfloat16)
    hf.save_pretrained(tmp_path / "bf16")
    model, _ = import_hf(tmp_path / "bf16")  # bf16 on disk, upcast exactly
    # A fresh fp32 load: .float() on `hf` would keep its bf16-rounded RoPE inv_freq buffer.
    assert_close(our_logits(model), torch_logits(load_transformers(tmp_path / "bf16")))

    served, cfg16 = import_hf(tmp_path / "bf16", dtype="bfloat16")
    assert cfg16.dtype == "bfloat16" and cfg16.param_dtype == "float32"
    assert np.abs(our_logits(served) - our_logits(model)).max() < 0.1


def test_sharded_checkpoint_is_read_through_its_index(tmp_path: Path) -> None:
    path = tmp_path / "sharded"
    hf = hf_model("llama", tied=False)
    hf.save_pretrained(path, max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").is_file()
    assert len(list(path.glob("*.safetensors"))) > 1
    model, _ = import_hf(path)
    assert_close(our_logits(model), torch_logits(hf))


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize(
    ("qkv_bias", "tied", "head_dim"),
    [(False, False, 16), (True, True, 16), (False, True, 32), (True, False, 32)],
    ids=str,
)
def test_export_loads_in_transformers_with_same_logits(
    tmp_path: Path, qkv_bias: bool, tied: bool, head_dim: int
) -> None:
    ours = random_ours(qkv_bias=qkv_bias, tied=tied, head_dim=head_dim)
    out = export_hf(ours, None, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM" if qkv_bias else "LlamaForCausalLM"]
    assert config["tie_word_embeddings"] == tied and config["head_dim"] == head_dim
    assert (out / "generation_config.json").is_file()

    hf = load_transformers(out)
    assert_close(our_logits(ours), torch_logits(hf))
    again, cfg = import_hf(out)  # and our own import reads our export back
    assert cfg.replace(dtype="float32") == ours.cfg
    np.testing.assert_array_equal(our_logits(again), our_logits(ours))


def test_bfloat16_export_round_trips(tmp_path: Path) -> None:
    from safetensors import safe_open

    ours = random_ours(qkv_bias=False, tied=True)
    out = export_hf(ours, None, tmp_path / "bf16", dtype="bfloat16")
    with safe_open(str(out / "model.safetensors"), "numpy") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"

    back, _ = import_hf(out)
    import ml_dtypes

    for name, value in hf_state_dict(ours).items():
        rounded = value.astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(hf_state_dict(back)[name], rounded, err_msg=name)
    # transformers reads the bf16 file too; upcast, it computes what our import computes.
    assert_close(our_logits(back), torch_logits(load_transformers(out)))


def test_export_with_tokenizer_writes_hf_tokenizer_and_special_ids(tmp_path: Path) -> None:
    tok_dir = tiny_tokenizer(tmp_path / "tok")
    ours = random_ours(qkv_bias=False, tied=True)
    out = export_hf(ours, tok_dir, tmp_path / "out", dtype="float16")
    for fname in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / fname).read_bytes() == (tok_dir / fname).read_bytes()
    config = json.loads((out / "config.json").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == generation["eos_token_id"] == 0  # <|endoftext|>
    assert config["bos_token_id"] is None and config["torch_dtype"] == "float16"

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.eos_token_id == 0
    assert hf_tok.decode(hf_tok("def add(a, b):")["input_ids"]) == "def add(a, b):"


def test_export_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    ours = random_ours(qkv_bias=False, tied=True)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")
    with pytest.raises(ValueError, match="is not empty; pass overwrite=True"):
        export_hf(ours, None, out)
    export_hf(ours, None, out, overwrite=True)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    with pytest.raises(ValueError, match="export dtype must be one of"):
        export_hf(ours, None, tmp_path / "x", dtype="int8")


# --------------------------------------------------------------------------- errors


def edit_config(path: Path, **changes: Any) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def saved_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = save_hf(tmp_path_factory.mktemp("llama"), "llama", tied=False)
    return path


def copy_of(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"rope_scaling": {"rope_type": "linear", "factor": 4.0}, "rope_parameters": None},
            "rope_scaling type 'linear' is not supported",
        ),
        (
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}},
            "rope_scaling type 'yarn' is not supported",
        ),
        (
            {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"},
            "unsupported architecture GPTNeoXForCausalLM; supported: LlamaForCausalLM",
        ),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
        ({"attention_bias": True}, "attention_bias=true"),
        ({"mlp_bias": True}, "mlp_bias=true is not supported"),
        (
            {"intermediate_size": 96},
            r"wrong shapes: model.layers.0.mlp.down_proj.weight \[64, 128\]",
        ),
    ],
    ids=["rope_scaling", "rope_parameters", "arch", "act", "attn_bias", "mlp_bias", "shape"],
)
def test_unsupported_configs_are_refused_in_one_line(
    tmp_path: Path, saved_llama: Path, changes: dict[str, Any], message: str
) -> None:
    path = copy_of(saved_llama, tmp_path / "m")
    edit_config(path, **changes)
    with pytest.raises(ValueError, match=message) as info:
        import_hf(path)
    assert "\n" not in str(info.value)


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path, saved_llama: Path) -> None:
    from safetensors.numpy import load_file, save_file

    path = copy_of(saved_llama, tmp_path / "m")
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(64, np.float32)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError) as info:
        import_hf(path)
    text = str(info.value)
    assert "missing tensors: model.layers.1.mlp.up_proj.weight" in text
    assert "unexpected tensors: model.layers.0.self_attn.o_proj.bias" in text

    (path / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"no \*\.safetensors weights"):
        import_hf(path)
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        import_hf(tmp_path)


def test_qwen2_sliding_window_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = save_hf(tmp_path, "qwen2", tied=True)
    edit_config(path, use_sliding_window=True, sliding_window=32)
    with caplog.at_level("WARNING", logger="training.hf"):
        import_hf(path)
    assert "no sliding window" in caplog.text and "sliding_window=32" in caplog.text


# --------------------------------------------------------------------------- GGUF


def field(reader: Any, key: str) -> Any:
    return reader.fields[key].contents()


def test_gguf_export_reads_back(tmp_path: Path) -> None:
    tok_dir = tiny_tokenizer(tmp_path / "tok")
    ours = random_ours(qkv_bias=True, tied=False)
    cfg = ours.cfg
    path = export_gguf(ours, tok_dir, tmp_path / "m.gguf", dtype="f32")
    reader = gguf.GGUFReader(path)

    assert field(reader, "general.architecture") == "llama"
    expected = {
        "llama.context_length": 64,
        "llama.embedding_length": 64,
        "llama.block_count": 2,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.rope.freq_base": 500.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "starcoder",
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.fim_pre_token_id": 1,
        "tokenizer.ggml.fim_mid_token_id": 2,
    }
    assert {k: field(reader, k) for k in expected} == expected
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == VOCAB and tokens[0] == "<|endoftext|>" and tokens[-1] == "[PAD319]"
    # EOS stays a control token (end of generation); the FIM prefix/suffix/middle sentinels
    # are user-defined so llama.cpp prints them and stop strings can end on them
    assert field(reader, "tokenizer.ggml.token_type")[:4] == [3, 4, 4, 4]
    assert len(field(reader, "tokenizer.ggml.merges")) > 0

    read = {t.name: np.asarray(t.data).reshape(t.data.shape) for t in reader.tensors}
    weights = hf_state_dict(ours)
    assert len(read) == len(weights)
    for i in range(cfg.num_layers):
        q, k = read[f"blk.{i}.attn_q.weight"], read[f"blk.{i}.attn_k.weight"]
        assert not np.array_equal(q, weights[f"model.layers.{i}.self_attn.q_proj.weight"])
        np.testing.assert_array_equal(
            unpermute_qk(q, cfg.num_heads), weights[f"model.layers.{i}.self_attn.q_proj.weight"]
        )
        np.testing.assert_array_equal(
            unpermute_qk(k, cfg.num_kv_heads), weights[f"model.layers.{i}.self_attn.k_proj.weight"]
        )
        np.testing.assert_array_equal(
            unpermute_qk(read[f"blk.{i}.attn_k.bias"], cfg.num_kv_heads),
            weights[f"model.layers.{i}.self_attn.k_proj.bias"],
        )
        np.testing.assert_array_equal(
            read[f"blk.{i}.ffn_down.weight"], weights[f"model.layers.{i}.mlp.down_proj.weight"]
        )
        np.testing.assert_array_equal(
            read[f"blk.{i}.attn_norm.weight"], weights[f"model.layers.{i}.input_layernorm.weight"]
        )
    np.testing.assert_array_equal(read["token_embd.weight"], weights["model.embed_tokens.weight"])
    np.testing.assert_array_equal(read["output.weight"], weights["lm_head.weight"])
    np.testing.assert_array_equal(read["output_norm.weight"], weights["model.norm.weight"])


def test_gguf_pre_tokenizer_names() -> None:
    from training.gguf_export import _pre_tokenizer

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    qwen_regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
    split = {"type": "Split", "pattern": {"Regex": qwen_regex}, "behavior": "Isolated"}
    no_regex = byte_level | {"use_regex": False}
    cases = {
        "gpt-2": byte_level,
        "qwen2": {"type": "Sequence", "pretokenizers": [split, no_regex]},
        "default": {"type": "Whitespace"},
    }
    for name, pre in cases.items():
        assert _pre_tokenizer({"pre_tokenizer": pre}) == name


def test_gguf_permutation_pairs_rope_halves() -> None:
    """Row j of each head's first half and row j of its second half become rows 2j, 2j+1."""
    from training.gguf_export import permute_qk

    heads, hd = 2, 4
    rows = np.arange(heads * hd, dtype=np.float32)[:, None]
    permuted = permute_qk(rows, heads)[:, 0]
    assert permuted.tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    np.testing.assert_array_equal(unpermute_qk(permute_qk(rows, heads), heads), rows)


def rope_adjacent_pairs(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """llama.cpp's ``llama`` RoPE (GGML_ROPE_TYPE_NORM): rotates (x[2i], x[2i+1]). x [T, N, hd]."""
    hd = x.shape[-1]
    angles = positions[:, None, None] * theta ** (-np.arange(0, hd, 2) / hd)  # [T, 1, hd/2]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
    out[..., 1::2] = even * np.sin(angles) + odd * np.cos(angles)
    return out


def test_permuted_q_under_llama_cpp_rope_equals_our_rope() -> None:
    """Why the permutation exists: with it, llama.cpp's RoPE reproduces ours head by head."""
    from training.gguf_export import permute_qk
    from training.model import rope

    heads, hd, d, t = 4, 16, 64, 8
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((heads * hd, d)), rng.standard_normal((t, d))
    positions = np.arange(t, dtype=np.float64) + 3
    ours = rope(
        jnp.asarray((x @ w.T).reshape(1, t, heads, hd), jnp.float32),
        jnp.asarray(positions[None], jnp.int32),
        500.0,
    )[0]
    theirs = rope_adjacent_pairs(
        (x @ permute_qk(w, heads).T).reshape(t, heads, hd), positions, 500.0
    )
    # llama.cpp's pair (2j, 2j+1) is our (j, j + hd/2): same rotation, rows interleaved.
    np.testing.assert_allclose(theirs[..., 0::2], np.asarray(ours)[..., : hd // 2], atol=1e-4)
    np.testing.assert_allclose(theirs[..., 1::2], np.asarray(ours)[..., hd // 2 :], atol=1e-4)
    unpermuted = rope_adjacent_pairs((x @ w.T).reshape(t, heads, hd), positions, 500.0)
    assert np.abs(unpermuted[..., 0::2] - np.asarray(ours)[..., : hd // 2]).max() > 0.1


def test_gguf_f16_keeps_norms_f32_and_refuses_overwrite(tmp_path: Path) -> None:
    ours = random_ours(qkv_bias=False, tied=True)
    path = export_gguf(ours, None, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.ffn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert "output.weight" not in types and "tokenizer.ggml.tokens" not in reader.fields
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    np.testing.assert_allclose(
        np.asarray(embd.data, np.float32),
        hf_state_dict(ours)["model.embed_tokens.weight"],
        rtol=1e-3,
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        export_gguf(ours, None, path)


# --------------------------------------------------------------------------- CLI


def test_cli_import_then_export_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, hf = save_hf(tmp_path, "qwen2", tied=True, name="downloaded")
    tiny_tokenizer(src)  # a downloaded model comes with its tokenizer files
    out = tmp_path / "imported"
    assert main(["train", "import", str(src), "--out", str(out)]) == 0
    assert "Qwen2ForCausalLM" in capsys.readouterr().out
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()
    model, _ = import_hf(out)
    assert_close(our_logits(model), torch_logits(hf))

    with pytest.raises(SystemExit, match="is not empty"):
        main(["train", "import", str(src), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"council train import: .*no config.json"):
        main(["train", "import", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])

    gguf_dir = tmp_path / "gguf"
    assert main(["train", "export", str(out), "--out", str(gguf_dir), "--format", "gguf"]) == 0
    reader = gguf.GGUFReader(gguf_dir / "model.gguf")
    assert field(reader, "llama.block_count") == 2
    with pytest.raises(SystemExit, match="--dtype 'bfloat16' is not valid for --format gguf"):
        main(["train", "export", str(out), "--out", str(gguf_dir), "--format", "gguf",
              "--dtype", "bfloat16"])  # fmt: skip


def test_cli_export_from_a_training_run(tmp_path: Path) -> None:
    """A run directory (model_config.json + orbax checkpoint + tokenizer) exports to HF."""
    import jax
    from flax import nnx

    from training import checkpoint

    ours = random_ours(qkv_bias=False, tied=True)
    run = tmp_path / "run"
    tiny_tokenizer(run)
    ours.cfg.replace(dtype="bfloat16").save(run / "model_config.json")  # as fit writes it
    from training.train import TrainState

    state = TrainState(
        step=jnp.asarray(7, jnp.int32),
        params=nnx.to_pure_dict(nnx.state(ours, nnx.Param)),
        opt_state={"count": jnp.zeros((), jnp.int32)},
        rng=jax.random.key(0),
    )
    mngr = checkpoint.manager(run)
    checkpoint.save(mngr, state, tokens_seen=0)
    mngr.wait_until_finished()
    mngr.close()

    out = tmp_path / "hf"
    assert main(["train", "export", str(run), "--out", str(out), "--step", "7"]) == 0
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 0
    assert_close(our_logits(ours), torch_logits(load_transformers(out)))
    with pytest.raises(SystemExit, match="no checkpoint at step 3"):
        main(["train", "export", str(run), "--out", str(tmp_path / "x"), "--step", "3"])
