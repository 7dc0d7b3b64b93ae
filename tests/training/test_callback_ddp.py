"""Pruning during real 2-process DDP training (gloo on CPU) launched with accelerate: every rank ends identical."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import optimum_depth.modeling  # noqa: F401  (registers the pruned classes for the sublayer checkpoints)

from tiny_models import random_ids

SCRIPT = Path(__file__).with_name("ddp_pruning_script.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("criterion", "wrapping"),
    [("magnitude", "none"), ("taylor", "none"), ("taylor", "lora"), ("finercut", "none"), ("finercut", "lora")],
)
def test_two_process_ddp_ranks_prune_identically(tmp_path, criterion, wrapping):
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        str(SCRIPT), str(tmp_path), criterion, wrapping,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["world_size"] == 2
        assert report["wrapper"] == "DistributedDataParallel"
        if criterion == "finercut":  # 2 of 12 sublayers removed, the model converted in place under DDP
            assert len(report["sublayers"]) == 10 and report["model_class"] == "PrunedLlamaForCausalLM"
        else:
            assert len(report["surviving_layers"]) == 4
        assert report["optimizer_params"] == report["trainable_params"]
        assert [e["step"] for e in report["events"]] == [0, 3]
    assert reports[0]["surviving_layers"] == reports[1]["surviving_layers"]
    assert reports[0]["sublayers"] == reports[1]["sublayers"]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    # save_recovered_model on the DDP wrapper: one merged checkpoint with the trained model's outputs.
    merged = Path(reports[0]["merged"])
    assert reports[1]["merged"] == str(merged) and (merged / "model.safetensors").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert not any("lora" in key for key in reloaded.state_dict())
    with torch.no_grad():
        logits = reloaded(input_ids=random_ids(2, 8, seed=9)).logits
    torch.testing.assert_close(logits, torch.tensor(reports[0]["live_logits"]), rtol=1e-5, atol=1e-5)
