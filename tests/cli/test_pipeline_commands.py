"""``recover``, ``evaluate``, ``benchmark``, ``card`` and ``push`` chained on the real tiny TinyStories Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_depth.cli import main
from optimum_depth.publishing.cards import build_model_card

from hub_server import running_fake_hub
from tiny_models import DATA_DIR

TOKEN = "hf_FAKEcliTOKENneverWRITTEN42"


@pytest.fixture
def pruned_checkpoint(stories_path, tmp_path):
    out = tmp_path / "pruned"
    assert (
        main(
            [
                "prune",
                "--model",
                str(stories_path),
                "--criterion",
                "block_influence",
                "--num-layers-to-remove",
                "1",
                "--protect-first",
                "1",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_evaluate_and_benchmark_dense_vs_pruned(stories_path, pruned_checkpoint, tmp_path):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(pruned_checkpoint),
                "--dense-model",
                str(stories_path),
                "--max-windows",
                "2",
                "--latency-batch-sizes",
                "1",
                "--new-tokens",
                "3",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "evaluation_results.json").read_text())
    assert results["dense"]["perplexity"]["wikitext2"] < results["pruned"]["perplexity"]["wikitext2"] * 10
    assert results["pruned"]["latency"][0]["new_tokens"] == 3
    bench = tmp_path / "bench"
    assert (
        main(
            [
                "benchmark",
                "--model",
                str(pruned_checkpoint),
                "--latency-batch-sizes",
                "1,2",
                "--new-tokens",
                "2",
                "--output-dir",
                str(bench),
            ]
        )
        == 0
    )
    records = json.loads((bench / "evaluation_results.json").read_text())["latency"]
    assert [r["batch_size"] for r in records] == [1, 2]


def test_evaluate_user_mistakes(pruned_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(pruned_checkpoint), "--perplexity", "", "--output-dir", str(out)]) == 2
    assert "Nothing to measure" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(pruned_checkpoint),
                "--data-dir",
                str(tmp_path / "nope"),
                "--output-dir",
                str(out),
            ]
        )
        == 2
    )
    assert not out.exists()


def test_card_then_push_round_trip(pruned_checkpoint, tmp_path, monkeypatch):
    assert main(["card", str(pruned_checkpoint), "--repo-id", "org/stories-pruned"]) == 0
    card = huggingface_hub.ModelCard.load(pruned_checkpoint / "README.md")
    assert "depth-pruning" in card.data.tags
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    with running_fake_hub(tmp_path / "hub", token=TOKEN) as hub:
        assert (
            main(["push", str(pruned_checkpoint), "org/stories-pruned", "--token", TOKEN, "--endpoint", hub.endpoint])
            == 0
        )
        files = set(hub.list_files("org/stories-pruned"))
        assert {"model.safetensors", "README.md", "pruning_plan.json", "tokenizer.json"} <= files
        assert all(TOKEN.encode() not in hub.read_file("org/stories-pruned", f) for f in files)
    assert main(["card", str(tmp_path / "not-a-checkpoint")]) == 2


def test_recover_with_lora_writes_a_native_merged_checkpoint(pruned_checkpoint, tmp_path):
    alpaca = DATA_DIR / "alpaca" / "alpaca_small_antelofski.json"
    if not alpaca.is_file():
        pytest.skip("shared Alpaca data not available")
    out = tmp_path / "recovered"
    assert (
        main(
            [
                "recover",
                str(pruned_checkpoint),
                "--data",
                str(alpaca),
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--block-size",
                "64",
                "--max-examples",
                "32",
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    before = AutoModelForCausalLM.from_pretrained(pruned_checkpoint)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert after.config.surviving_layers == before.config.surviving_layers
    assert not any(".lora_" in name for name, _ in after.named_parameters())
    recovery = after.config.recovery  # what the card shows
    assert {k: recovery[k] for k in ("method", "objective", "data", "steps", "learning_rate")} == {
        "method": "lora",
        "objective": "lm",
        "data": "alpaca_small_antelofski.json",
        "steps": 2,
        "learning_rate": 1e-4,
    }
    assert recovery["tokens"] > 0 and len(recovery["data_sha256"]) == 64
    card = build_model_card(after)
    assert "- method: lora" in card.text and "- data: alpaca_small_antelofski.json" in card.text
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))
    assert (
        main(
            [
                "recover",
                str(pruned_checkpoint),
                "--data",
                str(tmp_path / "missing.json"),
                "--output-dir",
                str(tmp_path / "r2"),
            ]
        )
        == 2
    )


def test_recover_by_distillation_on_self_generated_text(pruned_checkpoint, stories_path, tmp_path):
    out = tmp_path / "kd"
    argv = ["recover", str(pruned_checkpoint), "--data", "self", "--objective", "kd+lm", "--method", "full"]
    argv += ["--teacher", str(stories_path), "--hidden-alignment", "0.5", "--max-steps", "2", "--batch-size", "2"]
    argv += ["--block-size", "32", "--max-examples", "8", "--output-dir", str(out)]
    assert main(argv) == 0
    before = AutoModelForCausalLM.from_pretrained(pruned_checkpoint)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert after.config.surviving_layers == before.config.surviving_layers
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))
    recovery = after.config.recovery
    assert (recovery["method"], recovery["objective"], recovery["alpha"]) == ("full", "kd+lm", 0.5)
    assert recovery["data"] == "self-generated by the dense teacher" and recovery["steps"] == 2
    assert recovery["tokens"] > 0 and recovery["learning_rate"] == 2e-5 and recovery["hidden_alignment"] == 0.5
    # The checkpoint names its source by folder name and digest only; this machine remembers where it is.
    assert json.loads((pruned_checkpoint / "config.json").read_text())["source_model"] == stories_path.name
    del argv[argv.index("--teacher") : argv.index("--teacher") + 2]
    assert main([*argv[:-1], str(tmp_path / "kd2")]) == 0


def test_prune_with_compensation_records_the_maps(stories_path, tmp_path):
    out = tmp_path / "comp"
    argv = ["prune", "--model", str(stories_path), "--criterion", "block_influence", "--num-layers-to-remove", "1"]
    argv += ["--protect-first", "1", "--compensation", "linear_ls", "--compensation-samples", "16"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    maps = config["pruning"]["compensation"]["maps"]
    assert len(maps) == 1 and maps[0]["removed"] == config["pruning"]["removed_layers"]
    assert json.loads((out / "depth_pruning_config.json").read_text())["compensation"]["num_samples"] == 16


def test_prune_with_compensation_aware_selection(stories_path, tmp_path):
    out = tmp_path / "aware"
    argv = ["prune", "--model", str(stories_path), "--criterion", "sleb", "--num-layers-to-remove", "1"]
    argv += ["--compensation", "linear_ls", "--compensation-samples", "16", "--compensation-selection", "aware"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["pruning"]["compensation"]["settings"]["selection"] == "aware"
    assert json.loads((out / "layer_scores.json").read_text())["extra"]["selection"] == "compensation-aware"
    # Without a compensation method the selection option is a usage error (exit 2), and so is another criterion.
    assert main(["prune", "--model", str(stories_path), "--compensation-selection", "aware", "--output-dir",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert main([*argv[:4], "ppl", *argv[5:], "--output-dir", str(tmp_path / "y")]) == 2


def test_recover_prints_no_warning_about_quantization_it_does_not_use(pruned_checkpoint, tmp_path):
    """peft imports bitsandbytes, which warns at import (offline) about its Hub kernels: not the user's business."""
    alpaca = DATA_DIR / "alpaca" / "alpaca_small_antelofski.json"
    argv = ["recover", str(pruned_checkpoint), "--data", str(alpaca), "--max-steps", "1", "--batch-size", "2"]
    argv += ["--block-size", "32", "--max-examples", "8", "--output-dir", str(tmp_path / "out")]
    command = [str(Path(sys.executable).with_name("optimum-depth")), *argv]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in result.stderr.splitlines() if "it/s" not in line and line.strip()]
    assert not [line for line in noise if "bitsandbytes" in line or "kernels" in line or "Warning" in line], noise
