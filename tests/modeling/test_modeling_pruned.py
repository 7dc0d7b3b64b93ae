"""Sublayer-pruned model classes: exact outputs, native loading, remote code, KV caches and LoRA."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

import optimum_depth.modeling  # noqa: F401  (registers the pruned classes)
from finercut_references import SUPPORTED_FAMILIES
from optimum_depth.architectures import ARCHITECTURES
from optimum_depth.modeling import PrunedLlamaForCausalLM
from optimum_depth.modeling.modeling_pruned import PrunedCausalLM
from optimum_depth.sublayers.surgery import remove_sublayers

from tiny_models import make_tiny_model, random_ids

ATTENTION_REMOVED = [0, 4]
MLP_REMOVED = [2, 4]  # block 4 loses both: removed as a block


def _zero_attention(module, args, kwargs, output):
    return (torch.zeros_like(output[0]), None)


def _zero_mlp(module, args, output):
    return torch.zeros_like(output)


def reference_logits(model, input_ids, attention=ATTENTION_REMOVED, mlp=MLP_REMOVED):
    """The unpruned model with the removed sublayers' outputs replaced by zeros (residual passes through)."""
    reference = copy.deepcopy(model)
    for block in attention:
        reference.model.layers[block].self_attn.register_forward_hook(_zero_attention, with_kwargs=True)
    for block in mlp:
        reference.model.layers[block].mlp.register_forward_hook(_zero_mlp)
    with torch.no_grad():
        return reference(input_ids).logits


def pruned_model(family: str):
    model = make_tiny_model(family)
    ids = random_ids(2, 12)
    expected = reference_logits(model, ids)
    return remove_sublayers(model, ATTENTION_REMOVED, MLP_REMOVED), ids, expected


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_pruned_class_equals_zeroed_sublayers(family):
    model = make_tiny_model(family)
    spec = ARCHITECTURES[family]
    total = sum(p.numel() for p in model.parameters())
    layers = model.model.layers
    removed_params = sum(
        p.numel()
        for b in ATTENTION_REMOVED
        for name in ("self_attn", *spec.attention_norms)
        for p in getattr(layers[b], name).parameters()
    )
    removed_params += sum(
        p.numel()
        for b in set(MLP_REMOVED) - set(ATTENTION_REMOVED)  # block 4 lost both: its norms counted once
        for name in ("mlp", *spec.mlp_norms)
        for p in getattr(layers[b], name).parameters()
    ) + sum(p.numel() for name in ("mlp", *spec.mlp_norms) for p in getattr(layers[4], name).parameters())
    pruned, ids, expected = pruned_model(family)
    assert type(pruned).__name__.startswith("Pruned") and isinstance(pruned, PrunedCausalLM)
    assert pruned.config.model_type == f"pruned_{family}"
    assert pruned.config.num_hidden_layers == 5 and pruned.config.surviving_layers == [0, 1, 2, 3, 5]
    assert (pruned.config.skipped_attention, pruned.config.skipped_mlp) == ([0], [2])
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, expected, rtol=0, atol=1e-6)
    assert sum(p.numel() for p in pruned.parameters()) == total - removed_params
    keys = set(pruned.state_dict())
    assert not any(
        k.startswith(tuple(f"model.layers.0.{n}" for n in ("self_attn", *spec.attention_norms))) for k in keys
    )
    assert not any(k.startswith(tuple(f"model.layers.2.{n}" for n in ("mlp", *spec.mlp_norms))) for k in keys)
    assert any(k.startswith("model.layers.0.mlp.") for k in keys) and any(
        k.startswith("model.layers.2.self_attn.") for k in keys
    )


def test_hidden_states_and_loss_follow_the_pruned_blocks():
    pruned, ids, _ = pruned_model("llama")
    out = pruned(ids, labels=ids, output_hidden_states=True)
    assert len(out.hidden_states) == pruned.config.num_hidden_layers + 1
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 128), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_save_and_load_in_process(family, tmp_path):
    pruned, ids, expected = pruned_model(family)
    pruned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == f"pruned_{family}"
    assert config["auto_map"]["AutoModelForCausalLM"].startswith("modeling_pruned.")
    for name in ("modeling_pruned.py", "pruned_decoder.py", "configuration_pruned.py"):
        assert (tmp_path / name).is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    assert type(loaded) is type(pruned)
    assert loaded.config.skipped_attention == [0] and loaded.config.layer_types == pruned.config.layer_types
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, pruned(ids).logits)
    torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=1e-6)


def test_block_only_removal_stays_native(tmp_path):
    model = make_tiny_model("llama")
    pruned = remove_sublayers(model, attention=[3], mlp=[3])
    assert type(pruned).__name__ == "LlamaForCausalLM" and pruned is model
    pruned.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert not (tmp_path / "modeling_pruned.py").exists()


