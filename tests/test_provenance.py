"""Inconsistent provenance in config.json is refused wherever it is read, never carried into a new checkpoint."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from optimum_depth import (
    DepthPruner,
    DepthPruningConfig,
    ProvenanceError,
    PrunedLlamaConfig,
    PruningPlan,
    save_pruned_model,
)

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


def _without_source_count(tmp_path):
    """A checkpoint whose last block was removed, with `source_num_hidden_layers` deleted from its config.json."""
    model = make_tiny_model("llama")
    plan = PruningPlan(granularity="block", removed_blocks=(5,), source_num_hidden_layers=6)
    DepthPruner(DepthPruningConfig(num_layers_to_remove=1)).apply(model, plan)
    path = save_pruned_model(model, tmp_path / "ckpt", plan=plan)
    config = json.loads((path / "config.json").read_text())
    del config["source_num_hidden_layers"]
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_pruned_config_without_its_source_block_count_is_refused_not_guessed(tmp_path):
    path = _without_source_count(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.surviving_layers == [0, 1, 2, 3, 4]  # 5 of 6: nothing in the config says 6 any more
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=0, protect_last=0))
    with pytest.raises(ProvenanceError, match=r"not source_num_hidden_layers.*its pruning record suggests 6"):
        pruner.prune(model)
    assert len(model.model.layers) == 5 and not hasattr(model.config, "source_num_hidden_layers")


def test_cli_prune_and_card_refuse_it_in_one_line(stories_path, tmp_path, capsys):
    from optimum_depth.cli import main

    plan = {"granularity": "block", "removed_blocks": [4], "source_num_hidden_layers": 5}
    plan["source_fingerprint"] = {"model_type": "llama", "hidden_size": 64, "vocab_size": 512}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    path = tmp_path / "ckpt"
    argv = ["prune", "--model", str(stories_path), "--plan", str(tmp_path / "plan.json"), "--compensation", "none"]
    assert main([*argv, "--output-dir", str(path)]) == 0
    _edit(path, source_num_hidden_layers=None)  # deleted by hand: the last block's removal is now invisible
    config = json.loads((path / "config.json").read_text())
    del config["source_num_hidden_layers"]
    (path / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    argv = ["prune", "--model", str(path), "--criterion", "magnitude", "--protect-first", "0", "--protect-last", "0"]
    for command in (
        [*argv, "--num-layers-to-remove", "1", "--output-dir", str(tmp_path / "out")],
        ["card", str(path)],
    ):
        capsys.readouterr()
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and 'Add "source_num_hidden_layers"' in err and "suggests 5" in err
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before and not (tmp_path / "out").exists()
