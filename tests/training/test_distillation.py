"""Recovery by distillation: the losses against hand-written formulas, the Trainer, stored teacher logits, self data."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainingArguments

from optimum_depth import DepthPruner, DepthPruningConfig, remove_layers
from optimum_depth.errors import ConfigError, DataNotFoundError
from optimum_depth.training import (
    PackedDataset,
    RecoveryConfig,
    TeacherLogitsDataset,
    aligned_block_pairs,
    build_recovery_dataset,
    build_recovery_trainer,
    precompute_teacher_logits,
)
from optimum_depth.training.distillation import record_block_outputs
from optimum_depth.training.distillation_losses import (
    hidden_alignment_loss,
    kd_loss,
    topk_kd_loss,
    topk_teacher_targets,
)

from tiny_models import make_tiny_model, random_ids


# ----------------------------------------------------------------------------------------------------- the losses
def _hand_kl(student, teacher, temperature):
    total, count = 0.0, 0
    for s_row, t_row in zip(
        student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1]), strict=True
    ):
        p = torch.softmax(t_row.double() / temperature, -1)
        q = torch.softmax(s_row.double() / temperature, -1)
        total += float((p * (p.log() - q.log())).sum()) * temperature**2
        count += 1
    return total / count


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_is_the_hand_written_kl(temperature):
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    assert float(kd_loss(student, teacher, temperature)) == pytest.approx(_hand_kl(student, teacher, temperature))
    mask = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    expected = _hand_kl(student[mask], teacher[mask], temperature)
    assert float(kd_loss(student, teacher, temperature, mask)) == pytest.approx(expected)
    assert float(kd_loss(student, teacher, temperature, mask, "sum")) == pytest.approx(expected * 7)


def test_topk_kd_with_the_whole_vocabulary_is_full_kd_and_a_lower_bound_otherwise():
    torch.manual_seed(1)
    student, teacher = torch.randn(3, 4, 20), torch.randn(3, 4, 20) * 3
    for temperature in (1.0, 1.5):
        full = kd_loss(student, teacher, temperature)
        values, indices, lse = topk_teacher_targets(teacher, 20, (temperature,))
        assert float(topk_kd_loss(student, values, indices, lse[temperature], temperature)) == pytest.approx(
            float(full), rel=1e-5
        )
        values, indices, lse = topk_teacher_targets(teacher, 5, (temperature,))
        assert float(topk_kd_loss(student, values, indices, lse[temperature], temperature)) <= float(full) + 1e-6


def test_hidden_alignment_is_the_relative_squared_error():
    torch.manual_seed(2)
    student, teacher = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    expected = ((student - teacher).pow(2).sum(-1) / teacher.pow(2).sum(-1)).mean()
    assert float(hidden_alignment_loss(student, teacher, kind="nmse")) == pytest.approx(float(expected))
    cosine = (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    assert float(hidden_alignment_loss([student], [teacher], kind="cosine")) == pytest.approx(float(cosine))


# ------------------------------------------------------------------------------------------ block correspondence
def test_alignment_pairs_follow_the_original_indices_after_two_prunings():
    teacher = make_tiny_model("llama")
    student = copy.deepcopy(teacher)
    remove_layers(student, [1])  # original 1
    remove_layers(student, [2])  # position 2 is now original 3
    assert student.config.surviving_layers == [0, 2, 4, 5]
    assert aligned_block_pairs(student, teacher) == [(0, 0), (1, 2), (2, 4), (3, 5)]
    assert aligned_block_pairs(student, teacher, "after_cuts") == [(1, 2), (2, 4)]
    other = make_tiny_model("llama", num_hidden_layers=5)
    with pytest.raises(ConfigError, match="one with 5"):
        aligned_block_pairs(student, other)


# --------------------------------------------------------------------------------------------------- the Trainer
def _pruned_pair(seed=0):
    teacher = make_tiny_model("llama", seed=seed)
    student = copy.deepcopy(teacher)
    DepthPruner(DepthPruningConfig(num_layers_to_remove=2, protect_first=0, protect_last=0)).apply(
        student, _plan((1, 3))
    )
    return teacher, student


def _plan(removed):
    from optimum_depth import PruningPlan

    return PruningPlan(granularity="block", removed_blocks=removed, source_num_hidden_layers=6)


def _data(n=8, length=12):
    ids = random_ids(n, length, seed=5)
    return PackedDataset(ids, ids.clone())


def _args(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_steps=3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        lr_scheduler_type="constant",
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _expected_first_loss(student, teacher, batch, config):
    """The distillation loss of one batch, written out by hand."""
    ids = batch["input_ids"]
    with torch.no_grad():
        pairs = aligned_block_pairs(student, teacher) if config.hidden_alignment else []
        with record_block_outputs(student, [s for s, _ in pairs]) as s_states:
            out = student(input_ids=ids, labels=ids)
        with record_block_outputs(teacher, [t for _, t in pairs]) as t_states:
            t_logits = teacher(input_ids=ids).logits
    kd = kd_loss(out.logits[:, :-1], t_logits[:, :-1], config.temperature)
    loss = (1 - config.resolved_alpha) * kd + config.resolved_alpha * out.loss
    if pairs:
        align = hidden_alignment_loss(
            [s_states[s][:, :-1] for s, _ in pairs], [t_states[t][:, :-1] for _, t in pairs], kind="nmse"
        )
        loss = loss + config.hidden_alignment * align
    return float(loss)


@pytest.mark.parametrize(
    "objective, alignment", [("kd", 0.0), ("kd+lm", 0.0), ("kd", 0.5)], ids=["kd", "kd+lm", "kd+align"]
)
def test_first_step_loss_is_the_formula_and_the_teacher_stays_frozen(tmp_path, objective, alignment):
    teacher, student = _pruned_pair()
    config = RecoveryConfig(method="full", objective=objective, temperature=2.0, alpha=0.3, hidden_alignment=alignment)
    data = _data()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    expected = _expected_first_loss(student, teacher, {"input_ids": data.input_ids}, config)  # one batch of all
    args = _args(tmp_path, max_steps=1, per_device_train_batch_size=len(data))
    result = build_recovery_trainer(student, data, config, teacher=teacher, training_args=args).train()
    assert result.training_loss == pytest.approx(expected, rel=1e-4)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training


def test_distillation_with_lora_trains_only_the_adapters(tmp_path):
    teacher, student = _pruned_pair()
    config = RecoveryConfig(method="lora", objective="kd", lora_r=2, target_modules=["q_proj", "down_proj"])
    trainer = build_recovery_trainer(student, _data(), config, teacher=teacher, training_args=_args(tmp_path))
    trainer.train()
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)


def test_training_resumes_to_the_same_weights(tmp_path):
    config = RecoveryConfig(method="full", objective="kd+lm", hidden_alignment=0.1)
    teacher, straight = _pruned_pair()
    args = _args(tmp_path / "a", max_steps=4)
    build_recovery_trainer(straight, _data(), config, teacher=teacher, training_args=args).train()
    teacher, resumed = _pruned_pair()
    args = _args(tmp_path / "b", max_steps=2, save_strategy="steps", save_steps=2)
    build_recovery_trainer(resumed, _data(), config, teacher=teacher, training_args=args).train()
    teacher, again = _pruned_pair()
    args = _args(tmp_path / "b", max_steps=4, save_strategy="steps", save_steps=2)
    trainer = build_recovery_trainer(again, _data(), config, teacher=teacher, training_args=args)
    trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "run" / "checkpoint-2"))
    for (name, a), b in zip(straight.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------ stored teacher logits
def test_stored_top_k_logits_train_without_the_teacher(tmp_path):
    teacher, student = _pruned_pair()
    data = _data()
    folder = precompute_teacher_logits(teacher, data, tmp_path / "logits", k=128, temperature=2.0, shard_size=3)
    stored = TeacherLogitsDataset(folder)
    assert len(stored) == len(data) and stored.k == 128 and len(stored.index["shards"]) == 3
    item = stored[4]
    assert torch.equal(item["input_ids"], data[4]["input_ids"])
    with torch.no_grad():
        logits = teacher(input_ids=data[4]["input_ids"][None]).logits[0]
    torch.testing.assert_close(item["teacher_logsumexp"], torch.logsumexp(logits / 2.0, -1), rtol=1e-5, atol=1e-5)
    config = RecoveryConfig(method="full", objective="kd", temperature=2.0)
    online = copy.deepcopy(student)
    one_batch = {"max_steps": 1, "per_device_train_batch_size": len(data)}
    stored_trainer = build_recovery_trainer(student, stored, config, training_args=_args(tmp_path / "s", **one_batch))
    online_trainer = build_recovery_trainer(
        online, data, config, teacher=teacher, training_args=_args(tmp_path / "o", **one_batch)
    )
    # k = vocabulary: the stored top-k loss is the full KD loss, so both runs see the same loss
    assert stored_trainer.train().training_loss == pytest.approx(online_trainer.train().training_loss, rel=1e-4)


def test_stored_logits_are_checked_and_resumed(tmp_path):
    teacher, student = _pruned_pair()
    folder = precompute_teacher_logits(teacher, _data(), tmp_path / "logits", k=8, shard_size=4)
    (folder / "shard-00001.safetensors").unlink()  # an interrupted run
    with pytest.raises(DataNotFoundError, match="shard-00001"):
        TeacherLogitsDataset(folder)
    precompute_teacher_logits(teacher, _data(), folder, k=8, shard_size=4)  # completes the missing shard
    stored = TeacherLogitsDataset(folder)
    with pytest.raises(ConfigError, match="another run"):
        precompute_teacher_logits(teacher, _data(), folder, k=16, shard_size=4)
    with pytest.raises(ConfigError, match="temperature 1.0"):
        build_recovery_trainer(student, stored, RecoveryConfig(method="full", objective="kd", temperature=2.0))


# ------------------------------------------------------------------------------------------------- data and config
def test_self_generated_recovery_data_is_seeded_text_of_the_teacher(stories_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = AutoModelForCausalLM.from_pretrained(stories_path)
    tokenizer = AutoTokenizer.from_pretrained(stories_path)
    a = build_recovery_dataset("self", tokenizer, block_size=16, max_examples=3, teacher=teacher)
    b = build_recovery_dataset("self", tokenizer, block_size=16, max_examples=3, teacher=teacher)
    assert len(a) == 3 and a[0]["input_ids"].shape == (16,) and torch.equal(a.input_ids, b.input_ids)
    assert (a.input_ids[:, 0] == tokenizer.bos_token_id).all() and torch.equal(a.labels, a.input_ids)
    with pytest.raises(ConfigError, match="teacher"):
        build_recovery_dataset("self", tokenizer)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objective": "distill"}, "objective"),
        ({"objective": "kd", "temperature": 0}, "temperature"),
        ({"objective": "kd+lm", "alpha": 1.5}, "alpha"),
        ({"objective": "lm", "hidden_alignment": 0.5}, "teacher"),
        ({"objective": "kd", "hidden_alignment_kind": "l1"}, "hidden_alignment_kind"),
    ],
)
def test_bad_distillation_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RecoveryConfig(**kwargs)


def test_kd_needs_a_teacher_and_lm_refuses_one(tmp_path):
    teacher, student = _pruned_pair()
    with pytest.raises(ConfigError, match="needs the dense `teacher`"):
        build_recovery_trainer(student, _data(), RecoveryConfig(method="full", objective="kd"))
    with pytest.raises(ConfigError, match="does not use it"):
        build_recovery_trainer(student, _data(), RecoveryConfig(method="full"), teacher=teacher)


def test_distillation_follows_iterative_pruning_by_the_callback(tmp_path):
    from optimum_depth import DepthPruningCallback

    teacher = make_tiny_model("llama")
    student = copy.deepcopy(teacher)
    pruning = DepthPruningConfig(
        criterion="magnitude",
        num_layers_to_remove=2,
        schedule="iterative",
        layers_per_step=1,
        prune_every_n_steps=2,
        protect_first=0,
        protect_last=0,
    )
    config = RecoveryConfig(method="full", objective="kd", hidden_alignment=0.5)
    trainer = build_recovery_trainer(
        student,
        _data(),
        config,
        teacher=teacher,
        training_args=_args(tmp_path, max_steps=6),
        callbacks=[DepthPruningCallback(pruning)],
    )
    trainer.train()
    kept = student.config.surviving_layers
    assert len(kept) == 4
    # the alignment pairs were recomputed after each event: each kept block faces its own original block
    assert trainer.block_pairs == [(p, kept[p]) for p in range(4)]
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)
