"""Forward-only criteria on accelerate-dispatched (CPU / disk offloaded) and bitsandbytes 4-bit models.

Scoring runs in one process (under DDP/FSDP on rank 0, before the model is sharded), so a model larger than one device
is split with accelerate's own offload (``device_map`` / ``dispatch_model`` / disk offload) rather than sharded."""

from __future__ import annotations

import pytest
import torch
from criteria_references import naive_perplexities

from optimum_depth import DepthPruningConfig
from optimum_depth.calibration import CalibrationData
from optimum_depth.criteria.scoring import score_blocks

from tiny_models import make_tiny_model, random_ids

FORWARD_ONLY = ["ppl", "block_influence", "angular", "sleb"]


def all_scores(model, ids, early_exit: bool = False):
    results = {}
    for criterion in FORWARD_ONLY:
        config = DepthPruningConfig(criterion=criterion, num_layers_to_remove=2, batch_size=2, early_exit=early_exit)
        results[criterion] = score_blocks(model, config, CalibrationData(ids))
    return results


def selection(scores) -> list[int]:
    """What the plan follows: the greedy order, or the two least important blocks."""
    order = scores.removal_order or sorted(range(len(scores.values)), key=lambda i: (scores.values[i], i))
    return list(order[:2])


def offloaded(kind: str, tmp_path):
    from accelerate import cpu_offload, disk_offload, dispatch_model

    model = make_tiny_model("qwen3")
    if kind == "cpu_offload":
        return cpu_offload(model, execution_device="cpu")
    if kind == "disk_offload":
        return disk_offload(model, str(tmp_path), execution_device="cpu")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "disk", "lm_head": "disk"}
    device_map.update({f"model.layers.{i}": ("cpu" if i % 2 else "disk") for i in range(6)})
    return dispatch_model(model, device_map=device_map, offload_dir=str(tmp_path))


@pytest.mark.parametrize("kind", ["device_map", "cpu_offload", "disk_offload"])
def test_forward_only_criteria_on_offloaded_models(kind, tmp_path):
    ids = random_ids(4, 12, seed=10)
    expected = all_scores(make_tiny_model("qwen3"), ids)
    model = offloaded(kind, tmp_path)
    assert any(p.device.type == "meta" for p in model.parameters())  # really offloaded
    for criterion, scores in all_scores(model, ids).items():  # exact values of every candidate
        assert scores.values == pytest.approx(expected[criterion].values, rel=1e-6, abs=1e-7), criterion
        assert scores.removal_order == expected[criterion].removal_order, criterion
    # With the early exit (the default) the offloaded head has no cheap bound, the in-memory one does: lower
    # bounds may differ, the selection may not.
    for criterion, scores in all_scores(model, ids, early_exit=True).items():
        assert selection(scores) == selection(expected[criterion]), criterion


def alternating_device_map(num_layers: int) -> dict[str, str]:
    """Blocks alternately in RAM and on disk (what ``infer_auto_device_map`` never does by itself)."""
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "disk"}
    device_map.update({f"model.layers.{i}": ("cpu" if i % 2 == 0 else "disk") for i in range(num_layers)})
    return device_map


def test_sleb_and_ppl_on_a_checkpoint_loaded_split_over_ram_and_disk(tmp_path):
    from transformers import AutoModelForCausalLM

    from optimum_depth import DepthPruner, remove_layers

    dense = make_tiny_model("llama")
    dense.save_pretrained(tmp_path / "dense")
    ids = random_ids(4, 12, seed=12)
    for criterion in ("sleb", "ppl"):
        config = DepthPruningConfig(criterion=criterion, num_layers_to_remove=2, batch_size=2, early_exit=False)
        expected = score_blocks(dense, config, CalibrationData(ids))
        folder = tmp_path / f"offload-{criterion}"  # a fresh folder for every load (accelerate reuses a full one)
        model = AutoModelForCausalLM.from_pretrained(
            tmp_path / "dense", device_map=alternating_device_map(6), offload_folder=str(folder), dtype=torch.float32
        ).eval()
        assert model.model.layers[1].self_attn.q_proj.weight.device.type == "meta"  # on disk (read from safetensors)
        scores = score_blocks(model, config, CalibrationData(ids))
        assert scores.values == pytest.approx(expected.values, rel=1e-6, abs=1e-7), criterion
        assert scores.removal_order == expected.removal_order, criterion
    # A pruned model dispatched again needs a new offload folder too: the same blocks, the same logits.
    plan = DepthPruner(DepthPruningConfig(criterion="sleb", num_layers_to_remove=2)).plan(expected)
    pruned = remove_layers(make_tiny_model("llama"), list(plan.removed_blocks))
    pruned.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "pruned", device_map=alternating_device_map(4), offload_folder=str(tmp_path / "offload-pruned")
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits)


@pytest.fixture
def quantized_model(tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    # bitsandbytes' CPU 4-bit kernels need rows of at least one quantisation block (64 values).
    make_tiny_model("llama", hidden_size=64, intermediate_size=128, head_dim=16).save_pretrained(tmp_path)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quant, device_map="cpu").eval()


def test_forward_only_criteria_on_a_4bit_model(quantized_model):
    from bitsandbytes.nn import Linear4bit

    assert isinstance(quantized_model.model.layers[0].mlp.up_proj, Linear4bit)
    ids = random_ids(4, 12, seed=11)
    results = all_scores(quantized_model, ids)
    assert results["ppl"].values == pytest.approx(naive_perplexities(quantized_model, ids, 2), rel=1e-5)
    for scores in results.values():
        assert len(scores.values) == 6 and all(torch.isfinite(torch.tensor(scores.values)))
    for criterion, scores in all_scores(quantized_model, ids, early_exit=True).items():  # 4-bit body, plain head
        assert selection(scores) == selection(results[criterion]), criterion


def test_taylor_refuses_a_4bit_model(quantized_model):
    config = DepthPruningConfig(criterion="taylor", num_layers_to_remove=1)
    with pytest.raises(ValueError, match="quantized"):
        score_blocks(quantized_model, config, CalibrationData(random_ids(2, 8)))


def test_auto_on_an_offloaded_model_skips_taylor_and_chooses_as_in_memory(tmp_path):
    from optimum_depth import CompensationConfig

    ids = random_ids(20, 12, seed=11)
    config = DepthPruningConfig(
        criterion="auto",
        num_layers_to_remove=2,
        num_samples=4,
        auto_fit_samples=14,
        auto_heldout_samples=6,
        compensation=CompensationConfig(num_samples=20, seq_len=12),
        auto_candidates=["block_influence", "taylor", "ppl"],
    )
    expected = score_blocks(make_tiny_model("qwen3"), config, CalibrationData(ids)).extra["auto"]
    scores = score_blocks(offloaded("device_map", tmp_path), config, CalibrationData(ids)).extra["auto"]
    assert "offloaded" in scores["candidates"]["taylor"]["skipped"]
    assert scores["chosen"] == min(
        (n for n in ("block_influence", "ppl")), key=lambda n: expected["candidates"][n]["heldout_loss"]
    )
    for name in ("block_influence", "ppl"):
        assert scores["candidates"][name]["heldout_loss"] == pytest.approx(
            expected["candidates"][name]["heldout_loss"], abs=1e-5
        )
