"""The training loop: steps, accumulation, sharding, checkpoints/resume, FLOPs and the bench."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from slm_council.main import main as council_main
from training.bench import bench_train
from training.checkpoint import latest_step, load_model
from training.config import TrainConfig, param_count, preset
from training.data import PackedData, write_packed
from training.fit import fit
from training.flops import (
    best_known_peak,
    flops_per_token,
    measure_peak_flops,
    measure_torch_peak_flops,
)
from training.mesh import make_mesh
from training.tokenizer import train_tokenizer
from training.train import (
    Trainer,
    get_trainer,
    lr_schedule,
    micro_batches,
)

ROOT = Path(__file__).resolve().parents[1]
SEQ = 32  # model positions; packed rows hold SEQ + 1 tokens

CORPUS = [
    f"def add_{i}(a, b):\n    return a + b * {i}\n\n\nclass Box{i}:\n    value = {i}\n"
    for i in range(60)
] + ["import os\n\nprint(os.getcwd())\n", "for x in range(10):\n    print(x * x)\n"]


def tiny_cfg(**overrides):
    base = dict(
        vocab_size=256,
        hidden_dim=32,
        num_layers=1,
        num_heads=4,
        num_kv_heads=1,
        ffn_dim=64,
        max_seq_len=64,
        dtype="float32",
    )
    return preset("tiny", **(base | overrides))


def fixed_batch(batch: int = 8, vocab: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (batch, SEQ + 1)).astype(np.int32)
    mask = np.ones(tokens.shape, np.float32)
    mask[0, 20:] = 0.0  # one padded row: the loss must be padding-aware
    return tokens, mask


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A real packed dataset (train 48 rows, val 6 rows) with a BPE tokenizer."""
    tok = train_tokenizer(CORPUS, vocab_size=300)
    ids: list[int] = []
    for text in CORPUS * 3:
        ids += [*tok.encode(text), tok.eos_id]
    rows = np.asarray(ids[: (len(ids) // (SEQ + 1)) * (SEQ + 1)]).reshape(-1, SEQ + 1)
    assert len(rows) >= 54
    out = tmp_path_factory.mktemp("packed")
    return write_packed(out, {"train": rows[:48], "val": rows[48:54]}, tok)


# -- the step ----------------------------------------------------------------------------


#: one optimisation setup for the step tests, so they share one compiled step
STEP_CFG = TrainConfig(steps=15, batch_size=8, lr=3e-3, lr_min=3e-4, warmup_steps=2)


def test_one_step_returns_finite_metrics():
    trainer = get_trainer(tiny_cfg(), STEP_CFG, make_mesh("data=1"))
    state = trainer.init()
    before = jax.device_get(state.params)
    tokens, mask = fixed_batch(8)
    state, metrics = trainer.train_step(state, tokens, mask)
    values = {k: float(v) for k, v in metrics.items()}
    assert set(values) >= {"loss", "grad_norm", "lr"}
    assert all(np.isfinite(v) for v in values.values())
    assert 4.0 < values["loss"] < 7.0  # ~ln(256) at init
    assert values["lr"] == pytest.approx(3e-3 / 2)  # first warmup step is lr/warmup, not 0
    assert int(state.step) == 1
    after = jax.device_get(state.params)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), before, after)
    assert min(jax.tree.leaves(moved)) > 0  # every parameter got an update


def test_loss_decreases_on_a_fixed_batch():
    trainer = get_trainer(tiny_cfg(), STEP_CFG, make_mesh("data=1"))
    state = trainer.init()
    tokens, mask = fixed_batch(8)
    losses = []
    for _ in range(15):
        state, metrics = trainer.train_step(state, tokens, mask)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.5, losses
    assert trainer.evaluate(state.params, [(tokens, mask)]) < losses[0] - 0.5


def test_gradient_accumulation_matches_the_full_batch():
    tokens, mask = fixed_batch(8)
    results = []
    for accum in (1, 2):  # 8 rows at once, or 2 micro-batches of 4
        trainer = get_trainer(tiny_cfg(), STEP_CFG.replace(grad_accum=accum), make_mesh("data=1"))
        state, metrics = trainer.train_step(trainer.init(), tokens, mask)
        results.append((jax.device_get(state.params), jax.device_get(metrics)))
    (p1, m1), (p2, m2) = results
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-6)
    assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p1, p2)


