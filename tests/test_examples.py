"""Every script in examples/ runs end to end in reduced mode (5-block TinyStories model, a few steps) as a
subprocess, and writes what its docstring promises: checkpoints that reload with ``from_pretrained``, plans, plots."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import optimum_depth.modeling  # noqa: F401  (registers the pruned model classes for the FinerCut checkpoint)

from tiny_models import DATA_DIR, ROOT, STORIES_PATH

EXAMPLES = ROOT / "examples"
TESTED = {"recover_lora.py", "iterative_pruning.py", "finercut_sublayers.py", "besa_sparsity.py"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Reduced recovery run: 4 optimizer steps of 2 x 64 tokens, one of the 5 blocks removed (blocks 0 and 4 protected).
RECOVERY_ARGS = [
    "--protect-first", "1", "--protect-last", "1", "--max-steps", "4", "--batch-size", "2", "--grad-accum", "1",
    "--block-size", "64", "--max-examples", "40",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not (STORIES_PATH.is_dir() and DATA_DIR.is_dir()), reason="needs ../shared/models/stories260K and ../shared/data"
)


def run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Runs ``command`` from the checkout root (so the examples find ../shared/data by default), offline."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
    }
    env.pop("OPTIMUM_DEPTH_DATA_DIR", None)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


def run_example(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(EXAMPLES / script), "--model", str(STORIES_PATH), *args]
    return run([*command, "--output-dir", str(tmp_path / "out")], tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reload(path: Path) -> Any:
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 9, 42]])).logits
    assert logits.shape == (1, 4, model.config.vocab_size) and torch.isfinite(logits).all()
    return model


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_is_documented_and_tested(script):
    docstring = ast.get_docstring(ast.parse((EXAMPLES / script).read_text()))
    assert docstring and f"python examples/{script}" in docstring, "the docstring must give the exact command"
    assert "--model ../shared/models/stories260K" in docstring, "the docstring must give a reduced command"
    assert script in TESTED, f"{script} has no end-to-end test in tests/test_examples.py"
    assert f"examples/{script}" in (ROOT / "README.md").read_text(), f"README's Examples table misses {script}"


def check_recovered(out: Path, world_size: int) -> None:
    model = reload(out / "merged")
    assert type(model).__name__ == "LlamaForCausalLM"  # block pruning keeps the native class
    config = model.config
    assert config.num_hidden_layers == len(model.model.layers) == 4
    assert config.pruning["removed_layers"] not in ([0], [4])  # protected blocks stay
    assert sorted(config.surviving_layers + config.pruning["removed_layers"]) == [0, 1, 2, 3, 4]
    assert config.recovery["method"] == "lora" and config.recovery["steps"] == 4
    assert config.recovery["world_size"] == world_size
    assert config.recovery["objective"] == "lm" and config.recovery["learning_rate"] > 0
    assert config.recovery["tokens"] == 4 * 2 * 64 * world_size  # steps x batch x block, every process
    assert config.recovery["data"].endswith(".json") and "/" not in config.recovery["data"]
    assert not any("lora" in name for name in model.state_dict())  # adapters merged


def test_recover_lora_one_shot(tmp_path):
    run_example("recover_lora.py", tmp_path, *RECOVERY_ARGS)
    check_recovered(tmp_path / "out", world_size=1)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp.yaml", "fsdp2.yaml"])
def test_recover_lora_two_processes(tmp_path, config):
    """The shipped accelerate configs, unchanged but for the port: DDP, and FSDP2 (gloo on CPU)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--config_file", str(EXAMPLES / "accelerate" / config),
        "--num_processes", "2", "--main_process_port", str(free_port()),
        str(EXAMPLES / "recover_lora.py"), "--model", str(STORIES_PATH), *RECOVERY_ARGS,
        "--output-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    result = run(command, tmp_path)
    check_recovered(tmp_path / "out", world_size=2)
    if config == "fsdp2.yaml":  # really sharded, and pruned before sharding
        assert "Pruned before fsdp wraps the model (world size 2)" in result.stderr
        assert "FSDP on CPU: 2 gloo processes" in result.stderr


def test_iterative_pruning_in_trainer(tmp_path):
    args = ["--num-layers-to-remove", "2", "--layers-per-step", "1", "--prune-every-n-steps", "3", "--max-steps", "6"]
    result = run_example("iterative_pruning.py", tmp_path, *args, "--num-samples", "4", "--max-examples", "50")
    out = tmp_path / "out"
    events = json.loads((out / "pruning_events.json").read_text())
    assert [e["step"] for e in events] == [0, 3]
    assert [e["pruning/num_layers"] for e in events] == [4, 3]
    removed = [i for e in events for i in e["pruning/removed_layers"]]
    assert len(set(removed)) == 2 and not {0, 4} & set(removed)
    assert set(events[1]) >= {f"pruning/score/{i}" for i in range(5) if i != removed[0]}  # rescored the pruned model
    model = reload(out / "model")
    assert model.config.num_hidden_layers == len(model.model.layers) == 3
    assert sorted(model.config.surviving_layers + removed) == [0, 1, 2, 3, 4]
    assert f"surviving blocks {model.config.surviving_layers}" in result.stdout


def test_finercut_sublayers_native_reload_and_map(tmp_path):
    result = run_example(
        "finercut_sublayers.py", tmp_path, "--pruning-ratio", "0.3", "--num-samples", "4", "--seq-len", "64"
    )
    out = tmp_path / "out"
    plan = json.loads((out / "model" / "pruning_plan.json").read_text())
    assert plan["granularity"] == "sublayer" and plan["criterion"] == "finercut"
    assert len(plan["removed_attention"]) + len(plan["removed_mlp"]) == 3  # 30% of 10 sublayers
    assert (out / "model" / "layer_scores.json").is_file()
    assert (out / "finercut_map.png").read_bytes().startswith(PNG_MAGIC)
    model = reload(out / "model")
    assert type(model).__name__ == "PrunedLlamaForCausalLM" and model.config.model_type == "pruned_llama"
    assert len(model.config.skipped_attention) + len(model.config.skipped_mlp) == 3
    match = re.search(r"max \|logit difference\| (\S+)", result.stdout)
    assert match, result.stdout
    difference = float(match.group(1))
    assert difference < 1e-5  # the reloaded checkpoint computes what the pruned model in memory computed


def test_besa_sparsity_after_block_removal(tmp_path):
    run_example("besa_sparsity.py", tmp_path, "--num-samples", "4", "--seq-len", "64", "--remove-blocks", "1")
    out = tmp_path / "out"
    assert (out / "layer_sparsity.png").read_bytes().startswith(PNG_MAGIC)
    result = json.loads((out / "sparsity_result.json").read_text())
    assert result["config"]["method"] == "besa" and len(result["blocks"]) == 4
    model = reload(out / "model")
    assert model.config.num_hidden_layers == 4 and len(model.config.surviving_layers) == 4
    assert model.config.sparsity["method"] == "besa"
    assert sorted(model.config.sparsity["blocks"]) == sorted(str(i) for i in model.config.surviving_layers)
    linears = [m.weight for layer in model.model.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in linears) / sum(w.numel() for w in linears)
    assert zeros == pytest.approx(0.5, abs=0.01)  # the zeros survived saving and reloading
    assert model.config.sparsity["achieved"] == pytest.approx(zeros, abs=1e-4)
