"""Load a model and its tokenizer for inference from whatever the user points at.

Two kinds of directory hold a model: a training run (``model_config.json`` + orbax
``checkpoints/``, written by ``council train fit``) and a Hugging Face directory
(``config.json`` + ``*.safetensors``, written by ``council train export``/``import`` or
downloaded). Sampling, evaluation and the language server accept either, so a user never has
to convert before trying a model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.config import ModelConfig
from training.model import Transformer
from training.tokenizer import CodeTokenizer

log = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """The path does not hold a model we can load; the message says what is missing."""


def model_kind(path: Path) -> str:
    """``"run"`` or ``"hf"``; raises :class:`ModelLoadError` for anything else."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: expected a directory (a training run or a HF model)")
    if (path / "model_config.json").is_file():
        return "run"
    if (path / "config.json").is_file():
        return "hf"
    raise ModelLoadError(
        f"{path}: neither a training run (model_config.json) nor a Hugging Face model "
        "directory (config.json)"
    )


def load_tokenizer(path: Path) -> CodeTokenizer:
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(f"{path}: no tokenizer.json beside the model")
    return CodeTokenizer.from_file(path / "tokenizer.json")


def load_for_inference(
    path: Path | str, *, dtype: str | None = None, step: int | None = None
) -> tuple[Transformer, CodeTokenizer]:
    """The model (compute dtype ``dtype`` if given) and its tokenizer from a run or HF dir."""
    path = Path(path).expanduser()
    kind = model_kind(path)
    tokenizer = load_tokenizer(path)
    if kind == "run":
        try:
            from training.checkpoint import load_model
        except ModuleNotFoundError as exc:  # orbax is in the [train] extra
            missing = (exc.name or "orbax").split(".")[0]
            raise ModelLoadError(
                f"{path}: a training run's checkpoints need the [train] extra ({missing} is "
                "not installed): pip install 'slm-council[train]', or point at a Hugging Face "
                "directory (council train export)"
            ) from exc

        model, cfg = load_model(path, step)
        if dtype and dtype != cfg.dtype:
            model = with_dtype(model, dtype)
    else:
        from training.hf import import_hf

        model, cfg = import_hf(path, dtype=dtype)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ModelLoadError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{cfg.vocab_size} embeddings"
        )
    log.info("loaded %s model from %s (%s)", kind, path, describe(cfg))
    return model, tokenizer


def with_dtype(model: Transformer, dtype: str) -> Transformer:
    """The same parameters under a different compute dtype (params stay as they are)."""
    from flax import nnx

    from training.model import build

    cfg = model.cfg.replace(dtype=dtype)
    fresh = build(cfg)
    nnx.update(fresh, nnx.state(model, nnx.Param))
    return fresh


def describe(cfg: ModelConfig) -> str:
    from training.config import param_count

    return (
        f"{param_count(cfg) / 1e6:.1f}M params, {cfg.num_layers} layers, d={cfg.hidden_dim}, "
        f"{cfg.num_heads}q/{cfg.num_kv_heads}kv heads, vocab {cfg.vocab_size}, {cfg.dtype}"
    )
