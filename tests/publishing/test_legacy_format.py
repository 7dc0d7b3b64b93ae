"""Pruned checkpoints stay readable by tools one transformers major release behind (4.x): legacy config and tokenizer
keys, read identically by transformers 5, and an ONNX export round trip through ``optimum-onnx`` on transformers 4.x
in a separate environment (``OPTIMUM_DEPTH_EXPORT_PYTHON``, set up by scripts/install.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_depth import remove_layers, save_pruned_model
from optimum_depth.publishing.legacy_format import legacy_config_keys, legacy_tokenizer_keys

from tiny_models import make_tiny_model, random_ids

EXPORT_PYTHON_ENV = "OPTIMUM_DEPTH_EXPORT_PYTHON"


def test_legacy_config_keys_from_rope_parameters():
    assert legacy_config_keys({"rope_parameters": {"rope_theta": 1e5, "rope_type": "default"}}) == {"rope_theta": 1e5}
    llama3 = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "original_max_position_embeddings": 8192}
    assert legacy_config_keys({"rope_parameters": llama3}) == {
        "rope_theta": 5e5,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
    }
    gemma3 = {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    assert legacy_config_keys({"rope_parameters": gemma3}) == {"rope_theta": 1e6, "rope_local_base_freq": 1e4}
    assert legacy_config_keys({"rope_parameters": {"rope_theta": 1e5}, "rope_theta": 1e5}) == {}  # already there
    assert legacy_config_keys({"vocab_size": 3}) == {}


def test_legacy_tokenizer_class_only_for_a_tokenizers_backend_with_its_json():
    assert legacy_tokenizer_keys({"tokenizer_class": "TokenizersBackend"}, True) == {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    assert legacy_tokenizer_keys({"tokenizer_class": "TokenizersBackend"}, False) == {}
    assert legacy_tokenizer_keys({"tokenizer_class": "LlamaTokenizer"}, True) == {}


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_transformers_5_reads_the_legacy_keys_identically(tmp_path, family):
    overrides = {"rope_theta": 1e5} if family == "llama" else {}
    model = make_tiny_model(family, **overrides)
    remove_layers(model, [1])
    save_pruned_model(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "rope_theta" in saved and "rope_parameters" in saved
    if family == "gemma3_text":
        assert saved["rope_local_base_freq"] == saved["rope_parameters"]["sliding_attention"]["rope_theta"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", attn_implementation="eager")
    assert reloaded.config.rope_parameters == model.config.rope_parameters
    ids = random_ids(2, 9)
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_transformers_5_reads_the_legacy_tokenizer_class_identically(stories_path, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(stories_path)
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    save_pruned_model(remove_layers(model, [2]), tmp_path / "ckpt", tokenizer)
    saved = json.loads((tmp_path / "ckpt" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "PreTrainedTokenizerFast"
    text = "Once upon a time, there was a little girl named Lily."
    assert AutoTokenizer.from_pretrained(tmp_path / "ckpt")(text) == tokenizer(text)  # same ids, same fields


EXPORT_AND_RUN = """
    import json, os, subprocess, sys
    import transformers
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer
    checkpoint, onnx_dir, text = sys.argv[1], sys.argv[2], sys.argv[3]
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "optimum-cli"), "export", "onnx", "--model", checkpoint, "--task", "text-generation-with-past", onnx_dir],
        check=True, capture_output=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer(text, return_tensors="pt")
    model = ORTModelForCausalLM.from_pretrained(onnx_dir)
    logits = model(**ids).logits
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    print(json.dumps({
        "transformers": transformers.__version__,
        "input_ids": ids["input_ids"][0].tolist(),
        "logits": logits[0].tolist(),
        "generated": generated[0].tolist(),
    }))
"""


@pytest.mark.slow
def test_onnx_export_on_transformers_4_matches_the_checkpoint(stories_path, tmp_path):
    export_python = os.environ.get(EXPORT_PYTHON_ENV)
    if not export_python:
        pytest.skip(f"{EXPORT_PYTHON_ENV} names no Python with optimum-onnx (scripts/install.sh sets one up).")
    model = AutoModelForCausalLM.from_pretrained(stories_path, attn_implementation="eager")
    model.config.rope_parameters = {"rope_type": "default", "rope_theta": 100000.0}  # not 4.x's default 10000
    model = AutoModelForCausalLM.from_config(model.config, attn_implementation="eager")  # rebuilt rotary tables
    model.load_state_dict(AutoModelForCausalLM.from_pretrained(stories_path).state_dict())
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    save_pruned_model(remove_layers(model.eval(), [2]), tmp_path / "ckpt", tokenizer)
    text = "Once upon a time, there was a little girl"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HOME")}
    env["HF_HOME"] = str(tmp_path / "export-hf")
    result = subprocess.run(
        [export_python, "-c", textwrap.dedent(EXPORT_AND_RUN), str(tmp_path / "ckpt"), str(tmp_path / "onnx"), text],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    exported = json.loads(result.stdout.strip().splitlines()[-1])
    assert exported["transformers"].startswith("4.")
    ids = tokenizer(text, return_tensors="pt")
    assert exported["input_ids"] == ids["input_ids"][0].tolist()  # the tokenizer loads and agrees under 4.x
    with torch.no_grad():
        logits = model(**ids).logits[0]
    assert (torch.tensor(exported["logits"]) - logits).abs().max() < 1e-3
    expected = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert exported["generated"] == expected[0].tolist()
