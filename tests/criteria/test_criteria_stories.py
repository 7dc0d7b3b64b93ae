"""Every criterion on the real 5-block TinyStories Llama: a plan that prunes and a checkpoint that reloads natively."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_depth import (
    DepthPruner,
    DepthPruningConfig,
    LayerScores,
    plot_layer_scores,
    prepare_calibration,
    save_pruned_model,
)
from optimum_depth.calibration import CalibrationData
from optimum_depth.criteria import available_criteria
from optimum_depth.criteria.scoring import score_blocks

from tiny_models import DATA_DIR, make_tiny_model, random_ids

CRITERIA = ["magnitude", "taylor", "ppl", "block_influence", "angular", "sleb"]


def test_every_issue_criterion_is_registered():
    assert set(CRITERIA) <= set(available_criteria("block"))


@pytest.mark.parametrize("criterion", CRITERIA)
def test_stories_prune_save_reload(criterion, stories_path, tmp_path):
    calib_dir = DATA_DIR / "calib"
    if not calib_dir.is_dir():
        pytest.skip("../shared/data/calib is not available")
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    model = AutoModelForCausalLM.from_pretrained(stories_path, dtype=torch.float32).eval()
    config = DepthPruningConfig(
        criterion=criterion, num_layers_to_remove=2, protect_first=1, protect_last=1, num_samples=4, seq_len=64
    )
    pruner = DepthPruner(config)
    pruned = pruner.prune(model, calibration=calib_dir / "wiki_demo_llamafactory.txt", tokenizer=tokenizer)
    assert pruned.config.num_hidden_layers == 3
    assert pruner.last_plan is not None and pruner.last_scores is not None
    assert set(pruner.last_plan.removed_blocks) <= {1, 2, 3}
    assert pruned.config.surviving_layers == [i for i in range(5) if i not in pruner.last_plan.removed_blocks]
    save_pruned_model(pruned, tmp_path / "out", tokenizer=tokenizer, plan=pruner.last_plan, scores=pruner.last_scores)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor(tokenizer(["Once upon a time there was a little dog."])["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, rtol=0, atol=0)
    scores = LayerScores.from_pretrained(tmp_path / "out")
    assert scores.values == pruner.last_scores.values
    if available_criteria("block")[criterion].needs_calibration:
        assert scores.calibration["num_samples"] == 4


@pytest.mark.parametrize("criterion", CRITERIA)
def test_scores_plot_to_png(criterion, tmp_path):
    pytest.importorskip("matplotlib")
    model = make_tiny_model("llama")
    config = DepthPruningConfig(criterion=criterion, num_layers_to_remove=2, protect_first=1, protect_last=1)
    scores = score_blocks(model, config, CalibrationData(random_ids(2, 8)))
    plan = DepthPruner(config).plan(scores)
    path = plot_layer_scores(
        scores, tmp_path / "scores.png", selected=[scores.layer_indices.index(i) for i in plan.removed_blocks]
    )
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_calibration_from_a_datasets_dataset_equals_the_same_strings(stories_path):
    datasets = pytest.importorskip("datasets")
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    texts = [f"Story {i}: Lily went to the park with her dog and they played all day long." * 3 for i in range(12)]
    from_dataset = prepare_calibration(
        datasets.Dataset.from_dict({"text": texts}), tokenizer, num_samples=5, seq_len=16, seed=3
    )
    from_list = prepare_calibration(texts, tokenizer, num_samples=5, seq_len=16, seed=3)
    assert torch.equal(from_dataset.input_ids, from_list.input_ids)
    assert from_dataset.input_ids.shape == (5, 16)
    assert "datasets.Dataset" in from_dataset.spec["source"]
