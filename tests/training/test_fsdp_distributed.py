"""Two real processes under ``accelerate launch --config_file examples/accelerate/fsdp2.yaml`` (FSDP2, gloo on CPU):
recovery (LoRA, full, distillation with a sharded teacher or precomputed top-k logits) equals one process with the
same global batch, the callback prunes before sharding on rank 0's decision, the merged checkpoint is written once and
loads natively; and a rank that fails while scoring stops every rank at once with nothing written.

Each launch costs about 50 s of imports here, so one launch runs several scenarios (fsdp_recovery_script.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import optimum_depth.modeling  # noqa: F401  (registers the pruned classes for the sublayer checkpoint)
from optimum_depth import DepthPruner, DepthPruningConfig
from optimum_depth.training import precompute_teacher_logits

from tiny_models import make_tiny_model, random_ids

SCRIPT = Path(__file__).with_name("fsdp_recovery_script.py")
SCENARIOS = ["lora_prune", "full_kd", "lora_topk", "sublayer_full"]
LOSS_TOLERANCE = 2e-6  # measured: at most 4.8e-7 (float32 reductions in another order)
LOGIT_TOLERANCE = 2e-5  # measured: at most ~2e-6 after 4 steps

sys.path.insert(0, str(SCRIPT.parent))
import fsdp_recovery_script as scenarios  # noqa: E402


def launch(out: Path, logits: Path, *names: str) -> subprocess.CompletedProcess:
    return scenarios.launch(out, logits, *names)


def reports(out: Path, name: str) -> list[dict]:
    return [json.loads((out / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]


def merged_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def teacher_logits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teacher_logits")
    return precompute_teacher_logits(make_tiny_model("llama"), scenarios.training_data(), folder, k=16)


@pytest.mark.slow
def test_fsdp2_recovery_equals_one_process(tmp_path, teacher_logits):
    result = launch(tmp_path / "fsdp", teacher_logits, *SCENARIOS)
    assert result.returncode == 0, result.stderr[-6000:]
    ids = random_ids(2, 12, seed=9)
    measured = {}
    for name in SCENARIOS:
        rank0, rank1 = reports(tmp_path / "fsdp", name)
        reference = scenarios.run_scenario(name, tmp_path / "single" / name, teacher_logits)  # 1 process, batch 4
        # Real FSDP2: every parameter a DTensor, each rank holding half of the elements.
        for report in (rank0, rank1):
            assert report["world_size"] == 2 and report["distributed_type"] == "DistributedType.FSDP"
            student = report["student"]
            assert student["fsdp_managed"] and student["dtensor_params"] == student["params"]
            assert student["local_numel"] < 0.6 * student["global_numel"]
        # Same losses as one process with the same global batch.
        assert len(rank0["losses"]) == scenarios.STEPS and rank0["losses"] == rank1["losses"]
        loss_diff = max(abs(a - b) for a, b in zip(rank0["losses"], reference["losses"], strict=True))
        assert loss_diff < LOSS_TOLERANCE, (name, rank0["losses"], reference["losses"])
        # One checkpoint, written by rank 0 through save_pruned_model: safetensors, provenance, natively loadable.
        folder = Path(rank0["merged"])
        assert rank1["merged"] == rank0["merged"]
        files = sorted(p.name for p in folder.iterdir())
        assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files), files
        assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
        config = json.loads((folder / "config.json").read_text())
        assert config["recovery"]["steps"] == scenarios.STEPS
        assert config == json.loads((Path(reference["merged"]) / "config.json").read_text())
        logits_diff = float((merged_logits(folder, ids) - merged_logits(Path(reference["merged"]), ids)).abs().max())
        assert logits_diff < LOGIT_TOLERANCE, name
        assert not any("lora" in key for key in AutoModelForCausalLM.from_pretrained(folder).state_dict())
        measured[name] = {"loss": loss_diff, "logits": logits_diff}
    print("FSDP2 vs one process, max abs differences:", json.dumps(measured))

    # The callback pruned before sharding, on rank 0's calibration data; rank 1's data alone disagrees.
    rank0, rank1 = reports(tmp_path / "fsdp", "lora_prune")
    removed = [r["pruning_events"][0]["pruning/removed_layers"] for r in (rank0, rank1)]
    config = DepthPruningConfig(
        criterion="block_influence", num_layers_to_remove=2, protect_first=0, protect_last=0, num_samples=4, seq_len=16
    )
    pruner = DepthPruner(config)
    scores = [pruner.score(make_tiny_model("llama"), calibration=scenarios.calibration_for(r)) for r in (0, 1)]
    alone = [list(pruner.plan(s).removed_blocks) for s in scores]  # each rank's data scored alone
    assert alone[0] != alone[1]
    assert removed == [alone[0], alone[0]]
    assert json.loads((Path(rank0["merged"]) / "config.json").read_text())["surviving_layers"] == [
        i for i in range(6) if i not in alone[0]
    ]
    # The teacher was sharded on the student's mesh, frozen; the sublayer model was wrapped by its own block class.
    teacher = reports(tmp_path / "fsdp", "full_kd")[0]["teacher"]
    assert teacher["fsdp_managed"] and teacher["dtensor_params"] == teacher["params"]
    assert teacher["local_numel"] < 0.6 * teacher["global_numel"]
    assert not teacher["training"] and not teacher["requires_grad"]
    sublayer = reports(tmp_path / "fsdp", "sublayer_full")[0]
    assert sublayer["student"]["class"] == "FSDPPrunedLlamaForCausalLM"
    assert sublayer["pruning_events"][0]["pruning/num_removed"] == 3


@pytest.mark.slow
def test_rank0_failing_while_scoring_stops_every_rank_and_writes_nothing(tmp_path, teacher_logits):
    started = time.time()
    result = launch(tmp_path / "fsdp", teacher_logits, "fail_rank0")
    elapsed = time.time() - started
    assert result.returncode != 0
    failures = dict(re.findall(r"RANK (\d) FAILED at ([\d.]+): ", result.stderr))
    assert set(failures) == {"0", "1"}, result.stderr[-4000:]
    assert abs(float(failures["0"]) - float(failures["1"])) < 10  # nobody waited for the 60 s timeout (measured: 1 ms)
    assert re.search(r"RANK 0 FAILED at [\d.]+: DataError: Calibration token id \d+ is outside", result.stderr)
    assert "RuntimeError: Rank 0 failed while deciding what to prune: DataError" in result.stderr  # rank 1
    # Nothing written: no report, no checkpoint, no trainer output, no staging folder.
    written = [p for p in (tmp_path / "fsdp").rglob("*") if p.is_file()] if (tmp_path / "fsdp").exists() else []
    assert written == [], written
    assert elapsed < 600
    written = [p for p in (tmp_path / "fsdp").rglob("*") if p.is_file()]
    assert written == [], written  # no checkpoint, no merged model, no report
