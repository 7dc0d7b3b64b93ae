"""The default recipe of ``optimum-depth prune`` (``auto`` + ``reconstruct``) on a tiny model of every family."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_depth.cli import main

from tiny_models import DATA_DIR, make_tiny_model


@pytest.fixture
def family_checkpoint(family, stories_path, tmp_path):
    """A tiny random model of ``family`` saved with the TinyStories tokenizer (512 tokens), so text calibrates it."""
    if not (DATA_DIR / "calib").is_dir():
        pytest.skip("../shared/data/calib is not available")
    model = make_tiny_model(family, vocab_size=512)
    path = tmp_path / family
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(stories_path).save_pretrained(path)
    return path


def test_prune_with_its_defaults_never_fails_on_a_supported_family(family, family_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", "--model", str(family_checkpoint), "--output-dir", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    pruning = model.config.pruning
    assert model.config.num_hidden_layers == 4  # 25% of 6 blocks, rounded
    assert pruning["criterion"] == "auto" and pruning["compensation"]["method"] == "reconstruct"
    assert pruning["compensation"]["reconstruction"]["steps"] > 0
    plan = json.loads((out / "pruning_plan.json").read_text())
    auto = plan["reason"]["auto"]
    assert auto["chosen"] in auto["candidates"] and "heldout_loss" in auto["candidates"][auto["chosen"]]
    assert "auto" in json.loads((out / "layer_scores.json").read_text())["extra"]
    assert f"(auto: {auto['chosen']} + reconstruct compensation)" in capsys.readouterr().out
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 5, 9, 30]])).logits).all()
