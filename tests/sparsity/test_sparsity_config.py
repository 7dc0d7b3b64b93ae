"""SparsityConfig validation and serialisation."""

from __future__ import annotations

import json

import pytest

from optimum_depth import DepthPruningConfig
from optimum_depth.sparsity import SparsityConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "sparsegpt"}, "`method`"),
        ({"sparsity": 0.0}, "`sparsity`"),
        ({"sparsity": 1.0}, "below 1"),
        ({"sparsity": "0.5"}, "`sparsity`"),
        ({"sparsity": float("nan")}, "`sparsity`"),
        ({"allocation": "column"}, "`allocation`"),
        ({"method": "besa", "structure": "2:4"}, "nothing for BESA"),
        ({"method": "wanda", "structure": "2:4", "sparsity": 0.6}, "implies sparsity 0.5"),
        ({"method": "wanda", "structure": "4:2"}, "N:M"),
        ({"method": "wanda", "structure": "dense"}, "N:M"),
        ({"num_samples": 0}, "`num_samples`"),
        ({"seq_len": 1}, "`seq_len`"),
        ({"batch_size": True}, "`batch_size`"),
        ({"epochs": 0}, "`epochs`"),
        ({"optimizer": "sgd"}, "`optimizer`"),
        ({"learning_rate": -1.0}, "`learning_rate`"),
        ({"sparsity_step": 0.03}, "integer"),
        ({"sparsity_step": 0.0}, "`sparsity_step`"),
        ({"penalty_weight": -1.0}, "`penalty_weight`"),
        ({"target_modules": []}, "`target_modules`"),
        ({"target_modules": "q_proj"}, "`target_modules`"),
        ({"depth_pruning": 3}, "`depth_pruning`"),
        ({"seed": 1.5}, "`seed`"),
    ],
)
def test_bad_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsityConfig(**kwargs)


def test_defaults_follow_the_paper():
    config = SparsityConfig()
    assert (config.method, config.sparsity, config.allocation) == ("besa", 0.5, "row")
    assert (config.num_samples, config.seq_len, config.epochs, config.batch_size) == (128, 2048, 1, 1)
    assert config.optimizer == "prodigy" and config.resolved_learning_rate == 1.0
    assert config.num_candidate_steps == 100
    assert SparsityConfig(optimizer="adam").resolved_learning_rate == 1e-2
    assert SparsityConfig(method="wanda", structure="2:4").n_m == (2, 4)


def test_round_trip_with_depth_pruning():
    depth = DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=0, protect_last=0)
    config = SparsityConfig(method="wanda", sparsity=0.3, target_modules=["mlp.down_proj"], depth_pruning=depth)
    data = json.loads(config.to_json_string())
    assert data["depth_pruning"]["num_layers_to_remove"] == 1
    again = SparsityConfig.from_dict(data)
    assert again == config
    assert isinstance(again.depth_pruning, DepthPruningConfig)
