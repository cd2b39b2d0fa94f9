"""Model and training configurations: frozen dataclasses with named presets, overridable
from the CLI. :class:`ModelConfig` is the network's shape, :class:`TrainConfig` one run's
optimisation and bookkeeping; both are saved beside a run and read back on resume.

The presets follow seed 004. ``test`` is the seed's "10M" validation model and ``prod`` its
"500M" specialist, both on the StarCoder2 vocabulary (49,152 tokens) with multi-query
attention. The seed's names count the transformer blocks only: with SwiGLU (three matmuls)
and the tied 49,152 x d embedding, the real totals are about 18M and 405M parameters, and
:func:`param_count` reports the exact number. ``tiny`` is sized for the default model that
ships inside the package (trained on a 2-core CPU, at most 25 MB in bf16) and uses a small
BPE vocabulary trained on the corpus.

The seed's ``dropout: 0.0`` is not a field: the model has no dropout, which is what 0.0 means.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the decoder-only transformer in :mod:`training.model`."""

    vocab_size: int
    hidden_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int = 1  # 1 = multi-query attention (the seed); num_heads = classic MHA
    head_dim: int = 0  # 0 = hidden_dim // num_heads
    ffn_dim: int = 0  # 0 = 4 * hidden_dim (the SwiGLU inner width)
    max_seq_len: int = 512
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # the seed ties the output head to the embedding
    qkv_bias: bool = False  # Qwen2-family checkpoints have biases on q/k/v
    dtype: str = "bfloat16"  # compute dtype (activations and matmul inputs)
    param_dtype: str = "float32"  # parameters and optimizer state stay in fp32
    remat: bool = False  # recompute each block in the backward pass (memory for FLOPs)
    # The pre-AMX numerics (bf16-output dots differentiated by XLA, whole fp32 logits in the
    # loss), kept only so that `council bench train --baseline` can time it: see training.model.
    legacy_numerics: bool = False

    def __post_init__(self) -> None:
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden_dim // self.num_heads)
        if not self.ffn_dim:
            object.__setattr__(self, "ffn_dim", 4 * self.hidden_dim)
        problems = []
        if self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            problems.append(f"head_dim ({self.head_dim}) must be even for RoPE")
        for name in ("vocab_size", "hidden_dim", "num_layers", "num_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if self.dtype not in DTYPES or self.param_dtype not in DTYPES:
            problems.append(f"dtype and param_dtype must be one of {sorted(DTYPES)}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        return cls.from_dict(json.loads(path.read_text()))


DTYPES = {"float32", "bfloat16", "float16"}

PRESETS: dict[str, ModelConfig] = {
    # The shipped default: small enough to train on a 2-core CPU and to ship (<= 25 MB).
    "tiny": ModelConfig(
        vocab_size=8192,
        hidden_dim=256,
        num_layers=4,
        num_heads=4,
        num_kv_heads=1,
        ffn_dim=768,
        max_seq_len=512,
    ),
    # Seed 004 TestConfig ("10M", pipeline validation).
    "test": ModelConfig(
        vocab_size=49152,
        hidden_dim=256,
        num_layers=6,
        num_heads=4,
        num_kv_heads=1,
        head_dim=64,
        ffn_dim=1024,
        max_seq_len=512,
    ),
    # Seed 004 ProdConfig ("500M", the Python specialist; TPU v5e-8 or a GPU).
    "prod": ModelConfig(
        vocab_size=49152,
        hidden_dim=1024,
        num_layers=24,
        num_heads=16,
        num_kv_heads=1,
        head_dim=64,
        ffn_dim=4096,
        max_seq_len=2048,
        remat=True,  # 2,048-token activations of 24 blocks do not fit a 16 GB chip otherwise
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset with CLI-style overrides applied (``preset("test", num_layers=1)``)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    if "hidden_dim" in overrides or "num_heads" in overrides:
        # A derived head_dim must follow the new width unless it was given explicitly.
        overrides.setdefault("head_dim", 0)
    return base.replace(**overrides) if overrides else base


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["num_layers=2", "dtype=float32"]`` -> typed overrides, checked against the fields."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ValueError(
                f"bad override {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}"
            )
        default = getattr(PRESETS["tiny"], key)
        try:
            if isinstance(default, bool):
                if raw.lower() not in {"true", "false", "1", "0"}:
                    raise ValueError(raw)
                out[key] = raw.lower() in {"true", "1"}
            elif isinstance(default, int):
                out[key] = int(raw)
            elif isinstance(default, float):
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            raise ValueError(f"bad override {item!r}: {raw!r} is not a valid {key}") from None
    return out


def param_count(cfg: ModelConfig) -> int:
    """Exact number of parameters of :class:`training.model.Transformer` for ``cfg``."""
    d, hd = cfg.hidden_dim, cfg.head_dim
    q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if cfg.qkv_bias else 0)
    mlp = 3 * d * cfg.ffn_dim
    block = attn + mlp + 2 * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return cfg.vocab_size * d + cfg.num_layers * block + d + head


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of one run (the model's shape is :class:`ModelConfig`)."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # global, in sequences, per optimizer step
    grad_accum: int = 1  # micro-batches per step (batch_size must divide by it)
    lr: float = 1e-3  # peak learning rate
    lr_min: float = 1e-4  # reached at the last step
    warmup_steps: int | None = None  # None: min(2000, 5% of steps)
    weight_decay: float = 0.1
    clip: float = 1.0  # global gradient-norm clip
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    seed: int = 0  # initialisation, data order and the checkpointed RNG
    fim_rate: float = 0.5  # fraction of documents turned into fill-in-the-middle examples
    eval_every: int = 200  # 0 = only at the end
    eval_batches: int = 8
    save_every: int = 500  # a checkpoint is also written at the end
    keep_checkpoints: int = 3
    log_every: int = 10
    mesh: str = "data=-1,fsdp=1"  # -1 = all remaining devices
    peak_tflops: float | None = None  # per device, for MFU; None = measure a matmul

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "grad_accum", "eval_batches", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("eval_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.batch_size % self.grad_accum:
            problems.append(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum "
                f"({self.grad_accum})"
            )
        if not 0 < self.lr_min <= self.lr and not (self.lr_min == 0 <= self.lr):
            problems.append(f"need 0 <= lr_min ({self.lr_min}) <= lr ({self.lr})")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.steps:
            problems.append(f"warmup_steps ({self.warmup_steps}) must be in [0, steps)")
        if not 0.0 <= self.fim_rate <= 1.0:
            problems.append(f"fim_rate ({self.fim_rate}) must be in [0, 1]")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            problems.append("peak_tflops must be positive")
        from training.mesh import parse_mesh  # jax; only where a config is checked

        try:
            parse_mesh(self.mesh)
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def warmup(self) -> int:
        """Warmup steps: as given, else the seed's 2,000 capped at 5% of a shorter run."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(2000, max(1, round(0.05 * self.steps))) if self.steps > 1 else 0

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config keys: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        data = self.to_dict() | {"resolved_warmup": self.warmup}
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        data = json.loads(path.read_text())
        data.pop("resolved_warmup", None)
        return cls.from_dict(data)


#: Training defaults per model preset. ``prod`` is seed 004 (3e-4 -> 3e-5, 2,000 warmup
#: steps at 50k steps, global batch 64). The small models take a 3x higher peak (small
#: transformers tolerate and need larger steps: GPT-3's table goes from 6e-4 at 125M up to
#: 1e-3 and beyond below that) with the same 10:1 decay, and their warmup is the 5% rule.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=3000, batch_size=16, lr=1e-3, lr_min=1e-4),
    "test": TrainConfig(steps=2000, batch_size=32, lr=1e-3, lr_min=1e-4),
    "prod": TrainConfig(
        steps=50_000,
        batch_size=64,
        lr=3e-4,
        lr_min=3e-5,
        eval_every=1000,
        eval_batches=16,
        save_every=1000,
        log_every=50,
    ),
}


def train_preset(name: str, **overrides: Any) -> TrainConfig:
    """The training defaults for a model preset, with overrides."""
    try:
        base = TRAIN_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}"
        ) from None
    return base.replace(**overrides) if overrides else base
