"""Block Influence and angular distance against their explicit formulas."""

from __future__ import annotations

import math

import pytest
import torch
from criteria_references import block_states

from optimum_depth import DepthPruner, DepthPruningConfig, PruningTargetError
from optimum_depth.architectures import count_parameters
from optimum_depth.calibration import CalibrationData
from optimum_depth.criteria.scoring import score_blocks

from tiny_models import make_tiny_model, random_ids


def reference_block_influence(model, ids: torch.Tensor) -> list[float]:
    states = block_states(model, ids)
    values = []
    for i in range(model.config.num_hidden_layers):
        x, y = states[i].double(), states[i + 1].double()
        cosines = []
        for sample in range(x.shape[0]):
            for token in range(x.shape[1]):
                a, b = x[sample, token], y[sample, token]
                cosines.append(float(a @ b / (a.norm() * b.norm())))
        values.append(1.0 - sum(cosines) / len(cosines))
    return values


def reference_angular(model, ids: torch.Tensor, last_token: bool) -> dict[tuple[int, int], float]:
    """d(l, l + n) averaged over samples (last token) or over all tokens, for every pair."""
    states = block_states(model, ids)
    count = len(states)
    table = {}
    for a in range(count):
        for b in range(a + 1, count):
            distances = []
            for sample in range(ids.shape[0]):
                tokens = [ids.shape[1] - 1] if last_token else range(ids.shape[1])
                for token in tokens:
                    x, y = states[a][sample, token].double(), states[b][sample, token].double()
                    cosine = float(x @ y / (x.norm() * y.norm()))
                    distances.append(math.acos(max(-1.0, min(1.0, cosine))) / math.pi)
            table[a, b] = sum(distances) / len(distances)
    return table


def test_block_influence_matches_the_cosine_formula(family, tiny_model):
    ids = random_ids(3, 10, seed=6)
    scores = score_blocks(
        tiny_model, DepthPruningConfig(criterion="block_influence", pruning_ratio=0.3), CalibrationData(ids)
    )
    assert scores.values == pytest.approx(reference_block_influence(tiny_model, ids), abs=1e-6)


def test_angular_matches_the_distance_formula(family, tiny_model):
    ids = random_ids(3, 10, seed=7)
    config = DepthPruningConfig(criterion="angular", num_layers_to_remove=2, batch_size=2)
    scores = score_blocks(tiny_model, config, CalibrationData(ids))
    table = reference_angular(tiny_model, ids, last_token=True)
    best = min(range(5), key=lambda start: (table[start, start + 2], start))
    assert scores.removal_order == [best, best + 1]
    assert scores.extra["window_distance"] == pytest.approx(table[best, best + 2], abs=1e-6)
    distances = scores.extra["distances"]
    for (a, b), value in table.items():
        assert distances[a][b] == pytest.approx(value, abs=1e-6)
    expected = [min(table[s, s + 2] for s in range(max(0, i - 1), min(i, 4) + 1)) for i in range(6)]
    assert scores.values == pytest.approx(expected, abs=1e-6)
    assert set(DepthPruner(config).plan(scores).removed_blocks) == {best, best + 1}


def test_angular_all_tokens_protection_and_impossible_windows():
    model = make_tiny_model("qwen3")
    ids = random_ids(2, 8, seed=8)
    config = DepthPruningConfig(
        criterion="angular", num_layers_to_remove=2, angular_last_token=False, protected_layers=[2], protect_last=1
    )
    scores = score_blocks(model, config, CalibrationData(ids))
    table = reference_angular(model, ids, last_token=False)
    allowed = [0, 3]  # windows of two free of blocks 2 and 5
    best = min(allowed, key=lambda start: (table[start, start + 2], start))
    assert scores.removal_order == [best, best + 1]
    squeezed = DepthPruningConfig(criterion="angular", num_layers_to_remove=3, protected_layers=[2], protect_last=1)
    with pytest.raises(PruningTargetError, match="consecutive"):
        score_blocks(model, squeezed, CalibrationData(ids))


def test_angular_parameter_target_uses_the_smallest_window():
    model = make_tiny_model("llama")
    block = count_parameters(model.model.layers[0])
    target = count_parameters(model) - block - block // 2  # two blocks needed
    scores = score_blocks(
        model, DepthPruningConfig(criterion="angular", target_num_params=target), CalibrationData(random_ids(2, 8))
    )
    assert scores.extra["window_size"] == 2
    assert len(scores.removal_order) == 2
