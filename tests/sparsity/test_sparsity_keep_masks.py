"""Recovery training keeps the zeros of a sparsified model."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments

from optimum_depth.architectures import get_decoder_layers
from optimum_depth.sparsity import SparsityConfig, SparsityMaskCallback, find_prunable_linears, sparsify

from tiny_models import make_tiny_model, random_ids


def _zero_patterns(model) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": linear.weight == 0
        for i, block in enumerate(get_decoder_layers(model))
        for name, linear in find_prunable_linears(block, model).items()
    }


def test_trainer_steps_keep_the_zeros(tmp_path):
    model = make_tiny_model("llama")
    sparsify(model, SparsityConfig(method="magnitude", sparsity=0.5), show_progress=False)
    before = _zero_patterns(model)
    dense_before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = random_ids(4, 16)
    data = [{"input_ids": row, "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_strategy="no",
    )
    model.train()
    Trainer(model=model, args=args, train_dataset=data, callbacks=[SparsityMaskCallback(model)]).train()
    after = _zero_patterns(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, dense_before[k])]
    assert any("proj" in k for k in changed)  # the surviving weights did train


def test_apply_after_a_dense_update():
    model = make_tiny_model("qwen2")
    sparsify(model, SparsityConfig(method="magnitude", sparsity=0.3), show_progress=False)
    before = _zero_patterns(model)
    callback = SparsityMaskCallback(model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)  # e.g. a merged LoRA delta
    assert not any(v.any() for v in _zero_patterns(model).values())
    callback.apply()
    after = _zero_patterns(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
