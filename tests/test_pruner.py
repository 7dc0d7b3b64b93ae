"""DepthPruner end to end: score -> plan -> apply, and refusals before any change."""

from __future__ import annotations

import copy

import pytest
import torch

from optimum_depth import (
    ConfigError,
    DepthPruner,
    DepthPruningConfig,
    PlanMismatchError,
    PruningPlan,
    PruningTargetError,
    UnsupportedArchitectureError,
    get_decoder_layers,
)
from optimum_depth.architectures import count_parameters
from optimum_depth.criteria.magnitude import block_weight_magnitude

from tiny_models import make_tiny_model


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, state, config_dict):
    after = model.state_dict()
    return (
        after.keys() == state.keys()
        and all(torch.equal(after[k], state[k]) for k in state)
        and model.config.to_dict() == config_dict
    )


def test_magnitude_scores_are_sum_of_absolute_weights(tiny_model):
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=2, protect_first=1, protect_last=1))
    scores = pruner.score(tiny_model)
    for block, value in zip(get_decoder_layers(tiny_model), scores.values, strict=True):
        expected = sum(float(p.abs().sum()) for p in block.parameters() if p.dim() >= 2)
        assert value == pytest.approx(expected, rel=1e-6)
    assert scores.protected == [0, 5]
    assert scores.layer_indices == list(range(6))


def test_plan_removes_the_least_important_unprotected_blocks(tiny_model):
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=2, protect_first=1, protect_last=1))
    scores = pruner.score(tiny_model)
    plan = pruner.plan(scores)
    ranked = sorted(range(1, 5), key=lambda i: scores.values[i])
    assert plan.removed_blocks == tuple(sorted(ranked[:2]))
    assert plan.criterion == "magnitude"
    assert plan.source_num_hidden_layers == 6
    assert plan.source_fingerprint["model_type"] == tiny_model.config.model_type
    assert plan.source_fingerprint["hidden_size"] == tiny_model.config.hidden_size
    assert PruningPlan.from_dict(plan.to_dict()) == plan
    pruner.apply(tiny_model, plan)
    assert tiny_model.config.surviving_layers == [i for i in range(6) if i not in plan.removed_blocks]
    assert tiny_model.config.pruning["removed_layers"] == list(plan.removed_blocks)


def test_magnitude_exponent_is_honoured():
    model = make_tiny_model("llama")
    block = get_decoder_layers(model)[0]
    expected = sum(float(p.double().pow(2).sum()) for p in block.parameters() if p.dim() >= 2)
    assert block_weight_magnitude(block, p=2.0) == pytest.approx(expected, rel=1e-9)


def test_parameter_target_removes_until_the_budget_is_met():
    model = make_tiny_model("llama")
    total = count_parameters(model)
    per_block = count_parameters(get_decoder_layers(model)[0])
    config = DepthPruningConfig(target_num_params=total - 2 * per_block, protect_first=0, protect_last=0)
    DepthPruner(config).prune(model)
    assert count_parameters(model) == total - 2 * per_block
    assert model.config.num_hidden_layers == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_layers_to_remove": 3}, "only 2 of 6 are unprotected"),  # default Mag+ protects 4 + 2... of 6
        ({"num_layers_to_remove": 6, "protect_first": 0, "protect_last": 0}, "Cannot remove 6"),
        ({"pruning_ratio": 0.5, "protected_layers": [9]}, r"\[9\]"),
        ({"target_num_params": 10**9}, "already has"),
        ({"target_num_params": 10, "protect_first": 0, "protect_last": 0}, "unreachable"),
    ],
)
def test_impossible_targets_raise_before_any_change(kwargs, message):
    model = make_tiny_model("gemma3_text")
    if message.startswith("only"):
        kwargs = {**kwargs, "protect_first": 2, "protect_last": 2}
    state, config_dict = _state(model), model.config.to_dict()
    with pytest.raises(PruningTargetError, match=message):
        DepthPruner(DepthPruningConfig(**kwargs)).prune(model)
    assert _unchanged(model, state, config_dict)


def test_plan_that_does_not_fit_the_model_is_refused(tiny_model):
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=0, protect_last=0))
    pruner.apply(tiny_model, PruningPlan(granularity="block", removed_blocks=(1,), source_num_hidden_layers=6))
    state, config_dict = _state(tiny_model), tiny_model.config.to_dict()
    with pytest.raises(PlanMismatchError, match="not in this model"):  # block 1 is gone already
        pruner.apply(tiny_model, PruningPlan(granularity="block", removed_blocks=(1,), source_num_hidden_layers=6))
    with pytest.raises(PlanMismatchError, match="32 original blocks"):  # made for a deeper model
        pruner.apply(tiny_model, PruningPlan(granularity="block", removed_blocks=(2,), source_num_hidden_layers=32))
    foreign = {"model_type": tiny_model.config.model_type, "hidden_size": tiny_model.config.hidden_size + 8}
    with pytest.raises(PlanMismatchError, match="hidden_size"):  # same depth, another model
        pruner.apply(
            tiny_model,
            PruningPlan(
                granularity="block", removed_blocks=(2,), source_num_hidden_layers=6, source_fingerprint=foreign
            ),
        )
    assert _unchanged(tiny_model, state, config_dict)


