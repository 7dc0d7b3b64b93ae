"""PPL and SLEB against deleting blocks and running the whole model; determinism; protection; targets."""

from __future__ import annotations

import math

import pytest
from criteria_references import naive_perplexities, naive_removal_nll, naive_sleb

from optimum_depth import DepthPruner, DepthPruningConfig, PruningTargetError
from optimum_depth.architectures import count_parameters
from optimum_depth.calibration import CalibrationData, prepare_calibration
from optimum_depth.criteria.scoring import score_blocks

from tiny_models import make_tiny_model, random_ids


def test_ppl_matches_deleting_each_block(family, tiny_model):
    ids = random_ids(4, 20, seed=3)
    config = DepthPruningConfig(criterion="ppl", num_layers_to_remove=2, batch_size=2, early_exit=False)
    scores = score_blocks(tiny_model, config, CalibrationData(ids))
    assert scores.extra["lower_bound_candidates"] == []
    expected = naive_perplexities(tiny_model, ids, batch_size=2)
    assert scores.values == pytest.approx(expected, rel=1e-5)
    assert scores.extra["dense_perplexity"] == pytest.approx(
        math.exp(naive_removal_nll(tiny_model, ids, 2, [])), rel=1e-5
    )
    plan = DepthPruner(config).plan(scores)
    assert list(plan.removed_blocks) == sorted(sorted(range(6), key=lambda i: expected[i])[:2])


@pytest.mark.parametrize("early_exit", [True, False])
def test_sleb_matches_the_naive_greedy_loop(family, tiny_model, early_exit):
    ids = random_ids(4, 20, seed=4)
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=3, batch_size=2, early_exit=early_exit)
    scores = score_blocks(tiny_model, config, CalibrationData(ids))
    assert scores.removal_order == naive_sleb(tiny_model, ids, batch_size=2, rounds=3)
    rounds = scores.extra["rounds"]
    removed = []
    for step in rounds:  # each round's perplexity is that of the model without all blocks removed so far
        removed.append(step["removed"])
        assert step["perplexity"] == pytest.approx(math.exp(naive_removal_nll(tiny_model, ids, 2, removed)), rel=1e-5)
    assert len(scores.values) == 6


def test_sleb_respects_protection_and_scores_every_block():
    model = make_tiny_model("qwen3")
    ids = random_ids(3, 20, seed=5)
    config = DepthPruningConfig(criterion="sleb", num_layers_to_remove=2, protect_first=1, protect_last=2)
    scores = score_blocks(model, config, CalibrationData(ids))
    assert scores.removal_order == naive_sleb(model, ids, batch_size=1, rounds=2, protected={0, 4, 5})
    assert not set(scores.removal_order) & {0, 4, 5}
    exact = math.exp(naive_removal_nll(model, ids, 1, [0]))
    if 0 in scores.extra["lower_bound_candidates"]:  # ruled out early: a lower bound
        assert scores.values[0] <= exact * (1 + 1e-6)
    else:
        assert scores.values[0] == pytest.approx(exact, rel=1e-5)
    config.early_exit = False
    assert score_blocks(model, config, CalibrationData(ids)).values[0] == pytest.approx(exact, rel=1e-5)


def test_sleb_parameter_target_and_impossible_target():
    model = make_tiny_model("llama")
    block = count_parameters(model.model.layers[0])
    ids = random_ids(2, 16)
    target = count_parameters(model) - 2 * block - block // 2  # needs three blocks gone
    config = DepthPruningConfig(criterion="sleb", target_num_params=target)
    pruner = DepthPruner(config)
    scores = pruner.score(model, calibration=CalibrationData(ids))
    assert len(scores.removal_order) == 3
    assert len(pruner.plan(scores).removed_blocks) == 3
    too_many = DepthPruningConfig(criterion="sleb", num_layers_to_remove=3, protect_first=2, protect_last=2)
    with pytest.raises(PruningTargetError):
        score_blocks(model, too_many, CalibrationData(ids))


@pytest.mark.parametrize("criterion", ["ppl", "sleb", "block_influence", "angular", "taylor"])
def test_same_seed_same_scores(criterion):
    model = make_tiny_model("llama")
    config = DepthPruningConfig(criterion=criterion, num_layers_to_remove=2, num_samples=3, seq_len=12, seed=7)
    first = prepare_calibration("self", model=model, num_samples=3, seq_len=12, seed=7)
    again = prepare_calibration("self", model=model, num_samples=3, seq_len=12, seed=7)
    other = prepare_calibration("self", model=model, num_samples=3, seq_len=12, seed=8)
    a = score_blocks(model, config, first)
    b = score_blocks(model, config, again)
    c = score_blocks(model, config, other)
    assert a.values == b.values
    assert a.removal_order == b.removal_order
    assert a.values != c.values


def _stories_calibration(stories_path, num_samples: int = 8):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    model = AutoModelForCausalLM.from_pretrained(stories_path).eval()
    texts = [f"Once upon a time there was a {w} who liked to play in the park with a friend." for w in "abcdefgh"]
    calibration = prepare_calibration(texts[:num_samples], tokenizer, num_samples=num_samples, seq_len=16, seed=0)
    return model, calibration


def test_ppl_early_exit_selects_exactly_what_full_evaluation_selects(stories_path):
    """On the real TinyStories model the PPLs are spread out, so some blocks are ruled out early."""
    model, calibration = _stories_calibration(stories_path)
    ids = calibration.input_ids
    expected = naive_perplexities(model, ids, batch_size=1)
    for wanted in (1, 2):
        config = DepthPruningConfig(criterion="ppl", num_layers_to_remove=wanted)
        scores = score_blocks(model, config, calibration)
        full = score_blocks(
            model, DepthPruningConfig(criterion="ppl", num_layers_to_remove=wanted, early_exit=False), calibration
        )
        assert full.values == pytest.approx(expected, rel=1e-5)
        plan = DepthPruner(config).plan(scores)
        assert plan.removed_blocks == DepthPruner(config).plan(full).removed_blocks
        lower = scores.extra["lower_bound_candidates"]
        assert lower, "no block was ruled out early: the test would not exercise the bound"
        chosen = [scores.layer_indices.index(i) for i in plan.removed_blocks]
        for position in range(5):
            if position in lower:  # a lower bound, already above every chosen block
                assert scores.values[position] <= full.values[position] * (1 + 1e-9)
                assert scores.values[position] >= max(full.values[c] for c in chosen)
            else:
                assert scores.values[position] == full.values[position]
        assert scores.extra["block_forwards"] < full.extra["block_forwards"]


def test_sleb_early_exit_cuts_candidates_and_keeps_the_order(stories_path):
    model, calibration = _stories_calibration(stories_path)
    bounded = score_blocks(model, DepthPruningConfig(criterion="sleb", num_layers_to_remove=3), calibration)
    full = score_blocks(
        model, DepthPruningConfig(criterion="sleb", num_layers_to_remove=3, early_exit=False), calibration
    )
    assert bounded.removal_order == full.removal_order == naive_sleb(model, calibration.input_ids, 1, rounds=3)
    assert bounded.extra["rounds"] == full.extra["rounds"]
    assert bounded.extra["lower_bound_candidates"] and not full.extra["lower_bound_candidates"]
    assert bounded.extra["head_forwards"] < full.extra["head_forwards"]
