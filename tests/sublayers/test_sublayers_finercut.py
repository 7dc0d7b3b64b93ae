"""FinerCut: distances, the sublayer engine, greedy and one-shot searches against exhaustive references, the pruner."""

from __future__ import annotations

import copy

import pytest
import torch

from finercut_references import exhaustive_greedy, logits_without, physically_pruned_logits, textbook_distance
from optimum_depth import DepthPruner, DepthPruningConfig, PruningTargetError
from optimum_depth.algorithms.output_distances import get_distance
from optimum_depth.calibration import CalibrationData
from optimum_depth.config import DISTANCES
from optimum_depth.sublayers.candidates import list_sublayers
from optimum_depth.sublayers.engine import SublayerEngine
from optimum_depth.sublayers.plot import plot_sublayer_map, sublayer_map
from optimum_depth.sublayers.search import greedy_search, one_shot_search

from tiny_models import FAMILIES, make_tiny_model, random_ids


def calibration(rows: int = 3, length: int = 12, seed: int = 1) -> CalibrationData:
    return CalibrationData(random_ids(rows, length, seed=seed), {"source": "random ids"})


def sublayer_config(**kwargs) -> DepthPruningConfig:
    return DepthPruningConfig(granularity="sublayer", criterion="finercut", **kwargs)


