"""The README's walk, end to end through the real CLI: code folder -> data -> fit -> sample
-> eval -> export -> sample the export. Tiny shapes; the point is that the pieces fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_council.main import main

FILES = {
    f"pkg/mod_{i}.py": (
        f'"""Module {i}."""\n\n\ndef scale_{i}(values, factor={i}):\n'
        f"    result = []\n    for value in values:\n        result.append(value * factor)\n"
        f"    return result\n\n\nclass Counter{i}:\n    def __init__(self):\n"
        f"        self.count = {i}\n\n    def bump(self, by=1):\n        self.count += by\n"
        f"        return self.count\n"
    )
    for i in range(12)
}


@pytest.mark.slow
def test_folder_to_evaluated_and_exported_model(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    for name, text in FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    data, run, hf = tmp_path / "data", tmp_path / "run", tmp_path / "hf"

    assert main(["train", "data", "--source", str(src), "--vocab-size", "320",
                 "--seq-len", "64", "--val-fraction", "0.2", "--no-dedup",
                 "--out", str(data)]) == 0  # fmt: skip
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["splits"]["val"]["rows"] >= 1

    assert main(["train", "fit", "--data", str(data), "--out", str(run), "--preset", "tiny",
                 "--set", "num_layers=1", "--set", "hidden_dim=32", "--set", "num_heads=2",
                 "--set", "ffn_dim=64", "--set", "max_seq_len=128", "--steps", "4",
                 "--batch-size", "4", "--eval-every", "4", "--save-every", "4",
                 "--peak-tflops", "1", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()

    assert main(["train", "sample", str(run), "--prompt", "def scale_3(values):\\n",
                 "--max-new-tokens", "5", "--json"]) == 0  # fmt: skip
    sample = json.loads(capsys.readouterr().out)
    assert len(sample["completions"]) == 1
    assert sample["completions"][0]["tokens"] <= 5

    assert main(["train", "eval", str(run), "--data", str(data), "--loss-batches", "2",
                 "--batch-size", "2", "--fim-cases", "2", "--humaneval", "--limit", "1",
                 "--max-new-tokens", "8", "--json"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["val_loss"] > 0 and report["val_ppl"] > 1
    assert report["fim_cases"] == 2 and 0.0 <= report["fim_exact_match"] <= 1.0
    assert report["humaneval"]["problems"] == 1
    assert set(report["humaneval"]["pass_at"]) == {"pass@1"}

    assert main(["train", "export", str(run), "--out", str(hf)]) == 0
    capsys.readouterr()
    assert main(["train", "sample", str(hf), "--prompt", "class Counter1:\\n",
                 "--max-new-tokens", "5", "--json"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["completions"][0]["tokens"] <= 5


def test_sample_and_eval_refuse_bad_input(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        main(["train", "sample", str(tmp_path / "missing"), "--prompt", "x"])
    with pytest.raises(SystemExit, match="neither a training run"):
        main(["train", "sample", str(tmp_path), "--prompt", "x"])
    with pytest.raises(SystemExit, match="nothing to do"):
        main(["train", "eval", str(tmp_path)])
    with pytest.raises(SystemExit, match="give --prompt"):
        main(["train", "sample", str(tmp_path)])
