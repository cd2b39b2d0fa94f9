"""Hugging Face interop: export to the Llama (or Qwen2) format and import Llama/Qwen2 models.

A Hugging Face directory here is ``config.json`` + ``model.safetensors`` (or shards with
``model.safetensors.index.json``) + the tokenizer files. Our model follows HF's Llama
conventions exactly (``rotate_half`` RoPE, fp32 RMSNorm, SwiGLU), so conversion is a rename
plus a transpose of every kernel: Flax stores ``[in, out]``, torch's ``nn.Linear`` ``[out, in]``.

Export writes ``LlamaForCausalLM``, except when the model has q/k/v biases: Llama's
``attention_bias`` also adds an ``o_proj`` bias that our model lacks, while Qwen2 has exactly
q/k/v biases, so such a model is written as ``Qwen2ForCausalLM``. Import accepts both
families and refuses, with a one-line reason, anything the model cannot reproduce exactly
(RoPE scaling, other activations, extra biases) instead of loading something subtly wrong.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from training.config import DTYPES, ModelConfig

log = logging.getLogger(__name__)

#: Files copied along with the weights so that ``AutoTokenizer`` and our loader find them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
#: Tensors some checkpoints carry that hold no weights (recomputed buffers).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def hf_name_map(cfg: ModelConfig) -> list[tuple[str, tuple[str | int, ...], bool]]:
    """``(HF tensor name, path in our model, transpose?)`` for every parameter of ``cfg``."""
    out: list[tuple[str, tuple[str | int, ...], bool]] = [
        ("model.embed_tokens.weight", ("embed", "embedding"), False)
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}", ("layers", i)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out.append((f"{hf}.self_attn.{proj}.weight", (*ours, "attn", proj, "kernel"), True))
            if cfg.qkv_bias and proj != "o_proj":
                out.append((f"{hf}.self_attn.{proj}.bias", (*ours, "attn", proj, "bias"), False))
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out.append((f"{hf}.mlp.{proj}.weight", (*ours, "mlp", proj, "kernel"), True))
        out.append((f"{hf}.input_layernorm.weight", (*ours, "attn_norm", "scale"), False))
        out.append((f"{hf}.post_attention_layernorm.weight", (*ours, "mlp_norm", "scale"), False))
    out.append(("model.norm.weight", ("norm", "scale"), False))
    if not cfg.tie_embeddings:
        out.append(("lm_head.weight", ("lm_head", "kernel"), True))
    return out


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape every HF tensor must have for ``cfg`` (torch layout)."""
    d, hd, f, v = cfg.hidden_dim, cfg.head_dim, cfg.ffn_dim, cfg.vocab_size
    q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    by_suffix = {
        "q_proj.weight": (q, d),
        "k_proj.weight": (kv, d),
        "v_proj.weight": (kv, d),
        "o_proj.weight": (d, q),
        "q_proj.bias": (q,),
        "k_proj.bias": (kv,),
        "v_proj.bias": (kv,),
        "gate_proj.weight": (f, d),
        "up_proj.weight": (f, d),
        "down_proj.weight": (d, f),
        "layernorm.weight": (d,),
        "norm.weight": (d,),
        "embed_tokens.weight": (v, d),
        "lm_head.weight": (v, d),
    }
    shapes = {}
    for name, _, _ in hf_name_map(cfg):
        shapes[name] = next(s for suf, s in by_suffix.items() if name.endswith(suf))
    return shapes


def _variable(model: Any, path: tuple[str | int, ...]) -> Any:
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def hf_state_dict(model: Any) -> dict[str, np.ndarray]:
    """The model's parameters as float32 numpy arrays under HF names, torch layout."""
    import jax

    tensors = {}
    for name, path, transpose in hf_name_map(model.cfg):
        value = np.asarray(jax.device_get(_variable(model, path).get_value()), dtype=np.float32)
        tensors[name] = np.ascontiguousarray(value.T if transpose else value)
    return tensors


# --------------------------------------------------------------------------- tokenizer


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def special_token_ids(tokenizer_dir: Path | None) -> dict[str, int]:
    """bos/eos/pad ids named by the tokenizer files (``<|endoftext|>`` as a fallback eos)."""
    if tokenizer_dir is None or not (Path(tokenizer_dir) / "tokenizer.json").is_file():
        return {}
    from tokenizers import Tokenizer

    tokenizer_dir = Path(tokenizer_dir)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    names: dict[str, str] = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):  # config wins
        path = tokenizer_dir / fname
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for role in ("bos", "eos", "pad"):
            content = _token_content(data.get(f"{role}_token"))
            if content is not None:
                names[role] = content
    names.setdefault("eos", "<|endoftext|>")
    ids = {}
    for role, content in names.items():
        token_id = tok.token_to_id(content)
        if token_id is not None:
            ids[role] = int(token_id)
    return ids