def _run_child(script: str, path, tmp_path, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "child-hf"), "HF_MODULES_CACHE": str(tmp_path / "child-modules")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=300,
    )


def _saved_with_reference(tmp_path):
    pruned, ids, _ = pruned_model("qwen3")
    path = tmp_path / "pruned"
    pruned.save_pretrained(path)
    with torch.no_grad():
        torch.save({"ids": ids, "logits": pruned(ids).logits}, tmp_path / "reference.pt")
    return path


@pytest.mark.slow
def test_fresh_process_after_import_loads_natively(tmp_path):
    path = _saved_with_reference(tmp_path)
    result = _run_child(
        """
        import sys, torch
        import optimum_depth.modeling
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], attn_implementation="eager")
        reference = torch.load(sys.argv[1] + "/../reference.pt")
        with torch.no_grad():
            same = torch.equal(model(reference["ids"]).logits, reference["logits"])
        print(type(model).__module__, type(model).__name__, same)
        """,
        path,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["optimum_depth.modeling.modeling_pruned", "PrunedQwen3ForCausalLM", "True"]


@pytest.mark.slow
def test_trust_remote_code_without_the_package(tmp_path):
    path = _saved_with_reference(tmp_path)
    result = _run_child(
        """
        import sys
        sys.modules["optimum_depth"] = None  # importing optimum_depth now raises ImportError
        import torch
        from transformers import AutoModelForCausalLM
        try:
            import optimum_depth  # noqa: F401
            raise SystemExit("optimum_depth was importable")
        except ImportError:
            pass
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, attn_implementation="eager")
        reference = torch.load(sys.argv[1] + "/../reference.pt")
        with torch.no_grad():
            same = torch.equal(model(reference["ids"]).logits, reference["logits"])
        print(type(model).__module__.split(".")[0], type(model).__name__, same)
        """,
        path,
        tmp_path,
        {"PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["transformers_modules", "PrunedQwen3ForCausalLM", "True"]


# ------------------------------------------------------------------------------------------------- KV cache
CACHE_FAMILIES = ["llama", "qwen2", "qwen3", "gemma2", "gemma3_text"]


def cache_model(family):
    """Block 0's attention removed (cache slot 0 never filled), plus one MLP and one whole block."""
    return remove_sublayers(make_tiny_model(family), attention=[0, 4], mlp=[2, 4])


@pytest.mark.parametrize("family", CACHE_FAMILIES)
@pytest.mark.parametrize("with_config", [False, True])
def test_incremental_decoding_with_dynamic_cache_equals_full_forward(family, with_config):
    model = cache_model(family)
    ids = random_ids(2, 14, seed=3)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config) if with_config else DynamicCache()
        pieces = [model(ids[:, :6], past_key_values=cache, use_cache=True).logits]
        for t in range(6, ids.shape[1]):
            pieces.append(model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    assert cache.get_seq_length() == ids.shape[1]
    # attention-first: slot 0 holds block 1's attention (block 0 has none); attention-free slots come last
    assert type(cache.layers[0]).__name__ != "DummyLayer" and cache.layers[0].get_seq_length() == ids.shape[1]
    if with_config:
        assert [type(layer).__name__ == "DummyLayer" for layer in cache.layers] == [False] * 4 + [True]
    else:
        assert len(cache.layers) == 4
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", CACHE_FAMILIES)
def test_generate_left_padded_equals_full_forward(family):
    model = cache_model(family)
    prompts = [random_ids(1, 9, seed=5)[0], random_ids(1, 5, seed=6)[0]]
    width, new = max(len(p) for p in prompts), 7
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            use_cache=True,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            eos_token_id=None,
        )
    for row, prompt in enumerate(prompts):
        sequence = prompt[None].clone()
        for step in range(new):  # the plain reference: the whole sequence re-run without cache
            with torch.no_grad():
                last = model(sequence).logits[0, -1]
            torch.testing.assert_close(out.logits[step][row], last, rtol=1e-4, atol=1e-4)
            sequence = torch.cat([sequence, last.argmax()[None, None]], dim=1)
        assert torch.equal(out.sequences[row, width:], sequence[0, len(prompt) :])


# ------------------------------------------------------------------------------------------------- LoRA
def test_lora_trains_merges_saves_and_reloads(tmp_path):
    from peft import LoraConfig, get_peft_model

    pruned, ids, _ = pruned_model("llama")
    peft_model = get_peft_model(
        pruned, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    assert peft_model.get_base_model() is pruned
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(4):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(ids).logits
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, PrunedLlamaForCausalLM)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted, rtol=1e-5, atol=1e-5)
    merged.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager")
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, merged(ids).logits)


def test_static_cache_generation_matches_dynamic():
    model = cache_model("qwen3")
    ids = random_ids(1, 6, seed=4)
    with torch.no_grad():
        dynamic = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        static = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0, cache_implementation="static")
    assert torch.equal(dynamic, static)