def test_cpu_micro_batches_split_rows_and_leave_the_update_alone():
    # 8 rows of 513 tokens in groups of >= 1024 tokens: 4 groups of 2 rows; a mesh of 4
    # devices needs 4 rows per group; grad_accum multiplies; 0 tokens keeps grad_accum.
    assert micro_batches(8, 513, 1, 1, 1024) == 4
    assert micro_batches(8, 513, 1, 4, 1024) == 2
    assert micro_batches(16, 513, 2, 1, 1024) == 8
    assert micro_batches(8, 33, 1, 1, 1024) == 1 and micro_batches(8, 513, 2, 1, 0) == 2
    tokens, mask = fixed_batch(8)
    results = []
    for micro_tokens in (0, 66):  # one micro-batch of 8 rows, or 4 of 2 rows
        trainer = Trainer(tiny_cfg(), STEP_CFG, make_mesh("data=1"), micro_tokens=micro_tokens)
        assert trainer.micro_batches(8, SEQ + 1) == (1 if micro_tokens == 0 else 4)
        state, metrics = trainer.train_step(trainer.init(), tokens, mask)
        results.append((jax.device_get(state.params), jax.device_get(metrics)))
    (p1, m1), (p2, m2) = results
    assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p1, p2)


def test_schedule_warms_up_then_decays_to_lr_min():
    cfg = TrainConfig(steps=100, lr=1e-3, lr_min=1e-4)
    assert cfg.warmup == 5  # 5% of a short run
    assert TrainConfig(steps=100_000).warmup == 2000  # the seed's warmup at prod length
    schedule = lr_schedule(cfg)
    values = [float(schedule(i)) for i in range(100)]  # optax counts updates from 0
    assert values[0] == pytest.approx(2e-4)
    assert values[4] == pytest.approx(1e-3)
    assert values[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(values[4:]))