@pytest.mark.parametrize("name", DISTANCES)
def test_distances_match_their_definitions(name):
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(2, 5, 11, generator=generator) * 3
    pruned = dense + torch.randn(2, 5, 11, generator=generator)
    distance = get_distance(name)
    got = distance.batch_sum(distance.reference(dense), pruned)
    assert got == pytest.approx(textbook_distance(name, dense, pruned), rel=1e-4, abs=1e-6)
    assert distance.batch_sum(distance.reference(dense), dense) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_evaluation_equals_physically_pruned_model(family):
    model = make_tiny_model(family)
    data = calibration()
    engine = SublayerEngine(model, data, get_distance("js"))
    engine.capture()  # also checks that attention + MLP branches rebuild every block (Gemma's sandwich norms too)
    dense = torch.cat([model(row[None]).logits for row in data.input_ids]).detach()
    # Gemma has no pruned model class: its reference zeroes the sublayer outputs (post-norm of zero is zero).
    reference = logits_without if family.startswith("gemma") else physically_pruned_logits
    for candidate in [0, 5, engine.num_sublayers - 1]:
        expected = textbook_distance("js", dense, reference(model, [candidate], data.input_ids))
        assert engine.evaluate(candidate).total == pytest.approx(expected, rel=1e-3, abs=1e-6)
    engine.commit(5)
    expected = textbook_distance("js", dense, reference(model, [5, 9], data.input_ids))
    assert engine.evaluate(9).total == pytest.approx(expected, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize(("family", "distance"), [("llama", "js"), ("qwen3", "js_finercut"), ("qwen2", "angular")])
def test_greedy_selects_like_the_exhaustive_reference(family, distance):
    model = make_tiny_model(family)
    data = calibration()
    expected_order, expected_totals = exhaustive_greedy(model, data.input_ids, distance, steps=4)
    for use_bound in (True, False):
        engine = SublayerEngine(model, data, get_distance(distance))
        engine.capture()
        result = greedy_search(engine, set(), stop=lambda order: len(order) >= 4, use_bound=use_bound)
        assert result.removal_order == expected_order
        totals = [d * engine.num_terms for d in result.step_distances]
        assert totals == pytest.approx(expected_totals, rel=1e-3, abs=1e-6)
        if use_bound:
            bounded = result
        else:
            unbounded = result
    assert bounded.cut_short > 0 and unbounded.cut_short == 0
    assert bounded.evaluations == unbounded.evaluations


def test_one_shot_ranks_single_removals():
    model = make_tiny_model("llama")
    data = calibration()
    engine = SublayerEngine(model, data, get_distance("kl"))
    engine.capture()
    result = one_shot_search(engine, protected={0, 1})
    dense = torch.cat([model(row[None]).logits for row in data.input_ids]).detach()
    totals = {c: textbook_distance("kl", dense, logits_without(model, [c], data.input_ids)) for c in range(2, 12)}
    assert result.removal_order == sorted(totals, key=lambda c: (totals[c], c))
    assert engine.removed == set()


def test_pruner_end_to_end_with_protection_and_provenance():
    model = make_tiny_model("qwen3")
    config = sublayer_config(pruning_ratio=0.25, protect_first_fraction=0.34, distance="js")
    pruner = DepthPruner(config)
    before = {(s.original_block, s.kind) for s in list_sublayers(model)}
    pruned = pruner.prune(model, calibration(4, 16))
    assert pruned is model
    plan, scores = pruner.last_plan, pruner.last_scores
    assert plan.num_removed == 3 and scores.sublayers == ["attention", "mlp"] * 6
    assert scores.protected == [0, 1, 2, 3]  # floor(0.34 * 6) = 2 blocks -> 4 sublayers
    chosen = [scores.candidate_name(i) for i in scores.removal_order[:3]]
    assert not any(name.endswith((" 0", " 1")) for name in chosen)
    assert pruned.config.pruning["granularity"] == "sublayer" and pruned.config.pruning["distance"] == "js"
    removed = before - {(s.original_block, s.kind) for s in list_sublayers(pruned)}
    assert removed == {(scores.layer_indices[i], scores.sublayers[i]) for i in scores.removal_order[:3]}


def test_target_num_params_and_second_round_numbering():
    model = make_tiny_model("llama")
    total = sum(p.numel() for p in model.parameters())
    pruned = DepthPruner(sublayer_config(target_num_params=total - 15000)).prune(model, calibration())
    assert sum(p.numel() for p in pruned.parameters()) <= total - 15000
    before = {(s.original_block, s.kind) for s in list_sublayers(pruned)}
    again = DepthPruner(sublayer_config(num_layers_to_remove=2, protected_layers=[5])).prune(pruned, calibration())
    after = {(s.original_block, s.kind) for s in list_sublayers(again)}
    assert len(before - after) == 2 and after <= before
    assert all(block != 5 for block, _ in before - after)
    assert "history" in again.config.pruning


def test_config_defaults_follow_finercut():
    config = sublayer_config(pruning_ratio=0.25)
    assert (config.num_samples, config.seq_len, config.sublayer_search, config.distance) == (10, 256, "greedy", "js")
    assert sublayer_config(pruning_ratio=0.25, seq_len=64).seq_len == 64
    assert DepthPruningConfig(pruning_ratio=0.25).seq_len == 128
    assert sublayer_config(pruning_ratio=0.25).num_to_remove(60) == 15
    with pytest.raises(ValueError, match="sublayer_search"):
        sublayer_config(pruning_ratio=0.25, sublayer_search="beam")
    with pytest.raises(ValueError, match="not available"):
        DepthPruningConfig(criterion="finercut", pruning_ratio=0.25)


def test_bad_requests_fail_before_any_change():
    model = make_tiny_model("llama")
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(PruningTargetError, match="only"):
        DepthPruner(sublayer_config(num_layers_to_remove=9, protect_first=2)).prune(model, calibration())
    with pytest.raises(PruningTargetError, match="unreachable"):
        DepthPruner(sublayer_config(target_num_params=1000)).prune(model, calibration())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_pruner_prunes_a_peft_wrapped_stock_model_in_place():
    from peft import LoraConfig, get_peft_model

    plain = DepthPruner(sublayer_config(num_layers_to_remove=3))
    reference = plain.prune(make_tiny_model("llama"), calibration())
    wrapped = get_peft_model(make_tiny_model("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    pruner = DepthPruner(sublayer_config(num_layers_to_remove=3))
    assert pruner.prune(wrapped, calibration()) is wrapped
    assert pruner.last_plan == plain.last_plan  # LoRA starts as the identity: same scores, same plan
    assert [(s.block, s.kind) for s in list_sublayers(wrapped)] == [
        (s.block, s.kind) for s in list_sublayers(reference)
    ]


def test_one_shot_through_the_pruner_keeps_an_attention_sublayer():
    model = make_tiny_model("llama", num_hidden_layers=2)
    pruner = DepthPruner(sublayer_config(num_layers_to_remove=3, sublayer_search="one_shot"))
    pruned = pruner.prune(model, calibration())
    kinds = [s.kind for s in list_sublayers(pruned)]
    assert kinds == ["attention"]
    assert pruner.last_scores.extra["search"] == "one_shot"


def test_plot_writes_a_png_map(tmp_path):
    model = make_tiny_model("llama")
    pruner = DepthPruner(sublayer_config(num_layers_to_remove=4))
    pruned = pruner.prune(model, calibration())
    cells = sublayer_map(pruned.config)
    removed = {
        (block, kind)
        for kind, row in zip(("attention", "mlp"), cells, strict=True)
        for block, c in enumerate(row)
        if c == 1
    }
    scores = pruner.last_scores
    assert removed == {(scores.layer_indices[i], scores.sublayers[i]) for i in scores.removal_order[:4]}
    path = plot_sublayer_map(pruned, tmp_path / "map.png", scores=scores)
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_finercut_on_the_real_stories_model(stories_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_depth import save_pruned_model

    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    model = AutoModelForCausalLM.from_pretrained(stories_path, dtype=torch.float32).eval()
    texts = [
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog.",
        "One day, a big bird flew into the garden. The bird was sad because it could not find its home.",
        "Tom and Sue went to the park. They saw a red ball under a tree and wanted to play with it together.",
    ]
    config = sublayer_config(pruning_ratio=0.3, num_samples=4, seq_len=24, protect_first=1)
    pruner = DepthPruner(config)
    pruned = pruner.prune(model, texts, tokenizer)
    assert pruner.last_plan.num_removed == 3  # round(0.3 * 10 sublayers)
    assert pruner.last_scores.calibration["num_samples"] == 4
    save_pruned_model(pruned, tmp_path, tokenizer, plan=pruner.last_plan, scores=pruner.last_scores)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        generated = reloaded.generate(**prompt, max_new_tokens=8, do_sample=False)
        expected = pruned.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(generated, expected)
