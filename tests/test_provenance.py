"""Inconsistent provenance in config.json is refused wherever it is read, never carried into a new checkpoint."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from optimum_depth import DepthPruner, DepthPruningConfig, ProvenanceError, PrunedLlamaConfig, save_pruned_model

from tiny_models import make_tiny_model

BAD = [
    ({"surviving_layers": [0, 2, 9]}, "3 entries for num_hidden_layers=4"),  # wrong length
    ({"surviving_layers": [0, 2, 2, 5]}, "not strictly increasing"),  # duplicate
    ({"surviving_layers": [0, 2, 3, 9]}, "outside the source model's 6 blocks"),  # beyond the source
    ({"surviving_layers": [0, 2, 3, 5], "source_num_hidden_layers": 0}, "not a positive integer"),
]


@pytest.fixture
def pruned_checkpoint(tmp_path):
    model = make_tiny_model("llama")
    DepthPruner(DepthPruningConfig(num_layers_to_remove=2, protect_first=0, protect_last=0)).prune(model)
    return save_pruned_model(model, tmp_path / "ckpt")


def _edit(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", BAD)
def test_typed_config_refuses_inconsistent_provenance(pruned_checkpoint, changes, message):
    _edit(pruned_checkpoint, **changes)
    with pytest.raises(ValueError, match=message):
        PrunedLlamaConfig.from_pretrained(pruned_checkpoint)


@pytest.mark.parametrize("changes, message", BAD)
def test_a_model_with_inconsistent_provenance_is_not_pruned_again(pruned_checkpoint, changes, message):
    _edit(pruned_checkpoint, **changes)
    model = AutoModelForCausalLM.from_pretrained(pruned_checkpoint)  # plain transformers does not look
    before = dict(model.config.to_dict())
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=0, protect_last=0))
    with pytest.raises(ProvenanceError, match=message):
        pruner.prune(model)
    assert model.config.to_dict() == before and len(model.model.layers) == 4


def test_a_consistent_pruned_config_loads(pruned_checkpoint):
    config = PrunedLlamaConfig.from_pretrained(pruned_checkpoint)
    assert len(config.surviving_layers) == config.num_hidden_layers == 4 and config.source_num_hidden_layers == 6
