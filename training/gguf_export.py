"""GGUF export for llama.cpp / Ollama: the model as a ``llama`` architecture file.

Tensors use llama.cpp's names (``token_embd``, ``blk.N.attn_q`` ...) and its ``llama.*``
metadata keys; the tokenizer goes in as byte-level BPE (tokenizer model ``gpt2``) with its
merges, token types and special ids (eos/bos/pad and the FIM sentinels llama.cpp's infill
endpoint uses).

RoPE layout: our model (like HF Llama) rotates the two *halves* of each head
(``rotate_half``). llama.cpp's ``llama`` architecture instead rotates *adjacent pairs*, the
layout of Meta's original checkpoints, which HF's converter permuted into halves. So the
rows of Q and K (weights and biases) are permuted back, exactly as llama.cpp's
``convert_hf_to_gguf.py`` (``LlamaModel.permute``) does: within each head, row ``j`` of the
first half and row ``j`` of the second half become rows ``2j`` and ``2j+1``. Without this the
file loads fine and generates garbage.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from training.hf import hf_state_dict, special_token_ids

log = logging.getLogger(__name__)

GGUF_DTYPES = ("f16", "f32")

#: (HF name suffix, llama.cpp name suffix) within a layer.
_LAYER_NAMES = (
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
)
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}

#: FIM sentinel spellings per family -> the llama.cpp key suffix.
_FIM_TOKENS = {
    "pre": ("<fim_prefix>", "<|fim_prefix|>", "<｜fim▁begin｜>"),
    "suf": ("<fim_suffix>", "<|fim_suffix|>", "<｜fim▁hole｜>"),
    "mid": ("<fim_middle>", "<|fim_middle|>", "<｜fim▁end｜>"),
    "pad": ("<fim_pad>", "<|fim_pad|>"),
}


def gguf_name(hf_name: str) -> str:
    """llama.cpp's tensor name for an HF Llama tensor name."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.N.rest
    for hf_suffix, gguf_suffix in _LAYER_NAMES:
        if rest == hf_suffix:
            return f"blk.{layer}.{gguf_suffix}"
    raise ValueError(f"no GGUF name for tensor {hf_name}")


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF ``rotate_half`` row order -> llama.cpp's interleaved-pairs order (see module doc)."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (for reading a GGUF back into HF order)."""
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _pre_tokenizer(tok: dict[str, Any]) -> str:
    """llama.cpp's name for the pre-tokenizer, so that it splits text as ``tokenizers`` does."""
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    gpt2_regex = any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts)
    if kinds == ["ByteLevel"] and gpt2_regex:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and gpt2_regex:
        return "starcoder"  # our own tokenizers: single digits, then GPT-2 splitting
    text = json.dumps(pre)
    if r"\\p{N}{1,3}" in text:
        return "llama-bpe"
    if r"\\p{N}" in text and "(?i:'s|'t|'re|'ve|'m|'ll|'d)" in text:
        return "qwen2"
    log.warning("unrecognised pre-tokenizer; llama.cpp will use its default BPE splitting")
    return "default"


def _add_tokenizer(writer: Any, tokenizer_dir: Path, vocab_size: int) -> None:
    import gguf

    tok = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"GGUF export supports BPE tokenizers only, not {model.get('type')}")
    by_id: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    types: dict[int, int] = {}
    # The FIM sentinels a model may emit past its answer (prefix, suffix, middle) are typed
    # USER_DEFINED, not CONTROL: llama.cpp decides end-of-generation from a fixed set of ids
    # (EOS, EOT, FIM pad/rep/sep) and token texts, with no GGUF key to add others, and it
    # renders CONTROL tokens as nothing, so a client's stop strings could never see them
    # and generation ran on past them ("control token ... is not marked as EOG"). As
    # user-defined tokens they are still read from prompt text, but printed, so `stop`
    # ends the answer there. EOS and the FIM pad stay CONTROL, and are EOG.
    sentinel_texts = {t for role in ("pre", "suf", "mid") for t in _FIM_TOKENS[role]}
    for added in tok.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        control = added.get("special") and added["content"] not in sentinel_texts
        kind = gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED
        types[int(added["id"])] = int(kind)
    if max(by_id) >= vocab_size:
        raise ValueError(
            f"tokenizer has ids up to {max(by_id)} but the model's vocab_size is {vocab_size}"
        )
    # llama.cpp needs one token per embedding row: pad unused rows like convert_hf_to_gguf.
    tokens, token_types = [], []
    for i in range(vocab_size):
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        default = gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED
        token_types.append(types.get(i, int(default)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    special = special_token_ids(tokenizer_dir)
    if "bos" in special:
        writer.add_bos_token_id(special["bos"])
    if "eos" in special:
        writer.add_eos_token_id(special["eos"])
    if "pad" in special:
        writer.add_pad_token_id(special["pad"])
    # Our models train without BOS; imported Llama tokenizers say so in their config.
    tok_config = tokenizer_dir / "tokenizer_config.json"
    add_bos = tok_config.is_file() and bool(
        json.loads(tok_config.read_text(encoding="utf-8")).get("add_bos_token", False)
    )
    writer.add_add_bos_token(add_bos)
    ids = {t: i for i, t in by_id.items()}
    keys = {
        "pre": gguf.Keys.Tokenizer.FIM_PRE_ID,
        "suf": gguf.Keys.Tokenizer.FIM_SUF_ID,
        "mid": gguf.Keys.Tokenizer.FIM_MID_ID,
        "pad": gguf.Keys.Tokenizer.FIM_PAD_ID,
    }
    for role, spellings in _FIM_TOKENS.items():
        found = next((ids[s] for s in spellings if s in ids), None)
        if found is not None:
            writer.add_uint32(keys[role], found)


def export_gguf(
    model: Any,
    tokenizer_dir: Path | None,
    out_path: Path,
    dtype: str = "f16",
    *,
    overwrite: bool = False,
    name: str = "council-specialist",
) -> Path:
    """Write ``model`` (and its tokenizer, when given) as one llama.cpp GGUF file."""
    import gguf

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"GGUF dtype must be one of {', '.join(GGUF_DTYPES)}, not {dtype!r}")
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise ValueError(f"{out_path} exists; pass overwrite=True (--force) to replace it")
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir is not None else None
    if tokenizer_dir is not None and not (tokenizer_dir / "tokenizer.json").is_file():
        log.warning("no tokenizer.json in %s: the GGUF file will have no vocabulary", tokenizer_dir)
        tokenizer_dir = None
    cfg = model.cfg
    out_path.parent.mkdir(parents=True, exist_ok=True)

    tmp = out_path.with_name(f".{out_path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32
    )
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.hidden_dim)
    writer.add_block_count(cfg.num_layers)
    writer.add_feed_forward_length(cfg.ffn_dim)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.num_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_rope_dimension_count(cfg.head_dim)
    if tokenizer_dir is not None:
        _add_tokenizer(writer, tokenizer_dir, cfg.vocab_size)

    for hf_name, value in hf_state_dict(model).items():
        if ".q_proj." in hf_name:
            value = permute_qk(value, cfg.num_heads)
        elif ".k_proj." in hf_name:
            value = permute_qk(value, cfg.num_kv_heads)
        # llama.cpp keeps 1-D tensors (norms, biases) in f32 whatever the file type.
        if dtype == "f16" and value.ndim > 1:
            value = value.astype(np.float16)
        writer.add_tensor(gguf_name(hf_name), np.ascontiguousarray(value))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)
    log.info("wrote GGUF (%s) to %s", dtype, out_path)
    return out_path
