"""Recovery recipes: Alpaca/raw-text data, packing, LoRA / QLoRA / full training, merge and native save."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from optimum_depth import DepthPruner, DepthPruningConfig
from optimum_depth.training import (
    IGNORE_INDEX,
    ExampleDataset,
    PackedDataset,
    PadCollator,
    RecoveryConfig,
    build_recovery_dataset,
    build_recovery_trainer,
    format_alpaca,
    load_instruction_records,
    load_model_for_recovery,
    merge_adapters,
    pack_examples,
    prepare_model_for_recovery,
    save_recovered_model,
    tokenize_instructions,
)
from optimum_depth.training.recovery_data import TokenizedExample

from tiny_models import DATA_DIR, make_tiny_model, random_ids

ALPACA_FILE = DATA_DIR / "alpaca" / "alpaca_small_antelofski.json"


@pytest.fixture
def tokenizer(stories_path):
    return AutoTokenizer.from_pretrained(stories_path)


def train_args(**overrides):
    kwargs = dict(logging_steps=1, save_strategy="no", disable_tqdm=True, report_to=[])
    kwargs.update(overrides)
    return kwargs


def test_alpaca_prompts():
    prompt, response = format_alpaca({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    assert prompt == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n"
    )
    assert response == "5"
    prompt, _ = format_alpaca({"instruction": "Translate.", "input": "chat", "output": "cat"})
    assert prompt.endswith("### Instruction:\nTranslate.\n\n### Input:\nchat\n\n### Response:\n")
    assert prompt.startswith("Below is an instruction that describes a task, paired with an input")


def test_malformed_instruction_file_names_the_record(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    with pytest.raises(ValueError, match="record 1"):
        load_instruction_records(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_instruction_records(path)


def test_instruction_tokens_and_labels(tokenizer):
    record = {"instruction": "Name a color.", "input": "", "output": "Blue"}
    prompt, response = format_alpaca(record)
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    (masked,) = tokenize_instructions([record], tokenizer)
    assert masked.input_ids == prompt_ids + response_ids
    assert masked.labels == [IGNORE_INDEX] * len(prompt_ids) + response_ids
    (full,) = tokenize_instructions([record], tokenizer, train_on_inputs=True)
    assert full.labels == full.input_ids == masked.input_ids


def test_packing_concatenates_and_drops_unsupervised_blocks():
    examples = [
        TokenizedExample([1, 2, 3], [1, 2, 3]),
        TokenizedExample([4, 5, 6, 7, 8], [IGNORE_INDEX] * 5),
        TokenizedExample([9, 10, 11], [9, 10, 11]),
    ]
    packed = pack_examples(examples, block_size=4)
    # Stream 1..11 cut in blocks of 4: [1-4] keeps, [5-8] has no label and goes, the tail [9-11] is dropped.
    assert packed.input_ids.tolist() == [[1, 2, 3, 4]]
    assert packed.labels.tolist() == [[1, 2, 3, IGNORE_INDEX]]
    packed = pack_examples(examples, block_size=3)  # [1-3] keeps, [4-6] goes, [7-9] keeps, [10-11] is the tail
    assert packed.input_ids.tolist() == [[1, 2, 3], [7, 8, 9]]
    assert packed.labels.tolist()[1] == [IGNORE_INDEX, IGNORE_INDEX, 9]
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_examples(examples, block_size=64)


def test_datasets_from_alpaca_file_and_raw_text(tokenizer):
    packed = build_recovery_dataset(ALPACA_FILE, tokenizer, block_size=64, max_examples=40)
    assert isinstance(packed, PackedDataset) and packed.input_ids.shape[1] == 64
    records = load_instruction_records(ALPACA_FILE)[:40]
    examples = tokenize_instructions(records, tokenizer)
    stream = [t for e in examples for t in e.input_ids]
    labels = [t for e in examples for t in e.labels]
    blocks = [(stream[i : i + 64], labels[i : i + 64]) for i in range(0, len(stream) - 63, 64)]
    kept = [block for block in blocks if any(t != IGNORE_INDEX for t in block[1])]
    assert packed.input_ids.tolist() == [ids for ids, _ in kept]
    assert packed.labels.tolist() == [lab for _, lab in kept]
    assert 0 < packed.num_supervised_tokens < packed.input_ids.numel()

    texts = ["Once upon a time there was a cat.", "", "The dog ran to the park and played all day."]
    raw = build_recovery_dataset(texts, tokenizer, block_size=8)
    assert torch.equal(raw.input_ids, raw.labels)

    unpacked = build_recovery_dataset(ALPACA_FILE, tokenizer, block_size=32, packing=False, max_examples=3)
    assert isinstance(unpacked, ExampleDataset) and len(unpacked) == 3
    batch = PadCollator(pad_token_id=0)([unpacked[0], unpacked[1]])
    lengths = [len(unpacked[i]["input_ids"]) for i in (0, 1)]
    assert batch["input_ids"].shape == (2, max(lengths)) and max(lengths) <= 32
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="data_format"):
        build_recovery_dataset(texts, tokenizer, data_format="markdown")


def test_lora_recovery_then_native_checkpoint(tmp_path, stories_path, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(stories_path, dtype=torch.float32)
    DepthPruner(
        DepthPruningConfig(criterion="magnitude", num_layers_to_remove=1, protect_first=1, protect_last=1)
    ).prune(model)
    data = build_recovery_dataset(ALPACA_FILE, tokenizer, block_size=64, max_examples=200)
    config = RecoveryConfig(
        method="lora", max_steps=25, learning_rate=3e-3, warmup_steps=0, gradient_accumulation_steps=1
    )
    trainer = build_recovery_trainer(
        model, data, config, output_dir=tmp_path / "run", tokenizer=tokenizer, **train_args()
    )
    assert hasattr(trainer.model, "peft_config")
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # Every attention and MLP projection of every block has an adapter (Shortened LLaMA's targets).
    assert len(trainable) == 4 * 7 * 2 and trainer.args.learning_rate == 3e-3
    trainer.train()
    history = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert sum(history[-5:]) < sum(history[:5])

    ids = random_ids(2, 16, vocab=512)
    peft_model = trainer.model.eval()
    with torch.no_grad():
        expected = peft_model(ids).logits
    path = save_recovered_model(
        peft_model, tmp_path / "merged", tokenizer=tokenizer, recovery=config.to_dict(), in_place=True
    )
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    assert reloaded.config.surviving_layers == model.config.surviving_layers
    assert reloaded.config.recovery["method"] == "lora"
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, rtol=1e-4, atol=1e-4)


def test_full_recovery_trains_every_weight(tmp_path, stories_path, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(stories_path, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = build_recovery_dataset(ALPACA_FILE, tokenizer, block_size=64, max_examples=50)
    config = RecoveryConfig(method="full", max_steps=3, warmup_steps=0, gradient_accumulation_steps=1)
    trainer = build_recovery_trainer(model, data, config, output_dir=tmp_path / "run", **train_args())
    assert trainer.args.learning_rate == 2e-5
    trainer.train()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="already has peft"):
        prepare_model_for_recovery(
            prepare_model_for_recovery(make_tiny_model("llama"), RecoveryConfig()), RecoveryConfig()
        )


def test_recovery_config_validation():
    with pytest.raises(ValueError, match="method"):
        RecoveryConfig(method="dora")
    with pytest.raises(ValueError, match="lora_r"):
        RecoveryConfig(lora_r=0)
    assert RecoveryConfig(method="qlora").resolved_learning_rate == 1e-4


def test_qlora_trains_on_a_4bit_base_and_merges_into_full_precision(tmp_path, tokenizer):
    pytest.importorskip("bitsandbytes")
    # bitsandbytes' CPU 4-bit kernels need in/out features that are multiples of its 64-element blocks.
    base = make_tiny_model("llama", vocab_size=512, hidden_size=64, intermediate_size=128, head_dim=16)
    base.save_pretrained(tmp_path / "base")
    with pytest.raises(ValueError, match="4-bit base"):
        prepare_model_for_recovery(make_tiny_model("llama"), RecoveryConfig(method="qlora"))

    config = RecoveryConfig(
        method="qlora", max_steps=3, learning_rate=1e-2, warmup_steps=0, gradient_accumulation_steps=1
    )
    quantized = load_model_for_recovery(tmp_path / "base", config)
    data = build_recovery_dataset(ALPACA_FILE, tokenizer, block_size=32, max_examples=30)
    trainer = build_recovery_trainer(quantized, data, config, output_dir=tmp_path / "run", **train_args())
    trainer.train()
    peft_model = trainer.model
    with pytest.raises(ValueError, match="full_precision_base"):
        merge_adapters(peft_model)

    full = load_model_for_recovery(tmp_path / "base", RecoveryConfig(method="lora"))
    reference_weight = full.model.layers[0].self_attn.q_proj.weight.detach().clone()
    lora_layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    delta = (lora_layer.lora_B["default"].weight @ lora_layer.lora_A["default"].weight) * lora_layer.scaling["default"]
    assert delta.abs().max() > 0
    merged = merge_adapters(peft_model, full_precision_base=full)
    merged_q = merged.model.layers[0].self_attn.q_proj
    assert type(merged_q) is torch.nn.Linear
    torch.testing.assert_close(merged_q.weight, reference_weight + delta.detach())
