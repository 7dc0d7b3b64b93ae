"""Compensation-aware selection: each candidate's score is the loss of the real pruned, compensated model."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from optimum_depth import CompensationConfig, DepthPruner, DepthPruningConfig
from optimum_depth.architectures import as_facts
from optimum_depth.blocks.surgery import remove_layers
from optimum_depth.calibration import CalibrationData
from optimum_depth.compensation.cuts import plan_folds
from optimum_depth.compensation.selection import aware_greedy_selection
from optimum_depth.compensation.sites import fold_map, fold_site
from optimum_depth.errors import ConfigError

from tiny_models import make_tiny_model, random_ids

SETTINGS = CompensationConfig(
    num_samples=24, seq_len=16, batch_size=4, selection="aware", selection_samples=20, selection_candidates=0
)


def _reference_perplexity(model, removed, maps, ids):
    """The candidate evaluated the slow way: fold each cut's map into a copy, delete the blocks, run the model."""
    copy_ = copy.deepcopy(model)
    layers, facts = copy_.model.layers, as_facts(copy_)
    for fold in plan_folds(removed, len(layers)):
        transform = maps[(fold.block, fold.target, min(fold.removed))]
        fold_map(copy_, fold_site(layers[fold.block], facts), transform)
    remove_layers(copy_, removed)
    with torch.no_grad():
        return math.exp(float(copy_(input_ids=ids, labels=ids).loss))


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text"])
def test_each_candidate_is_scored_as_the_real_compensated_model(family):
    model = make_tiny_model(family).eval()
    ids = random_ids(20, 16, seed=5)
    result = aware_greedy_selection(as_facts(model), CalibrationData(ids, {}), SETTINGS, 2, protected={0})
    scoring_ids = ids[-result.scoring_samples :]
    first = result.removal_order[0]
    # Every block scored in the last round was scored with the first removal already made (cached restart).
    for block, value in result.values.items():
        removed = sorted({first, block}) if block != first else [first]
        expected = _reference_perplexity(model, removed, result.maps, scoring_ids)
        assert value == pytest.approx(expected, rel=1e-4), block
    last_round = {b: v for b, v in result.values.items() if b != first}
    assert result.removal_order[1] == min(last_round, key=last_round.get)
    assert 0 not in result.removal_order
    assert [r["removed"] for r in result.rounds] == result.removal_order


def test_later_rounds_rescore_the_best_blocks_and_the_cuts_neighbours():
    model = make_tiny_model("llama", num_hidden_layers=8).eval()
    lazy = dataclasses.replace(SETTINGS, selection_candidates=2)
    ids = random_ids(20, 16, seed=5)
    one_round = aware_greedy_selection(as_facts(model), CalibrationData(ids, {}), SETTINGS, 1, protected=set())
    result = aware_greedy_selection(as_facts(model), CalibrationData(ids, {}), lazy, 2, protected=set())
    first = result.removal_order[0]
    assert first == one_round.removal_order[0]  # the first round is exhaustive
    round_one = one_round.values
    best_two = sorted((b for b in range(8) if b != first), key=lambda b: round_one[b])[:2]
    expected = set(best_two) | ({first - 1, first + 1} & set(range(8)))
    rescored = {b for b, v in result.values.items() if b != first and v != round_one[b]}
    assert rescored == expected  # the others keep their first-round score
    assert result.removal_order[1] in expected


def test_pruner_runs_the_aware_selection_then_compensates():
    model = make_tiny_model("llama").eval()
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=2, compensation=SETTINGS)
    pruner = DepthPruner(config)
    ids = random_ids(24, 16, seed=2)
    pruner.prune(model, calibration=CalibrationData(ids, {"source": "random"}))
    assert model.config.num_hidden_layers == 4
    assert pruner.last_scores.extra["selection"] == "compensation-aware"
    assert sorted(pruner.last_plan.removed_blocks) == sorted(pruner.last_scores.removal_order)
    assert model.config.pruning["compensation"]["settings"]["selection"] == "aware"
    assert len(model.config.pruning["compensation"]["maps"]) >= 1


def test_aware_selection_is_refused_without_sleb_or_with_a_bad_setting():
    with pytest.raises(ConfigError, match="criterion='sleb'"):
        DepthPruningConfig(criterion="ppl", num_layers_to_remove=2, compensation=SETTINGS)
    with pytest.raises(ConfigError, match="selection"):
        CompensationConfig(selection="greedy")
    with pytest.raises(ConfigError, match="at least 2"):
        CompensationConfig(selection="aware", selection_samples=1)
    with pytest.raises(ConfigError, match="selection_candidates"):
        CompensationConfig(selection="aware", selection_candidates=-1)
