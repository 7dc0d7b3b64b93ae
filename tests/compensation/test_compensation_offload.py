"""Compensation of models whose weights accelerate offloads (CPU, disk, ``device_map`` with ``"disk"``).

An offloaded layer holds ``meta`` tensors: the fold must reach the weights in the offload hook's map, or the
compensation would be silently lost (what these tests would catch: the compensated and plain models differ)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, PruningPlan
from optimum_depth.calibration import CalibrationData
from optimum_depth.compensation.offloaded import update_weight
from optimum_depth.errors import UnsupportedArchitectureError
from optimum_depth.publishing.saving import save_pruned_model

from tiny_models import make_tiny_model, random_ids

PLAN = PruningPlan(granularity="block", removed_blocks=(2, 3), source_num_hidden_layers=6, criterion="block_influence")
IDS = random_ids(64, 12, seed=3)


def _config(compensation: CompensationConfig | None) -> DepthPruningConfig:
    return DepthPruningConfig(criterion="block_influence", num_layers_to_remove=2, compensation=compensation)


def _apply(model, compensated: bool = True):
    settings = CompensationConfig(num_samples=64, batch_size=16, ridge=0.0) if compensated else None
    DepthPruner(_config(settings)).apply(model, PLAN, calibration=CalibrationData(IDS))
    return model


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS[:4]).logits


def _offloaded(kind: str, tmp_path):
    from accelerate import cpu_offload, disk_offload

    if kind == "cpu_offload":
        return cpu_offload(make_tiny_model("llama"), execution_device="cpu")
    if kind == "disk_offload":
        return disk_offload(make_tiny_model("llama"), str(tmp_path / "offload"), execution_device="cpu")
    make_tiny_model("llama").save_pretrained(tmp_path / "dense")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "disk"}
    device_map.update({f"model.layers.{i}": ("cpu" if i % 2 == 0 else "disk") for i in range(6)})
    return AutoModelForCausalLM.from_pretrained(
        tmp_path / "dense", device_map=device_map, offload_folder=str(tmp_path / "folder"), dtype=torch.float32
    ).eval()


@pytest.mark.parametrize("kind", ["cpu_offload", "disk_offload", "device_map"])
def test_an_offloaded_model_is_compensated_like_the_in_memory_one(kind, tmp_path):
    expected = _logits(_apply(make_tiny_model("llama")))
    plain = _logits(_apply(make_tiny_model("llama"), compensated=False))
    assert (expected - plain).abs().max() > 0.1  # the compensation matters on this model
    model = _offloaded(kind, tmp_path)
    assert any(p.device.type == "meta" for p in model.parameters())  # really offloaded
    _apply(model)
    torch.testing.assert_close(_logits(model), expected, rtol=1e-5, atol=1e-5)
    assert model.config.pruning["compensation"]["method"] == "linear_ls"
    # save_pretrained cannot read meta tensors: save_pruned_model gathers the offloaded weights from the hooks.
    save_pruned_model(model, tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert reloaded.config.surviving_layers == [0, 1, 4, 5]
    torch.testing.assert_close(_logits(reloaded), expected, rtol=1e-5, atol=1e-5)


def test_a_meta_weight_without_an_offload_hook_is_refused():
    with torch.device("meta"):
        layer = torch.nn.Linear(4, 4, bias=False)
    root = torch.nn.Sequential(layer)
    with pytest.raises(UnsupportedArchitectureError, match="no accelerate offload hook"):
        update_weight(root, layer, lambda weight: weight * 2)


def test_the_compensation_aware_selection_scores_an_offloaded_model_exactly():
    from accelerate import cpu_offload

    settings = CompensationConfig(selection="aware", num_samples=16, selection_samples=16, batch_size=8)
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=2, compensation=settings)
    data = CalibrationData(IDS[:16])
    expected = DepthPruner(config).score(make_tiny_model("llama"), data)
    scores = DepthPruner(config).score(cpu_offload(make_tiny_model("llama"), execution_device="cpu"), data)
    assert scores.values == pytest.approx(expected.values, rel=1e-6)
    assert scores.removal_order == expected.removal_order
