"""Pruned checkpoints load with plain transformers, in a fresh process that never imports optimum_depth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_depth import DepthPruner, DepthPruningConfig, PrunedLlamaConfig, PruningPlan, save_pruned_model
from optimum_depth.modeling import PRUNED_CONFIG_CLASSES

from tiny_models import FAMILIES, STORIES_PATH, make_tiny_model, random_ids

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.modules["optimum_depth"] = None  # importing optimum_depth must be impossible here
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    cases = json.load(open(sys.argv[1]))
    report = {}
    for name, case in cases.items():
        model, info = AutoModelForCausalLM.from_pretrained(
            case["path"], output_loading_info=True, attn_implementation="eager"
        )
        ids = torch.tensor(case["ids"])
        logits = model(ids).logits
        expected = torch.load(case["logits"])
        report[name] = {
            "class": type(model).__name__,
            "missing": sorted(info["missing_keys"]),
            "unexpected": sorted(info["unexpected_keys"]),
            "max_abs_diff": float((logits - expected).abs().max()),
            "surviving_layers": model.config.surviving_layers,
            "num_hidden_layers": model.config.num_hidden_layers,
            "layer_types": getattr(model.config, "layer_types", None),
        }
    print(json.dumps(report))
    """
)


def _run_child(cases: dict, tmp_path) -> dict:
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps(cases))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(cases_file)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_family_reloads_natively_in_a_fresh_process(tmp_path):
    cases, expected_types = {}, {}
    ids = random_ids(2, 9)
    for family in FAMILIES:
        model = make_tiny_model(family)
        pruner = DepthPruner(
            DepthPruningConfig(criterion="magnitude", num_layers_to_remove=2, protect_first=0, protect_last=0)
        )
        pruner.prune(model)
        path = save_pruned_model(model, tmp_path / family, plan=pruner.last_plan, scores=pruner.last_scores)
        assert not list(path.glob("*.bin")) and list(path.glob("*.safetensors"))
        with torch.no_grad():
            torch.save(model(ids).logits, tmp_path / f"{family}.pt")
        cases[family] = {"path": str(path), "ids": ids.tolist(), "logits": str(tmp_path / f"{family}.pt")}
        expected_types[family] = (model.config.surviving_layers, getattr(model.config, "layer_types", None))
    report = _run_child(cases, tmp_path)
    for family, result in report.items():
        assert result["missing"] == [] and result["unexpected"] == [], family
        assert result["max_abs_diff"] == 0.0, family
        assert result["num_hidden_layers"] == 4
        assert result["surviving_layers"] == expected_types[family][0]
        assert result["layer_types"] == expected_types[family][1]
        assert not result["class"].startswith("Pruned")


def test_provenance_is_typed_through_pruned_configs(tmp_path):
    model = make_tiny_model("llama")
    config = DepthPruningConfig(criterion="magnitude", pruning_ratio=0.34, protect_first=1, protect_last=1, seed=3)
    DepthPruner(config).prune(model)
    save_pruned_model(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llama"
    typed = PrunedLlamaConfig.from_pretrained(tmp_path)
    assert typed.surviving_layers == model.config.surviving_layers
    assert len(typed.surviving_layers) == 4
    assert typed.source_num_hidden_layers == 6
    assert typed.pruning["criterion"] == "magnitude"
    assert typed.pruning["target"] == {"pruning_ratio": 0.34}
    assert typed.pruning["seed"] == 3
    assert "optimum_depth_version" in typed.pruning
    assert not typed.is_sublayer_pruned
    for family, config_class in PRUNED_CONFIG_CLASSES.items():
        if family != "llama":
            with pytest.raises(ValueError, match="llama"):
                config_class.from_pretrained(tmp_path)


def test_pruning_a_reloaded_pruned_model_composes_indices(tmp_path):
    model = make_tiny_model("mistral")
    DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=0, protect_last=0)).prune(model)
    first = list(model.config.surviving_layers)
    save_pruned_model(model, tmp_path / "once")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "once")
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=0, protect_last=0))
    pruner.prune(reloaded)
    removed = pruner.last_plan.removed_blocks[0]
    assert removed in first
    assert reloaded.config.surviving_layers == [i for i in first if i != removed]
    assert reloaded.config.pruning["history"][0]["removed_layers"] == [i for i in range(6) if i not in first]


def test_stories260k_pruned_by_one_block_generates_the_same_text_after_native_reload(tmp_path):
    if not STORIES_PATH.is_dir():
        pytest.skip("../shared/models/stories260K is not available")
    tokenizer = AutoTokenizer.from_pretrained(STORIES_PATH)
    model = AutoModelForCausalLM.from_pretrained(STORIES_PATH).eval()
    pruner = DepthPruner(DepthPruningConfig(num_layers_to_remove=1, protect_first=1, protect_last=1))
    pruner.prune(model)
    save_pruned_model(model, tmp_path / "pruned", tokenizer=tokenizer, plan=pruner.last_plan)
    plan = PruningPlan.from_pretrained(tmp_path / "pruned")
    assert plan == pruner.last_plan
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    in_memory = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    text = tokenizer.decode(in_memory[0], skip_special_tokens=True)
    child = textwrap.dedent(
        f"""
        import sys
        sys.modules["optimum_depth"] = None
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(tmp_path / "pruned")!r})
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "pruned")!r})
        out = model.generate(**tok("Once upon a time", return_tensors="pt"), max_new_tokens=24, do_sample=False)
        print(tok.decode(out[0], skip_special_tokens=True))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == text.strip().splitlines()[-1]
    assert len(text) > len("Once upon a time") + 10
