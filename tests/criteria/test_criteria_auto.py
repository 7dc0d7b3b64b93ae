"""``criterion="auto"``: every candidate's plan compensated and compared on held-out calibration sequences."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig, LayerScores, PruningTargetError
from optimum_depth.blocks.surgery import remove_layers
from optimum_depth.calibration import CalibrationData
from optimum_depth.errors import ConfigError

from tiny_models import make_tiny_model, random_ids

FIT, HELDOUT = 24, 8


def _data(seed=1):
    return CalibrationData(random_ids(FIT + HELDOUT, 16, seed=seed), {"source": "random"})


def _config(**overrides):
    settings = dict(
        criterion="auto",
        num_layers_to_remove=1,
        protect_first=0,
        protect_last=0,
        num_samples=8,
        auto_fit_samples=FIT,
        auto_heldout_samples=HELDOUT,
    )
    return DepthPruningConfig(**{**settings, **overrides})


def _stories_with_an_identity_block(stories_path, block=3):
    """The real 5-block TinyStories Llama with a sixth block inserted at ``block`` that adds nothing (zero attention
    and MLP outputs) but has the largest weights: removing it costs exactly nothing, removing any trained block costs
    something, Block Influence and the PPL criterion see it, magnitude does not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = AutoModelForCausalLM.from_pretrained(stories_path, dtype=torch.float32)
    config = copy.deepcopy(source.config)
    config.num_hidden_layers = 6
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    layers = list(source.model.layers)
    extra = copy.deepcopy(layers[block - 1])
    with torch.no_grad():
        extra.self_attn.o_proj.weight.zero_()
        extra.mlp.down_proj.weight.zero_()
        for name, param in extra.named_parameters():
            if param.dim() == 2 and "o_proj" not in name and "down_proj" not in name:
                param.mul_(20.0)
    layers.insert(block, extra)
    model.load_state_dict(source.state_dict(), strict=False)  # embeddings, final norm, head
    for index, layer in enumerate(layers):
        model.model.layers[index].load_state_dict(layer.state_dict())
    return model.eval(), AutoTokenizer.from_pretrained(stories_path)


def _heldout_loss_by_surgery(model, removed, ids):
    """The slow reference: delete the blocks from a copy and take its mean next-token loss."""
    pruned = copy.deepcopy(model)
    if removed:
        remove_layers(pruned, removed)
    with torch.no_grad():
        return float(pruned(input_ids=ids, labels=ids).loss)


