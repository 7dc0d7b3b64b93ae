"""Compensation on real model classes: it helps, it folds into native checkpoints, and every edge case is defined."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from optimum_depth import (
    CompensationConfig,
    DepthPruner,
    DepthPruningConfig,
    PruningPlan,
    save_pruned_model,
)
from optimum_depth.calibration import CalibrationData
from optimum_depth.compensation import compensate
from optimum_depth.errors import ConfigError
from optimum_depth.publishing.cards import build_model_card

from tiny_models import make_tiny_model, random_ids

SETTINGS = CompensationConfig(num_samples=24, seq_len=16, batch_size=4)


def _calibration(n=24, length=16, seed=3):
    return CalibrationData(random_ids(n, length, seed=seed), {"source": "random"})


def _plan(removed, total=6):
    return PruningPlan(granularity="block", removed_blocks=tuple(removed), source_num_hidden_layers=total)


def _nll(model, ids):
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def _pruner(compensation=SETTINGS):
    return DepthPruner(
        DepthPruningConfig(num_layers_to_remove=2, protect_first=0, protect_last=0, compensation=compensation)
    )


def _kl_to(dense, model, ids):
    with torch.no_grad():
        p = torch.log_softmax(dense(ids).logits, -1)
        q = torch.log_softmax(model(ids).logits, -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


@pytest.mark.parametrize(
    "removed", [(2, 3), (0, 1), (4, 5), (1, 4)], ids=["middle", "at_block_0", "to_the_end", "two"]
)
def test_compensation_brings_the_pruned_model_closer_to_the_dense_one(removed):
    dense = make_tiny_model("llama")
    plain, compensated = copy.deepcopy(dense), copy.deepcopy(dense)
    data = _calibration()
    _pruner(None).apply(plain, _plan(removed))
    _pruner().apply(compensated, _plan(removed), calibration=data)
    held_out = random_ids(8, 16, seed=99)
    assert _kl_to(dense, compensated, held_out) < _kl_to(dense, plain, held_out)
    record = compensated.config.pruning["compensation"]
    assert record["method"] == "linear_ls" and record["calibration"] == {"source": "random"}
    assert {b for m in record["maps"] for b in m["removed"]} == set(removed)
    assert all(m["heldout_relative_error"] < 1 for m in record["maps"])


def test_a_compensated_checkpoint_is_native_and_reloads_without_the_package(tmp_path):
    model = make_tiny_model("qwen2", tie_word_embeddings=True)  # tied embeddings: nothing special to do
    _pruner().apply(model, _plan((2, 3)), calibration=_calibration())
    path = save_pruned_model(model, tmp_path / "ckpt")
    ids = random_ids(2, 9)
    with torch.no_grad():
        torch.save(model(ids).logits, tmp_path / "expected.pt")
    child = textwrap.dedent(
        """
        import json, sys, torch
        sys.modules["optimum_depth"] = None
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], attn_implementation="eager")
        ids = torch.tensor(json.loads(sys.argv[2]))
        with torch.no_grad():
            same = torch.equal(model(ids).logits, torch.load(sys.argv[3]))
        print(json.dumps({"class": type(model).__name__, "same": same}))
        """
    )
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", child, str(path), json.dumps(ids.tolist()), str(tmp_path / "expected.pt")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"class": "Qwen2ForCausalLM", "same": True}
    assert set(json.loads((path / "config.json").read_text())["pruning"]["compensation"]) >= {"method", "maps"}
    card = build_model_card(model).text  # the card states what was folded, where, and how well it fits
    assert "Compensation `linear_ls` folded into the kept weights" in card
    assert "cut of blocks [2, 3]: folded into block 1" in card and "held-out relative error" in card


def test_compensating_afterwards_from_the_dense_model_is_the_same_as_in_the_pruner():
    dense = make_tiny_model("mistral")
    inline, later = copy.deepcopy(dense), copy.deepcopy(dense)
    data = _calibration()
    _pruner().apply(inline, _plan((1, 2)), calibration=data)
    _pruner(None).apply(later, _plan((1, 2)))
    result = compensate(later, data, dense_model=dense, config=SETTINGS)
    assert [m.fold.block for m in result.maps] == [0]
    for a, b in zip(inline.state_dict().values(), later.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert later.config.pruning["compensation"]["maps"] == inline.config.pruning["compensation"]["maps"]


def test_a_peft_wrapped_model_is_compensated_with_its_adapters():
    from peft import LoraConfig, get_peft_model

    dense = make_tiny_model("llama")
    wrapped = get_peft_model(copy.deepcopy(dense), LoraConfig(r=2, target_modules=["down_proj", "q_proj"]))
    for name, param in wrapped.named_parameters():  # non-zero adapters, so lora_B matters
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    reference = copy.deepcopy(wrapped).merge_and_unload()
    data = _calibration()
    _pruner().apply(wrapped, _plan((2, 3)), calibration=data)
    _pruner().apply(reference, _plan((2, 3)), calibration=data)
    ids = random_ids(2, 10, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(
            wrapped(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-4, atol=1e-4
        )
        merged = wrapped.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_bfloat16_weights_are_solved_in_float64_and_stay_bfloat16():
    dense = make_tiny_model("llama").to(torch.bfloat16)
    model = copy.deepcopy(dense)
    _pruner().apply(model, _plan((2, 3)), calibration=_calibration())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert torch.isfinite(model(random_ids(1, 8)).logits.float()).all()


def test_refused_cases_change_nothing():
    llama = make_tiny_model("llama")
    with pytest.raises(ConfigError, match="calibration"):
        _pruner().apply(llama, _plan((2, 3)))
    assert llama.config.num_hidden_layers == 6
    with pytest.raises(ConfigError, match="sublayer"):
        DepthPruningConfig(criterion="finercut", granularity="sublayer", pruning_ratio=0.2, compensation="linear_ls")


def test_the_cosine_variant_runs_and_is_recorded():
    model = make_tiny_model("llama")
    cosine = CompensationConfig(method="linear_cosine", num_samples=24, seq_len=16)
    _pruner(cosine).apply(model, _plan((2,)), calibration=_calibration())
    assert model.config.pruning["compensation"]["method"] == "linear_cosine"


def test_compensation_settings_are_validated():
    for kwargs, message in [
        ({"method": "exact"}, "method"),
        ({"num_samples": 1}, "at least 2"),
        ({"ridge": -1.0}, "ridge"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ]:
        with pytest.raises(ConfigError, match=message):
            CompensationConfig(**kwargs)
    config = DepthPruningConfig(criterion="sleb", pruning_ratio=0.2, compensation="linear_ls")
    assert DepthPruningConfig.from_dict(json.loads(config.to_json_string())) == config


def test_the_least_squares_map_equals_lstsq_on_the_captured_activations():
    """The map of a single cut, without ridge, is ``lstsq(M, dense - Y)`` on the fold block's own activations."""
    from optimum_depth.compensation import fit_compensation

    model = make_tiny_model("llama").eval()
    data = _calibration(n=40)
    captured = {}
    layers = model.model.layers
    hooks = [
        layers[1].mlp.down_proj.register_forward_hook(lambda _m, _a, out: captured.__setitem__("m", out)),
        layers[1].register_forward_hook(lambda _m, _a, out: captured.__setitem__("block1", out[0] if isinstance(out, tuple) else out)),
        layers[2].register_forward_hook(lambda _m, _a, out: captured.__setitem__("dense", out[0] if isinstance(out, tuple) else out)),
    ]  # fmt: skip
    with torch.no_grad():
        model(input_ids=data.input_ids)
    for hook in hooks:
        hook.remove()
    m = captured["m"].reshape(-1, captured["m"].shape[-1]).double()
    y = captured["block1"].reshape(m.shape).double() - m
    target = captured["dense"].reshape(m.shape).double() - y
    reference = torch.linalg.lstsq(m, target).solution
    result = fit_compensation(model, _plan((2,)), data, CompensationConfig(num_samples=40, seq_len=16, ridge=0.0))
    (fitted,) = result.maps
    torch.testing.assert_close(fitted.transform, reference, rtol=1e-5, atol=1e-6)


def test_a_cut_at_block_0_leaves_tied_embeddings_alone():
    dense = make_tiny_model("llama", tie_word_embeddings=True)
    model = copy.deepcopy(dense)
    _pruner().apply(model, _plan((0, 1)), calibration=_calibration())
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    torch.testing.assert_close(model.get_input_embeddings().weight, dense.get_input_embeddings().weight)
    (fitted,) = model.config.pruning["compensation"]["maps"]
    assert fitted["fold_block"] == 2 and fitted["removed"] == [0, 1]