SHARDED_SCRIPT = textwrap.dedent(
    """
    import json, jax, numpy as np
    from training.config import preset
    from training.mesh import make_mesh
    from training.config import TrainConfig
    from training.train import Trainer
    assert jax.device_count() == 8
    cfg = preset("tiny", vocab_size=256, hidden_dim=32, num_layers=1, num_heads=4,
                 num_kv_heads=1, ffn_dim=64, max_seq_len=64, dtype="float32")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (8, 33)).astype(np.int32)
    mask = np.ones(tokens.shape, np.float32)
    mask[0, 20:] = 0
    out = {}
    for name, spec, devices in [("single", "data=1,fsdp=1", jax.devices()[:1]),
                                ("sharded", "data=2,fsdp=4", None)]:
        tc = TrainConfig(steps=10, batch_size=8, warmup_steps=1)
        trainer = Trainer(cfg, tc, make_mesh(spec, devices))
        state = trainer.init()
        for _ in range(2):
            state, metrics = trainer.train_step(state, tokens, mask)
        kernel = state.params["layers"][0]["mlp"]["gate_proj"]["kernel"]
        out[name] = {
            "loss": float(metrics["loss"]),
            "shards": len(kernel.addressable_shards),
            "shard_shape": list(kernel.addressable_shards[0].data.shape),
            "params": [np.asarray(p).tolist() for p in jax.tree.leaves(state.params)],
        }
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_sharded_step_on_8_host_devices_equals_single_device(tmp_path):
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    single, sharded = out["single"], out["sharded"]
    assert sharded["shards"] == 8 and sharded["shard_shape"] == [8, 64]  # fsdp splits dim 0
    assert single["shards"] == 1
    assert sharded["loss"] == pytest.approx(single["loss"], abs=1e-5)
    for a, b in zip(single["params"], sharded["params"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


# -- fit, checkpoints, resume ----------------------------------------------------------------


@pytest.mark.slow
def test_fit_resume_equals_straight_run(dataset, tmp_path, capsys):
    data = PackedData(dataset)
    cfg = tiny_cfg(vocab_size=int(data.manifest["vocab_size"]), dtype="bfloat16")
    train_cfg = TrainConfig(
        steps=6,
        batch_size=4,
        warmup_steps=2,
        eval_every=3,
        eval_batches=2,
        save_every=3,
        log_every=1,
        peak_tflops=1.0,
        fim_rate=0.5,
    )
    straight = tmp_path / "straight"
    summary = fit(dataset, straight, train_cfg, cfg, quiet=True)
    assert summary["step"] == 6 and np.isfinite(summary["val_loss"])

    # The run directory follows the documented layout.
    for name in ("model_config.json", "train_config.json", "tokenizer.json", "metrics.jsonl"):
        assert (straight / name).is_file(), name
    assert latest_step(straight) == 6
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert {"loss", "grad_norm", "lr", "tokens_per_s", "step_time_s", "mfu"} <= set(record)
        assert record["tokens_per_s"] > 0 and record["mfu"] > 0
    assert {"val_loss", "val_ppl"} <= set(records[2]) and "val_loss" not in records[1]
    assert records[-1]["lr"] == pytest.approx(train_cfg.lr_min)

    # Stop after step 3, then resume through the CLI with the run's saved configs.
    resumed = tmp_path / "resumed"
    fit(dataset, resumed, train_cfg, cfg, stop_at=3, quiet=True)
    assert latest_step(resumed) == 3
    with (resumed / "metrics.jsonl").open("a") as f:  # as if it died after logging step 4
        f.write(json.dumps({"step": 4, "loss": 99.0}) + "\n")
    argv = ["train", "fit", "--data", str(dataset), "--out", str(resumed), "--quiet"]
    assert council_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 6

    model_a, cfg_a = load_model(straight)
    model_b, cfg_b = load_model(resumed)
    assert cfg_a == cfg_b == cfg
    from flax import nnx

    pa = jax.tree.leaves(nnx.state(model_a, nnx.Param))
    pb = jax.tree.leaves(nnx.state(model_b, nnx.Param))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pa, pb, strict=True))
    logged = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged] == [r["loss"] for r in records]

    # An older checkpoint loads for inference too, and differs from the last one.
    model_3, _ = load_model(straight, step=3)
    p3 = jax.tree.leaves(nnx.state(model_3, nnx.Param))
    assert not all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(p3, pa, strict=True)
    )

    # Resuming a run with another model shape is refused, clearly.
    with pytest.raises(ValueError, match="different model"):
        fit(dataset, straight, train_cfg.replace(steps=8), cfg.replace(hidden_dim=64))


@pytest.mark.slow
def test_fit_starts_from_imported_hf_weights(dataset, tmp_path):
    from flax import nnx

    from training.hf import export_hf
    from training.model import build

    vocab = int(PackedData(dataset).manifest["vocab_size"])
    source = build(tiny_cfg(vocab_size=vocab), seed=7)
    hf_dir = export_hf(source, dataset, tmp_path / "hf")
    frozen = TrainConfig(steps=2, batch_size=4, lr=0.0, lr_min=0.0, peak_tflops=1.0)
    fit(dataset, tmp_path / "run", frozen, init_from=hf_dir, stop_at=1, quiet=True)
    loaded, cfg = load_model(tmp_path / "run")
    assert cfg.vocab_size == vocab and cfg.hidden_dim == 32
    want = jax.tree.leaves(nnx.state(source, nnx.Param))
    got = jax.tree.leaves(nnx.state(loaded, nnx.Param))
    for a, b in zip(want, got, strict=True):  # lr 0: the imported weights, untouched
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_command_rejects_bad_input(dataset, tmp_path):
    base = ["train", "fit", "--data", str(dataset), "--out", str(tmp_path / "run"), "--quiet"]
    small = ["--set", "hidden_dim=32", "--set", "num_layers=1", "--set", "ffn_dim=64"]
    cases = {
        "smaller than the dataset": ["--set", "vocab_size=100"],
        "max_seq_len": ["--set", "max_seq_len=16"],
        "multiple of grad_accum": ["--batch-size", "6", "--grad-accum", "4"],
        "bad mesh": ["--mesh", "data=two"],
        "needs 3 devices": ["--mesh", "data=3"],
    }
    for message, extra in cases.items():
        with pytest.raises(SystemExit, match=message):
            council_main([*base, *small, *extra])
    with pytest.raises(SystemExit, match="not a packed dataset"):
        council_main(["train", "fit", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    run = tmp_path / "empty"
    run.mkdir()
    tiny_cfg().save(run / "model_config.json")
    with pytest.raises(ValueError, match="no checkpoints"):
        load_model(run)


# -- FLOPs and the bench ------------------------------------------------------------------


def test_flops_per_token_matches_a_hand_count():
    cfg = preset(
        "tiny",
        vocab_size=100,
        hidden_dim=8,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=2,
        ffn_dim=16,
    )
    f = flops_per_token(cfg, seq_len=10)
    # forward multiply-adds per token, x2 FLOPs, x3 for training
    assert f["q_proj"] == 6 * 2 * 8 * 8  # layers * D * (H * hd)
    assert f["k_proj"] == f["v_proj"] == 6 * 2 * 8 * 4  # KV heads only
    assert f["o_proj"] == 6 * 2 * 8 * 8
    assert f["attention"] == 6 * 2 * (2 * 10 * 8) / 2  # QK^T + PV, causal half
    assert f["mlp_gate"] == f["mlp_up"] == f["mlp_down"] == 6 * 2 * 8 * 16
    assert f["lm_head"] == 6 * 8 * 100  # tied head counted once
    assert f["total"] == 12672 and f["forward"] == 12672 / 3
    # Cross-check: everything but attention is 6 x the matmul parameters.
    norms = 2 * 8 * 2 + 8
    assert f["total"] - f["attention"] == 6 * (param_count(cfg) - norms)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_measure_peak_flops_is_positive(dtype):
    assert measure_peak_flops(dtype, size=128, repeats=2) > 1e6


def test_a_peak_measured_under_load_does_not_replace_the_best_one(tmp_path, monkeypatch):
    """A slow measurement (the machine was busy) must not inflate MFU: the best figure
    seen on this machine wins, a new best replaces it, and another machine's does not
    count."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert best_known_peak("jax:cpu:bf16:64", 1.0e12) == 1.0e12
    assert best_known_peak("jax:cpu:bf16:64", 0.1e12) == 1.0e12
    assert best_known_peak("jax:cpu:bf16:64", 1.5e12) == 1.5e12
    assert best_known_peak("torch:cpu:bf16:64", 0.2e12) == 0.2e12
    (tmp_path / "council" / "peaks.json").write_text("[not a dict")
    assert best_known_peak("jax:cpu:bf16:64", 0.3e12) == 0.3e12  # a broken cache is replaced


def test_torch_peak_is_measured_when_torch_is_installed():
    pytest.importorskip("torch")
    assert measure_torch_peak_flops("bfloat16", size=128, repeats=2) > 1e6


def test_bench_train_reports_throughput_mfu_and_the_baseline():
    report = bench_train(
        "tiny",
        steps=2,
        batch_size=2,
        seq_len=16,
        overrides={"vocab_size": 256, "hidden_dim": 32, "num_layers": 1, "ffn_dim": 64},
        peak_size=256,
        baseline=True,
    )
    json.dumps(report)  # JSON-able
    assert report["backend"] == "cpu" and report["preset"] == "tiny" and "prod" not in report
    assert report["tokens_per_step"] == 32 and report["tokens_per_s"] > 0
    assert report["step_time_s"]["min"] <= report["step_time_s"]["p50"]
    assert report["peak_tflops_per_device"] > 0 and report["mfu"] > 0
    # MFU is against the best measured rate: XLA's fp32-accumulating matmul, torch's when present
    peaks = report["peaks_tflops_per_device"]
    assert report["peak_tflops_per_device"] == max(v for v in peaks.values() if v)
    assert report["flops_per_token"]["total"] == int(
        flops_per_token(preset("tiny", **report["overrides"]), 16)["total"]
    )
    # the legacy numerics path, timed on the same batch: same model, same first loss
    base = report["baseline"]
    assert base["legacy_numerics"] and not report["legacy_numerics"]
    assert base["timed_steps"] == report["timed_steps"] == 2 and base["micro_batches"] == 1
    assert base["loss_first"] == pytest.approx(report["loss_first"], abs=0.05)
    assert report["speedup"] == pytest.approx(report["tokens_per_s"] / base["tokens_per_s"], 1e-2)


def test_bench_train_ablation_times_every_variant_on_the_same_numbers():
    """Each variant undoes one optimisation: all of them start from the same loss (the
    swaps change speed, not maths), and nothing stays swapped afterwards."""
    import training.model as model_module
    from training.ablation import VARIANTS

    before = {n: getattr(model_module, n) for n in ("contract", "causal_attention")}
    report = bench_train(
        "tiny",
        steps=1,
        batch_size=2,
        seq_len=16,
        overrides={"vocab_size": 256, "hidden_dim": 32, "num_layers": 1, "ffn_dim": 64},
        peak_size=256,
        ablation=True,
    )
    table = report["ablation"]
    assert set(table) == set(VARIANTS)
    first = table["current"]["loss_first"]
    for name, row in table.items():
        assert row["tokens_per_s"] > 0, name
        assert row["loss_first"] == pytest.approx(first, abs=0.05), name
    assert table["baseline"]["micro_batches"] == table["no_micro_split"]["micro_batches"] == 1
    assert {n: getattr(model_module, n) for n in before} == before