def test_auto_keeps_the_candidate_whose_plan_has_the_lowest_held_out_loss(stories_path):
    from optimum_depth.calibration import prepare_calibration

    from tiny_models import DATA_DIR

    if not (DATA_DIR / "calib").is_dir():
        pytest.skip("../shared/data/calib is not available")
    model, tokenizer = _stories_with_an_identity_block(stories_path)
    data = prepare_calibration(DATA_DIR / "calib", tokenizer, num_samples=FIT + HELDOUT, seq_len=32, seed=0)
    pruner = DepthPruner(_config(auto_candidates=["magnitude", "block_influence", "window", "ppl"]))
    scores = pruner.score(model, calibration=data)
    auto = scores.extra["auto"]
    candidates = auto["candidates"]
    assert candidates["block_influence"]["removed_blocks"] == [3]  # the identity block: nothing is lost
    assert candidates["window"]["removed_blocks"] == [3]
    assert candidates["magnitude"]["removed_blocks"] != [3]  # its large weights hide it from magnitude
    heldout = data.input_ids[FIT:]
    for name, outcome in candidates.items():  # each held-out loss is the real pruned model's
        reference = _heldout_loss_by_surgery(model, outcome["removed_blocks"], heldout)
        assert outcome["heldout_loss"] == pytest.approx(reference, abs=1e-5), name
    dense = _heldout_loss_by_surgery(model, [], heldout)
    assert candidates["block_influence"]["heldout_loss"] == pytest.approx(dense, abs=1e-5)
    assert candidates["magnitude"]["heldout_loss"] > dense + 0.01  # a trained block is missed
    best = min(candidates, key=lambda n: (candidates[n]["heldout_loss"], list(candidates).index(n)))
    assert auto["chosen"] == best and auto["chosen"] in ("block_influence", "window", "ppl")
    plan = pruner.plan(scores)
    assert plan.removed_blocks == (3,) and plan.criterion == "auto"
    assert plan.reason["auto"]["chosen"] == auto["chosen"]
    assert auto["heldout_samples"] == HELDOUT and auto["fit_samples"] == FIT
    assert auto["dense_heldout_perplexity"] == pytest.approx(math.exp(dense), rel=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_with_compensation_each_candidate_is_scored_with_its_maps(family):
    from optimum_depth.architectures import as_facts
    from optimum_depth.blocks.replay import capture_block_inputs
    from optimum_depth.compensation.cuts import plan_folds
    from optimum_depth.compensation.selection import MapBank, dense_states
    from optimum_depth.compensation.sites import fold_map, fold_site

    model = make_tiny_model(family)
    data = _data(seed=2)
    settings = CompensationConfig(num_samples=32, seq_len=16)
    config = _config(
        num_layers_to_remove=2, compensation=settings, auto_candidates=["block_influence", "sleb", "aware"]
    )
    scores = DepthPruner(config).score(model, calibration=data)
    candidates = scores.extra["auto"]["candidates"]
    # Reference: the maps fitted on the fit sequences' dense states, folded into a copy, blocks deleted, loss taken.
    fit_ids, heldout = data.input_ids[:FIT], data.input_ids[FIT:]
    captured = capture_block_inputs(model, fit_ids, 8)
    states = dense_states(as_facts(model), captured.hidden_states, captured.block_kwargs, 8)
    bank = MapBank(states, as_facts(model), captured.block_kwargs, round(0.2 * FIT), 8)
    for name, outcome in candidates.items():
        removed = [b for b in outcome["removed_blocks"]]
        copy_ = copy.deepcopy(model)
        for fold in plan_folds(removed, 6):
            fold_map(copy_, fold_site(copy_.model.layers[fold.block], as_facts(copy_)), bank.transform(fold))
        remove_layers(copy_, removed)
        with torch.no_grad():
            reference = float(copy_(input_ids=heldout, labels=heldout).loss)
        assert outcome["heldout_loss"] == pytest.approx(reference, abs=1e-4), name
    chosen = scores.extra["auto"]["chosen"]
    assert candidates[chosen]["heldout_loss"] == min(c["heldout_loss"] for c in candidates.values())


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_the_window_candidate_scores_each_run_of_blocks_as_the_real_compensated_model(family):
    from optimum_depth.architectures import as_facts
    from optimum_depth.blocks.replay import capture_block_inputs
    from optimum_depth.compensation.cuts import plan_folds
    from optimum_depth.compensation.selection import MapBank, dense_states
    from optimum_depth.compensation.sites import fold_map, fold_site

    model = make_tiny_model(family)
    data = _data(seed=4)
    settings = CompensationConfig(num_samples=32, seq_len=16)
    config = _config(num_layers_to_remove=2, compensation=settings, auto_candidates=["window"], protect_first=1)
    scores = DepthPruner(config).score(model, calibration=data)
    windows = {int(k): v for k, v in scores.extra["chosen_criterion_extra"]["window_scores"].items()}
    assert sorted(windows) == [1, 2, 3, 4]  # block 0 is protected
    fit_ids = data.input_ids[:FIT]
    screen = round(0.2 * FIT)
    captured = capture_block_inputs(model, fit_ids, 8)
    bank = MapBank(dense_states(as_facts(model), captured.hidden_states, captured.block_kwargs, 8), as_facts(model),
                   captured.block_kwargs, screen, 8)  # fmt: skip
    screening = fit_ids[-screen:]
    with torch.no_grad():
        dense = model(input_ids=screening, output_hidden_states=True).hidden_states[-1]  # after the final norm
    for first, value in windows.items():
        removed = [first, first + 1]
        copy_ = copy.deepcopy(model)
        for fold in plan_folds(removed, 6):
            fold_map(copy_, fold_site(copy_.model.layers[fold.block], as_facts(copy_)), bank.transform(fold))
        remove_layers(copy_, removed)
        with torch.no_grad():
            pruned = copy_(input_ids=screening, output_hidden_states=True).hidden_states[-1]
        reference = float((1 - torch.nn.functional.cosine_similarity(pruned, dense, dim=-1)).mean())
        assert value == pytest.approx(reference, abs=1e-5), first
    chosen = min(windows, key=windows.get)
    assert scores.extra["auto"]["candidates"]["window"]["removed_blocks"] == [chosen, chosen + 1]


def test_the_budget_bounds_the_candidates_and_every_outcome_is_recorded(tmp_path):
    model = make_tiny_model("llama")
    pruner = DepthPruner(_config(auto_max_seconds=0.0))
    scores = pruner.score(model, calibration=_data())
    candidates = scores.extra["auto"]["candidates"]
    ran = [n for n, c in candidates.items() if "heldout_loss" in c]
    skipped = {n: c["skipped"] for n, c in candidates.items() if "skipped" in c}
    assert len(ran) == 1  # the cheapest one always runs
    assert (
        set(ran) | set(skipped)
        == set(candidates)
        == {"magnitude", "block_influence", "angular", "window", "taylor", "ppl", "sleb", "aware"}
    )
    assert skipped["aware"].startswith("no compensation")
    assert all("budget" in reason for n, reason in skipped.items() if n != "aware")
    assert all(c["estimated_cpu_seconds"] >= 0 for c in candidates.values())
    path = scores.save_pretrained(tmp_path)  # the scores JSON keeps the choice and every candidate
    assert json.loads(path.read_text())["extra"]["auto"]["candidates"] == json.loads(json.dumps(candidates))
    assert LayerScores.from_pretrained(tmp_path).extra["auto"]["chosen"] == ran[0]


def test_auto_prunes_and_compensates_in_one_call():
    model = make_tiny_model("qwen3")
    settings = CompensationConfig(method="reconstruct", num_samples=32, seq_len=16, reconstruct_steps=10)
    pruner = DepthPruner(
        _config(num_layers_to_remove=2, compensation=settings, auto_candidates=["block_influence", "ppl"])
    )
    pruner.prune(model, calibration=_data())
    assert model.config.num_hidden_layers == 4
    pruning = model.config.pruning
    assert pruning["criterion"] == "auto" and pruning["compensation"]["method"] == "reconstruct"
    assert pruner.last_plan.reason["auto"]["chosen"] in ("block_influence", "ppl")
    from optimum_depth.publishing.cards import build_model_card

    card = build_model_card(model, plan=pruner.last_plan).text  # the card shows the choice and the training
    assert "Criterion chosen by `auto`" in card and "block_influence: " in card and "ppl: " in card
    assert "Reconstruction for the cut of blocks" in card


def test_bad_auto_settings_and_missing_calibration_are_refused_before_anything_changes():
    for kwargs, message in [
        ({"auto_candidates": ["magnitude", "finercut"]}, "auto_candidates"),
        ({"auto_candidates": []}, "auto_candidates"),
        ({"auto_max_seconds": -1}, "auto_max_seconds"),
        ({"auto_heldout_samples": 0}, "auto_heldout_samples"),
    ]:
        with pytest.raises(ConfigError, match=message):
            _config(**kwargs)
    with pytest.raises(ConfigError, match="criterion"):
        DepthPruningConfig(criterion="auto", granularity="sublayer", pruning_ratio=0.2)
    model = make_tiny_model("llama")
    with pytest.raises(ConfigError, match="held-out calibration text"):
        DepthPruner(_config()).prune(model)
    assert model.config.num_hidden_layers == 6
    with pytest.raises(ConfigError, match="at least 3"):
        DepthPruner(_config()).score(model, calibration=CalibrationData(random_ids(2, 16), {}))
    with pytest.raises(PruningTargetError):
        DepthPruner(_config(num_layers_to_remove=6)).score(model, calibration=_data())