def test_a_plan_always_records_the_model_it_was_made_for():
    with pytest.raises(ConfigError, match="source_num_hidden_layers"):
        PruningPlan(granularity="block", removed_blocks=(1,))
    with pytest.raises(ConfigError, match="not blocks of a model with 6"):
        PruningPlan(granularity="block", removed_blocks=(7,), source_num_hidden_layers=6)


def test_a_plan_of_a_six_block_model_is_refused_on_a_five_block_one(tmp_path):
    six, five = make_tiny_model("llama"), make_tiny_model("llama", num_hidden_layers=5)
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=0, protect_last=0))
    pruner.plan(pruner.score(six)).save_pretrained(tmp_path)
    state, config_dict = _state(five), five.config.to_dict()
    with pytest.raises(PlanMismatchError, match="6 original blocks"):
        pruner.apply(five, PruningPlan.from_pretrained(tmp_path))
    assert _unchanged(five, state, config_dict)


def test_unsupported_architecture_is_named():
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("gpt2", n_layer=2, n_embd=16, n_head=2, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'.*llama"):
        DepthPruner(DepthPruningConfig(num_layers_to_remove=1)).prune(model)
    with pytest.raises(UnsupportedArchitectureError, match="no `config`"):
        DepthPruner(DepthPruningConfig(num_layers_to_remove=1)).prune(torch.nn.Linear(2, 2))


def test_prune_is_deterministic(tiny_model):
    other = copy.deepcopy(tiny_model)
    config = DepthPruningConfig(pruning_ratio=0.34, protect_first=1, protect_last=0)
    DepthPruner(config).prune(tiny_model)
    DepthPruner(config).prune(other)
    assert tiny_model.config.surviving_layers == other.config.surviving_layers


def test_pruner_needs_a_config():
    with pytest.raises(TypeError, match="DepthPruningConfig"):
        DepthPruner({"criterion": "magnitude"})


def test_a_model_without_loaded_weights_is_refused_by_name():
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(make_tiny_model("llama").config)
    with pytest.raises(ConfigError, match="'meta' device"):
        DepthPruner(DepthPruningConfig(num_layers_to_remove=1)).prune(model)
    assert model.config.num_hidden_layers == 6


def test_calibration_longer_than_the_model_supports_is_refused_before_scoring(tiny_model):
    pruner = DepthPruner(DepthPruningConfig(criterion="ppl", num_layers_to_remove=1, seq_len=4096))
    state, config_dict = _state(tiny_model), tiny_model.config.to_dict()
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        pruner.prune(tiny_model, calibration="self")
    assert _unchanged(tiny_model, state, config_dict)


class _CharTokenizer:
    """One id per character in [3, 128): text calibration for the tiny models."""

    bos_token_id = 1

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(ch) % 125 for ch in text]}


def _without_timings(record):
    """``record`` without its wall-clock entries (``elapsed_seconds``), which differ from run to run."""
    if isinstance(record, dict):
        return {k: _without_timings(v) for k, v in record.items() if k != "elapsed_seconds"}
    if isinstance(record, list):
        return [_without_timings(v) for v in record]
    return record


TEXTS = [" ".join(f"w{i}x{j}" for j in range(150)) for i in range(8)]


@pytest.mark.parametrize(
    ("settings", "tokenized", "drawn"),
    [
        # aware selection: the scoring draws exactly the compensation fit's sequences, drawn once (was twice)
        (
            dict(
                criterion="sleb", compensation=dict(method="linear_ls", num_samples=12, seq_len=16, selection="aware")
            ),
            1,
            1,
        ),
        # auto + compensation: two draws of their own sizes and seeds, from text tokenized once (was twice)
        (
            dict(
                criterion="auto",
                auto_fit_samples=8,
                auto_heldout_samples=4,
                auto_candidates=["magnitude", "block_influence"],
                compensation=dict(method="linear_ls", num_samples=12, seq_len=16),
            ),
            1,
            2,
        ),
    ],
)
def test_prune_prepares_its_calibration_once(monkeypatch, settings, tokenized, drawn):
    from optimum_depth import calibration

    config = DepthPruningConfig(num_layers_to_remove=1, num_samples=4, seq_len=16, **settings)
    reference = make_tiny_model("llama")
    pruner = DepthPruner(config)  # separate calls with the raw text: what prune did before (and must still give)
    pruner.apply(reference, pruner.plan(pruner.score(reference, TEXTS, _CharTokenizer())), TEXTS, _CharTokenizer())
    counts = {"tokenized": 0, "drawn": 0}
    tokenize, sample = calibration._tokenize_documents, calibration.sample_windows
    monkeypatch.setattr(
        calibration, "_tokenize_documents", lambda *a: counts.update(tokenized=counts["tokenized"] + 1) or tokenize(*a)
    )
    monkeypatch.setattr(
        calibration, "sample_windows", lambda *a: counts.update(drawn=counts["drawn"] + 1) or sample(*a)
    )
    model = make_tiny_model("llama")
    DepthPruner(config).prune(model, calibration=TEXTS, tokenizer=_CharTokenizer())
    assert counts == {"tokenized": tokenized, "drawn": drawn}
    # Same plan, same compensation record (but for how long the fit took, which the record also keeps).
    assert _without_timings(model.config.pruning) == _without_timings(reference.config.pruning)
    reference_state = reference.state_dict()
    assert all(torch.equal(value, reference_state[key]) for key, value in model.state_dict().items())