def copy_tokenizer_files(tokenizer_dir: Path, out_dir: Path) -> list[str]:
    """Copy whichever tokenizer files exist; returns their names."""
    copied = []
    for fname in TOKENIZER_FILES:
        src = Path(tokenizer_dir) / fname
        if src.is_file() and src.resolve() != (out_dir / fname).resolve():
            shutil.copyfile(src, out_dir / fname)
        if src.is_file():
            copied.append(fname)
    if "tokenizer.json" not in copied:
        log.warning("no tokenizer.json in %s: exported model has no tokenizer", tokenizer_dir)
    return copied


# --------------------------------------------------------------------------- export


def hf_config(cfg: ModelConfig, dtype: str, special: dict[str, int]) -> dict[str, Any]:
    """``config.json`` contents: Llama, or Qwen2 when the model has q/k/v biases."""
    qwen2 = cfg.qkv_bias
    config: dict[str, Any] = {
        "architectures": ["Qwen2ForCausalLM" if qwen2 else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen2 else "llama",
        "hidden_size": cfg.hidden_dim,
        "intermediate_size": cfg.ffn_dim,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "num_hidden_layers": cfg.num_layers,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        # Both spellings: transformers 4 reads rope_theta/rope_scaling, 5 rope_parameters.
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "use_cache": True,
        "torch_dtype": dtype,
        "bos_token_id": special.get("bos"),
        "eos_token_id": special.get("eos"),
        "pad_token_id": special.get("pad"),
    }
    if qwen2:
        config |= {
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": cfg.num_layers,
        }
    else:
        config |= {"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}
    return config


def export_hf(
    model: Any,
    tokenizer_dir: Path | None,
    out_dir: Path,
    dtype: str = "float32",
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a Hugging Face directory loadable by ``AutoModelForCausalLM``."""
    import ml_dtypes
    from safetensors.numpy import save_file

    if dtype not in DTYPES:
        raise ValueError(f"export dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"{out_dir} is not empty; pass overwrite=True (--force) to replace")
        for stale in [*out_dir.glob("*.safetensors"), out_dir / "model.safetensors.index.json"]:
            stale.unlink(missing_ok=True)  # old shards would shadow the new single file
    out_dir.mkdir(parents=True, exist_ok=True)

    np_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
    tensors = {k: v.astype(np_dtype[dtype]) for k, v in hf_state_dict(model).items()}
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(out_dir / "model.safetensors")

    cfg: ModelConfig = model.cfg
    special = special_token_ids(tokenizer_dir)
    if tokenizer_dir is not None:
        copy_tokenizer_files(Path(tokenizer_dir), out_dir)
    config = hf_config(cfg, dtype, special)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    generation = {"_from_model_config": True} | {
        f"{role}_token_id": special[role] for role in ("bos", "eos", "pad") if role in special
    }
    (out_dir / "generation_config.json").write_text(
        json.dumps(generation, indent=2) + "\n", encoding="utf-8"
    )
    log.info("exported %s (%s, %s) to %s", config["architectures"][0], dtype, cfg, out_dir)
    return out_dir


# --------------------------------------------------------------------------- import


def _rope_type(config: dict[str, Any]) -> str | None:
    """The non-default RoPE scaling the config asks for, or None for plain RoPE."""
    for key in ("rope_scaling", "rope_parameters"):
        params = config.get(key)
        if not params:
            continue
        if not isinstance(params, dict):
            return str(params)
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            return str(kind)
    return None


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(config.get("rope_theta", 10_000.0))


def config_from_hf(config: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Map a Llama/Qwen2 ``config.json`` to our :class:`ModelConfig`, or explain why not."""
    archs = config.get("architectures") or []
    family = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if family is None and not archs and config.get("model_type") in {"llama", "qwen2"}:
        family = config["model_type"]
    if family is None:
        name = ", ".join(archs) or config.get("model_type") or "none given"
        raise ValueError(
            f"{where}: unsupported architecture {name}; supported: "
            + ", ".join(SUPPORTED_ARCHITECTURES)
        )
    rope = _rope_type(config)
    if rope is not None:
        raise ValueError(
            f"{where}: rope_scaling type {rope!r} is not supported (the model implements "
            "plain RoPE only)"
        )
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{where}: hidden_act {act!r} is not supported (only silu/SwiGLU)")
    if family == "llama" and config.get("attention_bias"):
        raise ValueError(
            f"{where}: attention_bias=true (Llama q/k/v/o biases) is not supported; the "
            "model has q/k/v biases only (Qwen2 style)"
        )
    if config.get("mlp_bias"):
        raise ValueError(f"{where}: mlp_bias=true is not supported (the MLP has no biases)")
    if family == "qwen2" and config.get("use_sliding_window"):
        log.warning(
            "%s: use_sliding_window=true but the model has no sliding window; results are "
            "exact only for sequences shorter than sliding_window=%s",
            where,
            config.get("sliding_window"),
        )
    try:
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        return ModelConfig(
            vocab_size=int(config["vocab_size"]),
            hidden_dim=hidden,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            ffn_dim=int(config["intermediate_size"]),
            max_seq_len=int(
                config.get("max_position_embeddings") or (32768 if family == "qwen2" else 2048)
            ),
            rope_theta=_rope_theta(config),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2",
            dtype="float32",
        )
    except KeyError as exc:
        raise ValueError(f"{where}: missing required field {exc.args[0]!r}") from None


class _Tensors:
    """Lazy access to every tensor of a (possibly sharded) safetensors checkpoint."""

    def __init__(self, hf_dir: Path) -> None:
        from safetensors import safe_open

        index = hf_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted({hf_dir / f for f in weight_map.values()})
        else:
            files = sorted(hf_dir.glob("*.safetensors"))
        if not files:
            hint = " (pytorch_model.bin is not supported: re-save with safetensors)"
            raise ValueError(f"no *.safetensors weights in {hf_dir}{hint}")
        missing_files = [f.name for f in files if not f.is_file()]
        if missing_files:
            raise ValueError(f"{index}: shard files missing: {', '.join(missing_files)}")
        self._handles = [safe_open(str(f), framework="numpy") for f in files]
        self._where: dict[str, Any] = {}
        for f, handle in zip(files, self._handles, strict=True):
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                if name in self._where:
                    raise ValueError(f"tensor {name} appears in more than one shard ({f.name})")
                self._where[name] = handle

    def names(self) -> set[str]:
        return set(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._where[name].get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._where[name].get_tensor(name), dtype=np.float32)

    def equal(self, a: str, b: str) -> bool:
        return self.shape(a) == self.shape(b) and bool(np.array_equal(self.get(a), self.get(b)))


def _listing(names: list[str], limit: int = 6) -> str:
    names = sorted(names)
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def import_hf(hf_dir: Path, dtype: str | None = None) -> tuple[Any, ModelConfig]:
    """Load a Llama/Qwen2 HF directory into a fresh :class:`training.model.Transformer`.

    ``dtype`` is the compute dtype of the returned config: float32 (the default) reproduces
    the HF logits; bfloat16 is for serving. Parameters are always float32.
    """
    import jax.numpy as jnp
    from flax import nnx
    from jax import Array

    from training.model import build

    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    try:
        hf_cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path}: invalid JSON ({exc})") from None
    cfg = config_from_hf(hf_cfg, str(config_path))

    tensors = _Tensors(hf_dir)
    present = {n for n in tensors.names() if not n.endswith(_IGNORED_SUFFIXES)}
    if "lm_head.weight" not in present and not cfg.tie_embeddings:
        log.warning("%s: no lm_head.weight although untied; tying it to the embedding", hf_dir)
        cfg = cfg.replace(tie_embeddings=True)
    elif cfg.tie_embeddings and "lm_head.weight" in present:
        # transformers ties the head and ignores this copy; say so when it differs.
        embed = "model.embed_tokens.weight"
        if embed in present and not tensors.equal("lm_head.weight", embed):
            log.warning("%s: tied embeddings; ignoring the stored lm_head.weight", hf_dir)
        present.discard("lm_head.weight")

    shapes = hf_shapes(cfg)
    missing = set(shapes) - present
    unexpected = present - set(shapes)
    problems = []
    if missing:
        problems.append(f"missing tensors: {_listing(list(missing))}")
    if unexpected:
        problems.append(f"unexpected tensors: {_listing(list(unexpected))}")
    bad = [
        f"{n} {list(tensors.shape(n))} (expected {list(s)})"
        for n, s in shapes.items()
        if n in present and tensors.shape(n) != s
    ]
    if bad:
        problems.append(f"wrong shapes: {_listing(bad, 3)}")
    if problems:
        raise ValueError(f"{hf_dir}: " + "; ".join(problems))

    cfg = cfg.replace(dtype=dtype)
    # Shapes only: no random init of weights that are about to be overwritten.
    model = nnx.eval_shape(lambda: build(cfg))
    param_dtype = jnp.dtype(cfg.param_dtype)
    for name, path, transpose in hf_name_map(cfg):
        value = tensors.get(name)
        _variable(model, path).set_value(jnp.asarray(value.T if transpose else value, param_dtype))
    unset = [
        p for p, v in nnx.to_flat_state(nnx.state(model)) if not isinstance(v.get_value(), Array)
    ]
    if unset:  # a parameter the name map does not cover: a bug here, not in the checkpoint
        raise RuntimeError(f"import_hf left parameters unset: {unset}")
    log.info("imported %s from %s", hf_cfg.get("architectures", ["?"])[0], hf_dir)
    return model, cfg


def is_hf_dir(path: Path) -> bool:
    """A directory with config.json and safetensors weights (vs. a training run)."""
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
